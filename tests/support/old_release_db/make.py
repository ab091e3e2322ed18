"""Build ``chatcore-0.1.0.db``: a database written by chatcore 0.1.0 through its public API.

Run it against the 0.1.0 code, not this tree (see README.md next to it)::

    cd /path/to/chatcore-0.1.0 && PYTHONPATH=. python /path/to/make.py [OUTPUT]

It refuses to run against code that already has the ``chatcore/store/`` package.
The results feed ``tests/chatcore/test_store_migrations.py``: a database from the previous
release must open, migrate and keep everything. Besides the database it writes
``schema-v1.sql`` and ``schema-v2.sql``: the empty schema of a 0.1.0 database after
its first one and two migrations (0.1.0 never shipped those as releases, but its
migration tests built them), so tests can start from each older layout too.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import trio

import chatcore
import chatcore.store
from chatcore import open_engine
from chatcore.store import MIGRATIONS, Store, migrate

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "chatcore-0.1.0.db"

# Port 1 refuses at once: the outbox fills and nothing drains it.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"

CONFIG = f"""
default_backend = "echo"

[backends.echo]
plugin = "echo"

# The PII redactor skips "echo" by default; this one is redacted for.
[backends.cloudish]
plugin = "echo"

[backends.slow]
plugin = "echo"
delay_seconds = 0.05

[backends.down]
plugin = "ollama"
host = "http://127.0.0.1:1"
model = "llama3.2"
timeout_seconds = 2.0

[replication]
redis_url = "{UNREACHABLE_REDIS}"
backoff_base_seconds = 30.0
backoff_max_seconds = 60.0

[[plugins]]
plugin = "pii_redactor"
[plugins.config]
backends = ["cloudish"]

[[plugins]]
plugin = "memory"
[plugins.config]
user = "alice"

[[plugins]]
plugin = "rag"
"""

DOCUMENTS = {
    "solar.md": (
        "# Solar panels\n\n## Cleaning\n\n"
        "Rinse the photovoltaic panels with soft water at dawn; never use a pressure washer.\n"
    ),
    "tomatoes.md": (
        "# Tomatoes\n\n## Watering\n\n"
        "Water tomato plants deeply twice a week and mulch the soil to keep it moist.\n"
    ),
}

MEMORIES = ("my dog is called Rex", "I live in Oslo", "I take my tea without sugar")


async def write_history(config: Path, data_dir: Path, docs: Path) -> dict[str, str]:
    ids: dict[str, str] = {}
    async with open_engine(config, data_dir=data_dir) as engine:
        rag = engine.plugins.get_plugin("rag")
        report = await rag.add([docs])  # type: ignore[attr-defined]
        print(f"rag: {report.summary()}")

        pii = engine.conversation(backend="cloudish")
        await pii.send("Mail me at jane.doe@example.com or call +44 20 7946 0958.")
        await pii.send("Thanks, that is all.")
        ids["pii"] = pii.id

        cited = engine.conversation(system="Answer in one sentence.")
        await cited.send("How do I clean my solar panels?")
        await cited.send("And how often should I water tomatoes?")
        ids["renamed"] = cited.id

        memory = engine.conversation()
        for fact in MEMORIES:
            await memory.send(f"remember that {fact}")
        await memory.send("What is my dog called?")
        ids["memory"] = memory.id

        partial = engine.conversation(backend="slow")
        async with partial.stream("Please tell me a very long story about seven dragons") as s:
            async for chunk in s:
                if chunk.index >= 2:
                    break
        ids["partial"] = partial.id

        failed = engine.conversation(backend="down")
        try:
            await failed.send("Is the local model up?")
        except chatcore.BackendError as exc:
            print(f"error reply, as intended: {exc}")
        ids["error"] = failed.id

        doomed = engine.conversation()
        await doomed.send("This conversation will be deleted.")
        ids["deleted"] = doomed.id
    return ids


def finish(db_path: Path, ids: dict[str, str]) -> None:
    with Store(db_path, outbox=True) as store:
        store.set_title(ids["renamed"], "Garden and roof")
        assert store.delete_conversation(ids["deleted"])
        store.kv("fixture").set("settings", {"theme": "dark", "sizes": [1, 2, 3]})
        store.kv("fixture").set("counter", 41)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise SystemExit("could not checkpoint the WAL into the database file")
    finally:
        conn.close()


def census(db_path: Path) -> dict[str, object]:
    conn = sqlite3.connect(db_path)
    try:

        def count(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])

        return {
            "_migrations": [row[0] for row in conn.execute("SELECT name FROM _migrations")],
            "conversations (live)": count(
                "SELECT COUNT(*) FROM conversations WHERE deleted_at IS NULL"
            ),
            "conversations (tombstones)": count(
                "SELECT COUNT(*) FROM conversations WHERE deleted_at IS NOT NULL"
            ),
            "messages": count("SELECT COUNT(*) FROM messages"),
            "messages partial": count("SELECT COUNT(*) FROM messages WHERE status = 'partial'"),
            "messages error": count("SELECT COUNT(*) FROM messages WHERE status = 'error'"),
            "messages with pii metadata": count(
                "SELECT COUNT(*) FROM messages WHERE json_type(metadata, '$.pii') = 'object'"
            ),
            "messages with citations": count(
                "SELECT COUNT(*) FROM messages WHERE json_type(metadata, '$.citations') = 'array'"
            ),
            "outbox": count("SELECT COUNT(*) FROM outbox"),
            "documents": count("SELECT COUNT(*) FROM documents"),
            "chunks": count("SELECT COUNT(*) FROM chunks"),
            "memories": count("SELECT COUNT(*) FROM memories"),
            "plugin_kv": count("SELECT COUNT(*) FROM plugin_kv"),
            "plugin_kv namespaces": [
                row[0]
                for row in conn.execute("SELECT DISTINCT namespace FROM plugin_kv ORDER BY 1")
            ],
        }
    finally:
        conn.close()


def schema_snapshot(version: int) -> str:
    """SQL that rebuilds an empty 0.1.0 database after its first ``version`` migrations."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "schema.db", isolation_level=None)
        try:
            from sqlite_utils import Database

            migrate(Database(conn, execute_plugins=False), MIGRATIONS[:version])
            shadow = {row[1] for row in conn.execute("PRAGMA table_list") if row[2] == "shadow"}
            lines = [f"-- chatcore 0.1.0 after {', '.join(m.name for m in MIGRATIONS[:version])}"]
            tables = []
            for kind, name, sql in conn.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY rowid"
            ):
                if sql is None or name in shadow or name.startswith("sqlite_"):
                    continue
                lines.append(f"{sql};")
                if kind == "table" and not sql.upper().startswith("CREATE VIRTUAL"):
                    tables.append(name)
            for table in tables:
                for row in conn.execute(f"SELECT * FROM [{table}]"):
                    values = ", ".join("NULL" if v is None else repr(v) for v in row)
                    lines.append(f"INSERT INTO [{table}] VALUES ({values});")
            return "\n".join(lines) + "\n"
        finally:
            conn.close()


def main() -> None:
    if Path(chatcore.store.__file__).name != "store.py" or chatcore.__version__ != "0.1.0":
        raise SystemExit(
            f"run this against chatcore 0.1.0 (found {chatcore.__version__} at "
            f"{Path(chatcore.__file__).parent}); see README.md"
        )
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        docs = work / "docs"
        docs.mkdir()
        for name, text in DOCUMENTS.items():
            (docs / name).write_text(text)
        config = work / "chatcore.toml"
        config.write_text(CONFIG)
        data_dir = work / "data"
        ids = trio.run(write_history, config, data_dir, docs)
        db_path = data_dir / "chatcore.db"
        finish(db_path, ids)
        shutil.copyfile(db_path, output)
    print(f"wrote {output} ({output.stat().st_size} bytes) with chatcore at {chatcore.__file__}")
    print(json.dumps({"conversation ids": ids, **census(output)}, indent=2))
    for version in (1, 2):
        snapshot = output.parent / f"schema-v{version}.sql"
        snapshot.write_text(schema_snapshot(version))
        print(f"wrote {snapshot}")


if __name__ == "__main__":
    main()
