"""A fake of Ollama's REST API, as the official ``ollama`` client speaks it.

Routes: ``POST /api/chat`` (NDJSON stream by default, one JSON object with
``"stream": false``), ``GET /api/tags`` and ``POST /api/embed``. Field names
and error bodies (``{"error": "..."}``) follow the real server, so the client's
pydantic models parse the answers the way they would parse Ollama's. A model
that is not in ``models`` gets Ollama's own 404, so "model not pulled" is
tested without queueing a fault.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._server import FakeAPIServer, JSONResponse, RecordedRequest, StreamResponse

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DEFAULT_MODELS", "DEFAULT_REPLY_CHUNKS", "FakeOllama"]

DEFAULT_REPLY_CHUNKS = ("Hello", " from", " the fake", " Ollama", ".")
DEFAULT_MODELS = ("llama3.2:latest", "nomic-embed-text:latest")
DEFAULT_USAGE = (12, 5)
DEFAULT_EMBEDDING_DIMS = 8

# Real Ollama reports nanosecond durations; fixed values keep answers deterministic.
_DURATIONS = {
    "total_duration": 1_250_000_000,
    "load_duration": 15_000_000,
    "prompt_eval_duration": 200_000_000,
    "eval_duration": 1_000_000_000,
}


class FakeOllama(FakeAPIServer):
    """Ollama on a loopback port.

    Args:
        reply_chunks: the pieces the assistant reply streams in (joined for ``"stream": false``).
        model_reported: the ``model`` field of chat answers; by default the name requested,
            as Ollama does.
        usage: ``(prompt_eval_count, eval_count)`` of the final chat answer.
        models: the pulled models (``/api/tags``); other names get a 404.
        stream_error: when set, a streamed reply ends with ``{"error": ...}`` instead of the
            final ``done`` line, as Ollama does when the model runner fails mid-reply.
    """

    def __init__(
        self,
        *,
        reply_chunks: list[str] | None = None,
        model_reported: str | None = None,
        usage: tuple[int, int] = DEFAULT_USAGE,
        models: list[str] | None = None,
        stream_error: str | None = None,
        embedding_dims: int = DEFAULT_EMBEDDING_DIMS,
    ) -> None:
        super().__init__()
        self.reply_chunks = list(DEFAULT_REPLY_CHUNKS if reply_chunks is None else reply_chunks)
        self.model_reported = model_reported
        self.usage = usage
        self.models = list(DEFAULT_MODELS if models is None else models)
        self.stream_error = stream_error
        self.embedding_dims = embedding_dims

    @property
    def reply(self) -> str:
        return "".join(self.reply_chunks)

    # -- FakeAPIServer ------------------------------------------------------------------

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    def handle(self, request: RecordedRequest) -> JSONResponse | StreamResponse:
        route = (request.method, request.path)
        if route == ("POST", "/api/chat"):
            return self._chat(request)
        if route == ("GET", "/api/tags"):
            return JSONResponse({"models": [self._model_entry(name) for name in self.models]})
        if route == ("POST", "/api/embed"):
            return self._embed(request)
        return self._error(404, "404 page not found")

    # -- routes -------------------------------------------------------------------------

    def _chat(self, request: RecordedRequest) -> JSONResponse | StreamResponse:
        body, problem = self._parse(request)
        if problem is not None:
            return problem
        messages = body.get("messages")
        if messages is not None and not (
            isinstance(messages, list)
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            return self._error(400, "invalid message format")
        model = self.model_reported or body["model"]
        # Ollama streams unless the request says "stream": false.
        if body.get("stream", True) is False:
            return JSONResponse(
                {
                    **self._head(model),
                    "message": {"role": "assistant", "content": self.reply},
                    **self._final_fields(),
                }
            )
        return StreamResponse(self._chat_lines(model), content_type="application/x-ndjson")

    def _chat_lines(self, model: str) -> Iterator[bytes]:
        pieces = [
            {**self._head(model), "message": {"role": "assistant", "content": piece}, "done": False}
            for piece in self.reply_chunks
        ]
        if self.stream_error is not None:
            last: dict[str, Any] = {"error": self.stream_error}
        else:
            last = {
                **self._head(model),
                "message": {"role": "assistant", "content": ""},
                **self._final_fields(),
            }
        return self.ndjson([*pieces, last])

    def _embed(self, request: RecordedRequest) -> JSONResponse:
        body, problem = self._parse(request)
        if problem is not None:
            return problem
        raw = body.get("input", [])
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return self._error(400, "invalid input type")
        return JSONResponse(
            {
                "model": body["model"],
                "embeddings": [self.embedding_for(text) for text in texts],
                "total_duration": _DURATIONS["total_duration"],
                "load_duration": _DURATIONS["load_duration"],
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            }
        )

    # -- helpers ------------------------------------------------------------------------

    def embedding_for(self, text: str) -> list[float]:
        """The vector the fake returns for ``text``: deterministic and unit length."""
        digest = hashlib.sha256(text.encode()).digest()
        raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(self.embedding_dims)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        return [x / norm for x in raw]

    def _parse(self, request: RecordedRequest) -> tuple[dict[str, Any], JSONResponse | None]:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError as exc:
            return {}, self._error(400, f"invalid JSON: {exc}")
        if not isinstance(body, dict):
            return {}, self._error(400, "invalid request body")
        name = body.get("model")
        if not name:
            return body, self._error(400, "model is required")
        if not self._has_model(str(name)):
            return body, self._error(404, f'model "{name}" not found, try pulling it first')
        return body, None

    def _has_model(self, name: str) -> bool:
        # Ollama resolves a bare name to its ":latest" tag.
        return name in self.models or (":" not in name and f"{name}:latest" in self.models)

    def _error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse(self.error_body(status, message), status=status)

    @staticmethod
    def _head(model: str) -> dict[str, Any]:
        return {"model": model, "created_at": datetime.now(UTC).isoformat()}

    def _final_fields(self) -> dict[str, Any]:
        prompt_tokens, reply_tokens = self.usage
        return {
            "done": True,
            "done_reason": "stop",
            "total_duration": _DURATIONS["total_duration"],
            "load_duration": _DURATIONS["load_duration"],
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": _DURATIONS["prompt_eval_duration"],
            "eval_count": reply_tokens,
            "eval_duration": _DURATIONS["eval_duration"],
        }

    @staticmethod
    def _model_entry(name: str) -> dict[str, Any]:
        family = name.split(":", 1)[0].rstrip("0123456789.") or name
        digest = hashlib.sha256(name.encode()).hexdigest()
        return {
            "name": name,
            "model": name,
            # Ollama's timestamps carry nanoseconds and a local offset.
            "modified_at": "2025-01-15T09:30:00.123456789+01:00",
            "size": 1_000_000_000 + int(digest[:6], 16),
            "digest": digest,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": family,
                "families": [family],
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }
