"""SQLite persistence: the local source of truth for conversations.

One writer connection, used from one worker thread at a time and committing turns
in groups (``StoreWriter``), and a separate reader connection, so reads never wait
behind a batch and never see half of one. Schema changes are numbered migrations.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import trio
from sqlite_utils import Database
from sqlite_utils.db import ForeignKey

from .errors import ChatcoreError, ConversationNotFound, InvalidInput
from .hlc import HybridClock, format_stamp, hlc_key
from .messages import Message, MessageStatus, Role, utcnow

__all__ = [
    "DB_FILENAME",
    "DEFAULT_TITLE",
    "MIGRATIONS",
    "SEARCH_LIMIT",
    "STORE_MAX_BATCH",
    "STORE_QUEUE_CAPACITY",
    "TITLE_MAX_CHARS",
    "Change",
    "ChangeKind",
    "ConversationSummary",
    "KVNamespace",
    "MessageConflict",
    "Migration",
    "OutboxEntry",
    "SearchHit",
    "Store",
    "StoreError",
    "StoreStatistics",
    "StoreWriter",
    "TurnRecord",
    "connect",
    "make_title",
    "migrate",
    "migration",
    "search_query",
    "write_transaction",
]

log = logging.getLogger(__name__)

DB_FILENAME = "chatcore.db"
DEFAULT_TITLE = "New conversation"
TITLE_MAX_CHARS = 60
STORE_QUEUE_CAPACITY = 256
STORE_MAX_BATCH = 512
BUSY_TIMEOUT_MS = 5000
CHECKPOINT_EVERY_COMMITS = 200
"""Commits between WAL checkpoints (a turn's commit is a few pages)."""
INLINE_COMMIT_MAX_RECORDS = 4
"""Batches up to this size commit on the event loop: a commit of one or two turns
takes tens of microseconds, far less than handing it to a worker thread and back.
Larger batches, lock waits and checkpoints go to the worker thread."""

SEARCH_LIMIT = 20
"""How many hits ``Store.search`` returns unless asked for another number."""
SYNC_DEVICE_ID = "device_id"
"""``sync_state`` key of this database's device id (generated once, never changed)."""
SYNC_HLC = "hlc"
"""``sync_state`` key of the newest clock stamp, so stamps keep growing across restarts."""
_RESERVED_SYNC_KEYS = frozenset({SYNC_DEVICE_ID, SYNC_HLC})

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_MIN_PREFIX = 4
_EPOCH = datetime.min.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- errors


class StoreError(ChatcoreError):
    """Base of problems with the local database."""


class MessageConflict(StoreError):
    """A message id that is already stored belongs to a different conversation."""

    def __init__(self, message_id: str, stored_in: str, written_to: str) -> None:
        self.message_id = message_id
        self.stored_in = stored_in
        self.written_to = written_to
        super().__init__(
            f"message {message_id!r} belongs to conversation {stored_in!r}, "
            f"not {written_to!r}; a message cannot move between conversations"
        )


# --------------------------------------------------------------------------- values


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
        }


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """What one turn persists; committed in one transaction with the rest of its batch."""

    conversation_id: str
    messages: tuple[Message, ...]
    backend: str | None = None
    model: str | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(self.messages))


def make_title(text: str) -> str:
    """Derive a conversation title from the first user message.

    The first non-blank line, whitespace collapsed to single spaces, cut to
    ``TITLE_MAX_CHARS`` characters followed by "…"; ``DEFAULT_TITLE`` if blank.
    """
    for line in text.splitlines():
        collapsed = " ".join(line.split())
        if not collapsed:
            continue
        if len(collapsed) <= TITLE_MAX_CHARS:
            return collapsed
        return collapsed[:TITLE_MAX_CHARS].rstrip() + "…"
    return DEFAULT_TITLE


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


# --------------------------------------------------------------------------- changes


class ChangeKind(StrEnum):
    """What a replicated change describes."""

    CONVERSATION = "conversation"
    MESSAGE = "message"
    TOMBSTONE = "tombstone"


_MESSAGE_FIELDS = (
    "id",
    "role",
    "content",
    "status",
    "created_at",
    "model",
    "tokens_in",
    "tokens_out",
    "metadata",
)
_CONVERSATION_FIELDS = ("title", "created_at", "backend", "model", "system", "metadata")
_TOMBSTONE_FIELDS = ("deleted_at",)
_FIELDS = {
    ChangeKind.MESSAGE: _MESSAGE_FIELDS,
    ChangeKind.CONVERSATION: _CONVERSATION_FIELDS,
    ChangeKind.TOMBSTONE: _TOMBSTONE_FIELDS,
}


@dataclass(frozen=True, slots=True)
class Change:
    """One replicated change: what the outbox holds and what ``apply_changes`` merges.

    ``data`` per kind: MESSAGE ``{id, role, content, status, created_at, model,
    tokens_in, tokens_out, metadata}``; CONVERSATION ``{title, created_at, backend,
    model, system, metadata}``; TOMBSTONE ``{deleted_at}``. Construction checks all
    of it and raises ``StoreError`` naming the bad field, so a ``Change`` in hand is
    always well-formed.
    """

    kind: ChangeKind
    conversation_id: str
    hlc: str
    device_id: str
    data: Mapping[str, Any]

    def __post_init__(self) -> None:
        try:
            kind = ChangeKind(self.kind)
        except ValueError:
            choices = ", ".join(k.value for k in ChangeKind)
            raise StoreError(
                f"malformed change: kind: expected one of {choices}, got {self.kind!r}"
            ) from None
        object.__setattr__(self, "kind", kind)
        where = f"malformed {kind.value} change"
        if not isinstance(self.conversation_id, str) or not self.conversation_id:
            raise StoreError(f"{where}: conversation_id: expected non-empty text")
        where = f"{where} of conversation {self.conversation_id!r}"
        try:
            hlc_key(self.hlc)
        except ValueError as exc:
            raise StoreError(f"{where}: hlc: {exc}") from None
        if not isinstance(self.device_id, str) or not self.device_id:
            raise StoreError(f"{where}: device_id: expected non-empty text")
        if not isinstance(self.data, Mapping):
            raise StoreError(f"{where}: data: expected an object, got {type(self.data).__name__}")
        data = dict(self.data)
        _check_data(kind, data, where)
        object.__setattr__(self, "data", MappingProxyType(data))

    @property
    def change_id(self) -> str:
        """A stable id for dedupe: the same change always has the same id."""
        if self.kind is ChangeKind.MESSAGE:
            return f"msg:{self.data['id']}:{self.hlc}"
        return f"{self.kind.value}:{self.conversation_id}:{self.hlc}"

    @property
    def order_key(self) -> tuple[str, str]:
        """``(hlc, device_id)``: the last-writer-wins order (stamps sort as text)."""
        return self.hlc, self.device_id

    def to_json(self) -> str:
        """Compact JSON text; ``Change.from_json(c.to_json()) == c``."""
        return _change_json(self.kind, self.conversation_id, self.hlc, self.device_id, self.data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Change:
        """Parse what ``to_json`` wrote.

        Raises:
            StoreError: the text is not JSON, or not a well-formed change.
        """
        try:
            value = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise StoreError(f"malformed change: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise StoreError(f"malformed change: expected a JSON object, got {value!r:.80}")
        missing = [
            k for k in ("kind", "conversation_id", "hlc", "device_id", "data") if k not in value
        ]
        if missing:
            raise StoreError(f"malformed change: missing {', '.join(missing)}")
        return cls(
            kind=value["kind"],
            conversation_id=value["conversation_id"],
            hlc=value["hlc"],
            device_id=value["device_id"],
            data=value["data"],
        )


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A change waiting to be replicated; ``id`` grows with every row written."""

    id: int
    change: Change


def _change_json(
    kind: ChangeKind, conversation_id: str, hlc: str, device_id: str, data: Mapping[str, Any]
) -> str:
    return _to_json(
        {
            "kind": kind.value,
            "conversation_id": conversation_id,
            "hlc": hlc,
            "device_id": device_id,
            "data": data,
        }
    )


def _check_data(kind: ChangeKind, data: dict[str, Any], where: str) -> None:
    missing = [name for name in _FIELDS[kind] if name not in data]
    if missing:
        raise StoreError(f"{where}: data: missing {', '.join(missing)}")

    def expect(name: str, ok: bool, what: str) -> None:
        if not ok:
            raise StoreError(f"{where}: data.{name}: expected {what}, got {data[name]!r:.80}")

    def text(name: str, *, optional: bool = False, non_empty: bool = False) -> None:
        value = data[name]
        if optional and value is None:
            return
        expect(name, isinstance(value, str) and (bool(value) or not non_empty), "text")

    def timestamp(name: str) -> None:
        value = data[name]
        try:
            ok = isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
        except ValueError:
            ok = False
        expect(name, ok, "an ISO 8601 time with a UTC offset")

    def count(name: str) -> None:
        value = data[name]
        ok = value is None or (type(value) is int and value >= 0)
        expect(name, ok, "a non-negative integer or null")

    if kind is ChangeKind.TOMBSTONE:
        timestamp("deleted_at")
        return
    timestamp("created_at")
    expect("metadata", isinstance(data["metadata"], Mapping), "an object")
    if kind is ChangeKind.CONVERSATION:
        text("title")
        for name in ("backend", "model", "system"):
            text(name, optional=True)
        return
    text("id", non_empty=True)
    text("content")
    text("model", optional=True)
    expect("role", data["role"] in Role._value2member_map_, "a role (system|user|assistant|tool)")
    expect(
        "status",
        data["status"] in MessageStatus._value2member_map_,
        "a status (complete|partial|error)",
    )
    count("tokens_in")
    count("tokens_out")


# --------------------------------------------------------------------------- encoding


def _dt_to_text(value: datetime) -> str:
    # Naive datetimes are taken as UTC (the domain model only makes aware ones).
    # A fixed width (always microseconds) keeps text order equal to time order.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt_from_text(text: str) -> datetime:
    if text.endswith("+00:00"):
        return datetime.fromisoformat(text)  # what this module writes: UTC already
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _canonical_time(text: str) -> str:
    # Remote times are re-encoded so equal instants are equal text on every device.
    return _dt_to_text(_dt_from_text(text))


def _json_default(value: object) -> object:
    # Message metadata is a read-only mapping, possibly with nested ones.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def _to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


# --------------------------------------------------------------------------- migrations


MigrationFunction = Callable[[Database], None]
_MIGRATION_NAME = re.compile(r"^m(\d{3,})_[a-z0-9_]+$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change; ``name`` is ``mNNN_what`` and NNN gives the order."""

    name: str
    apply: MigrationFunction
    number: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "number", _migration_number(self.name))


def _migration_number(name: str) -> int:
    match = _MIGRATION_NAME.match(name)
    if match is None:
        raise ValueError(f"migration name {name!r} must look like 'm001_initial'")
    return int(match.group(1))


MIGRATIONS: list[Migration] = []


def migration(fn: MigrationFunction) -> MigrationFunction:
    """Register ``fn`` as the next migration; its number must follow the last one."""
    step = Migration(fn.__name__, fn)
    expected = len(MIGRATIONS) + 1
    if step.number != expected:
        raise ValueError(f"migration {step.name!r} is out of order: expected number {expected}")
    MIGRATIONS.append(step)
    return fn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front.

    A deferred BEGIN that later writes can fail with SQLITE_BUSY without waiting
    for busy_timeout when another connection holds a read snapshot; IMMEDIATE waits.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _ensure_migrations_table(db: Database) -> None:
    db.table("_migrations").create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)


def _applied_names(db: Database) -> set[str]:
    return {row["name"] for row in db.table("_migrations").rows}


def migrate(db: Database, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the migrations ``db`` lacks, in order, each in its own transaction.

    Args:
        db: a database whose connection has ``isolation_level=None``.
        migrations: the list to apply; ``MIGRATIONS`` by default.

    Returns:
        The names of the migrations applied now.

    Raises:
        StoreError: the database was migrated by a newer chatcore.
    """
    steps = list(MIGRATIONS if migrations is None else migrations)
    numbers = [step.number for step in steps]
    if numbers != list(range(1, len(steps) + 1)):
        raise ValueError(f"migrations must be numbered 1..n without gaps, got {numbers}")
    _ensure_migrations_table(db)
    known = {step.name for step in steps}
    unknown = sorted(_applied_names(db) - known)
    if unknown:
        raise StoreError(
            f"the database was migrated by a newer chatcore (unknown migrations: "
            f"{', '.join(unknown)}); upgrade chatcore to open it"
        )
    applied_now: list[str] = []
    for step in steps:
        with write_transaction(db.conn):
            # Checked inside the write lock: another process may have just applied it.
            row = db.conn.execute("SELECT 1 FROM _migrations WHERE name = ?", [step.name])
            if row.fetchone() is not None:
                continue
            step.apply(db)
            db.conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                [step.name, _dt_to_text(utcnow())],
            )
        applied_now.append(step.name)
    return applied_now


@migration
def m001_initial(db: Database) -> None:
    db.table("conversations").create(
        {
            "id": str,
            "title": str,
            "created_at": str,
            "updated_at": str,
            "backend": str,
            "model": str,
            "system": str,
            "metadata": str,
            # Room for the tombstones that replication will need.
            "deleted_at": str,
        },
        pk="id",
        not_null={"title", "created_at", "updated_at", "metadata"},
        defaults={"metadata": "{}"},
    )
    db.table("conversations").create_index(["updated_at"])
    db.table("messages").create(
        {
            "id": str,
            "conversation_id": str,
            "seq": int,
            "role": str,
            "content": str,
            "status": str,
            "created_at": str,
            "model": str,
            "tokens_in": int,
            "tokens_out": int,
            "metadata": str,
        },
        pk="id",
        not_null={"conversation_id", "seq", "role", "content", "status", "created_at", "metadata"},
        defaults={"metadata": "{}"},
        foreign_keys=[
            ForeignKey("messages", "conversation_id", "conversations", "id", on_delete="CASCADE")
        ],
    )
    db.table("messages").create_index(["conversation_id", "seq"], unique=True)
    db.table("plugin_kv").create(
        {"namespace": str, "key": str, "value": str, "updated_at": str},
        pk=("namespace", "key"),
    )
    db.table("sync_state").create({"key": str, "value": str}, pk="key")


@migration
def m002_rag_and_memory(db: Database) -> None:
    """Documents and chunks for RAG (FTS5 over chunk text), long-term memories."""
    db.table("documents").create(
        {
            "id": str,
            "path": str,
            "title": str,
            "sha256": str,
            "size": int,
            "added_at": str,
            "metadata": str,
        },
        pk="id",
        not_null={"path", "title", "sha256", "size", "added_at", "metadata"},
        defaults={"metadata": "{}"},
    )
    db.table("documents").create_index(["path"], unique=True)
    db.table("chunks").create(
        {
            "id": int,
            "document_id": str,
            "ordinal": int,
            "heading": str,
            "text": str,
            "embedding": bytes,
            "embed_model": str,
        },
        pk="id",
        not_null={"document_id", "ordinal", "text"},
        foreign_keys=[ForeignKey("chunks", "document_id", "documents", "id", on_delete="CASCADE")],
    )
    db.table("chunks").create_index(["document_id", "ordinal"], unique=True)
    db.table("chunks").enable_fts(["heading", "text"], create_triggers=True, tokenize="porter")
    # Storing a chunk's embedding must not re-index its text: only heading/text
    # updates touch the FTS index.
    db.conn.execute('DROP TRIGGER "chunks_au"')
    db.conn.execute(
        'CREATE TRIGGER "chunks_au" AFTER UPDATE OF "heading", "text" ON "chunks" BEGIN\n'
        '  INSERT INTO "chunks_fts" ("chunks_fts", rowid, "heading", "text") '
        'VALUES(\'delete\', old.rowid, old."heading", old."text");\n'
        '  INSERT INTO "chunks_fts" (rowid, "heading", "text") '
        'VALUES (new.rowid, new."heading", new."text");\n'
        "END"
    )
    # A generation counter bumped (by trigger, so in the writer's own transaction) on any
    # change to chunks or their vectors: RAG's in-memory vector matrix reloads only then.
    db.conn.execute("CREATE TABLE rag_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.conn.execute("INSERT INTO rag_state (key, value) VALUES ('generation', 0)")
    bump = "UPDATE rag_state SET value = value + 1 WHERE key = 'generation'"
    for name, event in (
        ("insert", "INSERT"),
        ("delete", "DELETE"),
        ("update", "UPDATE OF embedding, embed_model, text, heading"),
    ):
        db.conn.execute(
            f"CREATE TRIGGER chunks_generation_{name} AFTER {event} ON chunks BEGIN {bump}; END"
        )
    db.table("memories").create(
        {"id": str, "user": str, "content": str, "created_at": str, "metadata": str},
        pk="id",
        not_null={"user", "content", "created_at", "metadata"},
        defaults={"metadata": "{}"},
    )
    db.table("memories").create_index(["user", "created_at"])


def _stamp_from_time(created_at: str | None, device_id: str) -> str:
    """A clock stamp for a row written before stamps existed: its creation time."""
    when = _dt_from_text(created_at) if created_at else utcnow()
    millis = int(when.timestamp() * 1000)
    return format_stamp(max(millis, 0), 0, device_id)


@migration
def m003_replication(db: Database) -> None:
    """Clock stamps on rows, the outbox, a device id, full-text search over messages."""
    conn = db.conn
    device_id = uuid.uuid4().hex
    conn.execute(
        "INSERT OR IGNORE INTO sync_state (key, value) VALUES (?, ?)", [SYNC_DEVICE_ID, device_id]
    )
    device_id = conn.execute(
        "SELECT value FROM sync_state WHERE key = ?", [SYNC_DEVICE_ID]
    ).fetchone()[0]
    for table in ("conversations", "messages"):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN hlc TEXT")
        conn.execute(f"ALTER TABLE {table} ADD COLUMN device_id TEXT")
        # Rows from before replication get a stamp from their creation time, so
        # last-writer-wins has something to compare if they are ever sent.
        rows = conn.execute(f"SELECT id, created_at FROM {table}").fetchall()
        conn.executemany(
            f"UPDATE {table} SET hlc = ?, device_id = ? WHERE id = ?",
            [(_stamp_from_time(created, device_id), device_id, rid) for rid, created in rows],
        )
    # get_messages orders by (created_at, id): the same order on every device.
    conn.execute(
        "CREATE INDEX idx_messages_conversation_created "
        "ON messages (conversation_id, created_at, id)"
    )
    conn.execute(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL,
            change TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """
    )
    # External content: the text lives once, in messages; rowid links the two.
    conn.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
        "content_rowid='rowid', tokenize='porter unicode61 remove_diacritics 2')"
    )
    # executescript() would commit the migration's transaction: one statement each.
    for trigger in _FTS_TRIGGERS:
        conn.execute(trigger)
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")


_FTS_TRIGGERS = (
    """
    CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
    END
    """,
    """
    CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content)
        VALUES ('delete', old.rowid, old.content);
    END
    """,
    """
    CREATE TRIGGER messages_fts_au AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content)
        VALUES ('delete', old.rowid, old.content);
        INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
    END
    """,
)


# --------------------------------------------------------------------------- SQL

_UPSERT_CONVERSATION = """
INSERT INTO conversations (
    id, title, created_at, updated_at, backend, model, system, hlc, device_id
)
VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (id) DO UPDATE SET
    updated_at = excluded.updated_at,
    backend = COALESCE(excluded.backend, conversations.backend),
    model = COALESCE(excluded.model, conversations.model),
    system = COALESCE(excluded.system, conversations.system),
    hlc = COALESCE(excluded.hlc, conversations.hlc),
    device_id = IIF(excluded.hlc IS NULL, conversations.device_id, excluded.device_id)
"""

# The seq subquery reads the (conversation_id, seq) index, so it is a single seek.
# The WHERE on the update turns a cross-conversation id clash into "no change",
# which write_turns detects from the change count.
_UPSERT_MESSAGE = """
INSERT INTO messages (
    id, conversation_id, seq, role, content, status, created_at,
    model, tokens_in, tokens_out, metadata, hlc, device_id
)
VALUES (
    ?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = ?2),
    ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12
)
ON CONFLICT (id) DO UPDATE SET
    content = excluded.content,
    status = excluded.status,
    model = excluded.model,
    tokens_in = excluded.tokens_in,
    tokens_out = excluded.tokens_out,
    metadata = excluded.metadata,
    hlc = excluded.hlc,
    device_id = excluded.device_id
WHERE messages.conversation_id = excluded.conversation_id
"""

_UPSERT_TOMBSTONE = """
INSERT INTO conversations (
    id, title, created_at, updated_at, backend, model, system, metadata, deleted_at, hlc, device_id
)
VALUES (?1, '', ?2, ?2, NULL, NULL, NULL, '{}', ?2, ?3, ?4)
ON CONFLICT (id) DO UPDATE SET
    title = '', created_at = ?2, updated_at = ?2, backend = NULL, model = NULL, system = NULL,
    metadata = '{}', deleted_at = ?2, hlc = ?3, device_id = ?4
"""

# A message's time moves its conversation's updated_at forward, and the
# created_at of a placeholder (no stamp yet) back; WHERE skips a no-op.
_FOLD_MESSAGE_TIME = """
UPDATE conversations SET
    updated_at = MAX(updated_at, ?1),
    created_at = IIF(hlc IS NULL, MIN(created_at, ?1), created_at)
WHERE id = ?2 AND (updated_at < ?1 OR (hlc IS NULL AND created_at > ?1))
"""

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

_INSERT_OUTBOX = "INSERT INTO outbox (conversation_id, change, created_at) VALUES (?, ?, ?)"

_SAVE_HLC = (
    "INSERT INTO sync_state (key, value) VALUES ('hlc', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

# What write_turns needs to know about the conversations of a batch before writing.
_CONVERSATION_STATE = """
SELECT id, title, created_at, backend, model, system, metadata, deleted_at
FROM conversations WHERE id IN (SELECT value FROM json_each(?))
"""

_SUMMARY_COLUMNS = """
    c.id, c.title, c.created_at, c.updated_at,
    (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id),
    c.backend, c.model
"""

_MESSAGE_COLUMNS = "id, role, content, created_at, model, tokens_in, tokens_out, status, metadata"


def _summary(row: Sequence[Any]) -> ConversationSummary:
    return ConversationSummary(
        id=row[0],
        title=row[1],
        created_at=_dt_from_text(row[2]),
        updated_at=_dt_from_text(row[3]),
        message_count=row[4],
        backend=row[5],
        model=row[6],
    )


_ROLES = {role.value: role for role in Role}
_STATUSES = {status.value: status for status in MessageStatus}
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})
_MESSAGE_SLOTS = (
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


def _message(row: Sequence[Any]) -> Message:
    # Loading a long conversation builds thousands of these: rows this store
    # wrote are already valid, so the fields are set directly, skipping the
    # checks and conversions of Message.__post_init__ (a third of the cost).
    message = object.__new__(Message)
    text = row[8]
    values = (
        row[0],
        _ROLES[row[1]],
        row[2],
        _dt_from_text(row[3]),
        row[4],
        row[5],
        row[6],
        _STATUSES[row[7]],
        _NO_METADATA if text == "{}" else MappingProxyType(json.loads(text)),
    )
    for name, value in zip(_MESSAGE_SLOTS, values, strict=True):
        object.__setattr__(message, name, value)
    return message


def _glob_literal(text: str) -> str:
    # GLOB (unlike LIKE) is case-sensitive, so SQLite can use the primary key
    # index for a prefix match; brackets make the metacharacters literal.
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in text)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to a chatcore database with the settings every user of it shares.

    For features that keep their own tables in the engine's file (``host.database_path``):
    the same busy timeout, durability and foreign keys as the store's own connections.
    """
    # isolation_level=None: the driver never opens transactions behind our back.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


# --------------------------------------------------------------------------- store


class Store:
    """The conversation database: blocking calls, safe to use from worker threads.

    Writer-side methods share one connection behind a lock, so a transaction is
    never interleaved with another thread's statements; reader-side methods use
    their own connection and see only committed data.
    """

    def __init__(self, path: Path, *, outbox: bool = False) -> None:
        """Open (creating and migrating as needed) the database at ``path``.

        Args:
            path: the SQLite file; its directory is created owner-only if missing.
            outbox: queue every local change for replication (True when a Redis
                URL is configured). False writes no outbox rows at all.
        """
        self.path = Path(path)
        self.outbox_enabled = bool(outbox)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._last_stamp = _EPOCH
        self._closed = False
        self._commits_since_checkpoint = 0
        self._ensure_file()
        self._writer = connect(self.path)
        try:
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot enable WAL journal mode (got {mode!r})")
            # Checkpoints run where blocking is harmless (see ``checkpoint``).
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self.db = Database(self._writer, execute_plugins=False)
            migrate(self.db)
            self._clock = self._load_clock()
            self._reader = connect(self.path)
            # The reader never writes; make a mistake loud instead of a lock fight.
            self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            self._writer.close()
            raise

    def _load_clock(self) -> HybridClock:
        state = dict(
            self._writer.execute(
                "SELECT key, value FROM sync_state WHERE key IN (?, ?)", [SYNC_DEVICE_ID, SYNC_HLC]
            ).fetchall()
        )
        device_id = state.get(SYNC_DEVICE_ID)
        if not device_id:
            raise StoreError(f"{self.path}: sync_state has no device_id (damaged database?)")
        clock = HybridClock(device_id)
        if state.get(SYNC_HLC):
            try:
                clock.observe(state[SYNC_HLC])
            except ValueError:
                # Only an earlier stamp is lost: the wall clock carries on from here.
                log.warning("%s: ignoring a malformed saved clock stamp", self.path)
        return clock

    @property
    def device_id(self) -> str:
        """This database's device id: generated once (uuid4 hex), kept in ``sync_state``."""
        return self._clock.device_id

    def _ensure_file(self) -> None:
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(parent, _DIR_MODE)  # mkdir's mode is filtered by the umask
        if not self.path.exists():
            # Created with owner-only permissions before SQLite opens it, so the
            # history is never readable by others, not even for a moment.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            os.close(fd)
            os.chmod(self.path, _FILE_MODE)

    def close(self) -> None:
        """Close both connections; calling it again does nothing."""
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._reader.close()
            try:
                self._writer.execute("PRAGMA optimize")
            finally:
                self._writer.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- writer side

    def _next_stamp(self) -> datetime:
        # Strictly increasing within this process, so "newest first" never ties
        # between two writes, even inside one batch or on a coarse clock.
        now = utcnow()
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def write_turns(self, records: Sequence[TurnRecord], *, wait: bool = True) -> bool:
        """Persist ``records`` in one transaction: all of them, or none.

        With the outbox on, the same transaction queues a MESSAGE change per
        message and a CONVERSATION change when a conversation is created or its
        backend, model or system prompt changes.

        With ``wait=False`` the call never blocks on a lock: if this process or
        another holds the write lock it writes nothing and returns False, so the
        caller can retry where blocking is harmless (a worker thread).

        Raises:
            MessageConflict: a message id is already stored in another conversation.
            ConversationNotFound: a conversation of the batch was deleted.
            TypeError: message metadata is not JSON-serialisable.
        """
        if not records:
            return True
        # Encode before taking the lock: a bad value fails without touching the file.
        titles: dict[str, str] = {}
        encoded: list[list[tuple[Any, ...]]] = []
        for record in records:
            cid = record.conversation_id
            if cid not in titles:
                first_user = next((m for m in record.messages if m.role is Role.USER), None)
                if first_user is not None:
                    titles[cid] = make_title(first_user.content)
            encoded.append(
                [
                    (
                        m.id,
                        cid,
                        m.role.value,
                        m.content,
                        m.status.value,
                        _dt_to_text(m.created_at),
                        m.model,
                        m.tokens_in,
                        m.tokens_out,
                        _to_json(m.metadata),
                    )
                    for m in record.messages
                ]
            )
        if not self._write_lock.acquire(blocking=wait):
            return False
        try:
            conn = self._writer
            if not wait:
                conn.execute("PRAGMA busy_timeout = 0")
            try:
                with write_transaction(conn):
                    self._write_turns_locked(records, encoded, titles)
            except sqlite3.OperationalError as exc:
                if not wait and _is_busy(exc):
                    return False
                raise
            finally:
                if not wait:
                    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._commits_since_checkpoint += 1
            return True
        finally:
            self._write_lock.release()

    def _write_turns_locked(
        self,
        records: Sequence[TurnRecord],
        encoded: list[list[tuple[Any, ...]]],
        titles: dict[str, str],
    ) -> None:
        # Runs inside the write transaction: stamps are taken in commit order.
        conn = self._writer
        clock = self._clock
        device = clock.device_id
        outbox = self.outbox_enabled
        ids = _to_json(list(dict.fromkeys(r.conversation_id for r in records)))
        state: dict[str, list[Any]] = {
            row[0]: list(row[1:]) for row in conn.execute(_CONVERSATION_STATE, [ids])
        }
        now_text = _dt_to_text(utcnow())
        conversation_rows: list[tuple[Any, ...]] = []
        message_rows: list[tuple[Any, ...]] = []
        outbox_rows: list[tuple[str, str, str]] = []
        for record, rows in zip(records, encoded, strict=True):
            cid = record.conversation_id
            stamp = _dt_to_text(self._next_stamp())
            known = state.get(cid)
            conversation_hlc: str | None = None
            if known is None:
                known = [titles.get(cid, DEFAULT_TITLE), stamp, None, None, None, "{}", None]
                state[cid] = known
                changed = True
            elif known[6] is not None:
                raise ConversationNotFound(cid)
            else:
                changed = False
            # Same COALESCE rule as the upsert: a turn without a backend keeps the old one.
            for index, value in ((2, record.backend), (3, record.model), (4, record.system)):
                if value is not None and value != known[index]:
                    known[index] = value
                    changed = True
            if changed:
                conversation_hlc = clock.now()
                if outbox:
                    data = {
                        "title": known[0],
                        "created_at": known[1],
                        "backend": known[2],
                        "model": known[3],
                        "system": known[4],
                        "metadata": json.loads(known[5]),
                    }
                    change = _change_json(
                        ChangeKind.CONVERSATION, cid, conversation_hlc, device, data
                    )
                    outbox_rows.append((cid, change, now_text))
            conversation_rows.append(
                (
                    cid,
                    known[0],
                    stamp,
                    record.backend,
                    record.model,
                    record.system,
                    conversation_hlc,
                    device,
                )
            )
            for message, row in zip(record.messages, rows, strict=True):
                hlc = clock.now()
                message_rows.append((*row, hlc, device))
                if outbox:
                    data = {
                        "id": row[0],
                        "role": row[2],
                        "content": row[3],
                        "status": row[4],
                        "created_at": row[5],
                        "model": row[6],
                        "tokens_in": row[7],
                        "tokens_out": row[8],
                        "metadata": message.metadata,
                    }
                    change = _change_json(ChangeKind.MESSAGE, cid, hlc, device, data)
                    outbox_rows.append((cid, change, now_text))
        conn.executemany(_UPSERT_CONVERSATION, conversation_rows)
        # rowcount counts the statement's own rows (total_changes would add the
        # full-text triggers' rows too).
        written = conn.executemany(_UPSERT_MESSAGE, message_rows).rowcount
        if written != len(message_rows):
            raise self._find_conflict(message_rows)
        if outbox_rows:
            conn.executemany(_INSERT_OUTBOX, outbox_rows)
        conn.execute(_SAVE_HLC, [clock.last])

    @property
    def checkpoint_due(self) -> bool:
        """Whether enough commits piled up in the WAL to fold them into the database."""
        return self._commits_since_checkpoint >= CHECKPOINT_EVERY_COMMITS

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (blocking; run it off the event loop).

        The writer connection has automatic checkpoints switched off, so a commit
        made on the event loop never pays for one.
        """
        with self._write_lock:
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._commits_since_checkpoint = 0

    def _find_conflict(self, message_rows: list[tuple[Any, ...]]) -> MessageConflict:
        wanted = {row[0]: row[1] for row in message_rows}
        for message_id, written_to in wanted.items():
            found = self._writer.execute(
                "SELECT conversation_id FROM messages WHERE id = ?", [message_id]
            ).fetchone()
            if found is not None and found[0] != written_to:
                return MessageConflict(message_id, found[0], written_to)
        raise StoreError("a message upsert changed fewer rows than written, with no id clash")

    def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation's messages and leave a tombstone; return whether it existed.

        The tombstone (a conversation row with ``deleted_at`` and nothing else)
        is what replicates the deletion; changes of the conversation still
        waiting in the outbox are dropped, so deleted words never leave the machine.
        """
        with self._write_lock, write_transaction(self._writer):
            conn = self._writer
            found = conn.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND deleted_at IS NULL",
                [conversation_id],
            ).fetchone()
            if found is None:
                return False
            hlc = self._clock.now()
            deleted_at = _dt_to_text(self._next_stamp())
            self._tombstone(conversation_id, deleted_at, hlc, self.device_id)
            if self.outbox_enabled:
                change = _change_json(
                    ChangeKind.TOMBSTONE,
                    conversation_id,
                    hlc,
                    self.device_id,
                    {"deleted_at": deleted_at},
                )
                conn.execute(_INSERT_OUTBOX, [conversation_id, change, _dt_to_text(utcnow())])
            conn.execute(_SAVE_HLC, [self._clock.last])
            return True

    def _tombstone(self, conversation_id: str, deleted_at: str, hlc: str, device_id: str) -> None:
        # Everything but the id and the deletion goes, so every device that
        # applied the tombstone holds the same row whatever it saw before.
        conn = self._writer
        conn.execute("DELETE FROM messages WHERE conversation_id = ?", [conversation_id])
        conn.execute("DELETE FROM outbox WHERE conversation_id = ?", [conversation_id])
        conn.execute(_UPSERT_TOMBSTONE, [conversation_id, deleted_at, hlc, device_id])

    def set_title(self, conversation_id: str, title: str) -> None:
        """Rename a conversation (whitespace collapsed; does not change ``updated_at``).

        Raises:
            InvalidInput: the title is blank.
            ConversationNotFound: no such conversation.
        """
        cleaned = " ".join(title.split())
        if not cleaned:
            raise InvalidInput("a conversation title cannot be blank")
        with self._write_lock, write_transaction(self._writer):
            conn = self._writer
            row = conn.execute(
                "SELECT title, created_at, backend, model, system, metadata FROM conversations "
                "WHERE id = ? AND deleted_at IS NULL",
                [conversation_id],
            ).fetchone()
            if row is None:
                raise ConversationNotFound(conversation_id)
            if row[0] == cleaned:
                return
            hlc = self._clock.now()
            conn.execute(
                "UPDATE conversations SET title = ?, hlc = ?, device_id = ? WHERE id = ?",
                [cleaned, hlc, self.device_id, conversation_id],
            )
            if self.outbox_enabled:
                data = {
                    "title": cleaned,
                    "created_at": row[1],
                    "backend": row[2],
                    "model": row[3],
                    "system": row[4],
                    "metadata": json.loads(row[5]),
                }
                change = _change_json(
                    ChangeKind.CONVERSATION, conversation_id, hlc, self.device_id, data
                )
                conn.execute(_INSERT_OUTBOX, [conversation_id, change, _dt_to_text(utcnow())])
            conn.execute(_SAVE_HLC, [self._clock.last])

    # ---------------------------------------------------------------- replication

    def apply_changes(self, changes: Sequence[Change]) -> int:
        """Merge remote changes in one transaction; return how many altered local state.

        Idempotent and order-independent: messages are keyed by id and replaced
        only by a change with a greater ``(hlc, device_id)``; conversation metadata
        is last-writer-wins on the same order; a tombstone is final (it removes the
        conversation's messages, and nothing written to it later is applied).
        Writes no outbox rows. Advances the local clock past every stamp seen.

        Raises:
            TypeError: an item is not a ``Change``.
        """
        for change in changes:
            if not isinstance(change, Change):
                raise TypeError(f"apply_changes takes Change objects, got {type(change).__name__}")
        if not changes:
            return 0
        altered = 0
        with self._write_lock, write_transaction(self._writer):
            for change in changes:
                self._clock.observe(change.hlc)
                if change.kind is ChangeKind.MESSAGE:
                    altered += self._apply_message(change)
                elif change.kind is ChangeKind.CONVERSATION:
                    altered += self._apply_conversation(change)
                else:
                    altered += self._apply_tombstone(change)
            self._writer.execute(_SAVE_HLC, [self._clock.last])
            self._commits_since_checkpoint += 1
        return altered

    def _apply_conversation(self, change: Change) -> bool:
        conn = self._writer
        cid, data = change.conversation_id, change.data
        created = _canonical_time(data["created_at"])
        values = [
            data["title"],
            created,
            data["backend"],
            data["model"],
            data["system"],
            _to_json(data["metadata"]),
            change.hlc,
            change.device_id,
        ]
        row = conn.execute(
            "SELECT updated_at, deleted_at, hlc, device_id FROM conversations WHERE id = ?", [cid]
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO conversations (title, created_at, backend, model, system, metadata, "
                "hlc, device_id, updated_at, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*values, created, cid],
            )
            return True
        updated_at, deleted_at, hlc, device_id = row
        if deleted_at is not None:
            return False
        # updated_at is the newest time seen, winner or not, so it does not
        # depend on the order changes arrive in.
        latest = max(updated_at, created)
        if hlc is None or change.order_key > (hlc, device_id or ""):
            conn.execute(
                "UPDATE conversations SET title = ?, created_at = ?, backend = ?, model = ?, "
                "system = ?, metadata = ?, hlc = ?, device_id = ?, updated_at = ? WHERE id = ?",
                [*values, latest, cid],
            )
            return True
        if latest != updated_at:
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", [latest, cid])
            return True
        return False

    def _apply_message(self, change: Change) -> bool:
        conn = self._writer
        cid, data = change.conversation_id, change.data
        created = _canonical_time(data["created_at"])
        stored = conn.execute(
            "SELECT conversation_id, hlc, device_id FROM messages WHERE id = ?", [data["id"]]
        ).fetchone()
        if stored is not None and stored[0] != cid:
            log.warning(
                "ignoring a change that moves message %r from conversation %r to %r",
                data["id"],
                stored[0],
                cid,
            )
            return False
        conversation = conn.execute(
            "SELECT deleted_at FROM conversations WHERE id = ?", [cid]
        ).fetchone()
        if conversation is None:
            # The message came before its conversation: a placeholder with no
            # stamp, which any CONVERSATION change replaces.
            conn.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                [cid, DEFAULT_TITLE, created, created],
            )
            altered = True
        elif conversation[0] is not None:
            return False
        else:
            altered = conn.execute(_FOLD_MESSAGE_TIME, [created, cid]).rowcount > 0
        row = (
            data["id"],
            cid,
            data["role"],
            data["content"],
            data["status"],
            created,
            data["model"],
            data["tokens_in"],
            data["tokens_out"],
            _to_json(data["metadata"]),
            change.hlc,
            change.device_id,
        )
        if stored is None:
            conn.execute(_UPSERT_MESSAGE, row)
            return True
        if stored[1] is not None and change.order_key <= (stored[1], stored[2] or ""):
            return altered
        conn.execute(
            "UPDATE messages SET role = ?3, content = ?4, status = ?5, created_at = ?6, "
            "model = ?7, tokens_in = ?8, tokens_out = ?9, metadata = ?10, hlc = ?11, "
            "device_id = ?12 WHERE id = ?1 AND conversation_id = ?2",
            row,
        )
        return True

    def _apply_tombstone(self, change: Change) -> bool:
        cid = change.conversation_id
        row = self._writer.execute(
            "SELECT deleted_at, hlc, device_id FROM conversations WHERE id = ?", [cid]
        ).fetchone()
        if row is not None and row[0] is not None and change.order_key <= (row[1], row[2] or ""):
            return False
        deleted_at = _canonical_time(change.data["deleted_at"])
        self._tombstone(cid, deleted_at, change.hlc, change.device_id)
        return True

    def outbox_pending(self, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` queued changes, oldest first (read on the reader connection).

        Raises:
            ValueError: ``limit`` is less than 1.
            StoreError: a stored row is not a well-formed change.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        rows = self._read("SELECT id, change FROM outbox ORDER BY id LIMIT ?", [limit])
        entries = []
        for row_id, text in rows:
            try:
                entries.append(OutboxEntry(row_id, Change.from_json(text)))
            except StoreError as exc:
                raise StoreError(f"{self.path}: outbox row {row_id}: {exc}") from None
        return entries

    def outbox_rows(self, limit: int, *, after: int = 0) -> list[tuple[int, str]]:
        """Up to ``limit`` queued rows with an id above ``after``, oldest first, as stored.

        ``(id, change JSON)``, neither parsed nor checked: the replicator hands the
        text to Redis as it is, so a drain does not pay for building a ``Change`` per
        row. ``after`` lets it read the next batch while the previous one is in flight.

        Raises:
            ValueError: ``limit`` is less than 1.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        return [
            (int(row_id), str(text))
            for row_id, text in self._read(
                "SELECT id, change FROM outbox WHERE id > ? ORDER BY id LIMIT ?", [after, limit]
            )
        ]

    def outbox_ack_range(self, first: int, last: int) -> int:
        """Delete the rows ``first..last`` (both included) in one statement; how many went.

        For a batch read with :meth:`outbox_rows` and acknowledged by Redis as a
        whole. Ids only grow (``AUTOINCREMENT``: never reused) and a read sees whole
        commits, so no row that was not in that batch can have an id inside its range.

        Raises:
            ValueError: ``first`` is greater than ``last``.
        """
        if first > last:
            raise ValueError(f"an outbox range runs upwards, got {first}..{last}")
        with self._write_lock, write_transaction(self._writer):
            cursor = self._writer.execute(
                "DELETE FROM outbox WHERE id BETWEEN ? AND ?", [int(first), int(last)]
            )
            return int(cursor.rowcount)

    def pii_mappings(self, conversation_ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(conversation id, "pii" object as JSON)`` of the messages that have one.

        Oldest message first per conversation. Replication redacts a CONVERSATION
        change (its title is made from what the user typed) with these, so only the
        few messages that carry a ``"pii"`` key are read, not whole conversations.
        """
        if not conversation_ids:
            return []
        return [
            (str(cid), str(pii))
            for cid, pii in self._read(
                "SELECT conversation_id, json_extract(metadata, '$.pii') FROM messages "
                "WHERE conversation_id IN (SELECT value FROM json_each(?)) "
                "AND instr(metadata, '\"pii\"') > 0 AND json_type(metadata, '$.pii') = 'object' "
                "ORDER BY conversation_id, created_at, id",
                [_to_json(list(conversation_ids))],
            )
        ]

    def outbox_ack(self, ids: Sequence[int]) -> None:
        """Delete the outbox rows ``ids`` (replicated) in one transaction; unknown ids are fine."""
        if not ids:
            return
        wanted = _to_json([int(i) for i in ids])
        with self._write_lock, write_transaction(self._writer):
            self._writer.execute(
                "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))", [wanted]
            )

    def outbox_depth(self) -> int:
        """How many changes wait in the outbox."""
        return int(self._read("SELECT COUNT(*) FROM outbox")[0][0])

    def sync_get(self, key: str) -> str | None:
        """A replication setting from ``sync_state`` (cursors and the like), or None."""
        rows = self._read("SELECT value FROM sync_state WHERE key = ?", [key])
        return str(rows[0][0]) if rows else None

    def sync_set(self, key: str, value: str) -> None:
        """Store a replication setting in ``sync_state``.

        Raises:
            ValueError: ``key`` is one the store keeps itself (device_id, hlc).
            TypeError: ``value`` is not text.
        """
        if key in _RESERVED_SYNC_KEYS:
            raise ValueError(f"sync_state key {key!r} is kept by the store and cannot be set")
        if not isinstance(value, str):
            raise TypeError(f"sync_state values are text, got {type(value).__name__}")
        with self._write_lock, write_transaction(self._writer):
            self._writer.execute(
                "INSERT INTO sync_state (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )

    # ---------------------------------------------------------------- reader side

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # fetchall + close: an unfinished statement would keep a read snapshot
        # open, and later reads on this connection would not see new commits.
        with self._read_lock, closing(self._reader.execute(sql, params)) as cursor:
            return cursor.fetchall()

    def list_conversations(self, *, limit: int | None = None) -> list[ConversationSummary]:
        """Conversations, most recently updated first."""
        rows = self._read(
            f"SELECT {_SUMMARY_COLUMNS} FROM conversations c WHERE c.deleted_at IS NULL "
            "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
            [-1 if limit is None else limit],
        )
        return [_summary(row) for row in rows]

    def get_conversation(self, conversation_id: str) -> ConversationSummary | None:
        rows = self._read(
            f"SELECT {_SUMMARY_COLUMNS} FROM conversations c "
            "WHERE c.id = ? AND c.deleted_at IS NULL",
            [conversation_id],
        )
        return _summary(rows[0]) if rows else None

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
        return [_message(row) for row in rows]

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
                created_at=_dt_from_text(row[5]),
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
        """Return the id that is ``prefix`` or uniquely starts with it.

        A prefix shorter than four characters only matches a whole id. Returns
        None when nothing matches or the prefix is ambiguous.
        """
        exact = self._read(
            "SELECT id FROM conversations WHERE id = ? AND deleted_at IS NULL", [prefix]
        )
        if exact:
            return str(exact[0][0])
        if len(prefix) < _MIN_PREFIX:
            return None
        rows = self._read(
            "SELECT id FROM conversations WHERE id GLOB ? AND deleted_at IS NULL LIMIT 2",
            [_glob_literal(prefix) + "*"],
        )
        return str(rows[0][0]) if len(rows) == 1 else None

    def schema_version(self) -> int:
        """The number of the newest applied migration (0 for an empty file)."""
        rows = self._read("SELECT name FROM _migrations")
        return max((_migration_number(row[0]) for row in rows), default=0)

    # ---------------------------------------------------------------- plugin key-value

    def kv_get(self, namespace: str, key: str) -> Any | None:
        """The JSON value stored under ``key``, or None."""
        rows = self._read(
            "SELECT value FROM plugin_kv WHERE namespace = ? AND key = ?", [namespace, key]
        )
        return json.loads(rows[0][0]) if rows else None

    def kv_set(self, namespace: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value (TypeError otherwise)."""
        encoded = _to_json(value)
        with self._write_lock, write_transaction(self._writer):
            self._writer.execute(
                "INSERT INTO plugin_kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET "
                "value = excluded.value, updated_at = excluded.updated_at",
                [namespace, key, encoded, _dt_to_text(utcnow())],
            )

    def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; return whether it was there."""
        with self._write_lock, write_transaction(self._writer):
            cursor = self._writer.execute(
                "DELETE FROM plugin_kv WHERE namespace = ? AND key = ?", [namespace, key]
            )
            return cursor.rowcount > 0

    def kv(self, namespace: str) -> KVNamespace:
        """A view bound to one namespace: what a plugin is handed instead of the store."""
        if not namespace:
            raise ValueError("a key-value namespace cannot be empty")
        return KVNamespace(self, namespace)


class KVNamespace:
    """One plugin's key-value namespace; it cannot reach any other."""

    __slots__ = ("_namespace", "_store")

    def __init__(self, store: Store, namespace: str) -> None:
        self._store = store
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        return self._namespace

    def get(self, key: str) -> Any | None:
        return self._store.kv_get(self._namespace, key)

    def set(self, key: str, value: Any) -> None:
        self._store.kv_set(self._namespace, key, value)

    def delete(self, key: str) -> bool:
        return self._store.kv_delete(self._namespace, key)


# --------------------------------------------------------------------------- writer actor


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Counters of the store writer (batches and records include direct writes)."""

    batches: int
    records: int
    largest_batch: int
    queued: int
    failed: int


@dataclass(eq=False, slots=True)
class _WriteRequest:
    records: tuple[TurnRecord, ...]
    done: trio.Event = field(default_factory=trio.Event)
    committed: bool = False
    error: BaseException | None = None


class StoreWriter:
    """The store actor: turns queued by many tasks, committed in groups.

    A batch is whatever is queued when the writer gets to it (at most
    ``max_batch`` requests), written in one transaction in one worker thread.
    If a batch fails, each of its requests is retried on its own, so one bad
    turn only fails its own caller.
    """

    name = "store"

    def __init__(
        self,
        store: Store,
        *,
        capacity: int = STORE_QUEUE_CAPACITY,
        max_batch: int = STORE_MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._store = store
        self._max_batch = max_batch
        # Created here, not in run(): queued writes survive an actor restart.
        self._send, self._receive = trio.open_memory_channel[_WriteRequest](capacity)
        self._limiter = trio.CapacityLimiter(1)
        self._batches = 0
        self._records = 0
        self._largest_batch = 0
        self._failed = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            # Shielded: once taken off the queue, a batch is committed (or its
            # callers get the error) even if the actor is being cancelled.
            with trio.CancelScope(shield=True):
                await self._commit(batch)
            if self._store.checkpoint_due:
                await trio.to_thread.run_sync(self._store.checkpoint, limiter=self._limiter)

    async def _commit(self, batch: list[_WriteRequest]) -> None:
        self._batches += 1
        self._largest_batch = max(self._largest_batch, len(batch))
        try:
            records = [record for request in batch for record in request.records]
            try:
                await self._run_in_thread(records)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    await self._commit_one_by_one(batch)
            else:
                self._records += len(records)
                for request in batch:
                    request.committed = True
        finally:
            for request in batch:
                if not request.committed and request.error is None:
                    request.error = StoreError("the store writer stopped before this write")
                if request.error is not None:
                    self._failed += 1
                request.done.set()

    async def _commit_one_by_one(self, batch: list[_WriteRequest]) -> None:
        for request in batch:
            try:
                await self._run_in_thread(request.records)
            except Exception as exc:
                request.error = exc
            else:
                self._records += len(request.records)
                request.committed = True

    async def _run_in_thread(self, records: Sequence[TurnRecord]) -> None:
        # Looked up on each call (not bound once) so a replaced store method is used.
        store = self._store
        if len(records) <= INLINE_COMMIT_MAX_RECORDS and store.write_turns(records, wait=False):
            return
        await trio.to_thread.run_sync(store.write_turns, records, limiter=self._limiter)

    async def write(self, records: Sequence[TurnRecord]) -> None:
        """Queue ``records`` and wait until they are committed.

        If the caller is cancelled while waiting, the write may still be committed.

        Raises:
            Exception: whatever committing these records raised.
        """
        if not records:
            return
        request = _WriteRequest(tuple(records))
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error

    async def write_direct(self, records: Sequence[TurnRecord]) -> None:
        """Commit ``records`` now, bypassing the queue (for shutdown, when the actor may be gone).

        Raises:
            Exception: whatever committing these records raised.
        """
        if not records:
            return
        self._batches += 1
        self._largest_batch = max(self._largest_batch, 1)
        try:
            await self._run_in_thread(records)
        except Exception:
            self._failed += 1
            raise
        self._records += len(records)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            batches=self._batches,
            records=self._records,
            largest_batch=self._largest_batch,
            queued=self._receive.statistics().current_buffer_used,
            failed=self._failed,
        )
