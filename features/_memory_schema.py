"""The memory feature's table: the ``memory`` migration set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatcore.plugin import MigrationSet

if TYPE_CHECKING:
    from sqlite_utils import Database

MEMORY_MIGRATIONS = MigrationSet("memory")
"""Applied by ``MemoryStore`` whenever it opens a database (chatcore 0.1.0 files included:
they have the table already and the step is only recorded)."""


@MEMORY_MIGRATIONS
def m001_memories(db: Database) -> None:
    """Long-term facts, per user."""
    db.table("memories").create(
        {"id": str, "user": str, "content": str, "created_at": str, "metadata": str},
        pk="id",
        not_null={"user", "content", "created_at", "metadata"},
        defaults={"metadata": "{}"},
    )
    db.table("memories").create_index(["user", "created_at"])
