"""SQLite persistence: the local source of truth for conversations.

One writer connection, used from one worker thread at a time and committing turns
in groups (``StoreWriter``), and a separate reader connection, so reads never wait
behind a batch and never see half of one. Schema changes are numbered migrations.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio
from sqlite_utils import Database
from sqlite_utils.db import ForeignKey

from .errors import ChatcoreError, ConversationNotFound, InvalidInput
from .messages import Message, MessageStatus, Role, utcnow

__all__ = [
    "DB_FILENAME",
    "DEFAULT_TITLE",
    "MIGRATIONS",
    "STORE_MAX_BATCH",
    "STORE_QUEUE_CAPACITY",
    "TITLE_MAX_CHARS",
    "ConversationSummary",
    "KVNamespace",
    "MessageConflict",
    "Migration",
    "Store",
    "StoreError",
    "StoreStatistics",
    "StoreWriter",
    "TurnRecord",
    "make_title",
    "migrate",
    "migration",
]

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


# --------------------------------------------------------------------------- encoding


def _dt_to_text(value: datetime) -> str:
    # Naive datetimes are taken as UTC (the domain model only makes aware ones).
    # A fixed width (always microseconds) keeps text order equal to time order.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt_from_text(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


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
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
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
        with _immediate(db.conn):
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
    db.table("memories").create(
        {"id": str, "user": str, "content": str, "created_at": str, "metadata": str},
        pk="id",
        not_null={"user", "content", "created_at", "metadata"},
        defaults={"metadata": "{}"},
    )
    db.table("memories").create_index(["user", "created_at"])


# --------------------------------------------------------------------------- SQL

_UPSERT_CONVERSATION = """
INSERT INTO conversations (id, title, created_at, updated_at, backend, model, system)
VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)
ON CONFLICT (id) DO UPDATE SET
    updated_at = excluded.updated_at,
    backend = COALESCE(excluded.backend, conversations.backend),
    model = COALESCE(excluded.model, conversations.model),
    system = COALESCE(excluded.system, conversations.system)
"""

# The seq subquery reads the (conversation_id, seq) index, so it is a single seek.
# The WHERE on the update turns a cross-conversation id clash into "no change",
# which write_turns detects from the change count.
_UPSERT_MESSAGE = """
INSERT INTO messages (
    id, conversation_id, seq, role, content, status, created_at,
    model, tokens_in, tokens_out, metadata
)
VALUES (
    ?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = ?2),
    ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
)
ON CONFLICT (id) DO UPDATE SET
    content = excluded.content,
    status = excluded.status,
    model = excluded.model,
    tokens_in = excluded.tokens_in,
    tokens_out = excluded.tokens_out,
    metadata = excluded.metadata
WHERE messages.conversation_id = excluded.conversation_id
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


def _message(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        role=Role(row[1]),
        content=row[2],
        created_at=_dt_from_text(row[3]),
        model=row[4],
        tokens_in=row[5],
        tokens_out=row[6],
        status=MessageStatus(row[7]),
        metadata=json.loads(row[8]),
    )


def _glob_literal(text: str) -> str:
    # GLOB (unlike LIKE) is case-sensitive, so SQLite can use the primary key
    # index for a prefix match; brackets make the metacharacters literal.
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in text)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _connect(path: Path) -> sqlite3.Connection:
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

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._last_stamp = _EPOCH
        self._closed = False
        self._commits_since_checkpoint = 0
        self._ensure_file()
        self._writer = _connect(self.path)
        try:
            mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot enable WAL journal mode (got {mode!r})")
            # Checkpoints run where blocking is harmless (see ``checkpoint``).
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self.db = Database(self._writer, execute_plugins=False)
            migrate(self.db)
            self._reader = _connect(self.path)
            # The reader never writes; make a mistake loud instead of a lock fight.
            self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            self._writer.close()
            raise

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

        With ``wait=False`` the call never blocks on a lock: if this process or
        another holds the write lock it writes nothing and returns False, so the
        caller can retry where blocking is harmless (a worker thread).

        Raises:
            MessageConflict: a message id is already stored in another conversation.
            TypeError: message metadata is not JSON-serialisable.
        """
        if not records:
            return True
        # Encode before taking the lock: a bad value fails without touching the file.
        titles: dict[str, str] = {}
        message_rows: list[tuple[Any, ...]] = []
        for record in records:
            cid = record.conversation_id
            if cid not in titles:
                first_user = next((m for m in record.messages if m.role is Role.USER), None)
                if first_user is not None:
                    titles[cid] = make_title(first_user.content)
            for m in record.messages:
                message_rows.append(
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
                )
        if not self._write_lock.acquire(blocking=wait):
            return False
        try:
            conversation_rows = [
                (
                    record.conversation_id,
                    titles.get(record.conversation_id, DEFAULT_TITLE),
                    _dt_to_text(self._next_stamp()),
                    record.backend,
                    record.model,
                    record.system,
                )
                for record in records
            ]
            conn = self._writer
            if not wait:
                conn.execute("PRAGMA busy_timeout = 0")
            try:
                with _immediate(conn):
                    conn.executemany(_UPSERT_CONVERSATION, conversation_rows)
                    before = conn.total_changes
                    conn.executemany(_UPSERT_MESSAGE, message_rows)
                    if conn.total_changes - before != len(message_rows):
                        raise self._find_conflict(message_rows)
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
        """Delete a conversation and its messages; return whether it existed."""
        with self._write_lock, _immediate(self._writer):
            cursor = self._writer.execute(
                "DELETE FROM conversations WHERE id = ?", [conversation_id]
            )
            return cursor.rowcount > 0

    def set_title(self, conversation_id: str, title: str) -> None:
        """Rename a conversation (whitespace collapsed; does not change ``updated_at``).

        Raises:
            InvalidInput: the title is blank.
            ConversationNotFound: no such conversation.
        """
        cleaned = " ".join(title.split())
        if not cleaned:
            raise InvalidInput("a conversation title cannot be blank")
        with self._write_lock, _immediate(self._writer):
            cursor = self._writer.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND deleted_at IS NULL",
                [cleaned, conversation_id],
            )
            if cursor.rowcount == 0:
                raise ConversationNotFound(conversation_id)

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
        """The messages of a conversation in order ([] if there is none)."""
        rows = self._read(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY seq",
            [conversation_id],
        )
        return [_message(row) for row in rows]

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
        with self._write_lock, _immediate(self._writer):
            self._writer.execute(
                "INSERT INTO plugin_kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET "
                "value = excluded.value, updated_at = excluded.updated_at",
                [namespace, key, encoded, _dt_to_text(utcnow())],
            )

    def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; return whether it was there."""
        with self._write_lock, _immediate(self._writer):
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
