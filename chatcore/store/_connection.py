"""The store's two connections, its locks and its clock: what every part of ``Store`` shares."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from sqlite_utils import Database

from ..errors import StoreError
from ..hlc import HybridClock
from ..messages import utcnow
from ._schema import CORE_MIGRATIONS, SYNC_DEVICE_ID, SYNC_HLC
from ._sqlite import BUSY_TIMEOUT_MS, connect, full_disk, write_transaction

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

log = logging.getLogger("chatcore.store")

CHECKPOINT_EVERY_COMMITS = 200
"""Commits between WAL checkpoints (a turn's commit is a few pages)."""

_SAVE_HLC = (
    f"INSERT INTO sync_state (key, value) VALUES ('{SYNC_HLC}', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_EPOCH = datetime.min.replace(tzinfo=UTC)


class StoreConnection:
    """Opens the database and holds what the parts of ``Store`` share.

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

        Raises:
            StoreError: WAL cannot be enabled, or the file is damaged.
            StoreFull: the disk holding ``path`` is full.
            MigrationError: the file was migrated by a newer chatcore.
        """
        self.path = Path(path)
        self.outbox_enabled = bool(outbox)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._last_stamp = _EPOCH
        self._closed = False
        self._commits_since_checkpoint = 0
        self._writer = connect(self.path)
        try:
            mode = _switch_to_wal(self._writer)
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot enable WAL journal mode (got {mode!r})")
            # Checkpoints run where blocking is harmless (see ``checkpoint``).
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self.db = Database(self._writer, execute_plugins=False)
            CORE_MIGRATIONS.apply(self.db)
            self._clock = self._load_clock()
            self._reader = connect(self.path)
            # The reader never writes; make a mistake loud instead of a lock fight.
            self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.OperationalError as exc:
            self._writer.close()
            full = full_disk(exc, self.path.parent)
            if full is not None:
                raise full from exc
            raise
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

    def close(self) -> None:
        """Close both connections; calling it again does nothing."""
        with self._write_lock, self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._reader.close()
            try:
                self._writer.execute("PRAGMA optimize")
            except sqlite3.OperationalError as exc:
                # Only an optimisation: another process holding the lock (it may have
                # to write) must not make closing fail.
                log.debug("%s: PRAGMA optimize skipped: %s", self.path, exc)
            finally:
                self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def schema_version(self) -> int:
        """The number of the store's newest applied migration (0 for an empty file)."""
        with self._read_lock:
            applied = CORE_MIGRATIONS.applied(self._reader)
        return len(applied)

    # ---------------------------------------------------------------- shared by the parts

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one write transaction, behind the write lock."""
        with self._write_lock, write_transaction(self._writer):
            yield self._writer

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # fetchall + close: an unfinished statement would keep a read snapshot
        # open, and later reads on this connection would not see new commits.
        with self._read_lock, closing(self._reader.execute(sql, params)) as cursor:
            return cursor.fetchall()

    def _next_stamp(self) -> datetime:
        # Strictly increasing within this process, so "newest first" never ties
        # between two writes, even inside one batch or on a coarse clock.
        now = utcnow()
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def _save_clock(self, conn: sqlite3.Connection) -> None:
        conn.execute(_SAVE_HLC, [self._clock.last])

    # ---------------------------------------------------------------- checkpoints

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


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode = WAL``, waiting for other writers as every statement does.

    SQLite answers the switch with "database is locked" at once, without calling the
    busy handler, while another connection holds a write lock on a file still in
    rollback mode: two processes creating one database at the same moment hit it.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
