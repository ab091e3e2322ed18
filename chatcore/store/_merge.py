"""Remote changes merged into the local store: idempotent, in any order, tombstones final."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._changes import MERGED_FIELDS, Change, ChangeKind
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
        only by a change with a greater ``(hlc, device_id)``; each conversation
        field (title, backend, model, system, metadata) is last-writer-wins on its
        own stamp, so a change takes only the fields it carries that are older; a
        tombstone is final (it removes the conversation's messages, and nothing
        written to it later is applied).
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
        cid, data, hlc = change.conversation_id, change.data, change.hlc
        created = canonical_time(data["created_at"])
        # Each field the change carries is stamped with the change's stamp (a
        # change from before per-field merge carries them all): only the fields
        # whose stamp is older than it are taken, so an edit of one field never
        # reverts another device's edit of a different one.
        carried = {name: _column(name, data[name]) for name in MERGED_FIELDS if name in data}
        row = conn.execute(
            "SELECT updated_at, created_at, deleted_at, hlc, device_id, field_hlc "
            "FROM conversations WHERE id = ?",
            [cid],
        ).fetchone()
        if row is None:
            values = {"title": DEFAULT_TITLE, "metadata": "{}", **carried}
            columns = ", ".join(values)
            conn.execute(
                f"INSERT INTO conversations (id, created_at, updated_at, hlc, device_id, "
                f"field_hlc, {columns}) VALUES (?, ?, ?, ?, ?, ?{', ?' * len(values)})",
                [
                    cid,
                    created,
                    created,
                    hlc,
                    change.device_id,
                    _stamps(carried, hlc),
                    *values.values(),
                ],
            )
            return True
        updated_at, created_at, deleted_at, row_hlc, row_device, field_hlc = row
        if deleted_at is not None:
            return False
        stamps: dict[str, str] = json.loads(field_hlc)
        won = {name: value for name, value in carried.items() if hlc > stamps.get(name, "")}
        # updated_at is the newest time seen, winner or not, and created_at the
        # conversation's own (a placeholder's came from a message): neither depends
        # on the order changes arrive in.
        latest = max(updated_at, created)
        first = created if row_hlc is None else min(created_at, created)
        newest = row_hlc is None or change.order_key > (row_hlc, row_device or "")
        if not won and (latest, first) == (updated_at, created_at) and not newest:
            return False
        assignments = ", ".join(f"{name} = ?" for name in won)
        conn.execute(
            "UPDATE conversations SET updated_at = ?, created_at = ?, "
            "hlc = IIF(?, ?, hlc), device_id = IIF(?, ?, device_id), "
            f"field_hlc = json_patch(field_hlc, ?){', ' if won else ''}{assignments} "
            "WHERE id = ?",
            [
                latest,
                first,
                newest,
                hlc,
                newest,
                change.device_id,
                _stamps(won, hlc),
                *won.values(),
                cid,
            ],
        )
        return True

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


def _column(name: str, value: Any) -> Any:
    """A conversation field as its column stores it (metadata as JSON text)."""
    return to_json(value) if name == "metadata" else value


def _stamps(fields: dict[str, Any], hlc: str) -> str:
    return to_json(dict.fromkeys(fields, hlc))
