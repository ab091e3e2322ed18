"""The ``cache`` middleware (opt-in): an identical context gets the stored reply.

"Identical" means what the backend would be sent: backend, model, system
prompt, every message's role and content (the whole history, so the same
question later in a conversation misses), temperature and max_tokens. The
lookup runs as a ``BEFORE_MODEL_LOAD`` hook, i.e. after the processors and
features: a content filter still blocks, the PII redactor still notes the
user's message, and retrieved passages or memories are part of the key. A hit
answers the turn there (one chunk, ``cached: true`` and ``answered_by`` in the
reply's metadata) and the backend is not called. A miss is stored when the
reply comes back through ``handle``: only complete replies that the backend
itself produced (no error, no fallback, not answered by a plugin).

Entries live in the plugin's own key-value namespace, keyed by a SHA-256 of the
context, with an expiry (``ttl_seconds``) and a ring of ``max_entries`` slots:
when the ring is full the oldest entry is evicted.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from chatcore.hooks import HookType
from chatcore.messages import Message, MessageStatus
from chatcore.plugin import LOCAL_METADATA, BaseMiddleware, PluginMetadata, hook
from chatcore.result import PluginResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from chatcore.messages import ChatContext
    from chatcore.plugin import CallNext, KVNamespace

__all__ = ["CacheMiddleware", "CacheSettings", "context_key"]

DEFAULT_TTL_SECONDS = 3600.0
DEFAULT_MAX_ENTRIES = 1000
NOT_CACHED = frozenset({"answered_by", "error", "fallback_from", "rate_limited"})
"""Reply metadata that means "not a plain backend answer": such replies are not stored."""

_wall_clock: Callable[[], float] = time.time
"""Expiry is wall-clock time: entries outlive the process (tests replace this)."""


class CacheSettings(BaseModel):
    """The ``[plugins.config]`` table of ``cache``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    ttl_seconds: float = Field(default=DEFAULT_TTL_SECONDS, gt=0)
    """How long a stored reply may be served, in seconds."""
    max_entries: int = Field(default=DEFAULT_MAX_ENTRIES, ge=1, le=1_000_000)
    """Replies kept; storing one more evicts the oldest."""


def context_key(context: ChatContext) -> str | None:
    """SHA-256 of what makes two contexts identical for the backend.

    Plugin-local metadata (``LOCAL_METADATA``) of the context and of each message is
    part of the key: a plugin that changed the text it sent keeps there what its
    change stands for (a PII redactor's placeholder map), so two conversations whose
    texts read the same after such a change, but stand for different things, miss.
    """
    messages: list[list[Any]] = []
    for message in context.messages:
        row: list[Any] = [str(message.role), message.content]
        kept = message.metadata.get(LOCAL_METADATA)
        if kept:
            row.append(kept)
        messages.append(row)
    material = [
        context.backend,
        context.model,
        context.system,
        messages,
        context.temperature,
        context.max_tokens,
        context.metadata.get(LOCAL_METADATA),
    ]
    encoded = json.dumps(
        material, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=_plain
    )
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


class CacheMiddleware(BaseMiddleware):
    """Serves a stored reply for a context seen before, within its TTL."""

    metadata: ClassVar[PluginMetadata] = PluginMetadata(
        name="cache",
        version="1.0.0",
        description="Identical context -> stored reply (SQLite, TTL, bounded); opt-in",
        tags=("performance",),
    )
    settings_model: ClassVar[type[BaseModel]] = CacheSettings
    settings: CacheSettings

    def __init__(self) -> None:
        super().__init__()
        self.settings = CacheSettings()
        self._pending: dict[str, str] = {}
        """Conversation → key of its turn that missed (turns of one conversation run in order)."""
        self.hits = 0
        self.misses = 0
        self.stored = 0

    @property
    def _kv(self) -> KVNamespace | None:
        return None if self.host is None else self.host.kv

    async def _do_initialize(self) -> None:
        kv = self._kv
        if kv is None:
            return
        ring = kv.get("ring") or {}
        size = int(ring.get("size", self.settings.max_entries))
        if size > self.settings.max_entries:
            # max_entries went down: the slots past the new end would never be reused.
            for slot in range(self.settings.max_entries, size):
                self._evict(kv, slot)
        kv.set(
            "ring",
            {
                "next": int(ring.get("next", 0)) % self.settings.max_entries,
                "size": self.settings.max_entries,
            },
        )

    async def health(self) -> Mapping[str, Any]:
        return {"ok": self._kv is not None, "hits": self.hits, "misses": self.misses}

    # -- lookup (after processors and features) --

    @hook(HookType.BEFORE_MODEL_LOAD)
    async def lookup(self, payload: ChatContext, context: ChatContext) -> PluginResult[Any] | None:
        """Answer from the cache, or remember the key so ``handle`` can store the reply."""
        kv = self._kv
        if kv is None:
            return None
        key = context_key(payload)
        if key is None:
            return None
        entry = kv.get(f"entry:{key}")
        if isinstance(entry, dict) and float(entry.get("expires_at", 0)) > _wall_clock():
            self.hits += 1
            self._pending.pop(payload.conversation_id, None)
            metadata = {
                **entry.get("metadata", {}),
                "cached": True,
                "cached_at": _iso(entry.get("created_at")),
                "answered_by": self.name,
            }
            reply = Message.assistant(
                str(entry["content"]), model=entry.get("model"), metadata=metadata
            )
            return PluginResult.short_circuit(reply, payload)
        if entry is not None:
            kv.delete(f"entry:{key}")
        self.misses += 1
        self._pending[payload.conversation_id] = key
        return None

    # -- store (the reply as the user got it) --

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        self._pending.pop(context.conversation_id, None)
        try:
            reply = await call_next(context)
        finally:
            key = self._pending.pop(context.conversation_id, None)
        if key is not None and self._kv is not None and _cacheable(reply):
            self._store(self._kv, key, reply)
        return reply

    def _store(self, kv: KVNamespace, key: str, reply: Message) -> None:
        ring = kv.get("ring") or {}
        slot = int(ring.get("next", 0)) % self.settings.max_entries
        self._evict(kv, slot)
        now = _wall_clock()
        kv.set(
            f"entry:{key}",
            {
                "content": reply.content,
                "model": reply.model,
                # The reply's own notes travel with it: RAG's citations, and what
                # plugins keep locally about it (needed to share the text later).
                "metadata": {k: v for k, v in reply.metadata.items() if k not in NOT_CACHED},
                "created_at": now,
                "expires_at": now + self.settings.ttl_seconds,
                "slot": slot,
            },
        )
        kv.set(f"slot:{slot}", key)
        kv.set(
            "ring",
            {"next": (slot + 1) % self.settings.max_entries, "size": self.settings.max_entries},
        )
        self.stored += 1

    @staticmethod
    def _evict(kv: KVNamespace, slot: int) -> None:
        old = kv.get(f"slot:{slot}")
        if old is None:
            return
        entry = kv.get(f"entry:{old}")
        # The key may have been stored again since, in another slot: that entry stays.
        if isinstance(entry, dict) and entry.get("slot") == slot:
            kv.delete(f"entry:{old}")
        kv.delete(f"slot:{slot}")


def _iso(timestamp: Any) -> str | None:
    if not isinstance(timestamp, int | float):
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _cacheable(reply: Message) -> bool:
    return (
        reply.status is MessageStatus.COMPLETE
        and bool(reply.content)
        and not any(key in reply.metadata for key in NOT_CACHED)
    )
