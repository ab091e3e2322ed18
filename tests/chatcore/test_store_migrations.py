"""Named migration sets: the store's, the features', a plugin's; and files of the last release.

Every test uses real SQLite files under ``tmp_path``. ``tests/support/old_release_db``
holds a database written by chatcore 0.1.0 (and its schema after one and two of its
migrations), made with that release's code by ``make.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import REPO_ROOT, SUPPORT_DIR
from sqlite_utils import Database

from chatcore import Role, open_engine
from chatcore.errors import MigrationError, StoreError
from chatcore.store import (
    CORE_MIGRATIONS,
    DB_FILENAME,
    Migration,
    MigrationSet,
    Store,
    connect,
)
from features._memory_schema import MEMORY_MIGRATIONS
from features._rag_index import RagIndex
from features._rag_schema import RAG_MIGRATIONS
from features.memory import MemoryStore

OLD_RELEASE = SUPPORT_DIR / "old_release_db"
FIXTURE = OLD_RELEASE / "chatcore-0.1.0.db"
LEGACY_NAMES = ["m001_initial", "m002_rag_and_memory", "m003_replication"]
ALL_SETS = {
    "chatcore": [
        "m001_initial",
        "m002_replication",
        "m003_legacy_guard",
        "m004_field_stamps",
        "m005_client_ids",
    ],
    "memory": ["m001_memories"],
    "rag": ["m001_documents"],
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / DB_FILENAME


def raw(path: Path) -> sqlite3.Connection:
    """An independent connection: what another process would see."""
    return sqlite3.connect(path, isolation_level=None)


def open_database(path: Path) -> Database:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Database(raw(path), execute_plugins=False)


def recorded(path: Path) -> dict[str, list[str]]:
    """``{set: [step, ...]}`` as ``_applied_migrations`` holds it."""
    found: dict[str, list[str]] = {}
    rows = raw(path).execute(
        "SELECT migration_set, name FROM _applied_migrations ORDER BY migration_set, name"
    )
    for owner, name in rows:
        found.setdefault(owner, []).append(name)
    return found


def legacy_names(path: Path) -> list[str]:
    return [row[0] for row in raw(path).execute("SELECT name FROM _migrations ORDER BY name")]


def open_everything(path: Path) -> None:
    """What an engine with RAG and memory does to a file: each part applies its set."""
    Store(path).close()
    RagIndex(path).close()
    MemoryStore(path).close()


def old_release_database(path: Path, version: int) -> Path:
    """A file as chatcore 0.1.0 left it after its first ``version`` migrations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if version == len(LEGACY_NAMES):
        shutil.copyfile(FIXTURE, path)
    else:
        conn = raw(path)
        conn.executescript((OLD_RELEASE / f"schema-v{version}.sql").read_text())
        conn.close()
    return path


def snapshot(path: Path) -> dict[str, Any]:
    """Every row of every table, and every schema object, of a file."""
    conn = raw(path)
    schema = conn.execute(
        "SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master ORDER BY name"
    ).fetchall()
    # (schema, name, type, ncol, without_rowid, strict): FTS5 keeps some WITHOUT ROWID.
    tables = {row[1]: row[4] for row in conn.execute("PRAGMA table_list") if row[2] != "view"}
    rows = {
        name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
        if without_rowid
        else conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()
        for name, without_rowid in tables.items()
        if not name.startswith("sqlite_")
    }
    conn.close()
    return {"schema": {row[1]: row for row in schema}, "rows": rows}


def steps_of(migrations: MigrationSet, name: str, *extra: Any) -> MigrationSet:
    """A set named ``name`` with the steps of ``migrations`` and then ``extra``."""
    copy = MigrationSet(name)
    for step in [*migrations, *extra]:
        copy(step.apply if isinstance(step, Migration) else step)
    return copy


# --------------------------------------------------------------------------- a new file


def test_fresh_database_is_fully_migrated(db_path: Path) -> None:
    with Store(db_path) as store:
        assert store.schema_version() == len(CORE_MIGRATIONS) == 5
    db = open_database(db_path)
    assert {"conversations", "messages", "plugin_kv", "sync_state", "outbox"} <= set(
        db.table_names()
    )
    rows = list(db.table("_applied_migrations").rows)
    assert [(r["migration_set"], r["name"]) for r in rows] == [
        ("chatcore", step.name) for step in CORE_MIGRATIONS
    ]
    assert all(datetime.fromisoformat(row["applied_at"]).tzinfo is not None for row in rows)
    # The guard that makes chatcore 0.1.0 refuse the file instead of rebuilding it.
    assert legacy_names(db_path) == ["m004_migration_sets"]

    messages = db.table("messages")
    [fk] = messages.foreign_keys
    assert (fk.column, fk.other_table, fk.other_column, fk.on_delete) == (
        "conversation_id",
        "conversations",
        "id",
        "CASCADE",
    )
    unique = [index for index in messages.indexes if index.unique and index.origin == "c"]
    assert [index.columns for index in unique] == [["conversation_id", "seq"]]
    assert any(i.columns == ["updated_at"] for i in db.table("conversations").indexes)
    assert db.table("conversations").columns_dict["deleted_at"] is str
    assert db.table("plugin_kv").pks == ["namespace", "key"]
    # Features keep their tables out of the store's set: they come when a feature opens.
    assert not {"documents", "chunks", "memories"} & set(db.table_names())


def test_a_new_database_gets_every_set_from_the_parts_that_own_them(db_path: Path) -> None:
    open_everything(db_path)
    assert recorded(db_path) == ALL_SETS
    tables = set(open_database(db_path).table_names())
    assert {"documents", "chunks", "chunks_fts", "rag_state", "memories"} <= tables
    for migrations in (CORE_MIGRATIONS, RAG_MIGRATIONS, MEMORY_MIGRATIONS):
        assert migrations.applied(raw(db_path)) == ALL_SETS[migrations.name]


def test_features_open_a_bare_file_without_the_store(tmp_path: Path) -> None:
    path = tmp_path / "new" / DB_FILENAME
    with RagIndex(path) as index:
        assert index.list_documents() == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with MemoryStore(path) as memories:
        memories.add("my dog is called Rex", user="alice")
    assert recorded(path) == {"memory": ["m001_memories"], "rag": ["m001_documents"]}
    with Store(path) as store:
        assert store.list_conversations() == []
    assert recorded(path) == ALL_SETS
    with MemoryStore(path) as memories:
        assert [m.content for m in memories.list(user="alice")] == ["my dog is called Rex"]


def test_reopening_applies_nothing_twice(db_path: Path) -> None:
    open_everything(db_path)
    before = list(open_database(db_path).table("_applied_migrations").rows)
    open_everything(db_path)
    with Store(db_path) as reopened:
        assert reopened.schema_version() == len(CORE_MIGRATIONS)
    db = open_database(db_path)
    assert list(db.table("_applied_migrations").rows) == before
    for migrations in (CORE_MIGRATIONS, RAG_MIGRATIONS, MEMORY_MIGRATIONS):
        assert migrations.apply(db) == []


# --------------------------------------------------------------------------- files of 0.1.0


@pytest.mark.parametrize("version", [1, 2, 3])
def test_database_at_every_version_migrates_forward(db_path: Path, version: int) -> None:
    old = open_database(old_release_database(db_path, version))
    old.execute(
        "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
        ["c-old", "Old", "2024-01-01T00:00:00.000000+00:00", "2024-01-01T00:00:00.000000+00:00"],
    )
    legacy_before = list(old.table("_migrations").rows)
    assert [row["name"] for row in legacy_before] == LEGACY_NAMES[:version]
    old.close()

    open_everything(db_path)
    with Store(db_path) as upgraded:
        assert upgraded.schema_version() == len(CORE_MIGRATIONS)
        assert upgraded.get_conversation("c-old") is not None
    assert recorded(db_path) == ALL_SETS
    # What 0.1.0 recorded is kept as it was, under the sets that own those tables now.
    adopted = {
        (row[0], row[1]): row[2]
        for row in raw(db_path).execute("SELECT * FROM _applied_migrations").fetchall()
    }
    when = {row["name"]: row["applied_at"] for row in legacy_before}
    assert adopted[("chatcore", "m001_initial")] == when["m001_initial"]
    if version >= 2:
        assert adopted[("rag", "m001_documents")] == when["m002_rag_and_memory"]
        assert adopted[("memory", "m001_memories")] == when["m002_rag_and_memory"]
    if version >= 3:
        assert adopted[("chatcore", "m002_replication")] == when["m003_replication"]
    assert legacy_names(db_path) == [*LEGACY_NAMES[:version], "m004_migration_sets"]

    # A later release adds a step to the store's set: only that one runs.
    def m006_add_notes(db: Database) -> None:
        db.table("notes").create({"id": int, "text": str}, pk="id")

    newer = steps_of(CORE_MIGRATIONS, "chatcore", m006_add_notes)
    before = list(open_database(db_path).table("_applied_migrations").rows)
    assert newer.apply(open_database(db_path)) == ["m006_add_notes"]
    db = open_database(db_path)
    assert "notes" in db.table_names()
    rows = list(db.table("_applied_migrations").rows)
    assert [r for r in rows if r["name"] != "m006_add_notes"] == before
    assert newer.applied(db) == [*ALL_SETS["chatcore"], "m006_add_notes"]


@pytest.mark.parametrize("version", [1, 2])
def test_history_from_an_older_version_survives_the_upgrade(db_path: Path, version: int) -> None:
    old = open_database(old_release_database(db_path, version))
    old.execute(
        "INSERT INTO conversations (id, title, created_at, updated_at, backend) "
        "VALUES ('c1', 'Gardening', '2024-01-01T10:00:00.000000+00:00', "
        "'2024-01-01T10:00:05.000000+00:00', 'echo')"
    )
    rows = [
        ("m1", 1, "user", "How do tomatoes grow?", "2024-01-01T10:00:00.000000+00:00"),
        ("m2", 2, "assistant", "Tomatoes like sunshine.", "2024-01-01T10:00:05.000000+00:00"),
    ]
    for mid, seq, role, content, created in rows:
        old.execute(
            "INSERT INTO messages (id, conversation_id, seq, role, content, status, created_at) "
            "VALUES (?, 'c1', ?, ?, ?, 'complete', ?)",
            [mid, seq, role, content, created],
        )
    if version >= 2:
        old.execute(
            "INSERT INTO documents (id, path, title, sha256, size, added_at) "
            "VALUES ('d1', '/notes.md', 'Notes', 'ab', 3, '2024-01-01')"
        )
    old.close()

    with Store(db_path) as upgraded:
        assert upgraded.schema_version() == len(CORE_MIGRATIONS)
        messages = upgraded.get_messages("c1")
        assert [(m.id, m.role, m.content) for m in messages] == [
            ("m1", Role.USER, "How do tomatoes grow?"),
            ("m2", Role.ASSISTANT, "Tomatoes like sunshine."),
        ]
        summary = upgraded.get_conversation("c1")
        assert summary is not None
        assert (summary.title, summary.backend, summary.message_count) == ("Gardening", "echo", 2)
        # Old messages are searchable: the index was filled by the migration.
        assert [hit.message_id for hit in upgraded.search("tomato")] == ["m2", "m1"]
        assert upgraded.outbox_depth() == 0  # old history is not queued by itself
        device = upgraded.device_id
    stamps = raw(db_path).execute("SELECT id, hlc, device_id FROM messages ORDER BY id")
    ten = int(datetime(2024, 1, 1, 10, tzinfo=UTC).timestamp() * 1000)
    assert stamps.fetchall() == [
        ("m1", f"{ten:013d}.00000.{device}", device),
        ("m2", f"{ten + 5000:013d}.00000.{device}", device),
    ]
    if version >= 2:
        assert raw(db_path).execute("SELECT title FROM documents").fetchall() == [("Notes",)]
        with RagIndex(db_path) as index:  # recorded as applied: nothing created twice
            assert [d.title for d in index.list_documents()] == ["Notes"]


def test_the_previous_release_database_keeps_everything(db_path: Path) -> None:
    old_release_database(db_path, 3)
    before = snapshot(db_path)
    open_everything(db_path)
    after = snapshot(db_path)

    # No table recreated or rewritten: same schema objects, same pages, same rows;
    # conversations only gains its per-field stamps (m004_field_stamps), in place.
    for name, row in before["schema"].items():
        if name == "conversations":
            assert after["schema"][name][:4] == row[:4]
            assert after["schema"][name][4] == (
                row[4].removesuffix(")") + ", field_hlc TEXT NOT NULL DEFAULT '{}')"
            )
            continue
        assert after["schema"][name] == row, name
    assert set(after["schema"]) - set(before["schema"]) == {
        "_applied_migrations",
        "sqlite_autoindex__applied_migrations_1",
        "messages_client_id",  # chatcore/m005_client_ids, an index 0.1.0 lacked
    }
    for table, rows in before["rows"].items():
        if table == "_migrations":
            assert after["rows"][table] == [*rows, after["rows"][table][-1]]
            assert after["rows"][table][-1][0] == "m004_migration_sets"
        elif table == "conversations":
            # A live conversation's one stamp becomes the stamp of each of its fields.
            fields = ("title", "backend", "model", "system", "metadata")
            assert after["rows"][table] == [
                (
                    *row,
                    "{}"
                    if row[8] is not None
                    else json.dumps(dict.fromkeys(fields, row[9]), separators=(",", ":")),
                )
                for row in rows
            ]
        else:
            assert after["rows"][table] == rows, table
    assert recorded(db_path) == ALL_SETS

    conversations = before["rows"]["conversations"]
    messages = before["rows"]["messages"]
    assert (len(conversations), len(messages), len(before["rows"]["outbox"])) == (6, 20, 29)
    with Store(db_path, outbox=True) as store:
        live = {c.id: c for c in store.list_conversations()}
        assert len(live) == 5
        assert "Garden and roof" in {c.title for c in live.values()}
        stored = [m for cid in live for m in store.get_messages(cid)]
        by_id = {m.id: m for m in stored}
        assert len(by_id) == len(messages)
        for mid, cid, _, role, content, status, created, *_, metadata, _, _ in messages:
            message = by_id[mid]
            assert (message.role.value, message.content, message.status.value) == (
                role,
                content,
                status,
            )
            assert message.created_at == datetime.fromisoformat(created)
            assert dict(message.metadata) == json.loads(metadata)
            assert cid in live
        statuses = sorted(m.status.value for m in stored)
        assert statuses.count("partial") == statuses.count("error") == 1
        assert sum("pii" in m.metadata for m in stored) == 2
        assert sum("citations" in m.metadata for m in stored) == 2
        pending = store.outbox_pending(100)
        assert [e.id for e in pending] == [row[0] for row in before["rows"]["outbox"]]
        for entry, row in zip(pending, before["rows"]["outbox"], strict=True):
            assert entry.change.to_json() == row[2]
        kv = {(ns, key): value for ns, key, value, _ in before["rows"]["plugin_kv"]}
        assert len(kv) == 10
        for (namespace, key), value in kv.items():
            assert store.kv_get(namespace, key) == json.loads(value)
        assert store.kv("fixture").get("settings") == {"theme": "dark", "sizes": [1, 2, 3]}
    with RagIndex(db_path) as index:
        assert sorted(Path(d.path).name for d in index.list_documents()) == [
            "solar.md",
            "tomatoes.md",
        ]
        assert index.chunk_count() == 2
        [hit] = index.search_bm25("photovoltaic", limit=5)
        assert Path(hit.path).name == "solar.md" and "pressure washer" in hit.text
        assert Path(index.search_bm25("mulch", limit=5)[0].path).name == "tomatoes.md"
    with MemoryStore(db_path) as memories:
        assert [m.content for m in memories.list(user="alice")] == [
            "my dog is called Rex",
            "I live in Oslo",
            "I take my tea without sugar",
        ]
        assert memories.search("what is my dog called", user="alice", limit=1)[0].content == (
            "my dog is called Rex"
        )


def test_the_previous_release_database_opens_in_todays_engine(
    db_path: Path, tmp_path: Path
) -> None:
    old_release_database(db_path, 3)
    renamed = (
        raw(db_path)
        .execute("SELECT id FROM conversations WHERE title = 'Garden and roof'")
        .fetchone()[0]
    )
    config = tmp_path / "chatcore.toml"
    config.write_text(
        'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
        '[[plugins]]\nplugin = "rag"\n[[plugins]]\nplugin = "memory"\n'
        '[plugins.config]\nuser = "alice"\n'
    )

    async def main() -> None:
        async with open_engine(config, data_dir=db_path.parent) as engine:
            conversation = engine.conversation(renamed)
            assert len(await conversation.messages()) == 4
            reply = await conversation.send("How do I clean my solar panels?")
            assert reply.content == "echo: How do I clean my solar panels?"
            assert Path(reply.metadata["citations"][0]["document"]).name == "solar.md"
            # The remembered facts reach the turn: the memory set was adopted, not rebuilt.
            reply = await conversation.send("What should I feed my dog?")
            assert reply.metadata["memory"]["memories"] == 1
            assert len(await conversation.messages()) == 8
            assert len(await engine.list_conversations()) == 5

    trio.run(main)
    assert recorded(db_path) == ALL_SETS


# --------------------------------------------------------------------------- refusals


def test_failed_migration_is_rolled_back(db_path: Path) -> None:
    Store(db_path).close()

    def m006_broken(db: Database) -> None:
        db.table("half_done").create({"id": int}, pk="id")
        raise RuntimeError("migration bug")

    broken = steps_of(CORE_MIGRATIONS, "chatcore", m006_broken)
    with pytest.raises(RuntimeError, match="migration bug"):
        broken.apply(open_database(db_path))
    db = open_database(db_path)
    assert "half_done" not in db.table_names()
    assert recorded(db_path) == {"chatcore": ALL_SETS["chatcore"]}


def test_database_from_a_newer_version_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    raw(db_path).execute("INSERT INTO _migrations VALUES ('m999_future', '2030-01-01')")
    with pytest.raises(StoreError, match=r"newer chatcore \(unknown migrations: m999_future\)"):
        Store(db_path)


def test_an_unknown_applied_step_of_a_set_is_refused_as_newer(db_path: Path) -> None:
    open_everything(db_path)
    raw(db_path).execute(
        "INSERT INTO _applied_migrations VALUES ('chatcore', 'm006_from_the_future', '2030')"
    )
    with pytest.raises(MigrationError) as refused:
        Store(db_path)
    assert str(refused.value) == (
        f"{db_path}: the database was migrated by a newer release: migration set 'chatcore' "
        "has steps this code does not know (m006_from_the_future); upgrade chatcore (or the "
        "plugin that owns the set) to open it"
    )

    def m001_notes(db: Database) -> None:
        db.table("notes").create({"id": int}, pk="id")

    def m002_tags(db: Database) -> None:
        db.table("tags").create({"id": int}, pk="id")

    steps_of(MigrationSet("notes"), "notes", m001_notes, m002_tags).apply(open_database(db_path))
    older = steps_of(MigrationSet("notes"), "notes", m001_notes)
    with pytest.raises(MigrationError, match=r"set 'notes' has steps .* \(m002_tags\)"):
        older.apply(open_database(db_path))
    # Other sets are not concerned.
    assert RAG_MIGRATIONS.apply(open_database(db_path)) == []


def test_a_set_with_a_gap_is_refused(db_path: Path) -> None:
    notes = MigrationSet("notes")

    @notes
    def m001_a(db: Database) -> None:
        db.table("m001_a").create({"id": int}, pk="id")

    @notes
    def m002_b(db: Database) -> None:
        db.table("m002_b").create({"id": int}, pk="id")

    @notes
    def m003_c(db: Database) -> None:
        db.table("m003_c").create({"id": int}, pk="id")

    db = open_database(db_path)
    assert notes.apply(db) == ["m001_a", "m002_b", "m003_c"]
    db.execute("DELETE FROM _applied_migrations WHERE name = 'm002_b'")
    with pytest.raises(MigrationError) as refused:
        notes.apply(open_database(db_path))
    assert str(refused.value) == (
        f"{db_path}: migration set 'notes' has a gap: m003_c recorded as applied but not "
        "m002_b; the file was changed by something other than this code, so it is not opened"
    )
    assert "m002_b" in open_database(db_path).table_names()  # and nothing was run again


def test_migration_sets_reject_bad_names_and_gaps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must look like 'm001_initial'"):
        Migration("initial", lambda db: None)
    with pytest.raises(ValueError, match="migration set name 'Notes!' must start with"):
        MigrationSet("Notes!")

    def m007_skipped(db: Database) -> None:
        pass

    expected = len(CORE_MIGRATIONS) + 1
    with pytest.raises(ValueError, match=f"out of order: expected number {expected}"):
        CORE_MIGRATIONS(m007_skipped)
    assert [step.name for step in CORE_MIGRATIONS] == ALL_SETS["chatcore"]
    assert [step.name for step in RAG_MIGRATIONS] == ALL_SETS["rag"]
    assert [step.name for step in MEMORY_MIGRATIONS] == ALL_SETS["memory"]
    with pytest.raises(ValueError, match=r"'m007_skipped' of set 'x' is out of order: expected"):
        MigrationSet("x")(m007_skipped)
    with pytest.raises(ValueError, match=r"stop_before='m009_x' is not a step of .* 'chatcore'"):
        CORE_MIGRATIONS.apply(open_database(tmp_path / "x.db"), stop_before="m009_x")
    with pytest.raises(TypeError, match="got str"):
        CORE_MIGRATIONS.apply("x.db")  # type: ignore[arg-type]


def test_a_set_is_not_applied_inside_an_open_transaction(db_path: Path) -> None:
    db = open_database(db_path)
    db.execute("BEGIN")
    with pytest.raises(MigrationError, match=r"'chatcore' cannot be applied inside an open"):
        CORE_MIGRATIONS.apply(db)


def test_stop_before_builds_an_older_layout(db_path: Path) -> None:
    db = open_database(db_path)
    assert CORE_MIGRATIONS.apply(db, stop_before="m002_replication") == ["m001_initial"]
    assert "outbox" not in db.table_names()
    assert CORE_MIGRATIONS.applied(db) == ["m001_initial"]
    with Store(db_path) as store:
        assert store.schema_version() == len(CORE_MIGRATIONS)
    assert "outbox" in open_database(db_path).table_names()


# --------------------------------------------------------------------------- concurrency


def test_two_connections_migrating_at_once_apply_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    migrations = MigrationSet("race")
    main = threading.current_thread()
    other_waits = threading.Event()
    results: dict[str, list[str]] = {}

    def other() -> None:
        conn = connect(path)
        # Told once the other connection asks for the write lock, which this one holds.
        conn.set_trace_callback(lambda sql: sql.startswith("BEGIN") and other_waits.set())
        try:
            results["other"] = migrations.apply(conn)
        finally:
            conn.close()

    contender = threading.Thread(target=other)

    @migrations
    def m001_counted(db: Database) -> None:
        db.table("runs").insert({"by": threading.current_thread().name})
        if threading.current_thread() is main:
            contender.start()
            assert other_waits.wait(timeout=30), "the other connection never asked for the lock"

    conn = connect(path)
    try:
        results["main"] = migrations.apply(conn)
    finally:
        conn.close()
    contender.join(timeout=30)
    assert results == {"main": ["m001_counted"], "other": []}
    assert raw(path).execute("SELECT by FROM runs").fetchall() == [(main.name,)]
    assert recorded(path) == {"race": ["m001_counted"]}


@pytest.mark.slow
def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "shared" / DB_FILENAME
    script = (
        "import sys\nfrom pathlib import Path\nfrom chatcore.store import Store\n"
        "from features._rag_index import RagIndex\nfrom features.memory import MemoryStore\n"
        "path = Path(sys.argv[1])\n"
        "for part in (Store, RagIndex, MemoryStore):\n    part(path).close()\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path)],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in processes:
        _, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors
    assert recorded(path) == ALL_SETS
    counts = raw(path).execute(
        "SELECT COUNT(*), COUNT(DISTINCT migration_set || '/' || name) FROM _applied_migrations"
    )
    steps = sum(len(names) for names in ALL_SETS.values())
    assert counts.fetchone() == (steps, steps)
    assert legacy_names(path) == ["m004_migration_sets"]


# --------------------------------------------------------------------------- the plugin guide


def test_the_plugin_guide_example_owns_its_tables(tmp_path: Path) -> None:
    guide = (REPO_ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = guide.split("## Tables of your own: migration sets", 1)[1]
    [example] = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "@notes" in b]
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/plugins.md", "exec"), namespace)
    path = tmp_path / DB_FILENAME
    conn = namespace["open_notes"](path)
    conn.execute("INSERT INTO notes (conversation_id, text) VALUES ('c1', 'hello')")
    conn.close()
    again = namespace["open_notes"](path)  # a second start applies nothing
    assert again.execute("SELECT text FROM notes").fetchall() == [("hello",)]
    again.close()
    assert recorded(path) == {"notes": ["m001_notes", "m002_notes_by_conversation"]}
    indexes = open_database(path).table("notes").indexes
    assert [i.columns for i in indexes] == [["conversation_id"]]
    with Store(path) as store:  # the engine's own set shares the file
        assert store.list_conversations() == []
    assert set(recorded(path)) == {"chatcore", "notes"}
