"""The ``anthropic`` backend: Claude through Anthropic's Messages API and the official client.

Anthropic differs from the chat-completions APIs in ways that matter here:
the system prompt is a top-level ``system`` parameter (never a message),
``max_tokens`` is required, the conversation must open with a user turn, and
the API version that the client sends (2026-10-21) refuses sampling parameters,
so ``temperature`` is never sent. The client's own retries are off: the
pipeline retries, trips the circuit and falls back. Anthropic has no embeddings
API, so this backend has no ``embed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import anthropic
import httpx2
from anthropic.types import AssistantMessageParam, MessageParam, UserMessageParam

from chatcore.errors import BackendBadRequest, BackendError, BackendUnavailable
from chatcore.messages import ChatContext, Chunk, Message, Role, Usage
from chatcore.plugin import BaseBackendProvider, PluginMetadata

from ._common import (
    DEFAULT_MAX_TOKENS,
    api_key_from,
    connection_error,
    missing_key_error,
    one_line,
    retry_after_seconds,
    route_not_found,
    stalled_error,
    status_error,
    timeout_error,
)
from ._settings import AnthropicSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "AnthropicBackend"]

KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-sonnet-5-5"
"""Asked for when neither the turn nor the config names a model (the API has no default)."""
DEFAULT_TIMEOUT_SECONDS = 60.0

_STATUS_OF_ERROR_TYPE: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""An ``error`` event inside a 200 stream has no status of its own: its type stands for one."""


class AnthropicBackend(BaseBackendProvider):
    """Claude via ``anthropic.AsyncAnthropic``.

    Config (``[backends.NAME]``): ``model``, ``base_url``, ``api_key`` (else
    ``$ANTHROPIC_API_KEY``, or the variable named by ``api_key_env``),
    ``timeout_seconds``, ``max_tokens`` (default 1024). ``temperature`` is
    accepted and ignored: the current API version refuses it.
    """

    metadata = PluginMetadata(
        name="anthropic",
        version="1.0.0",
        description="Anthropic Claude models through the Messages API",
        tags=("remote", "api-key"),
    )
    settings_model = AnthropicSettings

    _client: anthropic.AsyncAnthropic | None = None

    async def _do_initialize(self) -> None:
        self._client = None
        key, _ = api_key_from(self.config, KEY_ENV)
        if key is not None:
            self._client = self._build_client(key)

    def _build_client(self, key: str) -> anthropic.AsyncAnthropic:
        # The explicit key also keeps the client from reading other credentials
        # (profiles, federation) on its own.
        return anthropic.AsyncAnthropic(
            base_url=self.config.get("base_url") or None,
            api_key=key,
            timeout=self._timeout_s,
            max_retries=0,
        )

    def _require_client(self) -> anthropic.AsyncAnthropic:
        """The client, built now if the key appeared since initialize; no key is an error."""
        if self._client is None:
            key, env_name = api_key_from(self.config, KEY_ENV)
            if key is None:
                raise missing_key_error(self.name, env_name)
            self._client = self._build_client(key)
        return self._client

    @property
    def _timeout_s(self) -> float:
        return float(self.config.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS)

    @property
    def _url(self) -> str:
        if self._client is not None:
            return str(self._client.base_url).rstrip("/")
        return str(self.config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

    @property
    def _key_env(self) -> str:
        return api_key_from(self.config, KEY_ENV)[1]

    # -- requests --------------------------------------------------------------------------

    def _request(self, context: ChatContext) -> _Request:
        """The Messages API parameters for this turn."""
        system, messages = to_anthropic_messages(context)
        if not messages:
            raise BackendBadRequest(
                f"{self.name}: nothing to send: the conversation has no user message",
                backend=self.name,
            )
        max_tokens = context.max_tokens
        if max_tokens is None:
            max_tokens = int(self.config.get("max_tokens") or DEFAULT_MAX_TOKENS)
        # No temperature: API version 2026-10-21 answers 400 to any sampling parameter.
        return _Request(self._model(context), max_tokens, system, messages)

    def _model(self, context: ChatContext) -> str:
        return str(context.model or self.config.get("model") or DEFAULT_MODEL)

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:
        request = self._request(context)
        client = self._require_client()
        model = request.model
        index = 0
        tokens_in: int | None = None
        tokens_out: int | None = None
        reported: str | None = None
        finished = False
        try:
            events = await client.messages.create(
                model=model,
                max_tokens=request.max_tokens,
                messages=request.messages,
                system=request.system if request.system is not None else anthropic.omit,
                stream=True,
            )
        except Exception as exc:
            self._raise(exc, model, context=context)
        try:
            async with events:
                async for event in events:
                    if event.type == "message_start":
                        reported = event.message.model
                        tokens_in = event.message.usage.input_tokens
                        tokens_out = event.message.usage.output_tokens
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield Chunk(text=event.delta.text, index=index)
                        index += 1
                    elif event.type == "message_delta":
                        # Both counts are cumulative: the last one reported wins.
                        tokens_out = event.usage.output_tokens
                        if event.usage.input_tokens is not None:
                            tokens_in = event.usage.input_tokens
                    elif event.type == "message_stop":
                        finished = True
        except Exception as exc:
            self._raise(exc, model, streamed=index, context=context)
        if not finished:
            raise BackendUnavailable(
                f"{self.name}: the stream from {self._url} ended before message_stop "
                f"after {index} chunks; the reply is incomplete",
                backend=self.name,
            )
        # Anthropic reports the final usage in message_delta, after the last text.
        yield Chunk(
            text="",
            index=index,
            done=True,
            usage=Usage(tokens_in, tokens_out),
            model=reported or model,
        )

    async def chat(self, context: ChatContext) -> Message:
        request = self._request(context)
        client = self._require_client()
        try:
            reply = await client.messages.create(
                model=request.model,
                max_tokens=request.max_tokens,
                messages=request.messages,
                system=request.system if request.system is not None else anthropic.omit,
            )
        except Exception as exc:
            self._raise(exc, request.model, context=context)
        text = "".join(block.text for block in reply.content if block.type == "text")
        return Message(
            role=Role.ASSISTANT,
            content=text,
            model=reply.model,
            tokens_in=reply.usage.input_tokens,
            tokens_out=reply.usage.output_tokens,
        )

    async def list_models(self) -> list[str]:
        client = self._require_client()
        try:
            return [info.id async for info in client.models.list()]
        except Exception as exc:
            # A model list has no model to miss: its 404 is always the route's.
            self._raise(exc, None)

    async def health(self) -> Mapping[str, Any]:
        url = self._url
        try:
            models = await self.list_models()
        except BackendError as exc:
            return {"ok": False, "url": url, "detail": str(exc)}
        except Exception as exc:  # health never raises: an odd answer is still "not ok"
            return {"ok": False, "url": url, "detail": f"{self.name}: {exc!r}"}
        detail = f"{len(models)} models"
        model = self.config.get("model")
        if model:  # as for openai: a typo in the model name shows before the first turn
            detail += f", {model!r} {'listed' if model in models else 'not listed'}"
        return {"ok": True, "url": url, "detail": detail}

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- errors ----------------------------------------------------------------------------

    def _base_url_advice(self) -> str:
        url = self._url
        if url.endswith("/v1"):
            return f'the client adds /v1 itself, try "{url.removesuffix("/v1")}"'
        return "it is the server's root: the client adds /v1/messages"

    def _raise(
        self,
        exc: Exception,
        model: str | None,
        *,
        streamed: int | None = None,
        context: ChatContext | None = None,
    ) -> NoReturn:
        """Raise the chatcore error for a client exception; anything unforeseen as it is.

        ``streamed`` is how many chunks had arrived when a stream broke, None before
        the answer began.
        """
        mapped = self._error(exc, model, streamed=streamed, context=context)
        if mapped is None:
            raise exc
        raise mapped from exc

    def _error(
        self,
        exc: Exception,
        model: str | None,
        *,
        streamed: int | None,
        context: ChatContext | None = None,
    ) -> BackendError | None:
        url = self._url
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            if streamed:
                return stalled_error(self.name, url, streamed, self._timeout_s)
            return timeout_error(self.name, url, self._timeout_s)
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            if status < 400:
                status = _STATUS_OF_ERROR_TYPE.get(str(exc.type), 500)
            detail = exc.api_message or (str(exc.type) if exc.type else "") or f"HTTP {status}"
            # Anthropic's 404 for a model names it ("model: claude-x"); any other is the route's.
            if status == 404 and not (model and model in detail):
                return route_not_found(self.name, url, "Anthropic", detail, self._base_url_advice())
            return status_error(
                status,
                detail,
                backend=self.name,
                url=url,
                model=model,
                key_env=self._key_env,
                retry_after=retry_after_seconds(exc.response.headers),
                context=context,
            )
        if streamed is not None and isinstance(
            exc, anthropic.APIConnectionError | httpx2.TransportError
        ):
            # The client raises the transport error as it is, or (anthropic 2.x)
            # wrapped in APIConnectionError: either way the answer had begun.
            cause = (exc.__cause__ or exc) if isinstance(exc, anthropic.APIConnectionError) else exc
            return BackendUnavailable(
                f"{self.name}: the stream from {url} was cut after {streamed} chunks "
                f"({one_line(cause) or type(cause).__name__}); the reply is incomplete",
                backend=self.name,
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return connection_error(self.name, url, exc.__cause__ or exc.message)
        if isinstance(exc, anthropic.AnthropicError | httpx2.HTTPError):
            return BackendUnavailable(
                f"{self.name}: unusable answer from {url}: {one_line(exc)}", backend=self.name
            )
        return None


class _Request(NamedTuple):
    model: str
    max_tokens: int
    system: str | None
    messages: list[MessageParam]


def to_anthropic_messages(context: ChatContext) -> tuple[str | None, list[MessageParam]]:
    """The ``system`` parameter and the ``messages`` list for a context.

    System-role messages join ``context.system`` in the ``system`` parameter;
    tool results go back as user turns (there are no tool-use ids to pair them
    with); consecutive turns of one role are merged (the API would merge them
    anyway); empty messages are dropped (the API refuses empty text); and leading
    assistant turns are dropped, because the conversation must open with the
    user: they answer questions already cut from the history.
    """
    system_parts = [context.system] if context.system else []
    turns: list[tuple[bool, list[str]]] = []  # (is_assistant, texts)
    for message in context.messages:
        if not message.content.strip():
            continue
        if message.role is Role.SYSTEM:
            system_parts.append(message.content)
            continue
        is_assistant = message.role is Role.ASSISTANT
        if not turns and is_assistant:
            continue
        if turns and turns[-1][0] == is_assistant:
            turns[-1][1].append(message.content)
        else:
            turns.append((is_assistant, [message.content]))
    messages: list[MessageParam] = []
    for is_assistant, texts in turns:
        content = "\n\n".join(texts)
        if is_assistant:
            messages.append(AssistantMessageParam(role="assistant", content=content))
        else:
            messages.append(UserMessageParam(role="user", content=content))
    return "\n\n".join(system_parts) or None, messages
