"""Domain model: messages, conversation contexts and streamed chunks.

Everything here is immutable; "changing" a value means building a new one with
``replace`` or ``with_message``, so a context can be shared between concurrent
stages without locks.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Self

__all__ = [
    "LOCAL_METADATA",
    "REPLY_METADATA",
    "ChatContext",
    "Chunk",
    "Citation",
    "Message",
    "MessageStatus",
    "Role",
    "SharedRecord",
    "Usage",
    "citation_lines",
    "new_id",
    "parse_citations",
    "utcnow",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"
    ERROR = "error"


# The module-level generator is reseeded after fork, so forked processes differ.
_random_bits = random.getrandbits
_last_ms = 0
_seq = 0


def new_id() -> str:
    """Return a UUIDv7 string: time-ordered, so ids sort in creation order.

    Within one millisecond a 12-bit counter in ``rand_a`` keeps ids from one
    process strictly increasing (RFC 9562, method 1).
    """
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        _seq += 1
        if _seq > 0xFFF:
            _last_ms += 1
            _seq = 0
        ms = _last_ms
    else:
        _last_ms = ms
        _seq = 0
    # Ids need uniqueness, not secrecy: the PRNG is much cheaper than os.urandom.
    rand_b = _random_bits(62)
    value = (ms << 80) | (0x7 << 76) | (_seq << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not mapping:
        return _EMPTY
    if isinstance(mapping, MappingProxyType):
        return mapping
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation."""

    role: Role
    content: str
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    status: MessageStatus = MessageStatus.COMPLETE
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    conversation_id: str | None = field(default=None, compare=False)
    """The conversation it is in, on messages the engine hands out (None while a plugin
    builds one); not part of equality: the same message, wherever it is read from."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "status", MessageStatus(self.status))
        object.__setattr__(self, "metadata", _freeze(self.metadata))

    @classmethod
    def user(cls, content: str, **kwargs: Any) -> Message:
        return cls(role=Role.USER, content=content, **kwargs)

    @classmethod
    def assistant(cls, content: str, **kwargs: Any) -> Message:
        return cls(role=Role.ASSISTANT, content=content, **kwargs)

    @classmethod
    def system(cls, content: str, **kwargs: Any) -> Message:
        return cls(role=Role.SYSTEM, content=content, **kwargs)

    def replace(self, **changes: Any) -> Self:
        """Return a copy with ``changes`` applied (the id is kept unless given)."""
        return dataclasses.replace(self, **changes)

    def with_metadata(self, **items: Any) -> Self:
        return dataclasses.replace(self, metadata={**self.metadata, **items})

    @property
    def citations(self) -> tuple[Citation, ...]:
        """The passages this reply drew on (``metadata["citations"]``, set by RAG)."""
        return parse_citations(self.metadata.get("citations"))

    def local(self, plugin: str) -> Any:
        """What ``plugin`` keeps on this message that must not leave the machine, or None."""
        kept = self.metadata.get(LOCAL_METADATA)
        return kept.get(plugin) if isinstance(kept, Mapping) else None

    def with_local(self, plugin: str, value: Any) -> Self:
        """A copy with ``value`` as ``plugin``'s local data (see ``LOCAL_METADATA``)."""
        kept = self.metadata.get(LOCAL_METADATA)
        others = dict(kept) if isinstance(kept, Mapping) else {}
        return self.with_metadata(**{LOCAL_METADATA: {**others, plugin: value}})


LOCAL_METADATA = "local"
"""Key of ``Message.metadata`` (and ``ChatContext.metadata``) holding plugin-local data,
``{plugin name: value}``. It is stored in the local database and never leaves the
machine: replication leaves it out, and so do logs; a plugin that must change what
leaves does so with a ``BEFORE_SHARE`` hook."""


@dataclass(frozen=True, slots=True)
class SharedRecord:
    """Text about to leave the local store (replicated to Redis, written to a log).

    ``BEFORE_SHARE`` hooks receive it and return it with ``texts`` changed (a PII
    redactor puts its placeholders back in). ``local`` is the plugin-local data of
    the messages the text comes from: the message's own, or, for a conversation's
    title and system prompt, that of each of its messages, oldest first.
    """

    conversation_id: str
    texts: Mapping[str, str]
    """``{"content": ...}`` for a message; ``{"title": ..., "system": ...}`` for a conversation."""
    local: tuple[Mapping[str, Any], ...] = ()
    destination: str = "replication"
    """``replication`` or ``log``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", _freeze(self.texts))
        object.__setattr__(self, "local", tuple(_freeze(m) for m in self.local))

    def with_texts(self, **texts: str) -> SharedRecord:
        return dataclasses.replace(self, texts={**self.texts, **texts})

    def local_of(self, plugin: str) -> list[Any]:
        """``plugin``'s local data in each source message that has some."""
        return [kept[plugin] for kept in self.local if kept.get(plugin) is not None]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts reported for one reply."""

    tokens_in: int | None = None
    tokens_out: int | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed piece of a reply; the last one has ``done=True``."""

    text: str
    index: int
    done: bool = False
    usage: Usage | None = None
    model: str | None = None

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


REPLY_METADATA = "reply_metadata"
"""Key of ``ChatContext.metadata`` whose mapping the pipeline merges into the reply's
metadata: how a feature attaches something to the answer (RAG's ``citations``)."""


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage a reply drew on: its document, chunk and score (the RAG feature's)."""

    document: str
    chunk: int | None = None
    score: float | None = None
    title: str | None = None
    heading: str | None = None


def parse_citations(citations: object) -> tuple[Citation, ...]:
    """The citations a reply's metadata carries; anything malformed there is skipped."""
    if not isinstance(citations, list | tuple):
        return ()
    found = []
    for cited in citations:
        if not isinstance(cited, Mapping) or "document" not in cited:
            continue
        chunk, score = cited.get("chunk"), cited.get("score")
        title, heading = cited.get("title"), cited.get("heading")
        found.append(
            Citation(
                document=str(cited["document"]),
                chunk=chunk if isinstance(chunk, int) and not isinstance(chunk, bool) else None,
                score=float(score) if isinstance(score, int | float) else None,
                title=str(title) if title else None,
                heading=str(heading) if heading else None,
            )
        )
    return tuple(found)


def citation_lines(citations: object) -> list[str]:
    """``[1] guide.md > Install (chunk 3, score 0.42)`` for each citation a reply carries.

    Citations come from the RAG feature as ``reply.metadata["citations"]``; anything
    malformed there is skipped rather than shown as a traceback.
    """
    lines = []
    for number, cited in enumerate(parse_citations(citations), 1):
        where = cited.document + (f" > {cited.heading}" if cited.heading else "")
        details = []
        if cited.chunk is not None:
            details.append(f"chunk {cited.chunk}")
        if cited.score is not None:
            details.append(f"score {cited.score:.2f}")
        suffix = f" ({', '.join(details)})" if details else ""
        lines.append(f"[{number}] {where}{suffix}")
    return lines


@dataclass(frozen=True, slots=True)
class ChatContext:
    """Everything a stage needs to know about one turn.

    ``messages`` is the history sent to the backend, oldest first, ending with
    the user's new message. ``system`` is kept apart from ``messages`` because
    backends place it differently (Anthropic wants it outside the list).
    """

    conversation_id: str
    messages: tuple[Message, ...] = ()
    backend: str = ""
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stream: bool = True
    system: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(self.messages))
        object.__setattr__(self, "metadata", _freeze(self.metadata))

    def with_message(self, message: Message) -> ChatContext:
        return dataclasses.replace(self, messages=(*self.messages, message))

    def replace(self, **changes: Any) -> ChatContext:
        return dataclasses.replace(self, **changes)

    def with_metadata(self, **items: Any) -> ChatContext:
        return dataclasses.replace(self, metadata={**self.metadata, **items})

    @property
    def last_user_message(self) -> Message | None:
        for message in reversed(self.messages):
            if message.role is Role.USER:
                return message
        return None
