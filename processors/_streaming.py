"""What the processors share for streamed replies: per-conversation stream state.

A processor that rewrites streamed text (the content filter, the PII redactor)
must sometimes hold back the end of what has arrived, because the rest of a
word or placeholder may come in the next chunk. That held-back text belongs to
one reply of one conversation. Turns of a conversation are serialised by the
gateway, so the conversation id is a sufficient key while a reply streams.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from chatcore.messages import Chunk

__all__ = ["STREAM_STATES_CAPACITY", "StreamStates"]

S = TypeVar("S")

STREAM_STATES_CAPACITY = 1024
"""Replies streaming at once that a processor keeps state for; the oldest is dropped
beyond it (a reply whose backend failed never reaches AFTER_MESSAGE to clear its own)."""


class StreamStates(Generic[S]):
    """Per-conversation state of the reply being streamed, bounded in number.

    ``for_chunk`` starts fresh state on a reply's first chunk (``index == 0``):
    a retried or fallen-back attempt, or the next turn, never sees stale text.
    """

    __slots__ = ("_capacity", "_factory", "_states")

    def __init__(self, factory: Callable[[], S], *, capacity: int = STREAM_STATES_CAPACITY) -> None:
        self._factory = factory
        self._capacity = capacity
        self._states: OrderedDict[str, S] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def for_chunk(self, conversation_id: str, chunk: Chunk) -> S:
        """The state of this conversation's reply; new on its first chunk."""
        state = None if chunk.index == 0 else self._states.get(conversation_id)
        if state is None:
            state = self.start(conversation_id)
        return state

    def start(self, conversation_id: str) -> S:
        """Fresh state for a reply that starts now (replacing any left over)."""
        state = self._factory()
        self._states[conversation_id] = state
        self._states.move_to_end(conversation_id)
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)
        return state

    def get(self, conversation_id: str) -> S | None:
        return self._states.get(conversation_id)

    def pop(self, conversation_id: str) -> S | None:
        """Forget the conversation's reply state (the reply is complete) and return it."""
        return self._states.pop(conversation_id, None)
