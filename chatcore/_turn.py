"""One turn (a user message and its reply) on its way through the pipeline.

A turn has one owner at a time. The stage holding it either hands it on to the
next stage or, once the reply is stored, ends it: by completing it, or, when a
middleware task is waiting for the reply (``Turn.hand_back``), by handing it
back to that task, which then completes it. Nobody else touches it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from .messages import Message, MessageStatus, Role

if TYPE_CHECKING:
    from collections.abc import Callable

    from .messages import ChatContext, Chunk

__all__ = ["CLIENT_ID", "ConversationState", "Turn", "TurnOptions", "sendable", "stored_failure"]

CLIENT_ID = "client_id"
"""Metadata key of a turn's idempotency key, on its user message and its reply."""


def sendable(message: Message) -> bool:
    """Whether a stored message belongs in what the backend sees: it has text and isn't an error."""
    return bool(message.content) and message.status is not MessageStatus.ERROR


def stored_failure(reply: Message) -> Message:
    """An ``error`` reply as it is stored: its reason is its text, so the history says why.

    The reason also leaves the machine with the reply (the outbox), so the
    environment's secret values are masked in it (``<ENV:OPENAI_API_KEY>``), on top of
    the backends scrubbing their own keys. Any other reply is returned as it is.
    """
    reason = reply.metadata.get("error")
    if reply.status is not MessageStatus.ERROR or not reason:
        return reply
    from .middleware._redact import Redactor  # only on failure: it reads the environment

    masked = Redactor().secrets_only(str(reason))
    if reply.content and masked == reason:
        return reply
    return reply.replace(
        content=reply.content or masked, metadata={**reply.metadata, "error": masked}
    )


@dataclass(eq=False)
class ConversationState:
    """What the engine keeps in memory about one conversation."""

    id: str
    history: tuple[Message, ...] | None = None
    """What the backend sees of earlier turns, oldest first: stored messages with
    content that aren't errors. Loaded on the first turn, then extended in place of
    rereading, so a long conversation doesn't cost a rescan per turn."""
    last_turn: Turn | None = None
    backend: str | None = None
    """The backend the conversation is on (stored with it): later turns use it."""
    model: str | None = None
    """The model it is on; None: the backend's configured one."""
    system: str | None = None
    """Its system prompt, sent on every turn; None: the config's ``system_prompt``, and
    ``""`` none at all."""
    unsaved: bool = False
    """Made new by this engine and nothing stored yet: a retried first turn
    (``client_id``) may move it to the conversation its key was stored in."""

    def extend(self, messages: tuple[Message, ...]) -> None:
        if self.history is not None:
            self.history = (*self.history, *filter(sendable, messages))

    def settle(self, backend: str | None, model: str | None, system: str | None) -> None:
        """Take a stored turn's settings, by the store's rule: None keeps what there was,
        and a new backend brings its own model (None: the backend's configured one)."""
        if backend is not None and backend != self.backend:
            self.backend, self.model = backend, model
        elif model is not None:
            self.model = model
        if system is not None:
            self.system = system


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
    """Set once the reply (or what could be saved of the turn) is stored."""
    finished: trio.Event = field(default_factory=trio.Event)
    hand_back: Callable[[], None] | None = None
    """Set while a middleware task waits for the reply: the stage that stores it calls
    this instead of completing the turn, and the middleware task completes it."""
    started_at: float = field(default_factory=time.perf_counter)
    on_finished: Callable[[Turn], None] | None = None
    """Called once when the turn finishes (the engine forgets it then)."""
    client_id: str | None = None
    """The caller's idempotency key: stored in both messages' metadata."""

    def keyed(self, message: Message) -> Message:
        """``message`` as it is stored: with the turn's idempotency key, if it has one."""
        if self.client_id is None or message.metadata.get(CLIENT_ID) == self.client_id:
            return message
        return message.replace(metadata={**message.metadata, CLIENT_ID: self.client_id})

    def cancel(self) -> None:
        """Stop generating; what was streamed so far is kept as a ``partial`` reply."""
        self.cancel_scope.cancel()

    def finish(self, error: BaseException | None = None) -> None:
        """Wake the caller: the turn is over (idempotent; the first error wins)."""
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
