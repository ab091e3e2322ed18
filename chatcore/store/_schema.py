"""The store's own tables: the ``chatcore`` migration set.

Conversations, messages, the outbox, plugin key-value rows and replication state.
Features keep theirs in sets of their own (``rag``, ``memory``).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlite_utils.db import ForeignKey

from ..hlc import format_stamp
from ..messages import utcnow
from ._codec import dt_from_text, dt_to_text
from ._migrations import LEGACY_GUARD, LEGACY_TABLE, MigrationSet

if TYPE_CHECKING:
    from sqlite_utils import Database

CORE_MIGRATIONS = MigrationSet("chatcore")
"""The store's migration set; ``Store`` applies it whenever it opens a file."""

SYNC_DEVICE_ID = "device_id"
"""``sync_state`` key of this database's device id (generated once, never changed)."""
SYNC_HLC = "hlc"
"""``sync_state`` key of the newest clock stamp, so stamps keep growing across restarts."""


@CORE_MIGRATIONS
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


def _stamp_from_time(created_at: str | None, device_id: str) -> str:
    """A clock stamp for a row written before stamps existed: its creation time."""
    when = dt_from_text(created_at) if created_at else utcnow()
    millis = int(when.timestamp() * 1000)
    return format_stamp(max(millis, 0), 0, device_id)


@CORE_MIGRATIONS
def m002_replication(db: Database) -> None:
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


@CORE_MIGRATIONS
def m003_legacy_guard(db: Database) -> None:
    """Make chatcore 0.1.0 refuse this file rather than build its tables a second time.

    0.1.0 reads ``_migrations`` only: a step it does not know there makes it stop with
    "migrated by a newer chatcore". The table is kept (0.1.0 files have it) or created.
    """
    db.conn.execute(
        f'CREATE TABLE IF NOT EXISTS "{LEGACY_TABLE}" ("name" TEXT PRIMARY KEY, "applied_at" TEXT)'
    )
    db.conn.execute(
        f'INSERT OR IGNORE INTO "{LEGACY_TABLE}" (name, applied_at) VALUES (?, ?)',
        [LEGACY_GUARD, dt_to_text(utcnow())],
    )


@CORE_MIGRATIONS
def m004_field_stamps(db: Database) -> None:
    """A stamp per conversation field (``field_hlc``), so each field merges on its own.

    A row stamped before this step had one stamp for the whole record: it becomes
    the stamp of every field, which is what last-writer-wins on the record meant.
    """
    conn = db.conn
    conn.execute("ALTER TABLE conversations ADD COLUMN field_hlc TEXT NOT NULL DEFAULT '{}'")
    conn.execute(
        "UPDATE conversations SET field_hlc = json_object("
        "'title', hlc, 'backend', hlc, 'model', hlc, 'system', hlc, 'metadata', hlc) "
        "WHERE hlc IS NOT NULL AND deleted_at IS NULL"
    )


CLIENT_ID_FILTER = "instr(metadata, '\"client_id\"') > 0"
"""Which messages the key index holds: those whose metadata may have a key (cheap to test)."""
CLIENT_ID_EXPRESSION = (
    "CASE WHEN json_valid(metadata) THEN json_extract(metadata, '$.client_id') END"
)
"""A turn's idempotency key, kept in its messages' metadata (so it replicates with
them). Guarded by ``json_valid``: Python's json writes NaN, which SQLite's JSON
functions refuse, and the index must never make a write fail. Queries spell the
filter and the expression exactly like this, or SQLite does not use the index."""


@CORE_MIGRATIONS
def m005_client_ids(db: Database) -> None:
    """Index the idempotency keys of turns (``send(client_id=...)``, ``ask --id``).

    Partial: only messages with a key are in it, so turns without one cost nothing
    more. Not unique: merging another device's messages must never fail on a key.
    """
    db.conn.execute(
        f"CREATE INDEX messages_client_id ON messages ({CLIENT_ID_EXPRESSION}) "
        f"WHERE {CLIENT_ID_FILTER}"
    )
