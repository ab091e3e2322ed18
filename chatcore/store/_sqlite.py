"""SQLite connections and write transactions, shared by the store and every feature's tables."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreFull

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

    Raises:
        StoreFull: the disk holding ``path`` is full (so the file cannot be opened).
    """
    path = Path(path)
    create_private(path)
    # isolation_level=None: the driver never opens transactions behind our back.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.OperationalError as exc:
        conn.close()
        full = full_disk(exc, path.parent)
        if full is not None:
            raise full from exc
        raise
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

    A full disk raises `StoreFull` (naming the database's folder) instead of
    SQLite's bare ``database or disk is full``; the transaction is rolled back, so
    nothing of it is kept and the connection can write again once there is space.
    """
    try:
        # A WAL or shared-memory file that cannot grow can fail the BEGIN already.
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        _raise_if_full(conn, exc)
        raise
    try:
        yield
        # Inside the try: a COMMIT that fails (a full disk fails there, writing the
        # WAL) must roll back too, or the connection stays in the dead transaction.
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            _raise_if_full(conn, exc)
        raise


def _raise_if_full(conn: sqlite3.Connection, exc: sqlite3.OperationalError) -> None:
    full = full_disk(exc, _data_dir(conn))
    if full is not None:
        raise full from exc


LOW_SPACE_BYTES = 1 << 20
"""Below this much free space, SQLite's "disk I/O error" is taken for a full disk: a
WAL or shared-memory file that cannot grow fails as an I/O error, not as SQLITE_FULL."""


def full_disk(exc: sqlite3.Error, data_dir: Path | str | None) -> StoreFull | None:
    """`StoreFull` for ``data_dir`` if ``exc`` means its disk is full, else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc):
        return StoreFull(data_dir or "the chatcore database")
    io_error = (code is not None and code & 0xFF == sqlite3.SQLITE_IOERR) or (
        code is None and "disk I/O error" in str(exc)
    )
    if io_error and data_dir is not None and _free_bytes(Path(data_dir)) < LOW_SPACE_BYTES:
        return StoreFull(data_dir)
    return None


def _free_bytes(folder: Path) -> int:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return LOW_SPACE_BYTES  # unknown: not evidence of a full disk
    return stats.f_bavail * stats.f_frsize


def _data_dir(conn: sqlite3.Connection) -> str | None:
    """The folder of ``conn``'s main database file (reading the pragma needs no space)."""
    try:
        rows = conn.execute("PRAGMA database_list").fetchall()
    except sqlite3.Error:
        return None
    path = next((row[2] for row in rows if row[1] == "main" and row[2]), None)
    return str(Path(path).parent) if path else None


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds the lock (as opposed to a real fault)."""
    return "locked" in str(exc) or "busy" in str(exc)
