"""The ``openai`` backend: OpenAI's chat completions API, or any server that speaks it.

Built on the official ``openai.AsyncOpenAI`` client, which runs on Trio through
anyio. ``base_url`` alone switches to an OpenAI-compatible server (vLLM, LM
Studio, llama.cpp's server, ...); such a server usually wants no key, so a
placeholder is sent when none is set. The client's own retries are off: the
pipeline retries, opens the circuit and falls back.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import openai

from chatcore.errors import BackendBadRequest, BackendError, BackendUnavailable
from chatcore.messages import ChatContext, Chunk, Message, Role, Usage
from chatcore.plugin import BaseBackendProvider, PluginMetadata

from ._common import (
    api_key_from,
    checked_embeddings,
    connection_error,
    context_size_advice,
    missing_key_error,
    one_line,
    retry_after_seconds,
    route_not_found,
    stalled_error,
    status_error,
    timeout_error,
)
from ._settings import OpenAISettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

__all__ = ["DEFAULT_BASE_URL", "KEY_ENV", "LOCAL_PLACEHOLDER_KEY", "OpenAIBackend"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_ENV = "OPENAI_API_KEY"
LOCAL_PLACEHOLDER_KEY = "not-needed"
"""Sent to OpenAI-compatible servers when no key is set: the client needs some bearer token."""
DEFAULT_TIMEOUT_SECONDS = 60.0

_ROLES = {
    Role.SYSTEM: "system",
    Role.USER: "user",
    Role.ASSISTANT: "assistant",
    Role.TOOL: "tool",
}


# ValueError: a body that isn't the JSON the client expects (a broken compatible server).
_CLIENT_ERRORS = (openai.OpenAIError, ValueError)


def is_openai_host(base_url: str) -> bool:
    """True for OpenAI's own service, where a key is required and never a placeholder."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "openai.com" or host.endswith(".openai.com")


class OpenAIBackend(BaseBackendProvider):
    """Chat completions over ``openai.AsyncOpenAI``; config ``base_url``, ``api_key``, ...

    Config keys: ``base_url`` (default OpenAI's), ``api_key`` (else ``$OPENAI_API_KEY``
    or the variable named by ``api_key_env``), ``model``, ``organization``,
    ``timeout_seconds``, ``temperature``, ``max_tokens``.
    """

    metadata = PluginMetadata(
        name="openai",
        version="1.0.0",
        description="OpenAI chat completions, or any OpenAI-compatible server by base_url "
        "(vLLM, LM Studio, llama.cpp server)",
        tags=("remote", "openai-compatible"),
    )
    settings_model = OpenAISettings

    def __init__(self) -> None:
        super().__init__()
        self._client: openai.AsyncOpenAI | None = None
        self._retired: list[openai.AsyncOpenAI] = []
        self._key: str | None = None
        self._key_env = KEY_ENV
        self.base_url = DEFAULT_BASE_URL
        self.timeout_s = DEFAULT_TIMEOUT_SECONDS

    async def _do_initialize(self) -> None:
        self.base_url = str(self.config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout_s = float(self.config.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS)
        # A missing key is reported when the backend is used, so a config that
        # lists openai without a key still loads and the other backends work.
        with contextlib.suppress(BackendError):
            self._ensure_client()

    def _ensure_client(self) -> openai.AsyncOpenAI:
        if self._client is not None:
            return self._client
        key, self._key_env = api_key_from(self.config, KEY_ENV)
        if key is None:
            if is_openai_host(self.base_url):
                raise missing_key_error(self.name, self._key_env)
            key = LOCAL_PLACEHOLDER_KEY
        organization = self.config.get("organization")
        self._key = key
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=key,
            organization=str(organization) if organization else None,
            timeout=self.timeout_s,
            max_retries=0,
        )
        return self._client

    def _retire_client(self) -> None:
        """Build a new client (and pool) for the next request; the old one closes at aclose.

        Not closed now: other streams of this backend may still be reading from it.
        """
        if self._client is not None:
            self._retired.append(self._client)
            self._client = None

    async def aclose(self) -> None:
        self._retire_client()
        clients, self._retired = self._retired, []
        for client in clients:
            await client.close()

    # -- requests ------------------------------------------------------------------------

    def _model(self, context: ChatContext | None = None) -> str:
        model = (context.model if context is not None else None) or self.config.get("model")
        if not model:
            raise BackendBadRequest(
                f"{self.name}: no model to ask for: set model in [backends.{self.name}]",
                backend=self.name,
                cli_hint=f"(see `chatcore backends models {self.name}`)",
            )
        return str(model)

    def _request(self, context: ChatContext) -> dict[str, Any]:
        """Keyword arguments of ``chat.completions.create`` for this turn."""
        messages: list[dict[str, Any]] = []
        if context.system:
            messages.append({"role": "system", "content": context.system})
        for message in context.messages:
            item: dict[str, Any] = {"role": _ROLES[message.role], "content": message.content}
            if message.role is Role.TOOL and "tool_call_id" in message.metadata:
                item["tool_call_id"] = str(message.metadata["tool_call_id"])
            messages.append(item)
        params: dict[str, Any] = {"model": self._model(context), "messages": messages}
        temperature = (
            context.temperature
            if context.temperature is not None
            else self.config.get("temperature")
        )
        if temperature is not None:
            params["temperature"] = float(temperature)
        max_tokens = (
            context.max_tokens if context.max_tokens is not None else self.config.get("max_tokens")
        )
        if max_tokens is not None:
            # OpenAI's reasoning models refuse the deprecated max_tokens; compatible
            # servers don't all know its successor, but all know max_tokens.
            field = "max_completion_tokens" if is_openai_host(self.base_url) else "max_tokens"
            params[field] = int(max_tokens)
        return params

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:
        params = self._request(context)
        client = self._ensure_client()
        model: str = params["model"]
        usage: Usage | None = None
        index = 0
        finished = False
        try:
            response = await client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True}
            )
        except _CLIENT_ERRORS as exc:
            self._raise(exc, model, context=context)
        async with response:
            while True:
                # Only the client's calls are guarded: whatever the consumer throws
                # in at ``yield`` must pass through unchanged.
                try:
                    event = await anext(response)
                except StopAsyncIteration:
                    break
                except _CLIENT_ERRORS as exc:
                    self._raise(exc, params["model"], pieces=index, context=context)
                model = event.model or model
                if event.usage is not None:
                    usage = Usage(event.usage.prompt_tokens, event.usage.completion_tokens)
                for choice in event.choices:
                    if choice.index == 0 and choice.finish_reason is not None:
                        finished = True
                    text = choice.delta.content or choice.delta.refusal
                    if choice.index == 0 and text:
                        yield Chunk(text=text, index=index)
                        index += 1
        if not finished:
            raise self._unfinished(index, context)
        yield Chunk(text="", index=index, done=True, usage=usage, model=model)

    def _unfinished(self, pieces: int, context: ChatContext) -> BackendUnavailable:
        """The error for a stream that ended with no ``finish_reason``: the server gave up.

        llama.cpp's server, over its context window, answers 200 with nothing the
        client can read and then drops the connection; the pool is rebuilt so the
        next request does not go out on it.
        """
        self._retire_client()
        if pieces:
            return BackendUnavailable(
                f"{self.name}: the stream from {self.base_url} ended without finishing "
                f"after {pieces} chunks; the reply is incomplete",
                backend=self.name,
            )
        return BackendUnavailable(
            f"{self.name}: the stream from {self.base_url} ended without finishing "
            f"(the prompt may exceed the model's context window; {context_size_advice(context)})",
            backend=self.name,
        )

    async def chat(self, context: ChatContext) -> Message:
        params = self._request(context)
        client = self._ensure_client()
        try:
            completion = await client.chat.completions.create(**params)
        except _CLIENT_ERRORS as exc:
            self._raise(exc, params["model"], context=context)
        content = ""
        if completion.choices:
            reply = completion.choices[0].message
            content = reply.content or reply.refusal or ""
        usage = completion.usage
        return Message(
            role=Role.ASSISTANT,
            content=content,
            model=completion.model or params["model"],
            tokens_in=usage.prompt_tokens if usage is not None else None,
            tokens_out=usage.completion_tokens if usage is not None else None,
        )

    async def list_models(self) -> list[str]:
        client = self._ensure_client()
        try:
            return [model.id async for model in client.models.list()]
        except _CLIENT_ERRORS as exc:
            # A model list has no model to miss: its 404 is always the route's.
            self._raise(exc, None, route_only=True)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order, from ``/embeddings`` with the configured model.

        ``embedding_model`` in config names the model when it differs from ``model``.
        """
        model = str(self.config.get("embedding_model") or self._model())
        client = self._ensure_client()
        try:
            # Floats, not the client's default base64: not every compatible server has it.
            result = await client.embeddings.create(
                model=model, input=texts, encoding_format="float"
            )
        except _CLIENT_ERRORS as exc:
            self._raise(exc, model)
        ordered = sorted(result.data, key=lambda item: item.index)
        return checked_embeddings(
            [item.embedding for item in ordered],
            texts,
            backend=self.name,
            url=self.base_url,
            model=model,
            key="embedding_model",
        )

    async def health(self) -> Mapping[str, Any]:
        try:
            models = await self.list_models()
        except BackendError as exc:
            return {"ok": False, "url": self.base_url, "detail": str(exc)}
        detail = f"{len(models)} models"
        model = self.config.get("model")
        if model:
            detail += f", {model!r} {'listed' if model in models else 'not listed'}"
        return {"ok": True, "url": self.base_url, "detail": detail}

    # -- errors --------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        # Some compatible servers echo the bearer token back in their errors.
        if self._key and self._key != LOCAL_PLACEHOLDER_KEY:
            text = text.replace(self._key, "***")
        return text

    def _base_url_advice(self) -> str:
        if not urlsplit(self.base_url).path.endswith("/v1"):
            return f'try "{self.base_url}/v1"'
        return "it should be the URL the server's docs give for its OpenAI-compatible API"

    def _raise(
        self,
        exc: Exception,
        model: object,
        *,
        pieces: int = 0,
        context: ChatContext | None = None,
        route_only: bool = False,
    ) -> NoReturn:
        """Re-raise a client error as the chatcore error the pipeline acts on."""
        model_name = str(model) if model else None
        if isinstance(exc, openai.APITimeoutError):
            if pieces:
                raise stalled_error(self.name, self.base_url, pieces, self.timeout_s) from exc
            raise timeout_error(self.name, self.base_url, self.timeout_s) from exc
        if isinstance(exc, openai.APIStatusError):
            detail = _error_detail(exc)
            if exc.status_code == 404 and (route_only or not _names_a_model(exc, model_name)):
                raise route_not_found(
                    self.name,
                    self.base_url,
                    "OpenAI-compatible",
                    self._scrub(detail),
                    self._base_url_advice(),
                ) from exc
            raise status_error(
                exc.status_code,
                self._scrub(detail),
                backend=self.name,
                url=self.base_url,
                model=model_name,
                key_env=self._key_env,
                retry_after=retry_after_seconds(exc.response.headers),
                context=context,
            ) from exc
        if pieces:
            raise BackendUnavailable(
                f"{self.name}: the stream from {self.base_url} was cut after {pieces} "
                f"chunks ({self._scrub(_reason(exc))})",
                backend=self.name,
            ) from exc
        if isinstance(exc, openai.APIConnectionError):
            raise connection_error(self.name, self.base_url, self._scrub(_reason(exc))) from exc
        raise BackendUnavailable(
            f"{self.name}: {self.base_url} failed: {self._scrub(_reason(exc))}",
            backend=self.name,
        ) from exc


def _error_detail(exc: openai.APIStatusError) -> str:
    """The ``error.message`` of OpenAI's error envelope, else what the client made of it."""
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    if isinstance(body, str) and body.strip():
        return body.strip()[:200]
    return exc.message


def _names_a_model(exc: openai.APIStatusError, model: str | None) -> bool:
    """Whether a 404 is the model's: OpenAI's code says so, other servers name the model."""
    body = exc.body
    if isinstance(body, dict) and body.get("code") == "model_not_found":
        return True
    return bool(model) and str(model) in _error_detail(exc)


def _reason(exc: BaseException) -> str:
    # The client's own message ("Connection error.") hides the transport's reason.
    cause = exc.__cause__
    return one_line(cause if cause is not None and str(cause) else exc)
