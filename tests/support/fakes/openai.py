"""A loopback fake of the OpenAI REST API, as the official ``openai`` client speaks it.

Point ``openai.AsyncOpenAI(base_url=f"{fake.url}/v1")`` at it. It serves chat
completions (JSON or server-sent events, with the usage chunk when
``stream_options.include_usage`` is asked for), the model list and embeddings
(float or base64, as the client asks), and answers errors with OpenAI's own
error envelope so the client raises the exception it raises against the real
service.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import struct
from typing import Any

from ._server import FakeAPIServer, JSONResponse, RecordedRequest, StreamResponse

__all__ = ["CREATED", "DEFAULT_MODELS", "DEFAULT_REPLY_CHUNKS", "FakeOpenAI"]

CREATED = 1_700_000_000
"""Fixed ``created`` timestamp: every answer is deterministic."""
DEFAULT_REPLY_CHUNKS = ("Hello", " from", " the", " fake", " OpenAI", ".")
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
SYSTEM_FINGERPRINT = "fp_fake0001"

# (type, code) of the error envelope per status, as api.openai.com fills them in.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}


def _masked(key: str) -> str:
    # OpenAI echoes a wrong key with all but its ends starred out.
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


class FakeOpenAI(FakeAPIServer):
    """OpenAI's chat completions, models and embeddings endpoints under ``/v1``.

    Knobs (plain attributes, change them between requests):
    ``reply_chunks`` (the streamed text pieces; their concatenation is the
    non-streamed reply), ``model_reported`` (the model named in answers; None
    echoes the request's), ``usage`` (``(prompt_tokens, completion_tokens)``,
    or None for a server that reports none), ``models`` (what ``/v1/models``
    lists; other models get 404 ``model_not_found``), ``expected_api_key`` (when
    set, any other bearer token gets 401), ``leading_role_chunk`` (start the
    stream with an empty-content role delta as api.openai.com does),
    ``stream_error`` (``(after_n_pieces, message)``: an error event mid-stream),
    ``embedding_dims``, ``pooling`` (False answers each text with one vector per
    word, as llama.cpp's server does for a model it runs without pooling),
    ``finish_stream`` (False ends a stream cleanly after the
    pieces, with no ``finish_reason``, usage or ``[DONE]``), ``context_window``
    (tokens, counted as words of the messages: a longer prompt gets 400 unstreamed
    and, streamed, a 200 whose body holds only llama.cpp's ``error:`` line, which no
    SSE client reads, before the server drops the connection: what llama.cpp's
    server did before it answered 400 there too), ``stream_usage`` (False ignores
    ``stream_options.include_usage``, as llama-cpp-python's server does: a stream
    then carries no usage at all); plus the base's faults.
    """

    def __init__(
        self,
        *,
        reply_chunks: tuple[str, ...] = DEFAULT_REPLY_CHUNKS,
        model_reported: str | None = None,
        usage: tuple[int, int] | None = (11, 7),
        models: tuple[str, ...] = DEFAULT_MODELS,
        expected_api_key: str | None = None,
        leading_role_chunk: bool = False,
        embedding_dims: int = 4,
    ) -> None:
        super().__init__()
        self.reply_chunks = reply_chunks
        self.model_reported = model_reported
        self.usage = usage
        self.models = models
        self.expected_api_key = expected_api_key
        self.leading_role_chunk = leading_role_chunk
        self.stream_error: tuple[int, str] | None = None
        self.embedding_dims = embedding_dims
        self.context_window: int | None = None
        self.finish_stream = True
        self.pooling = True
        self.stream_usage = True
        self._ids = itertools.count(1)

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    @property
    def reply_text(self) -> str:
        return "".join(self.reply_chunks)

    # -- FakeAPIServer -------------------------------------------------------------------

    def error_body(self, status: int, message: str) -> Any:
        kind, code = _ERROR_KINDS.get(status, ("invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def handle(self, request: RecordedRequest) -> JSONResponse | StreamResponse:
        refused = self._check_auth(request)
        if refused is not None:
            return refused
        route = (request.method, request.path)
        if route == ("POST", "/v1/chat/completions"):
            return self._chat(request)
        if route == ("GET", "/v1/models"):
            return JSONResponse(
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": CREATED, "owned_by": "system"}
                        for m in self.models
                    ],
                }
            )
        if route == ("POST", "/v1/embeddings"):
            return self._embeddings(request)
        return self._error(404, f"Invalid URL ({request.method} {request.path})", code=None)

    # -- endpoints -----------------------------------------------------------------------

    def _check_auth(self, request: RecordedRequest) -> JSONResponse | None:
        if self.expected_api_key is None:
            return None
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[len("Bearer ") :].strip():
            return self._error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code=None,
            )
        given = header[len("Bearer ") :].strip()
        if given != self.expected_api_key:
            return self._error(
                401,
                f"Incorrect API key provided: {_masked(given)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def _unknown_model(self, body: Any) -> JSONResponse | None:
        if not isinstance(body, dict) or not body.get("model"):
            return self._error(400, "you must provide a model parameter", code=None, param="model")
        if body["model"] not in self.models:
            return self._error(
                404,
                f"The model `{body['model']}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return None

    def _chat(self, request: RecordedRequest) -> JSONResponse | StreamResponse:
        body = request.json
        refused = self._unknown_model(body)
        if refused is not None:
            return refused
        if not body.get("messages"):
            return self._error(
                400,
                "[] is too short - 'messages'",
                code="empty_array",
                param="messages",
            )
        too_long = self._over_context_window(body)
        if too_long is not None:
            return too_long
        model = self.model_reported or str(body["model"])
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        usage = self._usage_body()
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": self.reply_text,
                                "refusal": None,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                }
            )
        options = body.get("stream_options") or {}
        include_usage = self.stream_usage and bool(options.get("include_usage"))
        return StreamResponse(
            self.sse(
                (None, event)
                for event in self._stream_events(completion_id, model, include_usage, usage)
            ),
            content_type="text/event-stream; charset=utf-8",
        )

    def _stream_events(
        self, completion_id: str, model: str, include_usage: bool, usage: Any
    ) -> list[Any]:
        def chunk(choices: list[Any], **extra: Any) -> dict[str, Any]:
            event = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": choices,
            }
            # With include_usage every chunk carries "usage": null until the last one.
            if include_usage:
                event["usage"] = None
            event.update(extra)
            return event

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        events: list[Any] = []
        if self.leading_role_chunk:
            events.append(chunk(choice({"role": "assistant", "content": "", "refusal": None})))
        for i, piece in enumerate(self.reply_chunks):
            if self.stream_error is not None and i == self.stream_error[0]:
                events.append(
                    {
                        "error": {
                            "message": self.stream_error[1],
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    }
                )
                return events
            delta: dict[str, Any] = {"content": piece}
            if i == 0 and not self.leading_role_chunk:
                delta = {"role": "assistant", "content": piece}
            events.append(chunk(choice(delta)))
        if not self.finish_stream:
            return events
        events.append(chunk(choice({}, "stop")))
        if include_usage and usage is not None:
            events.append(chunk([], usage=usage))
        events.append("[DONE]")
        return events

    def _embeddings(self, request: RecordedRequest) -> JSONResponse:
        body = request.json
        refused = self._unknown_model(body)
        if refused is not None:
            return refused
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return self._error(400, "'$.input' is invalid.", code=None, param="input")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = self.embedding_for(str(text))
            encoded: Any = vector
            if not self.pooling:
                encoded = [self.embedding_for(word) for word in str(text).split() or [""]]
            elif as_base64:
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(str(t).split()) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": self.model_reported or body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _over_context_window(self, body: dict[str, Any]) -> JSONResponse | StreamResponse | None:
        if self.context_window is None:
            return None
        tokens = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        if tokens <= self.context_window:
            return None
        if not body.get("stream"):
            return self._error(
                400,
                f"This model's maximum context length is {self.context_window} tokens. "
                f"However, your messages resulted in {tokens} tokens. "
                "Please reduce the length of the messages.",
                code="context_length_exceeded",
                param="messages",
            )
        error = {
            "code": 500,
            "message": "the request exceeds the available context size. "
            "try increasing the context size or enable context shift",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": tokens,
            "n_ctx": self.context_window,
        }
        return StreamResponse(
            [f"error: {json.dumps(error)}\n\n".encode()],
            content_type="text/event-stream",
            close_after=True,
        )

    # -- helpers -------------------------------------------------------------------------

    def embedding_for(self, text: str) -> list[float]:
        """The vector this fake returns for ``text``: k/256 values, exact in float32."""
        digest = hashlib.sha256(text.encode()).digest()
        return [b / 256 for b in digest[: self.embedding_dims]]

    def _usage_body(self) -> dict[str, int] | None:
        if self.usage is None:
            return None
        prompt, completion = self.usage
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _error(
        self, status: int, message: str, *, code: str | None, param: str | None = None
    ) -> JSONResponse:
        body = self.error_body(status, message)
        body["error"].update(code=code, param=param)
        return JSONResponse(body, status=status)
