"""The request pipeline: one actor per stage, connected by bounded memory channels.

A ``Turn`` (one user message and its reply) flows

    gateway → middleware → processors → features → backend → after → store

Each stage is a ``StageActor`` that receives turns from its inbox and handles
each one in a task of its own (bounded by a ``CapacityLimiter``), so many
conversations move through a stage at once. Turns of one conversation are
ordered by the gateway: a turn starts only when the previous turn of its
conversation has finished. Chunks of a streamed reply go straight from the
backend stage to the caller's per-turn channel.

Plugin code runs only through the hook registry, so a failing plugin costs a
counted failure and never the turn.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import trio

from .errors import (
    BackendError,
    BackendRateLimited,
    BackendUnavailable,
    EngineError,
    PluginError,
)
from .hooks import HookRegistry, HookType
from .messages import REPLY_METADATA, ChatContext, Chunk, Message, MessageStatus, Role
from .plugins import CallNext, PluginManager, PluginType
from .result import PluginResult

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .plugins import BaseFeatureExtension, BaseMiddleware, LoadedPlugin
    from .store import Store, StoreWriter

__all__ = [
    "STAGE_NAMES",
    "ConversationState",
    "Pipeline",
    "StageActor",
    "Turn",
    "TurnOptions",
]

ABANDON_WRITE_TIMEOUT_S = 5.0
"""How long a stopping worker may take to store the turn it held."""

STAGE_NAMES = ("gateway", "middleware", "processors", "features", "backend", "after")


@dataclass(eq=False)
class ConversationState:
    """What the engine keeps in memory about one conversation."""

    id: str
    history: tuple[Message, ...] | None = None
    """What the backend sees of earlier turns, oldest first: stored messages with
    content that aren't errors. Loaded on the first turn, then extended in place of
    rereading, so a long conversation doesn't cost a rescan per turn."""
    last_turn: Turn | None = None

    def extend(self, messages: tuple[Message, ...]) -> None:
        if self.history is not None:
            self.history = (*self.history, *filter(_sendable, messages))


def _sendable(message: Message) -> bool:
    return bool(message.content) and message.status is not _ERROR


_ERROR = MessageStatus.ERROR


@dataclass(frozen=True, slots=True)
class TurnOptions:
    backend: str
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(eq=False)
class Turn:
    """One user message on its way through the pipeline, and what became of it."""

    conversation: ConversationState
    text: str
    options: TurnOptions
    chunks: trio.MemorySendChannel[Chunk] | None = None
    """The caller's channel for streamed pieces; None when the caller wants the whole reply."""
    previous: Turn | None = None
    context: ChatContext | None = None
    user_message: Message | None = None
    reply: Message | None = None
    error: BaseException | None = None
    short_circuited_by: str | None = None
    parts: list[str] = field(default_factory=list)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    persisted: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)
    sent_downstream: bool = False
    in_middleware: bool = False
    """A middleware task waits for ``persisted`` and completes the turn itself."""
    completed: bool = False
    started_at: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        """Stop generating; what was streamed so far is kept as a ``partial`` reply."""
        self.cancel_scope.cancel()

    on_finished: Callable[[Turn], None] | None = None
    """Called once when the turn finishes (the engine forgets it then)."""

    def finish(self, error: BaseException | None = None) -> None:
        if error is not None and self.error is None:
            self.error = error
        if self.finished.is_set():
            return
        if self.chunks is not None:
            self.chunks.close()
        self.finished.set()
        if self.on_finished is not None:
            self.on_finished(self)

    def salvage_reply(self, reason: str) -> Message:
        """The reply to store for a turn the pipeline could not finish.

        It is kept on the turn, so storing it twice writes the same message id
        (an upsert) rather than a second reply.
        """
        if self.reply is None:
            self.reply = Message(
                role=Role.ASSISTANT,
                content="".join(self.parts),
                status=MessageStatus.PARTIAL if self.parts else MessageStatus.ERROR,
                metadata={"error": reason},
            )
        return self.reply


class StageActor:
    """A pipeline stage: a pool of worker tasks, each handling one turn at a time.

    The pool starts with one worker and grows, up to ``concurrency``, whenever a
    turn arrives and no worker is idle; so a stage costs one task switch per turn
    rather than a task spawn, and many conversations still move through it at once.
    """

    def __init__(
        self,
        name: str,
        handler: Callable[[Turn], Awaitable[None]],
        on_error: Callable[[Turn, Exception], Awaitable[None]],
        on_abandon: Callable[[Turn, BaseException], Awaitable[None]],
        *,
        capacity: int,
        concurrency: int,
    ) -> None:
        self.name = name
        self._handler = handler
        self._on_error = on_error
        self._on_abandon = on_abandon
        self.send_channel, self._inbox = trio.open_memory_channel[Turn](capacity)
        self._max_workers = concurrency
        self._workers = 0
        self._idle = 0
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._workers = self._idle = 0
            self._add_worker()
            task_status.started()

    def _add_worker(self) -> None:
        assert self._nursery is not None
        self._workers += 1
        self._nursery.start_soon(self._work)

    async def _work(self) -> None:
        while True:
            self._idle += 1
            try:
                turn = await self._inbox.receive()
            finally:
                self._idle -= 1
            if not self._idle and self._workers < self._max_workers:
                self._add_worker()
            try:
                try:
                    await self._handler(turn)
                except Exception as exc:
                    try:
                        await self._on_error(turn, exc)
                    except Exception as second:
                        # Failing while failing (a fail_fast hook in the error path) is
                        # still this turn's failure, not the stage's: keep the stage up.
                        turn.finish(second)
            except BaseException as exc:
                # This worker is going away (a crash here, a restart, shutdown): the
                # turn it holds must still end, with what the user said stored.
                with trio.CancelScope(shield=True):
                    await self._on_abandon(turn, exc)
                raise

    def statistics(self) -> tuple[int, int, int]:
        """(queued turns, workers, idle workers)."""
        return (self._inbox.statistics().current_buffer_used, self._workers, self._idle)


class Pipeline:
    """Builds the stage actors and holds what they share."""

    def __init__(
        self,
        manager: PluginManager,
        hooks: HookRegistry,
        store: Store,
        writer: StoreWriter,
        *,
        default_system: str | None,
        capacity: int,
        concurrency: int,
    ) -> None:
        self.manager = manager
        self.hooks = hooks
        self.store = store
        self.writer = writer
        self.default_system = default_system
        self.fallbacks = tuple(manager.config.router.fallbacks)
        self._reader_lock = trio.Lock()

        def stage(name: str, handler: Callable[[Turn], Awaitable[None]]) -> StageActor:
            return StageActor(
                name,
                handler,
                self._stage_failed,
                self._abandon,
                capacity=capacity,
                concurrency=concurrency,
            )

        self.gateway = stage("gateway", self._gateway)
        self.middleware = stage("middleware", self._middleware)
        self.processors = stage("processors", self._processors)
        self.features = stage("features", self._features)
        self.backend = stage("backend", self._backend)
        self.after = stage("after", self._after)
        self.stages = (
            self.gateway,
            self.middleware,
            self.processors,
            self.features,
            self.backend,
            self.after,
        )

    # -- stages ---------------------------------------------------------------------------

    async def _gateway(self, turn: Turn) -> None:
        if turn.previous is not None:
            await turn.previous.finished.wait()
            turn.previous = None  # let finished turns be collected
        conversation = turn.conversation
        if conversation.history is None:
            async with self._reader_lock:
                stored = await trio.to_thread.run_sync(self.store.get_messages, conversation.id)
            conversation.history = tuple(filter(_sendable, stored))
        opts = turn.options
        turn.user_message = Message(role=Role.USER, content=turn.text)
        context = ChatContext(
            conversation_id=conversation.id,
            messages=(*conversation.history, turn.user_message),
            backend=opts.backend,
            model=opts.model or self._backend_model(opts.backend),
            temperature=opts.temperature,
            max_tokens=opts.max_tokens,
            stream=turn.chunks is not None,
            system=opts.system or self.default_system,
        )
        turn.context = context
        if self.hooks.has(HookType.ON_REQUEST_START):
            outcome = await self.hooks.run(HookType.ON_REQUEST_START, context, context)
            turn.context = outcome.value
            if outcome.reply is not None:
                await self._answer_directly(turn, outcome.reply, outcome.short_circuited_by)
                return
        # The gateway hands the turn on and is done with it: whoever stores the
        # reply completes the turn, so no task waits idle for each turn in flight.
        if self.manager.active(PluginType.MIDDLEWARE):
            turn.in_middleware = True
            await self.middleware.send_channel.send(turn)
        else:
            await self._to_processors(turn)

    # A stage with nothing to do for a turn is stepped over rather than visited:
    # each hop is a task switch, and most turns need only some of the stages.

    async def _to_processors(self, turn: Turn) -> None:
        if self.hooks.has(HookType.BEFORE_MESSAGE):
            await self.processors.send_channel.send(turn)
        else:
            await self._to_features(turn)

    async def _to_features(self, turn: Turn) -> None:
        if self.manager.active(PluginType.FEATURE_EXTENSION):
            await self.features.send_channel.send(turn)
        else:
            await self.backend.send_channel.send(turn)

    async def _complete(self, turn: Turn) -> None:
        """Run ON_REQUEST_COMPLETE and hand the result to the caller (once)."""
        if turn.completed:
            return
        turn.completed = True
        try:
            if turn.reply is not None and self.hooks.has(HookType.ON_REQUEST_COMPLETE):
                assert turn.context is not None
                await self.hooks.run(HookType.ON_REQUEST_COMPLETE, turn.reply, turn.context)
        finally:
            turn.finish()

    async def _middleware(self, turn: Turn) -> None:
        chain = self.manager.active(PluginType.MIDDLEWARE)
        assert turn.context is not None

        async def innermost(context: ChatContext) -> Message:
            if turn.sent_downstream:
                raise PluginError(
                    "a middleware called call_next twice; a turn goes down the pipeline once"
                )
            turn.sent_downstream = True
            turn.context = context
            await self._to_processors(turn)
            await turn.persisted.wait()
            assert turn.reply is not None
            return turn.reply

        call: CallNext = innermost
        for record in reversed(chain):
            call = self._wrap_middleware(record, call, turn)
        reply = await call(turn.context)
        turn.in_middleware = False
        if not turn.persisted.is_set():
            # A middleware answered without calling call_next (a cache hit, a refusal).
            await self._answer_directly(turn, reply, turn.short_circuited_by)
        else:
            await self._complete(turn)

    def _wrap_middleware(self, record: LoadedPlugin, inner: CallNext, turn: Turn) -> CallNext:
        registration = record.registration
        assert registration is not None
        handle = cast("BaseMiddleware", record.instance).handle

        async def call(context: ChatContext) -> Message:
            reached_inner = False

            async def call_next(ctx: ChatContext) -> Message:
                nonlocal reached_inner
                reached_inner = True
                return await inner(ctx)

            async def attempt() -> PluginResult[Message]:
                return PluginResult.ok(await handle(context, call_next))

            result = await self.hooks.guarded(registration, attempt, context=context)
            if result is not None and result.success and result.data is not None:
                if not reached_inner and turn.short_circuited_by is None:
                    turn.short_circuited_by = record.name
                return result.data
            # The middleware failed, timed out or is paused: the turn goes on without it.
            if reached_inner and turn.persisted.is_set():
                assert turn.reply is not None
                return turn.reply
            return await inner(context)

        return call

    async def _processors(self, turn: Turn) -> None:
        assert turn.context is not None and turn.user_message is not None
        if self.hooks.has(HookType.BEFORE_MESSAGE):
            outcome = await self.manager.execute_message_processors(turn.user_message, turn.context)
            if outcome.value is not turn.user_message:
                turn.user_message = outcome.value
                turn.context = turn.context.replace(
                    messages=(*turn.context.messages[:-1], outcome.value)
                )
            if outcome.reply is not None:
                await self._answer_directly(turn, outcome.reply, outcome.short_circuited_by)
                return
        await self._to_features(turn)

    async def _features(self, turn: Turn) -> None:
        assert turn.context is not None
        for record in self.manager.active(PluginType.FEATURE_EXTENSION):
            assert record.registration is not None
            result = await self.hooks.guarded(
                record.registration,
                functools.partial(
                    cast("BaseFeatureExtension", record.instance).enrich, turn.context
                ),
                context=turn.context,
            )
            if result is None or not result.success:
                continue
            if result.data is not None:
                turn.context = result.data
            if result.reply is not None:
                await self._answer_directly(turn, result.reply, record.name)
                return
        await self.backend.send_channel.send(turn)

    async def _backend(self, turn: Turn) -> None:
        assert turn.context is not None
        unhooked = turn.context
        if self.hooks.has(HookType.BEFORE_MODEL_LOAD):
            outcome = await self.hooks.run(HookType.BEFORE_MODEL_LOAD, turn.context, turn.context)
            turn.context = outcome.value
            if outcome.reply is not None:
                await self._answer_directly(turn, outcome.reply, outcome.short_circuited_by)
                return
        await self._generate(turn, turn.context, unhooked)
        if self.hooks.has(HookType.AFTER_MESSAGE):
            await self.after.send_channel.send(turn)
        else:
            await self._persist(turn)

    async def _generate(self, turn: Turn, context: ChatContext, unhooked: ChatContext) -> None:
        """Get the reply from the turn's backend, retrying and falling back as configured.

        A retryable error (unreachable, timeout, rate limit, server error) is retried
        with jittered exponential backoff (a server's Retry-After wins) while the
        backend's circuit allows; when retries are spent or the circuit is open, the
        turn moves to the next backend of ``[router] fallbacks``. Nothing is retried
        once text has streamed: what arrived is kept as a ``partial`` reply. Errors a
        person must fix (auth, bad request, unknown model) fail the turn at once.
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
                    model = turn.options.model or self._backend_model(name)
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
        turn.context = attempt.context
        turn.reply = Message(
            role=Role.ASSISTANT,
            content="".join(turn.parts),
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
                    f"{breaker.reset_timeout_s:g} s); switch backend with --backend",
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
            breaker.record_failure()
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

    async def _after(self, turn: Turn) -> None:
        assert turn.context is not None and turn.reply is not None
        if turn.reply.status is not MessageStatus.ERROR and self.hooks.has(HookType.AFTER_MESSAGE):
            outcome = await self.hooks.run(HookType.AFTER_MESSAGE, turn.reply, turn.context)
            turn.reply = outcome.value
        await self._persist(turn)

    # -- shared steps ---------------------------------------------------------------------

    async def _answer_directly(self, turn: Turn, reply: Message, by: str | None) -> None:
        """A plugin answered the turn: the backend is skipped and the answer stored as the reply."""
        assert turn.context is not None
        turn.short_circuited_by = by
        turn.reply = reply.replace(
            metadata={**reply.metadata, "answered_by": by or "plugin"},
        )
        if turn.chunks is not None and reply.content:
            chunk = Chunk(text=reply.content, index=0, done=True)
            # If nobody is listening any more, the reply is still stored.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await turn.chunks.send(chunk)
        await self._persist(turn)

    async def _persist(self, turn: Turn) -> None:
        from .store import TurnRecord

        assert turn.user_message is not None and turn.reply is not None
        context = turn.context
        record = TurnRecord(
            conversation_id=turn.conversation.id,
            messages=(turn.user_message, turn.reply),
            backend=context.backend if context else turn.options.backend,
            model=turn.reply.model or (context.model if context else None),
            system=context.system if context else None,
        )
        try:
            await self.writer.write([record])
        except Exception as exc:
            turn.error = turn.error or exc
        else:
            turn.conversation.extend(record.messages)
        turn.persisted.set()
        if not turn.in_middleware:
            await self._complete(turn)

    async def _stage_failed(self, turn: Turn, exc: Exception) -> None:
        """A stage raised outside plugin isolation: fail this turn, keep what the user said."""
        turn.error = turn.error or exc
        try:
            if not turn.persisted.is_set() and turn.user_message is not None:
                turn.salvage_reply(str(exc))
                turn.in_middleware = False
                await self._persist(turn)
        finally:
            turn.persisted.set()
            turn.completed = True
            turn.finish()

    async def _abandon(self, turn: Turn, exc: BaseException) -> None:
        """A worker stopped mid-turn: store what there is, directly, and end the turn."""
        if turn.finished.is_set():
            return
        if turn.error is None:
            turn.error = EngineError(f"the pipeline stopped during this turn: {exc!r}")
        try:
            if not turn.persisted.is_set() and turn.user_message is not None:
                from .store import TurnRecord

                reply = turn.salvage_reply(str(turn.error))
                record = TurnRecord(turn.conversation.id, (turn.user_message, reply))
                with trio.move_on_after(ABANDON_WRITE_TIMEOUT_S):
                    await self.writer.write_direct([record])
                    turn.persisted.set()
        except Exception as write_error:
            turn.error.add_note(f"and storing it failed: {write_error!r}")
        finally:
            turn.finish()

    def _backend_model(self, backend: str) -> str | None:
        try:
            model = self.manager.backend_record(backend).plugin_config.config.get("model")
        except PluginError:
            return None
        return str(model) if model else None


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
