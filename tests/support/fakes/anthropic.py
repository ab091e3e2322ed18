"""A loopback fake of Anthropic's Messages API, as the official ``anthropic`` client uses it.

``POST /v1/messages`` answers with a ``message`` object, or with ``stream: true``
with the named server-sent events Anthropic sends (``message_start``,
``content_block_start``, ``ping``, ``content_block_delta``..., ``content_block_stop``,
``message_delta``, ``message_stop``). ``GET /v1/models`` lists models with
Anthropic's cursor pagination. Errors carry Anthropic's error body
(``{"type": "error", "error": {"type": ..., "message": ...}}``), 529 included.
The request checks are the real API's: a key (``x-api-key``, or the bearer token
that client 2.x sends), the ``anthropic-version`` header, a known model,
``max_tokens``, only ``user`` and ``assistant`` roles with a user turn first, and
no sampling parameters from version 2026-10-21 on (before it, a temperature
from 0 to 1).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from ._server import FakeAPIServer, JSONResponse, RecordedRequest, StreamResponse

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "ERROR_TYPES",
    "NO_SAMPLING_VERSION",
    "FakeAnthropic",
]

DEFAULT_MODELS = ("claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5-5")
DEFAULT_API_KEY = "sk-ant-test-key"

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""The ``error.type`` Anthropic sends with each status."""

_ROLES = ("user", "assistant")
_SAMPLING_PARAMETERS = ("temperature", "top_p", "top_k")
NO_SAMPLING_VERSION = "2026-10-21"
"""From this API version on, any sampling parameter is refused (the 2.x clients send it)."""
_MAX_MODELS_LIMIT = 1000


@dataclass(frozen=True)
class _StreamFault:
    error_type: str
    message: str
    after_deltas: int


class FakeAnthropic(FakeAPIServer):
    """Anthropic's Messages and Models endpoints, with knobs for what they answer.

    Knobs (plain attributes, change them between requests): ``reply_chunks`` (the
    text deltas; the non-streaming reply is their concatenation), ``model_reported``
    (the model the server names in its answer; None echoes the request's),
    ``usage`` (``(input_tokens, output_tokens)``), ``models`` (the ids the server
    knows; a request for another model gets 404), ``expected_api_key`` (None accepts
    any key, but some key is always required), plus the base's faults and
    ``fail_midstream``.
    """

    PREAMBLE_EVENTS = 3
    """Events (one HTTP chunk each) before the first text delta: start, block start, ping."""

    def __init__(
        self,
        *,
        expected_api_key: str | None = DEFAULT_API_KEY,
        reply_chunks: list[str] | None = None,
        model_reported: str | None = None,
        usage: tuple[int, int] = (12, 6),
        models: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.expected_api_key = expected_api_key
        self.reply_chunks: list[str] = (
            list(reply_chunks)
            if reply_chunks is not None
            else ["Hello", " from", " the", " fake", " Claude."]
        )
        self.model_reported = model_reported
        self.usage = usage
        self.models: list[str] = list(models) if models is not None else list(DEFAULT_MODELS)
        self._stream_faults: deque[_StreamFault] = deque()
        self._ids = itertools.count(1)

    # -- knobs beyond the base's -----------------------------------------------------------

    def fail_midstream(
        self,
        error_type: str = "overloaded_error",
        *,
        message: str = "Overloaded",
        after_deltas: int = 1,
    ) -> None:
        """The next streamed reply sends ``after_deltas`` deltas, then an ``error`` event.

        That is how Anthropic reports a failure after it has answered 200.
        """
        with self._lock:
            self._stream_faults.append(_StreamFault(error_type, message, after_deltas))

    @property
    def reply_text(self) -> str:
        return "".join(self.reply_chunks)

    # -- the API ---------------------------------------------------------------------------

    def error_body(self, status: int, message: str) -> Any:
        default = "invalid_request_error" if status < 500 else "api_error"
        return {
            "type": "error",
            "error": {"type": ERROR_TYPES.get(status, default), "message": message},
            "request_id": self._new_id("req"),
        }

    def handle(self, request: RecordedRequest) -> JSONResponse | StreamResponse:
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        if request.method == "POST" and request.path == "/v1/messages":
            return self._messages(request)
        if request.method == "GET" and request.path == "/v1/models":
            return self._list_models(request)
        if request.method == "GET" and request.path.startswith("/v1/models/"):
            model_id = request.path.removeprefix("/v1/models/")
            if model_id in self.models:
                return JSONResponse(self._model_info(model_id))
            return self._error(404, f"model: {model_id}")
        return self._error(404, "Not Found")

    def _check_headers(self, request: RecordedRequest) -> JSONResponse | None:
        key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if not key and authorization.lower().startswith("bearer "):
            key = authorization[len("bearer ") :].strip()
        if not key:
            return self._error(401, "x-api-key header is required")
        if self.expected_api_key is not None and key != self.expected_api_key:
            return self._error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "anthropic-version: header is required")
        return None

    def _messages(self, request: RecordedRequest) -> JSONResponse | StreamResponse:
        try:
            body = request.json
        except ValueError:
            return self._error(400, "There was an error parsing the body of your request")
        if not isinstance(body, dict):
            return self._error(400, "The request body is not a valid JSON object")
        problem = _validate_messages_body(body, request.headers["anthropic-version"])
        if problem is not None:
            return self._error(400, problem)
        if body["model"] not in self.models:
            return self._error(404, f"model: {body['model']}")
        model = self.model_reported or str(body["model"])
        if body.get("stream"):
            return StreamResponse(
                self._events(model),
                content_type="text/event-stream; charset=utf-8",
                headers={"request-id": self._new_id("req")},
            )
        tokens_in, tokens_out = self.usage
        return JSONResponse(
            {
                "id": self._new_id("msg"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": self.reply_text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": _usage(tokens_in, tokens_out),
            },
            headers={"request-id": self._new_id("req")},
        )

    def _events(self, model: str) -> list[bytes]:
        with self._lock:
            fault = self._stream_faults.popleft() if self._stream_faults else None
        tokens_in, tokens_out = self.usage
        events: list[tuple[str, Any]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": self._new_id("msg"),
                        "type": "message",
                        "role": "assistant",
                        "content": [],
                        "model": model,
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": _usage(tokens_in, 1),
                    },
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
        ]
        for sent, piece in enumerate(self.reply_chunks):
            if fault is not None and sent >= fault.after_deltas:
                break
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            )
        if fault is not None:
            # Anthropic ends the stream after an error event.
            error = {"type": "error", "error": {"type": fault.error_type, "message": fault.message}}
            events.append(("error", error))
            return list(self.sse(events))
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": tokens_out},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return list(self.sse(events))

    def _list_models(self, request: RecordedRequest) -> JSONResponse:
        try:
            limit = int(request.query.get("limit", ["20"])[0])
        except ValueError:
            return self._error(400, "limit: Input should be a valid integer")
        if not 1 <= limit <= _MAX_MODELS_LIMIT:
            return self._error(400, f"limit: must be between 1 and {_MAX_MODELS_LIMIT}")
        ids = list(self.models)
        if after := request.query.get("after_id", [None])[0]:
            ids = ids[ids.index(after) + 1 :] if after in ids else []
            page, has_more = ids[:limit], len(ids) > limit
        elif before := request.query.get("before_id", [None])[0]:
            ids = ids[: ids.index(before)] if before in ids else []
            page, has_more = ids[-limit:], len(ids) > limit
        else:
            page, has_more = ids[:limit], len(ids) > limit
        return JSONResponse(
            {
                "data": [self._model_info(model_id) for model_id in page],
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    # -- helpers ---------------------------------------------------------------------------

    def _model_info(self, model_id: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model_id,
            "display_name": model_id.removeprefix("claude-").replace("-", " ").title(),
            "created_at": "2025-09-29T00:00:00Z",
            "lifecycle": "active",
        }

    def _error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse(
            self.error_body(status, message),
            status=status,
            headers={"request-id": self._new_id("req")},
        )

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):08d}"


def _usage(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "input_tokens": tokens_in,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": tokens_out,
        "service_tier": "standard",
    }


def _validate_messages_body(body: dict[str, Any], version: str) -> str | None:
    """The API's own 400 message for a malformed Messages request, or None."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Field required"
    if max_tokens < 0:
        return "max_tokens: must be greater than or equal to 0"
    if version >= NO_SAMPLING_VERSION:
        for name in _SAMPLING_PARAMETERS:
            if name in body:
                return f"{name}: Extra inputs are not permitted"
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 1
    ):
        return "temperature: range: 0..1"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or list of text blocks"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{position}: Input should be a valid dictionary"
        role = message.get("role")
        if role == "system":
            return (
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in _ROLES:
            return f"messages.{position}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if isinstance(content, str):
            if not content.strip():
                return f"messages.{position}: text content blocks must be non-empty"
        elif not isinstance(content, list) or not content:
            return f"messages.{position}.content: Input should be a valid string or list"
    if messages[0]["role"] != "user":
        return 'messages: first message must use the "user" role'
    return None
