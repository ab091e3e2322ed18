"""The backend step of a turn: stream the reply, with retries and fallback between backends."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .errors import BackendError, BackendRateLimited, BackendUnavailable, PluginError
from .hooks import HookRegistry, HookType
from .messages import REPLY_METADATA, Message, MessageStatus, Role

if TYPE_CHECKING:
    from ._plugins import PluginManager
    from ._turn import Turn
    from .messages import ChatContext

__all__ = ["TOKENS_ESTIMATED", "Generation"]

TOKENS_ESTIMATED = "tokens_estimated"
"""Reply metadata key, True when the backend reported no usage and the counts are estimates."""


class Generation:
    """Gets a turn's reply from its backend, retrying and falling back as configured."""

    def __init__(self, manager: PluginManager, hooks: HookRegistry) -> None:
        self.manager = manager
        self.hooks = hooks
        self.fallbacks = tuple(manager.config.router.fallbacks)

    def backend_model(self, backend: str) -> str | None:
        """The model configured for ``backend``, if any."""
        try:
            model = self.manager.backend_record(backend).plugin_config.config.get("model")
        except PluginError:
            return None
        return str(model) if model else None

    async def generate(self, turn: Turn, context: ChatContext, unhooked: ChatContext) -> None:
        """Stream the reply into ``turn`` and leave the reply message on it.

        A retryable error (unreachable, timeout, rate limit, server error) is retried
        with jittered exponential backoff (a server's Retry-After wins) while the
        backend's circuit allows; when retries are spent or the circuit is open, the
        turn moves to the next backend of ``[router] fallbacks``. Nothing is retried
        once text has streamed: what arrived is kept as a ``partial`` reply. Errors a
        person must fix (auth, bad request, unknown model) fail the turn at once and
        don't count toward the circuit.
        ``BEFORE_MODEL_LOAD`` runs again for each fallback, on the context as it was
        before the hooks (``unhooked``): a hook may treat backends differently (the PII
        redactor redacts for cloud backends only).
        """
        primary = context.backend
        candidates = [primary, *(b for b in self.fallbacks if b != primary)]
        attempt = _Attempt(context)
        failed: list[str] = []
        with turn.cancel_scope:
            for name in candidates:
                if name != primary:
                    model = turn.options.model or self.backend_model(name)
                    candidate = unhooked.replace(backend=name, model=model)
                    if self.hooks.has(HookType.BEFORE_MODEL_LOAD):
                        outcome = await self.hooks.run(
                            HookType.BEFORE_MODEL_LOAD, candidate, candidate
                        )
                        candidate = outcome.value
                    attempt = _Attempt(candidate)
                fall_back = await self._call_backend(turn, attempt)
                if attempt.error is None or not fall_back or turn.parts:
                    break
                failed.append(name)
        if turn.cancel_scope.cancel_called and attempt.error is None:
            status = MessageStatus.PARTIAL
        elif attempt.error is not None:
            status = MessageStatus.PARTIAL if turn.parts else MessageStatus.ERROR
        else:
            status = MessageStatus.COMPLETE
        # Features leave what the reply should carry (RAG's citations, say) here.
        metadata: dict[str, Any] = {**context.metadata.get(REPLY_METADATA, {})}
        metadata["backend"] = attempt.context.backend
        if failed and attempt.error is None:
            metadata["fallback_from"] = failed
        if attempt.error is not None:
            others = [b for b in failed if b != attempt.context.backend]
            if others:
                attempt.error.add_note(f"also failed: {', '.join(others)}")
            metadata["error"] = str(attempt.error)
            turn.error = attempt.error
        content = "".join(turn.parts)
        if status is not MessageStatus.ERROR and _estimate_usage(attempt, content):
            metadata[TOKENS_ESTIMATED] = True
        turn.context = attempt.context
        turn.reply = Message(
            role=Role.ASSISTANT,
            content=content,
            model=attempt.model,
            tokens_in=attempt.tokens_in,
            tokens_out=attempt.tokens_out,
            status=status,
            metadata=metadata,
        )

    async def _call_backend(self, turn: Turn, attempt: _Attempt) -> bool:
        """Call one backend, with its retries; return whether a failure may fall back."""
        context = attempt.context
        name = context.backend
        record = await self.manager.ensure_backend(name)
        stats, breaker = record.stats, record.breaker
        settings = self._retry_settings(name)
        retries = 0
        while True:
            if not breaker.allow():
                stats.skipped += 1
                attempt.error = attempt.error or BackendUnavailable(
                    f"backend {name!r} is failing (its circuit opened after "
                    f"{breaker.consecutive_failures} consecutive errors; next try in at most "
                    f"{breaker.reset_timeout_s:g} s); set default_backend or [router] fallbacks",
                    backend=name,
                )
                return True
            attempt.error = None
            started = time.perf_counter()
            try:
                await self._receive(turn, attempt)
            except BackendError as exc:
                attempt.error = exc
            except Exception as exc:
                attempt.error = _backend_error(name, exc)
            except BaseException:
                breaker.release()  # cancelled from outside: no verdict on the backend
                raise
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            error = attempt.error
            if error is None:
                if turn.cancel_scope.cancel_called:
                    # Stopped by the caller: says nothing about the backend's health,
                    # and its duration is the caller's patience, not the backend's latency.
                    breaker.release()
                    stats.calls += 1
                else:
                    breaker.record_success()
                    stats.record(elapsed_ms)
                return False
            if error.retryable:
                breaker.record_failure()
            else:
                # Auth, a malformed request, an unknown model: the backend answered, and
                # the next, corrected request must not find its circuit open.
                breaker.release()
            stats.record(elapsed_ms, str(error))
            if turn.parts or not error.retryable:
                return False
            if retries >= settings.max_retries:
                return True
            retries += 1
            await trio.sleep(settings.delay(retries, error))

    async def _receive(self, turn: Turn, attempt: _Attempt) -> None:
        """Stream one reply from the backend into the turn.

        Even a caller that wants the whole reply gets it through the stream: what
        arrived before a failure or a cancel is kept as a ``partial`` reply.
        """
        context = attempt.context
        provider = self.manager.get_backend_provider(context.backend)
        chunk_hooks = self.hooks.has(HookType.ON_STREAM_CHUNK)
        sent = 0
        async for received in provider.stream(context):
            chunk = received
            if chunk_hooks:
                chunk = (await self.hooks.run(HookType.ON_STREAM_CHUNK, chunk, context)).value
            if chunk.text:
                # Only text counts as "something streamed": a processor holding text
                # back (an empty chunk) must not stop a retry or a fallback.
                turn.parts.append(chunk.text)
            if chunk.usage is not None:
                attempt.tokens_in = chunk.usage.tokens_in
                attempt.tokens_out = chunk.usage.tokens_out
            if chunk.model:
                attempt.model = chunk.model
            if turn.chunks is not None:
                sent += 1
                try:
                    if sent == 1:
                        # The first piece goes out with a scheduling pass, so the
                        # caller sees it at once.
                        await turn.chunks.send(chunk)
                    else:
                        # Later pieces are buffered without one: the caller catches
                        # up whenever the backend waits for the network, which saves
                        # two task switches per piece.
                        try:
                            turn.chunks.send_nowait(chunk)
                        except trio.WouldBlock:
                            await turn.chunks.send(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The caller stopped listening: stop, keep what we have.
                    turn.cancel_scope.cancel()

    def _retry_settings(self, backend: str) -> _RetrySettings:
        config = self.manager.config.backends[backend]
        return _RetrySettings(
            config.max_retries, config.retry_backoff_seconds, config.retry_backoff_max_seconds
        )


@dataclass(eq=False)
class _Attempt:
    """What one backend produced for a turn: usage and model, or the error."""

    context: ChatContext
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    error: BackendError | None = None

    def __post_init__(self) -> None:
        self.model = self.context.model


def _estimate_usage(attempt: _Attempt, content: str) -> bool:
    """Fill in the token counts the backend did not report; return whether any was missing.

    Some servers send none (llama-cpp-python ignores ``stream_options.include_usage``);
    an estimate, marked as one, beats a blank in the status bar and in ``--json``.
    """
    if attempt.tokens_in is not None and attempt.tokens_out is not None:
        return False
    # The estimator lives with the memory feature, which budgets with it; imported
    # here, on this rare path, so a turn with reported usage never loads it.
    from features._tokens import context_tokens, estimate_tokens

    if attempt.tokens_in is None:
        attempt.tokens_in = context_tokens(attempt.context)
    if attempt.tokens_out is None:
        attempt.tokens_out = estimate_tokens(content)
    return True


@dataclass(frozen=True, slots=True)
class _RetrySettings:
    max_retries: int
    backoff_s: float
    backoff_max_s: float

    def delay(self, retry: int, error: BackendError) -> float:
        """Full jitter, doubling per retry; the server's Retry-After wins (both capped)."""
        if isinstance(error, BackendRateLimited) and error.retry_after is not None:
            return min(error.retry_after, self.backoff_max_s)
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (retry - 1)))


def _backend_error(name: str, exc: BaseException) -> BackendError:
    error = BackendError(f"backend {name!r} failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
