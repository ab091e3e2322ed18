"""Named migration sets: each package owns its tables and the ordered steps that make them.

A set is named (``"chatcore"`` for the store's own tables, ``"rag"``, ``"memory"``, or a
plugin's name) and holds functions ``m001_what``, ``m002_what``... registered in order
with the set as decorator. Applying a set runs the steps the database lacks, each in
its own ``BEGIN IMMEDIATE`` transaction, and records them in ``_applied_migrations``
(one row per set and step). Under that lock the record is checked again: a step that
another process applied meanwhile is skipped, one this code does not know (the file
was migrated by a newer release) or a gap in the record refuses the file.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from sqlite_utils import Database

from ..errors import MigrationError
from ..messages import utcnow
from ._codec import dt_to_text
from ._sqlite import write_transaction

if TYPE_CHECKING:
    from collections.abc import Iterator

MigrationFunction = Callable[[Database], None]
"""A step: it changes the schema through the ``sqlite_utils.Database`` it is given."""
_F = TypeVar("_F", bound=MigrationFunction)

MIGRATIONS_TABLE = "_applied_migrations"
"""Where every set records its applied steps: ``(migration_set, name, applied_at)``."""

_MIGRATION_NAME = re.compile(r"^m(\d{3,})_[a-z0-9_]+$")
_SET_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")

# chatcore 0.1.0 kept one list of migrations for every table, recorded by name alone
# in ``_migrations``. Its steps are now steps of the sets that own those tables: a file
# from 0.1.0 has them recorded under their new names, nothing is run again. The table
# stays, with LEGACY_GUARD added (by the core set), so 0.1.0 refuses a migrated file
# ("migrated by a newer chatcore") instead of creating its tables again.
LEGACY_TABLE = "_migrations"
LEGACY_GUARD = "m004_migration_sets"
_LEGACY_STEPS: dict[str, tuple[tuple[str, str], ...]] = {
    "m001_initial": (("chatcore", "m001_initial"),),
    "m002_rag_and_memory": (("rag", "m001_documents"), ("memory", "m001_memories")),
    "m003_replication": (("chatcore", "m002_replication"),),
}


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a set; ``name`` is ``mNNN_what`` and NNN gives the order."""

    name: str
    apply: MigrationFunction
    number: int = field(init=False)

    def __post_init__(self) -> None:
        match = _MIGRATION_NAME.match(self.name)
        if match is None:
            raise ValueError(f"migration name {self.name!r} must look like 'm001_initial'")
        object.__setattr__(self, "number", int(match.group(1)))


class MigrationSet:
    """The ordered schema changes of one package, applied and recorded under its name.

    Use the set as a decorator on ``mNNN_what(db)`` functions (``db`` is a
    ``sqlite_utils.Database`` inside the step's transaction), numbered 1, 2, 3...
    in the order they are defined, then ``apply`` it when opening the database::

        migrations = MigrationSet("notes")

        @migrations
        def m001_notes(db: Database) -> None:
            db["notes"].create({"id": int, "text": str}, pk="id")

        migrations.apply(db)

    A released step never changes; a later change is a new step.

    Args:
        name: the set's name, unique among the sets that share a file (lowercase
            letters, digits, ``_``, ``.`` and ``-``; a plugin's own name is a good one).

    Raises:
        ValueError: ``name`` is not a valid set name.
    """

    __slots__ = ("_name", "_steps")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _SET_NAME.match(name):
            raise ValueError(
                f"migration set name {name!r} must start with a lowercase letter and hold "
                "only lowercase letters, digits, '_', '.' and '-'"
            )
        self._name = name
        self._steps: list[Migration] = []

    @property
    def name(self) -> str:
        return self._name

    def __call__(self, fn: _F) -> _F:
        """Register ``fn`` as the set's next step; its number must follow the last one.

        Raises:
            ValueError: the function's name is not ``mNNN_what``, or NNN is not next.
        """
        step = Migration(fn.__name__, fn)
        expected = len(self._steps) + 1
        if step.number != expected:
            raise ValueError(
                f"migration {step.name!r} of set {self._name!r} is out of order: "
                f"expected number {expected}"
            )
        self._steps.append(step)
        return fn

    def __iter__(self) -> Iterator[Migration]:
        return iter(tuple(self._steps))

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"<MigrationSet {self._name!r}: {', '.join(s.name for s in self._steps)}>"

    def applied(self, db: Database | sqlite3.Connection) -> list[str]:
        """The names of this set's steps recorded in ``db``, in order."""
        conn = _connection_of(db)
        if MIGRATIONS_TABLE not in _tables(conn):
            return []
        return sorted(self._recorded(conn), key=_number)

    def apply(
        self, db: Database | sqlite3.Connection, *, stop_before: str | None = None
    ) -> list[str]:
        """Run the steps ``db`` lacks, in order, each in its own transaction.

        Args:
            db: the database; its connection must not be inside a transaction.
            stop_before: run the steps before this one only (to build an older
                layout, in tests of an upgrade).

        Returns:
            The names of the steps applied now ([] when none was missing).

        Raises:
            MigrationError: the file was migrated by a newer release (a step this
                set does not have), its record of the set has a gap, or the
                connection is inside a transaction.
            ValueError: ``stop_before`` is not a step of this set.
            Exception: whatever a failing step raised (its transaction is rolled back).
        """
        conn = _connection_of(db)
        where = _location(conn)
        steps = self._steps_before(stop_before)
        if conn.in_transaction:
            raise MigrationError(
                f"{where}: migration set {self._name!r} cannot be applied inside an open "
                "transaction (each step runs in its own)"
            )
        # Records only ever grow, so a read without the lock can say "nothing to do";
        # anything else is decided again under the lock.
        if not self._pending(conn, steps, where):
            return []
        database = db if isinstance(db, Database) else Database(conn, execute_plugins=False)
        applied_now: list[str] = []
        for step in steps:
            with write_transaction(conn):
                _prepare(conn, where)
                if step.name in self._checked(conn, where):
                    continue  # another connection applied it while this one waited
                step.apply(database)
                conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (migration_set, name, applied_at) "
                    "VALUES (?, ?, ?)",
                    [self._name, step.name, dt_to_text(utcnow())],
                )
            applied_now.append(step.name)
        return applied_now

    # ---------------------------------------------------------------- checks

    def _steps_before(self, stop_before: str | None) -> list[Migration]:
        if stop_before is None:
            return list(self._steps)
        names = [step.name for step in self._steps]
        if stop_before not in names:
            raise ValueError(
                f"stop_before={stop_before!r} is not a step of migration set {self._name!r} "
                f"({', '.join(names) or 'empty'})"
            )
        return self._steps[: names.index(stop_before)]

    def _recorded(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(
            f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = ?", [self._name]
        ).fetchall()
        return [str(row[0]) for row in rows]

    def _checked(self, conn: sqlite3.Connection, where: str) -> set[str]:
        """This set's recorded steps, refused if one is unknown or one is missing between."""
        recorded = set(self._recorded(conn))
        known = [step.name for step in self._steps]
        unknown = sorted(recorded - set(known), key=_number)
        if unknown:
            raise MigrationError(
                f"{where}: the database was migrated by a newer release: migration set "
                f"{self._name!r} has steps this code does not know ({', '.join(unknown)}); "
                "upgrade chatcore (or the plugin that owns the set) to open it"
            )
        missing = [name for name in known[: len(recorded)] if name not in recorded]
        if missing:
            later = [name for name in known[len(recorded) :] if name in recorded]
            raise MigrationError(
                f"{where}: migration set {self._name!r} has a gap: {', '.join(later)} "
                f"recorded as applied but not {', '.join(missing)}; the file was changed "
                "by something other than this code, so it is not opened"
            )
        return recorded

    def _pending(self, conn: sqlite3.Connection, steps: list[Migration], where: str) -> bool:
        tables = _tables(conn)
        if MIGRATIONS_TABLE not in tables:
            return True
        if LEGACY_TABLE in tables and _legacy_unadopted(conn, where):
            return True
        recorded = self._checked(conn, where)
        return any(step.name not in recorded for step in steps)


def _number(name: str) -> int:
    match = _MIGRATION_NAME.match(name)
    return int(match.group(1)) if match else 0


def _connection_of(db: Database | sqlite3.Connection) -> sqlite3.Connection:
    if isinstance(db, Database):
        return db.conn
    if isinstance(db, sqlite3.Connection):
        return db
    raise TypeError(
        f"migrations apply to a sqlite_utils.Database or sqlite3.Connection, "
        f"got {type(db).__name__}"
    )


def _location(conn: sqlite3.Connection) -> str:
    for _, name, path in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(path) if path else "an in-memory database"
    return "the database"


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
        [MIGRATIONS_TABLE, LEGACY_TABLE],
    ).fetchall()
    return {str(row[0]) for row in rows}


def _prepare(conn: sqlite3.Connection, where: str) -> None:
    """Create the record table, and adopt what chatcore 0.1.0 recorded (under the lock)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (migration_set TEXT NOT NULL, "
        "name TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (migration_set, name))"
    )
    if LEGACY_TABLE not in _tables(conn):
        return
    for legacy_name, applied_at in _legacy_rows(conn, where):
        conn.executemany(
            f"INSERT OR IGNORE INTO {MIGRATIONS_TABLE} (migration_set, name, applied_at) "
            "VALUES (?, ?, ?)",
            [(owner, name, applied_at or "") for owner, name in _LEGACY_STEPS[legacy_name]],
        )


def _legacy_rows(conn: sqlite3.Connection, where: str) -> list[tuple[str, str | None]]:
    """The 0.1.0 steps recorded in ``_migrations``; a name 0.1.0 did not have is refused."""
    rows = conn.execute(f"SELECT name, applied_at FROM {LEGACY_TABLE}").fetchall()
    unknown = sorted(str(n) for n, _ in rows if n not in _LEGACY_STEPS and n != LEGACY_GUARD)
    if unknown:
        raise MigrationError(
            f"{where}: the database was migrated by a newer chatcore (unknown migrations: "
            f"{', '.join(unknown)}); upgrade chatcore to open it"
        )
    return [(str(name), applied_at) for name, applied_at in rows if name in _LEGACY_STEPS]


def _legacy_unadopted(conn: sqlite3.Connection, where: str) -> bool:
    recorded = set(conn.execute(f"SELECT migration_set, name FROM {MIGRATIONS_TABLE}").fetchall())
    return any(
        step not in recorded
        for legacy_name, _ in _legacy_rows(conn, where)
        for step in _LEGACY_STEPS[legacy_name]
    )
