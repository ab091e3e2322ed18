"""Opening a database another connection is writing to waits for it, at every step."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from chatcore.store import Store


@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
def test_a_new_file_locked_by_another_writer_opens_once_it_is_released(
    tmp_path: Path, lock: str
) -> None:
    # SQLite answers a switch to WAL at once with "database is locked" while another
    # connection holds a write lock, without waiting: two processes creating one
    # database at the same moment met exactly this.
    path = tmp_path / "chatcore.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute(lock)
    releaser = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    releaser.start()
    try:
        store = Store(path)  # raised "database is locked" at once
    finally:
        releaser.join()
    assert store.list_conversations() == []
    store.close()
    other.close()


class _LockedOnOptimize:
    """A connection whose ``PRAGMA optimize`` meets another process's write lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.closed = False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "PRAGMA optimize":
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)

    def close(self) -> None:
        self.closed = True
        self.conn.close()


def test_closing_while_another_process_writes_still_closes(tmp_path: Path) -> None:
    # PRAGMA optimize may have to write; when another process holds the lock longer
    # than the busy timeout, closing must still close (four processes creating one
    # database at once met it).
    store = Store(tmp_path / "chatcore.db")
    writer = _LockedOnOptimize(store._writer)
    store._writer = writer  # type: ignore[assignment]
    store.close()
    assert writer.closed
    assert Store(tmp_path / "chatcore.db").list_conversations() == []
