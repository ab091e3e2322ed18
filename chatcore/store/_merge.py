"""Remote changes merged into the local store: idempotent, in any order, tombstones final."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._changes import Change, ChangeKind
from ._codec import canonical_time, to_json
from ._connection import StoreConnection, log
from ._writers import DEFAULT_TITLE, UPSERT_MESSAGE, tombstone

if TYPE_CHECKING:
    from collections.abc import Sequence

# A message's time moves its conversation's updated_at forward, and the
# created_at of a placeholder (no stamp yet) back; WHERE skips a no-op.
_FOLD_MESSAGE_TIME = """
UPDATE conversations SET
    updated_at = MAX(updated_at, ?1),
    created_at = IIF(hlc IS NULL, MIN(created_at, ?1), created_at)
WHERE id = ?2 AND (updated_at < ?1 OR (hlc IS NULL AND created_at > ?1))
"""


class ChangeMerger(StoreConnection):
    """The part of ``Store`` that applies other devices' changes (writes no outbox rows)."""

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
        with self._writing() as conn:
            for change in changes:
                self._clock.observe(change.hlc)
                if change.kind is ChangeKind.MESSAGE:
                    altered += self._apply_message(change)
                elif change.kind is ChangeKind.CONVERSATION:
                    altered += self._apply_conversation(change)
                else:
                    altered += self._apply_tombstone(change)
            self._save_clock(conn)
            self._commits_since_checkpoint += 1
        return altered

    def _apply_conversation(self, change: Change) -> bool:
        conn = self._writer
        cid, data = change.conversation_id, change.data
        created = canonical_time(data["created_at"])
        values = [
            data["title"],
            created,
            data["backend"],
            data["model"],
            data["system"],
            to_json(data["metadata"]),
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
        created = canonical_time(data["created_at"])
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
            to_json(data["metadata"]),
            change.hlc,
            change.device_id,
        )
        if stored is None:
            conn.execute(UPSERT_MESSAGE, row)
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
        deleted_at = canonical_time(change.data["deleted_at"])
        tombstone(self._writer, cid, deleted_at, change.hlc, change.device_id)
        return True
