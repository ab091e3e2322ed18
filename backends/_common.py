"""What the HTTP backends share: API keys from the environment and error mapping.

Every backend turns its client's exceptions into the small hierarchy of
``chatcore.errors`` with a message a person can act on: the backend's name, the
URL, the model, and which environment variable holds the key. The pipeline then
decides about retries, the circuit and fallback from the error's type alone.
Secrets never appear in these messages.
"""

from __future__ import annotations

import email.utils
import os
import re
import time
from typing import TYPE_CHECKING, Any

from chatcore.errors import (
    BackendAuthError,
    BackendBadRequest,
    BackendError,
    BackendRateLimited,
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from chatcore.messages import ChatContext

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "api_key_from",
    "checked_embeddings",
    "connection_error",
    "context_size_advice",
    "is_context_length_error",
    "missing_key_error",
    "one_line",
    "retry_after_seconds",
    "route_not_found",
    "stalled_error",
    "status_error",
    "timeout_error",
]

DEFAULT_MAX_TOKENS = 1024
"""Used where an API requires max_tokens (Anthropic) and none is configured."""


def one_line(text: object) -> str:
    """A server's text on one line: its line breaks and runs of blanks become one space.

    Error messages are one line (a log line, the CLI's ``error:`` line); LiteLLM's
    429 and pydantic's validation errors come in several.
    """
    return " ".join(str(text).split())


def api_key_from(config: Mapping[str, Any], default_env: str) -> tuple[str | None, str]:
    """The API key (``api_key`` in config, else the environment) and the env var's name.

    ``api_key_env`` in config names another variable than the provider's usual one.
    """
    env_name = str(config.get("api_key_env") or default_env)
    key = config.get("api_key") or os.environ.get(env_name) or None
    return (str(key) if key else None), env_name


def missing_key_error(backend: str, env_name: str) -> BackendAuthError:
    return BackendAuthError(
        f"{backend}: no API key: set ${env_name} (or api_key in [backends.{backend}])",
        backend=backend,
    )


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After`` secs or date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


_CONTEXT_LENGTH = re.compile(
    r"context (length|size|window)|context_length|maximum context|prompt is too long"
    r"|too many tokens|exceeds? the (available )?context",
    re.IGNORECASE,
)
"""How OpenAI, vLLM, llama.cpp, LiteLLM and Anthropic word "the prompt is over the window"."""


def is_context_length_error(detail: str) -> bool:
    return _CONTEXT_LENGTH.search(detail) is not None


def context_size_advice(context: ChatContext | None) -> str:
    """How big the request was and what to do about it, for a context-window error."""
    if context is None:
        return "start a new conversation or enable the memory plugin to fit the model's window"
    # Imported here: only an error that needs the estimate pays for the tokenizer rules.
    from features._tokens import context_tokens

    count = len(context.messages)
    plural = "" if count == 1 else "s"
    return (
        f"this conversation sends {count} message{plural}, about {context_tokens(context)} "
        "tokens: start a new conversation or enable the memory plugin "
        '([[plugins]] plugin = "memory", max_context_tokens = the window) to fit it'
    )


def status_error(
    status: int,
    detail: str,
    *,
    backend: str,
    url: str,
    model: str | None,
    key_env: str | None = None,
    retry_after: float | None = None,
    context: ChatContext | None = None,
) -> BackendError:
    """Map an HTTP error status to the error a person can act on.

    ``context`` is the request's, when there was one: a refusal for the context
    window then says how big the conversation is.
    """
    detail = one_line(detail) or f"HTTP {status}"
    if status in (401, 403):
        hint = f": check ${key_env}" if key_env else ""
        return BackendAuthError(
            f"{backend}: {url} refused the credentials ({status}: {detail}){hint}",
            backend=backend,
        )
    if status == 404:
        return ModelNotFound(
            f"{backend}: model {model!r} not found at {url} ({detail}); "
            f"set model in [backends.{backend}] (or the turn's model=) to one it serves",
            backend=backend,
        )
    if status == 429:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return BackendRateLimited(
            f"{backend}: rate limited by {url} ({detail}){wait}",
            backend=backend,
            retry_after=retry_after,
        )
    if status in (400, 413, 422):
        advice = f"; {context_size_advice(context)}" if is_context_length_error(detail) else ""
        return BackendBadRequest(
            f"{backend}: {url} refused the request ({status}: {detail}){advice}", backend=backend
        )
    return BackendUnavailable(f"{backend}: {url} answered {status}: {detail}", backend=backend)


def route_not_found(
    backend: str, url: str, api: str, detail: str, advice: str
) -> BackendUnavailable:
    """A 404 for the route, not the model: ``base_url`` points beside the API.

    ``advice`` says which ``base_url`` to try. Unavailable, as the ollama backend
    reports a wrong host: every request there fails, so fallbacks take over.
    """
    detail = one_line(detail) or "HTTP 404"
    return BackendUnavailable(
        f"{backend}: no {api} API at {url} (404: {detail}); check base_url in "
        f"[backends.{backend}]: {advice}",
        backend=backend,
    )


def connection_error(backend: str, url: str, reason: object, hint: str = "") -> BackendUnavailable:
    tail = f"; {hint}" if hint else ""
    return BackendUnavailable(
        f"{backend}: cannot reach {url} ({one_line(reason)}){tail}", backend=backend
    )


def timeout_error(backend: str, url: str, timeout_s: float) -> BackendTimeout:
    return BackendTimeout(
        f"{backend}: no answer from {url} within {timeout_s:g} s "
        f"(timeout_seconds in [backends.{backend}])",
        backend=backend,
    )


def stalled_error(backend: str, url: str, chunks: int, timeout_s: float) -> BackendTimeout:
    """A stream that went quiet after ``chunks`` pieces: the server answered, then stalled."""
    return BackendTimeout(
        f"{backend}: the stream from {url} stalled after {chunks} chunks (nothing more "
        f"within {timeout_s:g} s; timeout_seconds in [backends.{backend}])",
        backend=backend,
    )


def checked_embeddings(
    vectors: Sequence[Any], texts: Sequence[str], *, backend: str, url: str, model: str, key: str
) -> list[list[float]]:
    """The vectors as floats, once they are one flat vector per text, all of one length.

    A server that runs its model without pooling (llama.cpp's, by default for some
    models) answers each text with one vector per token; ``key`` names the config key
    of the embedding model, for the message.
    """

    def wrong(problem: str) -> BackendError:
        return BackendError(
            f"{backend}: the embedding model {model!r} at {url} returned {problem}",
            backend=backend,
        )

    if len(vectors) != len(texts):
        raise wrong(f"{len(vectors)} vectors for {len(texts)} texts")
    result: list[list[float]] = []
    for number, vector in enumerate(vectors, 1):
        if isinstance(vector, list | tuple) and vector and isinstance(vector[0], list | tuple):
            raise wrong(
                f"one vector per token ({len(vector)} vectors for text {number}), not one per "
                f"text: it runs without pooling; set {key} in [backends.{backend}] to an "
                "embedding model, or start llama.cpp's server with --pooling mean"
            )
        if not isinstance(vector, list | tuple) or not vector:
            raise wrong(f"no vector for text {number} ({one_line(repr(vector))[:80]})")
        try:
            floats = [float(x) for x in vector]
        except (TypeError, ValueError):
            raise wrong(f"a vector of something other than numbers for text {number}") from None
        if result and len(floats) != len(result[0]):
            raise wrong(
                f"vectors of different lengths ({len(result[0])} and {len(floats)} numbers)"
            )
        result.append(floats)
    return result
