"""The ``rate_limit`` middleware: token buckets per conversation and for the whole engine.

A turn takes one token from its conversation's bucket and one from the global
bucket. When either is empty the turn is answered at once with a refusal that
says the limit and when to try again; the backend is not called, and no token
is taken from the other bucket. Buckets refill continuously at ``rate`` per
minute up to ``burst``. Time is Trio's clock, so tests drive it with MockClock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import trio
from pydantic import BaseModel, ConfigDict, Field

from chatcore.messages import Message
from chatcore.plugin import BaseMiddleware, PluginMetadata

if TYPE_CHECKING:
    from collections.abc import Mapping

    from chatcore.messages import ChatContext
    from chatcore.plugin import CallNext

__all__ = ["RateLimitMiddleware", "RateLimitSettings", "TokenBucket"]

MAX_TRACKED_CONVERSATIONS = 10_000
"""Conversation buckets kept; the least recently used beyond this are forgotten
(a forgotten bucket comes back full, which only errs on the generous side)."""


class RateLimitSettings(BaseModel):
    """The ``[plugins.config]`` table of ``rate_limit``; a rate of 0 turns that limit off."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    per_conversation_per_minute: float = Field(default=20.0, ge=0)
    """Messages per minute one conversation may send, on average."""
    per_conversation_burst: int = Field(default=5, ge=1)
    """Messages one conversation may send at once before the rate applies."""
    global_per_minute: float = Field(default=120.0, ge=0)
    """Messages per minute all conversations together may send, on average."""
    global_burst: int = Field(default=20, ge=1)
    """Messages all conversations together may send at once."""


@dataclass(slots=True)
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate_per_s``; times are Trio clock seconds."""

    capacity: float
    rate_per_s: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated = now

    def wait_s(self) -> float:
        """Seconds until one token is there (0 if one is)."""
        missing = 1.0 - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate_per_s

    @property
    def full(self) -> bool:
        return self.tokens >= self.capacity


class RateLimitMiddleware(BaseMiddleware):
    """Refuses turns over the configured rates, without calling the backend."""

    metadata: ClassVar[PluginMetadata] = PluginMetadata(
        name="rate_limit",
        version="1.0.0",
        description="Token-bucket rate limit per conversation and global, with a clear refusal",
        tags=("limits",),
    )
    settings_model: ClassVar[type[BaseModel]] = RateLimitSettings
    settings: RateLimitSettings

    def __init__(self) -> None:
        super().__init__()
        self.settings = RateLimitSettings()
        self._global: TokenBucket | None = None
        self._conversations: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0

    async def _do_initialize(self) -> None:
        self._conversations.clear()
        self._global = self._new_bucket(
            self.settings.global_per_minute, self.settings.global_burst, trio.current_time()
        )

    async def health(self) -> Mapping[str, Any]:
        return {"ok": True, "refused": self.refused, "conversations": len(self._conversations)}

    @staticmethod
    def _new_bucket(per_minute: float, burst: int, now: float) -> TokenBucket | None:
        if per_minute <= 0:
            return None
        return TokenBucket(float(burst), per_minute / 60.0, float(burst), now)

    def _bucket_for(self, conversation_id: str, now: float) -> TokenBucket | None:
        settings = self.settings
        bucket = self._conversations.get(conversation_id)
        if bucket is None:
            bucket = self._new_bucket(
                settings.per_conversation_per_minute, settings.per_conversation_burst, now
            )
            if bucket is None:
                return None
            self._conversations[conversation_id] = bucket
            if len(self._conversations) > MAX_TRACKED_CONVERSATIONS:
                self._conversations.popitem(last=False)
        else:
            self._conversations.move_to_end(conversation_id)
        return bucket

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        now = trio.current_time()
        conversation = self._bucket_for(context.conversation_id, now)
        checks = [
            ("conversation", conversation, self.settings.per_conversation_per_minute),
            ("global", self._global, self.settings.global_per_minute),
        ]
        for scope, bucket, per_minute in checks:
            if bucket is None:
                continue
            bucket.refill(now)
            if bucket.tokens < 1.0:
                return self._refusal(scope, per_minute, bucket.wait_s())
        for _, bucket, _ in checks:
            if bucket is not None:
                bucket.tokens -= 1.0
        return await call_next(context)

    def _refusal(self, scope: str, per_minute: float, wait_s: float) -> Message:
        self.refused += 1
        seconds = max(1, math.ceil(wait_s))
        where = "in this conversation" if scope == "conversation" else "in total"
        return Message.assistant(
            f"Rate limit: at most {per_minute:g} messages per minute {where}; "
            f"try again in {seconds} s.",
            metadata={
                "answered_by": self.name,
                "rate_limited": {"scope": scope, "retry_after_s": seconds},
            },
        )
