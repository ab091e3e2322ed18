"""SQLite connections and write transactions, shared by the store and every feature's tables."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

DB_FILENAME = "chatcore.db"
BUSY_TIMEOUT_MS = 5000

_DIR_MODE = 0o700
_FILE_MODE = 0o600


def connect(path: Path) -> sqlite3.Connection:
    """A connection to a chatcore database with the settings every user of it shares.

    For features that keep their own tables in the engine's file (``host.database_path``):
    the same busy timeout, durability and foreign keys as the store's own connections.
    A missing file is created owner-only first (and its folder, if missing, too), so
    history is never readable by others, not even for a moment.
    """
    create_private(Path(path))
    # isolation_level=None: the driver never opens transactions behind our back.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (its folder 0700) unless it exists.

    An existing folder keeps its mode: it may be the user's own.
    """
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(parent, _DIR_MODE)  # mkdir's mode is filtered by the umask
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        except FileExistsError:
            return  # another connection created it first
        os.close(fd)
        os.chmod(path, _FILE_MODE)


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


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds the lock (as opposed to a real fault)."""
    return "locked" in str(exc) or "busy" in str(exc)
