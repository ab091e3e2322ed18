"""The RAG index's tables: the ``rag`` migration set (documents, chunks, FTS5, generation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlite_utils.db import ForeignKey

from chatcore.plugin import MigrationSet

if TYPE_CHECKING:
    from sqlite_utils import Database

RAG_MIGRATIONS = MigrationSet("rag")
"""Applied by ``RagIndex`` whenever it opens a database (chatcore 0.1.0 files included:
they have these tables already and the step is only recorded)."""


@RAG_MIGRATIONS
def m001_documents(db: Database) -> None:
    """Documents and chunks (FTS5 over chunk text), and the generation counter."""
    db.table("documents").create(
        {
            "id": str,
            "path": str,
            "title": str,
            "sha256": str,
            "size": int,
            "added_at": str,
            "metadata": str,
        },
        pk="id",
        not_null={"path", "title", "sha256", "size", "added_at", "metadata"},
        defaults={"metadata": "{}"},
    )
    db.table("documents").create_index(["path"], unique=True)
    db.table("chunks").create(
        {
            "id": int,
            "document_id": str,
            "ordinal": int,
            "heading": str,
            "text": str,
            "embedding": bytes,
            "embed_model": str,
        },
        pk="id",
        not_null={"document_id", "ordinal", "text"},
        foreign_keys=[ForeignKey("chunks", "document_id", "documents", "id", on_delete="CASCADE")],
    )
    db.table("chunks").create_index(["document_id", "ordinal"], unique=True)
    db.table("chunks").enable_fts(["heading", "text"], create_triggers=True, tokenize="porter")
    # Storing a chunk's embedding must not re-index its text: only heading/text
    # updates touch the FTS index.
    db.conn.execute('DROP TRIGGER "chunks_au"')
    db.conn.execute(
        'CREATE TRIGGER "chunks_au" AFTER UPDATE OF "heading", "text" ON "chunks" BEGIN\n'
        '  INSERT INTO "chunks_fts" ("chunks_fts", rowid, "heading", "text") '
        'VALUES(\'delete\', old.rowid, old."heading", old."text");\n'
        '  INSERT INTO "chunks_fts" (rowid, "heading", "text") '
        'VALUES (new.rowid, new."heading", new."text");\n'
        "END"
    )
    # A generation counter bumped (by trigger, so in the writer's own transaction) on any
    # change to chunks or their vectors: RAG's in-memory vector matrix reloads only then.
    db.conn.execute("CREATE TABLE rag_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.conn.execute("INSERT INTO rag_state (key, value) VALUES ('generation', 0)")
    bump = "UPDATE rag_state SET value = value + 1 WHERE key = 'generation'"
    for name, event in (
        ("insert", "INSERT"),
        ("delete", "DELETE"),
        ("update", "UPDATE OF embedding, embed_model, text, heading"),
    ):
        db.conn.execute(
            f"CREATE TRIGGER chunks_generation_{name} AFTER {event} ON chunks BEGIN {bump}; END"
        )
