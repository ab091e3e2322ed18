"""The request pipeline: one actor per stage, connected by bounded memory channels.

A ``Turn`` (one user message and its reply) flows

    gateway → middleware → processors → features → backend → after → store

Each stage is a ``StageActor`` that receives turns from its inbox and handles
each one in a worker of its own, so many conversations move through a stage at
once. Turns of one conversation are ordered by the gateway: a turn starts only
when the previous turn of its conversation has finished. Chunks of a streamed
reply go straight from the backend stage to the caller's per-turn channel.

A turn has one owner at a time (see ``_turn``): each stage hands it on, and the
stage that stores the reply ends it. Plugin code runs only through the hook
registry, so a failing plugin costs a counted failure and never the turn.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, cast

import trio

from ._generation import Generation
from ._plugins import CallNext, PluginManager, PluginType
from ._stage import StageActor
from ._turn import ConversationState, Turn, TurnOptions, sendable, stored_failure
from .errors import EngineError, PluginError
from .hooks import HookRegistry, HookType
from .messages import ChatContext, Chunk, Message, MessageStatus, Role

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._plugins import BaseFeatureExtension, BaseMiddleware, LoadedPlugin
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
        self.generation = Generation(manager, hooks)
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
            conversation.history = tuple(filter(sendable, stored))
        opts = turn.options
        turn.user_message = Message(role=Role.USER, content=turn.text)
        context = ChatContext(
            conversation_id=conversation.id,
            messages=(*conversation.history, turn.user_message),
            backend=opts.backend,
            model=opts.model or self.generation.backend_model(opts.backend),
            temperature=opts.temperature,
            max_tokens=opts.max_tokens,
            stream=turn.chunks is not None,
            # The conversation's own prompt; "" means none, not even the config's.
            system=(opts.system if opts.system is not None else self.default_system) or None,
        )
        turn.context = context
        if self.hooks.has(HookType.ON_REQUEST_START):
            outcome = await self.hooks.run(HookType.ON_REQUEST_START, context, context)
            turn.context = outcome.value
            if outcome.reply is not None:
                await self._answer_directly(turn, outcome.reply, outcome.short_circuited_by)
                return
        # The gateway hands the turn on and is done with it: whoever stores the
        # reply ends the turn, so no task waits idle for each turn in flight.
        if self.manager.active(PluginType.MIDDLEWARE):
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

    async def _end(self, turn: Turn) -> None:
        """The reply is stored: hand the turn back to the middleware task waiting for it
        (which completes it once the onion returns), or complete it here."""
        hand_back, turn.hand_back = turn.hand_back, None
        if hand_back is not None:
            hand_back()
        else:
            await self._complete(turn)

    async def _complete(self, turn: Turn) -> None:
        """The owner's last step: ON_REQUEST_COMPLETE, then the caller is woken."""
        try:
            if turn.reply is not None and self.hooks.has(HookType.ON_REQUEST_COMPLETE):
                assert turn.context is not None
                await self.hooks.run(HookType.ON_REQUEST_COMPLETE, turn.reply, turn.context)
        finally:
            turn.finish()

    async def _middleware(self, turn: Turn) -> None:
        chain = self.manager.active(PluginType.MIDDLEWARE)
        assert turn.context is not None
        sent = False

        async def innermost(context: ChatContext) -> Message:
            nonlocal sent
            if sent:
                raise PluginError(
                    "a middleware called call_next twice; a turn goes down the pipeline once"
                )
            sent = True
            turn.context = context
            stored = trio.Event()
            turn.hand_back = stored.set
            await self._to_processors(turn)
            await stored.wait()
            assert turn.reply is not None
            return turn.reply

        call: CallNext = innermost
        for record in reversed(chain):
            call = self._wrap_middleware(record, call, turn)
        reply = await call(turn.context)
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

            async def attempt() -> Message:
                return await handle(context, call_next)

            result = await self.hooks.guarded(
                registration, attempt, context=context, expected=Message
            )
            if result is not None and result.success and result.data is not None:
                if not reached_inner and turn.short_circuited_by is None:
                    turn.short_circuited_by = record.name
                reply: Message = result.data
                return reply
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
                expected=ChatContext,
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
        await self.generation.generate(turn, turn.context, unhooked)
        if self.hooks.has(HookType.AFTER_MESSAGE):
            await self.after.send_channel.send(turn)
        else:
            await self._persist(turn)

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
        """Store the user message and the reply, then end the turn (``_end``)."""
        from .store import TurnRecord

        assert turn.user_message is not None and turn.reply is not None
        turn.reply = turn.keyed(stored_failure(turn.reply))
        turn.user_message = turn.keyed(turn.user_message)
        opts = turn.options
        # The conversation stays on what the turn asked for: a fallback answers one
        # turn, and the system prompt stored is the conversation's own, not the config's
        # default nor what features added to it (RAG's passages).
        backend: str | None = opts.backend
        model = opts.model or self.generation.backend_model(opts.backend)
        if model is None and turn.reply.metadata.get("backend") == opts.backend:
            model = turn.reply.model
        if turn.reply.status is MessageStatus.ERROR:
            # Nothing answered: a mistyped --model or a backend that is down must not
            # become what the conversation is on.
            model = None
            if turn.conversation.backend is not None:
                backend = None
        record = TurnRecord(
            conversation_id=turn.conversation.id,
            messages=(turn.user_message, turn.reply),
            backend=backend,
            model=model,
            system=opts.system,
        )
        try:
            await self.writer.write([record])
        except Exception as exc:
            turn.error = turn.error or exc
        else:
            turn.conversation.extend(record.messages)
            turn.conversation.settle(record.backend, record.model, record.system)
            turn.conversation.unsaved = False
        turn.persisted.set()
        await self._end(turn)

    async def _stage_failed(self, turn: Turn, exc: Exception) -> None:
        """A stage raised outside plugin isolation: fail this turn, keep what the user said."""
        turn.error = turn.error or exc
        if turn.persisted.is_set():
            # Stored already: what failed came after (completing it). End it here.
            turn.finish()
        elif turn.user_message is not None:
            turn.salvage_reply(str(exc))
            await self._persist(turn)
        else:
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

                reply = turn.reply = turn.keyed(stored_failure(turn.salvage_reply(str(turn.error))))
                turn.user_message = turn.keyed(turn.user_message)
                record = TurnRecord(turn.conversation.id, (turn.user_message, reply))
                with trio.move_on_after(ABANDON_WRITE_TIMEOUT_S):
                    await self.writer.write_direct([record])
                    turn.persisted.set()
        except Exception as write_error:
            turn.error.add_note(f"and storing it failed: {write_error!r}")
        finally:
            # A middleware task waiting for this reply must not wait forever.
            hand_back, turn.hand_back = turn.hand_back, None
            if hand_back is not None:
                hand_back()
            turn.finish()
