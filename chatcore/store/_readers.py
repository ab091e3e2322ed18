"""Reading conversations and messages: the list, one conversation, full-text search."""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..messages import Message, MessageStatus, Role
from ._codec import dt_from_text
from ._connection import StoreConnection

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

SEARCH_LIMIT = 20
"""How many hits ``Store.search`` returns unless asked for another number."""

_MIN_PREFIX = 4
"""A typed id shorter than this only matches a whole id."""

SHORT_ID_MIN = 6
"""``history list`` shows at least this many characters of an id."""

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-([0-9a-f]{12})")


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One row of the conversation list."""

    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int
    backend: str | None
    model: str | None
    failed: bool = False
    """Every reply it has is an ``error`` (e.g. its only turn met a backend that was down)."""

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict; datetimes as ISO 8601 strings."""
        return {
            "id": self.id,
            "title": self.title,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "message_count": self.message_count,
            "backend": self.backend,
            "model": self.model,
            "failed": self.failed,
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One message that matched a history search."""

    conversation_id: str
    title: str
    message_id: str
    role: Role
    snippet: str
    created_at: datetime

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict; the time as an ISO 8601 string."""
        return {
            "conversation_id": self.conversation_id,
            "title": self.title,
            "message_id": self.message_id,
            "role": self.role.value,
            "snippet": self.snippet,
            "created_at": self.created_at.isoformat(),
        }


def search_query(text: str) -> str | None:
    """Turn what a person typed into a safe FTS5 query, or None if nothing is searchable.

    Every whitespace-separated word becomes a quoted phrase (so FTS5 operators
    and punctuation are just text) and all of them must match; a word ending in
    ``*`` matches as a prefix. Words without a letter or digit are dropped.
    """
    terms = []
    # FTS5 query text ends at a NUL byte, which would leave a quote open.
    for word in text.replace("\x00", " ").split():
        prefix = word.endswith("*")
        word = word.rstrip("*")
        if not any(ch.isalnum() for ch in word):
            continue
        phrase = '"' + word.replace('"', '""') + '"'
        terms.append(phrase + "*" if prefix else phrase)
    return " ".join(terms) or None


# Newest first: FTS5 walks its rowids backwards and stops at the limit, where
# ranking would score every match (rowids grow as messages are added).
_SEARCH = """
SELECT m.conversation_id, c.title, m.id, m.role,
       snippet(messages_fts, 0, '**', '**', '…', 16), m.created_at
FROM messages_fts
JOIN messages m ON m.rowid = messages_fts.rowid
JOIN conversations c ON c.id = m.conversation_id
WHERE messages_fts MATCH ?1 AND c.deleted_at IS NULL
ORDER BY messages_fts.rowid DESC
LIMIT ?2
"""

# A conversation failed when it has replies and all are errors. The test for a good
# reply comes first: it stops at a normal conversation's first reply.
_FAILED = """(
    NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id
                AND m.role = 'assistant' AND m.status != 'error')
    AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id
                AND m.role = 'assistant' AND m.status = 'error')
)"""

_SUMMARY_COLUMNS = f"""
    c.id, c.title, c.created_at, c.updated_at,
    (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id),
    c.backend, c.model, {_FAILED}
"""

_MESSAGE_COLUMNS = "id, role, content, created_at, model, tokens_in, tokens_out, status, metadata"


def _summary(row: Sequence[Any]) -> ConversationSummary:
    return ConversationSummary(
        id=row[0],
        title=row[1],
        created_at=dt_from_text(row[2]),
        updated_at=dt_from_text(row[3]),
        message_count=row[4],
        backend=row[5],
        model=row[6],
        failed=bool(row[7]),
    )


_ROLES = {role.value: role for role in Role}
_STATUSES = {status.value: status for status in MessageStatus}
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})
MESSAGE_SLOTS = (
    "id",
    "role",
    "content",
    "created_at",
    "model",
    "tokens_in",
    "tokens_out",
    "status",
    "metadata",
)


def _message(row: Sequence[Any], conversation_id: str | None = None) -> Message:
    # Loading a long conversation builds thousands of these: rows this store
    # wrote are already valid, so the fields are set directly, skipping the
    # checks and conversions of Message.__post_init__ (a third of the cost).
    message = object.__new__(Message)
    text = row[8]
    values = (
        row[0],
        _ROLES[row[1]],
        row[2],
        dt_from_text(row[3]),
        row[4],
        row[5],
        row[6],
        _STATUSES[row[7]],
        _NO_METADATA if text == "{}" else MappingProxyType(json.loads(text)),
    )
    for name, value in zip(MESSAGE_SLOTS, values, strict=True):
        object.__setattr__(message, name, value)
    object.__setattr__(message, "conversation_id", conversation_id)
    return message


def _random_part(conversation_id: str) -> str | None:
    """A UUID's last group: random in UUIDv7, whose first twelve digits are the time."""
    match = _UUID.fullmatch(conversation_id)
    return match.group(1) if match else None


def _keys(conversation_id: str) -> tuple[str, ...]:
    """What a typed prefix is matched against: the whole id and, for a UUID, its random part."""
    tail = _random_part(conversation_id)
    return (conversation_id,) if tail is None else (conversation_id, tail)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _glob_literal(text: str) -> str:
    # GLOB (unlike LIKE) is case-sensitive, so SQLite can use the primary key
    # index for a prefix match; brackets make the metacharacters literal.
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in text)


class ConversationReader(StoreConnection):
    """The part of ``Store`` that reads history (on the reader connection)."""

    def list_conversations(
        self, *, limit: int | None = None, failed: bool = True
    ) -> list[ConversationSummary]:
        """Conversations, most recently updated first; ``failed=False`` leaves out those
        whose every reply is an error (``ConversationSummary.failed``)."""
        where = "" if failed else f" AND NOT {_FAILED}"
        rows = self._read(
            f"SELECT {_SUMMARY_COLUMNS} FROM conversations c WHERE c.deleted_at IS NULL{where} "
            "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
            [-1 if limit is None else limit],
        )
        return [_summary(row) for row in rows]

    def count_failed_conversations(self) -> int:
        """How many live conversations have replies that are all errors."""
        rows = self._read(
            f"SELECT COUNT(*) FROM conversations c WHERE c.deleted_at IS NULL AND {_FAILED}"
        )
        return int(rows[0][0])

    def get_conversation(self, conversation_id: str) -> ConversationSummary | None:
        rows = self._read(
            f"SELECT {_SUMMARY_COLUMNS} FROM conversations c "
            "WHERE c.id = ? AND c.deleted_at IS NULL",
            [conversation_id],
        )
        return _summary(rows[0]) if rows else None

    def conversation_system(self, conversation_id: str) -> str | None:
        """The system prompt stored with a live conversation, if it has one."""
        rows = self._read(
            "SELECT system FROM conversations WHERE id = ? AND deleted_at IS NULL",
            [conversation_id],
        )
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    def conversation_settings(
        self, conversation_id: str
    ) -> tuple[str | None, str | None, str | None] | None:
        """The ``(backend, model, system)`` a live conversation is on; None if there is none.

        The system prompt is ``""`` when a turn removed it, None when none was ever given.
        """
        rows = self._read(
            "SELECT backend, model, system FROM conversations WHERE id = ? AND deleted_at IS NULL",
            [conversation_id],
        )
        if not rows:
            return None
        backend, model, system = rows[0]
        return backend, model, system

    def find_turn(self, client_id: str) -> Message | None:
        """The stored reply of the turn sent with idempotency key ``client_id``, if any.

        Keys are global to the database (a retried first turn does not know its new
        conversation's id); the reply's ``conversation_id`` says where it is.
        """
        from ._schema import CLIENT_ID_EXPRESSION, CLIENT_ID_FILTER

        rows = self._read(
            f"SELECT conversation_id, {_MESSAGE_COLUMNS} FROM messages "
            f"WHERE {CLIENT_ID_FILTER} AND {CLIENT_ID_EXPRESSION} = ? AND role = 'assistant' "
            "ORDER BY created_at, id LIMIT 1",
            [client_id],
        )
        return _message(rows[0][1:], rows[0][0]) if rows else None

    def get_messages(self, conversation_id: str) -> list[Message]:
        """The messages of a conversation, oldest first ([] if there is none).

        Ordered by (created_at, id), not by local insertion, so every device that
        holds the same messages lists them in the same order.
        """
        rows = self._read(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
            "ORDER BY created_at, id",
            [conversation_id],
        )
        return [_message(row, conversation_id) for row in rows]

    def search(self, text: str, *, limit: int = SEARCH_LIMIT) -> list[SearchHit]:
        """Messages whose content matches every word of ``text``, newest first.

        Matching is full-text (words, not substrings; "running" finds "run");
        punctuation and FTS5 syntax in ``text`` are taken literally, never raised on.

        Raises:
            ValueError: ``limit`` is less than 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = search_query(text)
        if query is None:
            return []
        rows = self._read(_SEARCH, [query, limit])
        return [
            SearchHit(
                conversation_id=row[0],
                title=row[1],
                message_id=row[2],
                role=Role(row[3]),
                snippet=row[4],
                created_at=dt_from_text(row[5]),
            )
            for row in rows
        ]

    def latest_conversation_id(self) -> str | None:
        rows = self._read(
            "SELECT id FROM conversations WHERE deleted_at IS NULL "
            "ORDER BY updated_at DESC, id DESC LIMIT 1"
        )
        return rows[0][0] if rows else None

    def resolve_conversation_id(self, prefix: str) -> str | None:
        """Return the id that is ``prefix``, or the one whose id or short id starts with it.

        A short id is a prefix of a UUID's random last group (what ``history list``
        shows). A prefix shorter than four characters only matches a whole id.
        Returns None when nothing matches.

        Raises:
            AmbiguousConversationId: ``prefix`` starts more than one conversation's
                id or short id; the error lists them.
        """
        from ..errors import AmbiguousConversationId

        exact = self._read(
            "SELECT id FROM conversations WHERE id = ? AND deleted_at IS NULL", [prefix]
        )
        if exact:
            return str(exact[0][0])
        if len(prefix) < _MIN_PREFIX:
            return None
        pattern = _glob_literal(prefix) + "*"
        # The random part is matched by a scan; conversations are few next to messages.
        rows = self._read(
            "SELECT id, title FROM conversations WHERE deleted_at IS NULL "
            "AND (id GLOB ? OR (length(id) = 36 AND substr(id, 25) GLOB ?)) "
            "ORDER BY updated_at DESC, id DESC",
            [pattern, pattern],
        )
        matches = {
            str(cid): str(title)
            for cid, title in rows
            if any(key.startswith(prefix) for key in _keys(str(cid)))
        }
        if len(matches) > 1:
            raise AmbiguousConversationId(prefix, matches)
        return next(iter(matches), None)

    def short_ids(self, conversation_ids: Sequence[str]) -> dict[str, str]:
        """The shortest text that names each conversation, for people to type.

        For a UUID, the shortest prefix of its random last group that no other live
        conversation's id or random part starts with, at least ``SHORT_ID_MIN``
        characters; for any other id, the same of the whole id. Falls back to the
        whole id when no such prefix exists. ``resolve_conversation_id`` takes it back.
        """
        rows = self._read("SELECT id FROM conversations WHERE deleted_at IS NULL")
        keys = sorted((key, str(cid)) for (cid,) in rows for key in _keys(str(cid)))
        result: dict[str, str] = {}
        for conversation_id in conversation_ids:
            own = _random_part(conversation_id) or conversation_id
            # Sorted, the keys sharing the longest prefix with ``own`` are its nearest
            # neighbours that belong to another conversation, one on each side.
            at = bisect.bisect_left(keys, (own, conversation_id))
            shared = 0
            for step in (-1, 1):
                i = at + step if step < 0 else at
                while 0 <= i < len(keys) and keys[i][1] == conversation_id:
                    i += step
                if 0 <= i < len(keys):
                    shared = max(shared, _common_prefix(own, keys[i][0]))
            length = max(SHORT_ID_MIN, shared + 1)
            result[conversation_id] = own[:length] if length <= len(own) else conversation_id
        return result
