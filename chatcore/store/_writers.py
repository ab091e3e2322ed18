"""Local writes to conversations and messages, each with its outbox rows in one transaction."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConversationNotFound, InvalidInput, MessageConflict, StoreError
from ..messages import Message, Role, utcnow
from ._changes import MERGED_FIELDS, STAMP_FIELDS, ChangeKind, change_json, changed_fields
from ._codec import dt_to_text, to_json
from ._connection import StoreConnection
from ._sqlite import BUSY_TIMEOUT_MS, is_busy, write_transaction

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

DEFAULT_TITLE = "New conversation"
TITLE_MAX_CHARS = 60


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


# --------------------------------------------------------------------------- SQL

_UPSERT_CONVERSATION = """
INSERT INTO conversations (
    id, title, created_at, updated_at, backend, model, system, hlc, device_id
)
VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (id) DO UPDATE SET
    updated_at = excluded.updated_at,
    backend = excluded.backend,
    model = excluded.model,
    system = excluded.system,
    hlc = COALESCE(excluded.hlc, conversations.hlc),
    device_id = IIF(excluded.hlc IS NULL, conversations.device_id, excluded.device_id)
"""

# The seq subquery reads the (conversation_id, seq) index, so it is a single seek.
# The WHERE on the update turns a cross-conversation id clash into "no change",
# which write_turns detects from the change count.
UPSERT_MESSAGE = """
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
    metadata = '{}', deleted_at = ?2, hlc = ?3, device_id = ?4, field_hlc = '{}'
"""

_INSERT_OUTBOX = "INSERT INTO outbox (conversation_id, change, created_at) VALUES (?, ?, ?)"

# What write_turns needs to know about the conversations of a batch before writing.
_CONVERSATION_STATE = """
SELECT id, title, created_at, backend, model, system, metadata, deleted_at
FROM conversations WHERE id IN (SELECT value FROM json_each(?))
"""


def conversation_data(fields: Sequence[Any]) -> dict[str, Any]:
    """A CONVERSATION change's data from ``(title, created_at, backend, model, system,
    metadata JSON)`` as stored."""
    title, created_at, backend, model, system, metadata = fields
    return {
        "title": title,
        "created_at": created_at,
        "backend": backend,
        "model": model,
        "system": system,
        "metadata": json.loads(metadata),
    }


def tombstone(
    conn: sqlite3.Connection, conversation_id: str, deleted_at: str, hlc: str, device_id: str
) -> None:
    """Leave only the id and the deletion of a conversation (in the caller's transaction).

    Everything else goes, so every device that applied the tombstone holds the
    same row whatever it saw before; its changes still queued go too.
    """
    conn.execute("DELETE FROM messages WHERE conversation_id = ?", [conversation_id])
    conn.execute("DELETE FROM outbox WHERE conversation_id = ?", [conversation_id])
    conn.execute(_UPSERT_TOMBSTONE, [conversation_id, deleted_at, hlc, device_id])


def _outbox_row(
    kind: ChangeKind,
    conversation_id: str,
    hlc: str,
    device_id: str,
    data: Mapping[str, Any],
    created_at: str,
) -> tuple[str, str, str]:
    return conversation_id, change_json(kind, conversation_id, hlc, device_id, data), created_at


class ConversationWriter(StoreConnection):
    """The part of ``Store`` that writes turns, renames and deletes conversations."""

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
                        dt_to_text(m.created_at),
                        m.model,
                        m.tokens_in,
                        m.tokens_out,
                        to_json(m.metadata),
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
                if not wait and is_busy(exc):
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
        ids = to_json(list(dict.fromkeys(r.conversation_id for r in records)))
        state: dict[str, list[Any]] = {
            row[0]: list(row[1:]) for row in conn.execute(_CONVERSATION_STATE, [ids])
        }
        now_text = dt_to_text(utcnow())
        conversation_rows: list[tuple[Any, ...]] = []
        message_rows: list[tuple[Any, ...]] = []
        outbox_rows: list[tuple[str, str, str]] = []
        stamp_rows: list[tuple[str, str]] = []
        for record, rows in zip(records, encoded, strict=True):
            cid = record.conversation_id
            stamp = dt_to_text(self._next_stamp())
            known = state.get(cid)
            conversation_hlc: str | None = None
            changed: list[str] = []
            if known is None:
                known = [titles.get(cid, DEFAULT_TITLE), stamp, None, None, None, "{}", None]
                state[cid] = known
                changed = list(MERGED_FIELDS)
            elif known[6] is not None:
                raise ConversationNotFound(cid)
            # None keeps what is stored; a new backend brings its own model (None: the
            # backend's configured one), since the old model belongs to the old backend.
            # The row is written from ``known``, read in this transaction.
            if record.backend is not None and record.backend != known[2]:
                known[2], known[3] = record.backend, record.model
                changed += ["backend", "model"]
            elif record.model is not None and record.model != known[3]:
                known[3] = record.model
                changed.append("model")
            if record.system is not None and record.system != known[4]:
                known[4] = record.system
                changed.append("system")
            if changed:
                conversation_hlc = clock.now()
                data, stamped = changed_fields(
                    cid, conversation_hlc, conversation_data(known[:6]), sorted(set(changed))
                )
                stamp_rows.append(stamped)
                if outbox:
                    kind = ChangeKind.CONVERSATION
                    outbox_rows.append(
                        _outbox_row(kind, cid, conversation_hlc, device, data, now_text)
                    )
            conversation_rows.append(
                (
                    cid,
                    known[0],
                    stamp,
                    known[2],
                    known[3],
                    known[4],
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
                    kind = ChangeKind.MESSAGE
                    outbox_rows.append(_outbox_row(kind, cid, hlc, device, data, now_text))
        conn.executemany(_UPSERT_CONVERSATION, conversation_rows)
        conn.executemany(STAMP_FIELDS, stamp_rows)
        # rowcount counts the statement's own rows (total_changes would add the
        # full-text triggers' rows too).
        written = conn.executemany(UPSERT_MESSAGE, message_rows).rowcount
        if written != len(message_rows):
            raise self._find_conflict(message_rows)
        if outbox_rows:
            conn.executemany(_INSERT_OUTBOX, outbox_rows)
        self._save_clock(conn)

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
        with self._writing() as conn:
            found = conn.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND deleted_at IS NULL",
                [conversation_id],
            ).fetchone()
            if found is None:
                return False
            hlc = self._clock.now()
            deleted_at = dt_to_text(self._next_stamp())
            tombstone(conn, conversation_id, deleted_at, hlc, self.device_id)
            if self.outbox_enabled:
                queued = _outbox_row(
                    ChangeKind.TOMBSTONE,
                    conversation_id,
                    hlc,
                    self.device_id,
                    {"deleted_at": deleted_at},
                    dt_to_text(utcnow()),
                )
                conn.execute(_INSERT_OUTBOX, queued)
            self._save_clock(conn)
            return True

    def set_title(self, conversation_id: str, title: str) -> None:
        """Rename a conversation (whitespace collapsed; does not change ``updated_at``).

        Raises:
            InvalidInput: the title is blank.
            ConversationNotFound: no such conversation.
        """
        cleaned = " ".join(title.split())
        if not cleaned:
            raise InvalidInput("a conversation title cannot be blank")
        with self._writing() as conn:
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
            data, stamped = changed_fields(
                conversation_id, hlc, conversation_data((cleaned, *row[1:])), ["title"]
            )
            conn.execute(STAMP_FIELDS, stamped)
            if self.outbox_enabled:
                queued = _outbox_row(
                    ChangeKind.CONVERSATION,
                    conversation_id,
                    hlc,
                    self.device_id,
                    data,
                    dt_to_text(utcnow()),
                )
                conn.execute(_INSERT_OUTBOX, queued)
            self._save_clock(conn)
