"""The ``ollama`` backend: local models through Ollama's REST API.

Built on the official client (``ollama.AsyncClient``, httpx underneath), which
runs under Trio through anyio. Config keys of ``[backends.NAME]``: ``host``,
``model``, ``embed_model`` (for ``embed``; defaults to ``model``), ``options``
(Ollama's model options, passed as given), ``keep_alive``, ``temperature``,
``max_tokens`` (sent as ``num_predict``) and ``timeout_seconds``.
"""

from __future__ import annotations

import contextvars
import json
import os
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import ollama
import pydantic

from chatcore.errors import BackendBadRequest, BackendError, BackendUnavailable, ConfigError
from chatcore.messages import ChatContext, Chunk, Message, Role, Usage
from chatcore.plugin import BaseBackendProvider, PluginMetadata

from ._common import (
    checked_embeddings,
    connection_error,
    one_line,
    retry_after_seconds,
    stalled_error,
    status_error,
    timeout_error,
)
from ._settings import OllamaSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DEFAULT_HOST", "OllamaBackend"]

OLLAMA_PORT = 11434
DEFAULT_HOST = f"http://127.0.0.1:{OLLAMA_PORT}"
DEFAULT_TIMEOUT_SECONDS = 120.0
KEY_ENV = "OLLAMA_API_KEY"
"""The official client sends this variable as a bearer token (Ollama's cloud, proxies)."""

# ollama.ResponseError keeps the status and body but drops the headers, so a
# response hook keeps those of the last error answer. A context variable, not
# an attribute: concurrent requests on one client each see their own.
_error_headers: contextvars.ContextVar[httpx.Headers | None] = contextvars.ContextVar(
    "chatcore_ollama_error_headers", default=None
)


async def _remember_error_headers(response: httpx.Response) -> None:
    if response.is_error:
        _error_headers.set(response.headers)


class OllamaBackend(BaseBackendProvider):
    """Chat, streaming, model list and embeddings from an Ollama server."""

    metadata = PluginMetadata(
        name="ollama",
        version="1.0.0",
        description="Local models through Ollama (https://ollama.com)",
        tags=("local", "offline"),
    )
    settings_model = OllamaSettings

    _client: ollama.AsyncClient | None = None
    url: str = DEFAULT_HOST
    """The server's base URL, as shown in messages and health."""
    timeout_s: float = DEFAULT_TIMEOUT_SECONDS

    async def _do_initialize(self) -> None:
        host = str(self.config.get("host") or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST)
        options = self.config.get("options")
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(
                None,
                f"backends.{self.name}.options",
                f"expected a table of Ollama options, got {options!r}",
            )
        self.timeout_s = float(self.config.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS)
        try:
            self.url = _display_url(host)
            self._client = ollama.AsyncClient(
                host=host,
                timeout=self.timeout_s,
                event_hooks={"response": [_remember_error_headers]},
            )
        except ValueError as exc:
            raise ConfigError(
                None, f"backends.{self.name}.host", f"not a usable address: {host!r} ({exc})"
            ) from exc

    # -- BackendProvider ----------------------------------------------------------------

    async def stream(self, context: ChatContext) -> AsyncGenerator[Chunk, None]:
        client = self._require_client()
        request = self._chat_request(context)
        model = request["model"]
        index = 0
        final: Chunk | None = None
        parts: AsyncIterator[ollama.ChatResponse] | None = None
        _error_headers.set(None)
        try:
            parts = await client.chat(**request, stream=True)
            async for part in parts:
                text = part.message.content or ""
                if part.done:
                    # Held until the body ends (right after `done`): leaving the
                    # client's generator midway would strand its line reader.
                    final = Chunk(
                        text=text,
                        index=index,
                        done=True,
                        usage=Usage(part.prompt_eval_count, part.eval_count),
                        model=part.model or model,
                    )
                # Thinking models send pieces with only `thinking`: not part of the reply.
                elif text:
                    yield Chunk(text=text, index=index)
                    index += 1
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, model=model, chunks=index, context=context) from exc
        finally:
            # Close the client's generator now, so its connection goes back to
            # the pool even when our consumer stopped early.
            aclose = getattr(parts, "aclose", None)
            if aclose is not None:
                await aclose()
        if final is None:
            raise BackendUnavailable(
                f"{self.name}: the reply from {self.url} ended after {index} chunks "
                "without Ollama's final `done` message",
                backend=self.name,
            )
        yield final

    async def chat(self, context: ChatContext) -> Message:
        client = self._require_client()
        request = self._chat_request(context)
        model = request["model"]
        _error_headers.set(None)
        try:
            response = await client.chat(**request, stream=False)
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, model=model, context=context) from exc
        return Message(
            role=Role.ASSISTANT,
            content=response.message.content or "",
            model=response.model or model,
            tokens_in=response.prompt_eval_count,
            tokens_out=response.eval_count,
        )

    async def list_models(self) -> list[str]:
        """The models pulled on the server (``ollama list``)."""
        client = self._require_client()
        _error_headers.set(None)
        try:
            response = await client.list()
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, model=None) from exc
        return [m.model for m in response.models if m.model]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, from ``embed_model`` (or ``model``)."""
        client = self._require_client()
        model = str(self.config.get("embed_model") or self.config.get("model") or "")
        if not model:
            raise self._no_model_error("embed_model")
        if not texts:
            return []
        _error_headers.set(None)
        try:
            response = await client.embed(
                model=model, input=texts, keep_alive=self.config.get("keep_alive")
            )
        except _CLIENT_ERRORS as exc:
            raise self._error(exc, model=model) from exc
        return checked_embeddings(
            response.embeddings,
            texts,
            backend=self.name,
            url=self.url,
            model=model,
            key="embed_model",
        )

    async def health(self) -> Mapping[str, Any]:
        """Asks for the model list; never raises."""
        try:
            models = await self.list_models()
        except BackendError as exc:
            return {"ok": False, "url": self.url, "detail": str(exc)}
        except Exception as exc:
            return {"ok": False, "url": self.url, "detail": f"{self.name}: {exc!r}"}
        wanted = self.config.get("model")
        if wanted and not _has_model(models, str(wanted)):
            return {
                "ok": False,
                "url": self.url,
                "detail": f"model {wanted!r} is not pulled: run `ollama pull {wanted}`",
            }
        return {"ok": True, "url": self.url, "detail": f"{len(models)} models available"}

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]  # unannotated upstream

    # -- helpers ------------------------------------------------------------------------

    def _require_client(self) -> ollama.AsyncClient:
        if self._client is None:
            raise BackendUnavailable(
                f"{self.name}: the backend is not initialised (or already closed)",
                backend=self.name,
            )
        return self._client

    def _chat_request(self, context: ChatContext) -> dict[str, Any]:
        model = context.model or self.config.get("model")
        if not model:
            raise self._no_model_error("model")
        messages: list[dict[str, str]] = []
        if context.system:
            messages.append({"role": "system", "content": context.system})
        # chatcore's roles are Ollama's roles (system, user, assistant, tool).
        messages.extend({"role": str(m.role), "content": m.content} for m in context.messages)
        options = dict(self.config.get("options") or {})
        temperature = _first(context.temperature, self.config.get("temperature"))
        if temperature is not None:
            options["temperature"] = float(temperature)
        max_tokens = _first(context.max_tokens, self.config.get("max_tokens"))
        if max_tokens is not None:
            options["num_predict"] = int(max_tokens)
        return {
            "model": str(model),
            "messages": messages,
            "options": options or None,
            "keep_alive": self.config.get("keep_alive"),
        }

    def _no_model_error(self, key: str) -> BackendBadRequest:
        return BackendBadRequest(
            f"{self.name}: no model to ask for: set {key} in [backends.{self.name}] "
            "(`ollama list` shows the pulled models)",
            backend=self.name,
        )

    def _error(
        self,
        exc: Exception,
        *,
        model: str | None,
        chunks: int = 0,
        context: ChatContext | None = None,
    ) -> BackendError:
        """Turn whatever the client raised into the chatcore error a person can act on."""
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code < 0:
                # An {"error": ...} line inside a 200 stream: the runner failed mid-reply.
                return BackendUnavailable(
                    f"{self.name}: Ollama at {self.url} stopped the reply after {chunks} "
                    f"chunks: {one_line(exc.error)}",
                    backend=self.name,
                )
            if exc.status_code == 404 and "model" not in str(exc.error).lower():
                # Ollama's own 404s name the model; any other 404 means a wrong address.
                return BackendUnavailable(
                    f"{self.name}: no Ollama API at {self.url} (404: {one_line(exc.error)}); "
                    f"check host in [backends.{self.name}]",
                    backend=self.name,
                )
            headers = _error_headers.get()
            return status_error(
                exc.status_code,
                str(exc.error),
                backend=self.name,
                url=self.url,
                model=model,
                key_env=KEY_ENV,
                retry_after=retry_after_seconds(dict(headers) if headers else None),
                context=context,
            )
        if isinstance(exc, httpx.TimeoutException):
            if chunks:
                return stalled_error(self.name, self.url, chunks, self.timeout_s)
            return timeout_error(self.name, self.url, self.timeout_s)
        if isinstance(exc, httpx.TransportError | ConnectionError):
            if chunks:
                return BackendUnavailable(
                    f"{self.name}: the connection to {self.url} was cut mid-reply, "
                    f"after {chunks} chunks ({_reason(exc)})",
                    backend=self.name,
                )
            if isinstance(exc, httpx.ConnectError | ConnectionError):
                return connection_error(
                    self.name,
                    self.url,
                    _connect_reason(exc),
                    hint=f"start it with `ollama serve` or set host in [backends.{self.name}]",
                )
            return BackendUnavailable(
                f"{self.name}: the connection to {self.url} failed ({_reason(exc)})",
                backend=self.name,
            )
        return BackendUnavailable(
            f"{self.name}: {self.url} sent an answer that is not Ollama's API ({_reason(exc)})",
            backend=self.name,
        )


_CLIENT_ERRORS = (
    ollama.ResponseError,
    httpx.HTTPError,
    ConnectionError,  # what the client raises instead of httpx.ConnectError (non-streaming)
    json.JSONDecodeError,
    pydantic.ValidationError,
)
"""What the official client lets out; anything else is a bug and stays one."""


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _display_url(host: str) -> str:
    """The URL the client dials, as a person would write it.

    Like the client, a bare ``host[:port]`` means http and Ollama's port.
    """
    host = host.strip().rstrip("/")
    if "://" in host:
        return host
    parts = urlsplit(f"http://{host}")
    netloc = parts.netloc if parts.hostname else f"127.0.0.1{parts.netloc}"
    if parts.port is None:
        netloc = f"{netloc}:{OLLAMA_PORT}"
    return urlunsplit(parts._replace(netloc=netloc))


def _has_model(models: list[str], name: str) -> bool:
    return name in models or (":" not in name and f"{name}:latest" in models)


def _reason(exc: BaseException) -> str:
    return one_line(exc) or type(exc).__name__


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything behind it: causes, contexts and group members."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        # The client raises `from None`, which hides the context but keeps it.
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _connect_reason(exc: BaseException) -> str:
    """A short why: the client's own message would only say "failed to connect"."""
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"unknown host: {cause.strerror or cause}"
    for cause in causes:
        if isinstance(cause, httpx.ConnectError):
            return _reason(cause)
    return _reason(exc)
