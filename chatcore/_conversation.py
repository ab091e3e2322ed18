"""A conversation of a running engine, and the chunks of one streamed reply.

``Engine.conversation()`` makes these; the turns they send go through the engine's
pipeline, and what is stored about them is read through the engine's store.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING

import trio

from ._asyncio import asyncio_stream, bridged
from .errors import ConversationNotFound
from .export import export_format, read_transcript
from .messages import Chunk
from .pipeline import TurnOptions
from .store import TurnRecord

if TYPE_CHECKING:
    from types import TracebackType

    from ._engine import Engine
    from .export import ExportFormat
    from .messages import Message
    from .pipeline import ConversationState, Turn
    from .store import ConversationSummary

__all__ = ["REPLY_CHANNEL_SIZE", "Conversation", "ReplyStream"]

REPLY_CHANNEL_SIZE = 64
"""Chunks buffered per streamed reply before the backend waits for the reader."""


class Conversation:
    """A conversation of an engine. Turns sent to one conversation run in order."""

    def __init__(
        self,
        engine: Engine,
        state: ConversationState,
        *,
        backend: str | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> None:
        self._engine = engine
        self._state = state
        self.backend = backend
        self.model = model
        self.system = system

    @property
    def id(self) -> str:
        return self._state.id

    def __repr__(self) -> str:
        return f"<Conversation {self.id}>"

    def _options(
        self,
        backend: str | None,
        model: str | None,
        system: str | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> TurnOptions:
        # What the turn names wins, then what this object was opened with, then what
        # the conversation is on (stored with it), then the config.
        state = self._state
        named = backend or self.backend
        chosen = named or state.backend or self._engine.config.default_backend
        # A stored model belongs to the backend it was used with.
        stored_model = state.model if chosen == state.backend else None
        chosen_model = model or self.model or stored_model
        chosen_system = next(
            (s for s in (system, self.system, state.system) if s is not None), None
        )
        return TurnOptions(
            backend=chosen,
            model=chosen_model,
            system=chosen_system,
            temperature=temperature,
            max_tokens=max_tokens,
        )

    @bridged
    async def send(
        self,
        text: str,
        *,
        backend: str | None = None,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        client_id: str | None = None,
    ) -> Message:
        """Send ``text`` and return the stored assistant reply.

        ``backend``, ``model`` and ``system`` become the conversation's: later turns are
        sent with them until a turn names others (``system=""`` removes the prompt).

        ``client_id`` is an idempotency key (unique in the database: a UUID per turn):
        if a turn with it is stored, its stored reply (complete or partial) is returned
        and nothing runs again, so a send whose answer was lost can be retried safely.
        A retried first turn from a new conversation moves this object to the
        conversation the key was stored in.

        Raises:
            InvalidInput: empty, too long, or NUL bytes (nothing is written); a
                ``client_id`` already used in another conversation.
            BackendError: the backend failed; what was said is stored all the same
                (a retry of that turn's key raises it again).
        """
        options = self._options(backend, model, system, temperature, max_tokens)
        turn = self._engine._new_turn(self._state, text, options, None, client_id)
        await self._engine._submit(turn)
        try:
            return await self._engine._await(turn)
        except BaseException:
            # The caller gave up (cancelled, Ctrl-C): stop generating, keep it as partial.
            if not turn.finished.is_set():
                turn.cancel()
            raise

    def stream(
        self,
        text: str,
        *,
        backend: str | None = None,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        client_id: str | None = None,
    ) -> ReplyStream:
        """Send ``text`` and iterate the reply's ``Chunk``s as they arrive.

        Use it as ``async for chunk in conversation.stream(text)``, or inside
        ``async with`` to make leaving early stop the reply (kept as ``partial``).
        ``client_id`` is an idempotency key as for ``send``: a stored turn's reply
        arrives as one chunk.
        """
        under_asyncio = asyncio_stream(
            self,
            lambda: self.stream(
                text,
                backend=backend,
                model=model,
                system=system,
                temperature=temperature,
                max_tokens=max_tokens,
                client_id=client_id,
            ),
        )
        if under_asyncio is not None:
            return under_asyncio
        options = self._options(backend, model, system, temperature, max_tokens)
        send, receive = trio.open_memory_channel[Chunk](REPLY_CHANNEL_SIZE)
        turn = self._engine._new_turn(self._state, text, options, send, client_id)
        return ReplyStream(self._engine, turn, receive)

    @bridged
    async def messages(self) -> list[Message]:
        """Every stored message of this conversation, oldest first."""
        store = self._engine.store
        return await trio.to_thread.run_sync(store.get_messages, self.id)

    @bridged
    async def summary(self) -> ConversationSummary:
        """This conversation as stored: title, created and updated times, backend, model,
        message count.

        Raises:
            ConversationNotFound: nothing is stored yet (no turn has ended) or it was deleted.
        """
        summary = await trio.to_thread.run_sync(self._engine.store.get_conversation, self.id)
        if summary is None:
            raise ConversationNotFound(self.id)
        return summary

    @bridged
    async def rename(self, title: str) -> ConversationSummary:
        """Give the conversation a new title (whitespace collapsed) and return its summary.

        Raises:
            InvalidInput: the title is blank.
            ConversationNotFound: nothing is stored yet or it was deleted.
        """
        store = self._engine.store

        def rename() -> ConversationSummary | None:
            store.set_title(self.id, title)
            return store.get_conversation(self.id)

        summary = await trio.to_thread.run_sync(rename)
        if summary is None:  # deleted between the two calls
            raise ConversationNotFound(self.id)
        return summary

    @bridged
    async def configure(
        self,
        *,
        system: str | None = None,
        backend: str | None = None,
        model: str | None = None,
    ) -> None:
        """Change what later turns are sent with, without sending one.

        None leaves a setting as it is; ``system=""`` removes the prompt; a new
        backend without a model uses that backend's configured model. Stored (and
        replicated) at once when the conversation is, else with its first turn.

        Raises:
            UnknownBackend: ``backend`` is not configured.
        """
        if backend is not None:
            self._engine._check_backend(backend)
        self._state.settle(backend, model, system)
        store = self._engine.store
        record = TurnRecord(self.id, (), backend=backend, model=model, system=system)

        def store_if_stored() -> None:
            if store.get_conversation(self.id) is not None:
                store.write_turns([record])

        await trio.to_thread.run_sync(store_if_stored)

    @bridged
    async def delete(self) -> None:
        """Delete the conversation and its messages (replicated as a deletion).

        Raises:
            ConversationNotFound: nothing is stored yet or it was already deleted.
        """
        deleted = await trio.to_thread.run_sync(self._engine.store.delete_conversation, self.id)
        # The history cached for the next turn goes too: the id now names nothing.
        self._engine._conversations.pop(self.id, None)
        if not deleted:
            raise ConversationNotFound(self.id)

    @bridged
    async def export(self, format: ExportFormat = "markdown") -> str:
        """The stored conversation as Markdown or JSON text (the format of ``chatcore.export``).

        Args:
            format: ``"markdown"`` (for reading) or ``"json"`` (for tools).

        Raises:
            ValueError: ``format`` is neither.
            ConversationNotFound: nothing is stored yet or it was deleted.
        """
        chosen = export_format(format)
        transcript = await trio.to_thread.run_sync(read_transcript, self._engine.store, self.id)
        return transcript.render(chosen)


class ReplyStream:
    """The chunks of one reply; ``message`` holds the stored reply once it is done."""

    def __init__(
        self, engine: Engine, turn: Turn, receive: trio.MemoryReceiveChannel[Chunk]
    ) -> None:
        self._engine = engine
        self._turn = turn
        self._receive = receive
        self._submitted = False
        # A stream dropped without aclose() (a `break` out of a bare `async for`)
        # must not leave its backend blocked on a full channel: stop the reply.
        weakref.finalize(self, _drop_reply, trio.lowlevel.current_trio_token(), turn, receive)

    @property
    def conversation_id(self) -> str:
        return self._turn.conversation.id

    @property
    def message(self) -> Message | None:
        reply = self._turn.reply if self._turn.finished.is_set() else None
        if reply is None:
            return None
        return reply.replace(conversation_id=reply.conversation_id or self.conversation_id)

    def cancel(self) -> None:
        """Stop the reply; what arrived so far is stored as ``partial``."""
        self._turn.cancel()

    @property
    def cancelled(self) -> bool:
        return self._turn.cancel_scope.cancel_called

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> Chunk:
        if not self._submitted:
            self._submitted = True
            await self._engine._submit(self._turn)
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        await self._engine._await(self._turn)
        raise StopAsyncIteration

    async def __aenter__(self) -> ReplyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the reply if it is still running and wait until it is stored."""
        if not self._submitted:
            self._receive.close()
            return
        if not self._turn.finished.is_set():
            self._turn.cancel()
        self._receive.close()
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(self._engine.config.runtime.shutdown_grace_seconds),
        ):
            await self._turn.finished.wait()
        if self._turn.finished.is_set():
            self._engine._in_flight.discard(self._turn)


def _drop_reply(
    token: trio.lowlevel.TrioToken, turn: Turn, receive: trio.MemoryReceiveChannel[Chunk]
) -> None:
    def stop() -> None:
        receive.close()
        turn.cancel()

    # The garbage collector may run this on any thread; Trio state is touched only
    # from the run's own thread.
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(stop)
