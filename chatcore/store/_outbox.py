"""The outbox as the replicator sees it, and the replication settings in ``sync_state``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..messages import LOCAL_METADATA
from ._changes import OutboxEntry, parse_outbox_row
from ._codec import to_json
from ._connection import StoreConnection
from ._schema import SYNC_DEVICE_ID, SYNC_HLC

if TYPE_CHECKING:
    from collections.abc import Sequence

_RESERVED_SYNC_KEYS = frozenset({SYNC_DEVICE_ID, SYNC_HLC})


class OutboxAccess(StoreConnection):
    """The part of ``Store`` that reads and acknowledges queued changes."""

    def outbox_pending(self, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` queued changes, oldest first (read on the reader connection).

        Raises:
            ValueError: ``limit`` is less than 1.
            StoreError: a stored row is not a well-formed change.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        rows = self._read("SELECT id, change FROM outbox ORDER BY id LIMIT ?", [limit])
        return [
            OutboxEntry(row_id, parse_outbox_row(self.path, row_id, text)) for row_id, text in rows
        ]

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
        with self._writing() as conn:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE id BETWEEN ? AND ?", [int(first), int(last)]
            )
            return int(cursor.rowcount)

    def local_metadata(self, conversation_ids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """``(conversation id, plugin-local metadata)`` of the messages that have some.

        Oldest message first per conversation. Replication hands these to the plugins
        that share a CONVERSATION change (its title is made from what the user typed),
        so only the few messages that carry ``LOCAL_METADATA`` are read, not whole
        conversations.
        """
        if not conversation_ids:
            return []
        found = self._read(
            f"SELECT conversation_id, json_extract(metadata, '$.{LOCAL_METADATA}') "
            "FROM messages WHERE conversation_id IN (SELECT value FROM json_each(?)) "
            f"AND instr(metadata, '\"{LOCAL_METADATA}\"') > 0 "
            f"AND json_type(metadata, '$.{LOCAL_METADATA}') = 'object' "
            "ORDER BY conversation_id, created_at, id",
            [to_json(list(conversation_ids))],
        )
        return [(str(cid), json.loads(kept)) for cid, kept in found]

    def outbox_ack(self, ids: Sequence[int]) -> None:
        """Delete the outbox rows ``ids`` (replicated) in one transaction; unknown ids are fine."""
        if not ids:
            return
        wanted = to_json([int(i) for i in ids])
        with self._writing() as conn:
            conn.execute(
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
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO sync_state (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
