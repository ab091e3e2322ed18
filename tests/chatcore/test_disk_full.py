"""A full disk: one line naming the data dir, the engine stays up, earlier turns are kept.

Two ways in: a real size-limited file system (a small tmpfs, mounted when this
process may mount; skipped with the reason otherwise), and an injected
``database or disk is full`` at COMMIT, which runs everywhere.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import subprocess_env

from chatcore import open_engine
from chatcore.errors import StoreFull
from chatcore.store import DB_FILENAME

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
ECHO_CONFIG = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def stored_texts(db: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT role, content FROM messages ORDER BY rowid").fetchall()
    return [(str(role), str(content)) for role, content in rows]


class _FullAtCommit:
    """The writer connection, except that COMMIT (or ``failing``) fails as on a full disk."""

    def __init__(self, conn: sqlite3.Connection, failing: str = "COMMIT") -> None:
        self._conn = conn
        self.failing = failing
        self.full = True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql.strip().upper() == self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("failing", ["COMMIT", "BEGIN IMMEDIATE"])
async def test_a_full_disk_at_commit_fails_that_turn_only(
    data_dir: Path, tmp_path: Path, failing: str
) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(ECHO_CONFIG)
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("first")
        store: Any = engine.store
        real = store._writer
        store._writer = full = _FullAtCommit(real, failing)
        with pytest.raises(StoreFull) as caught:
            await conversation.send("lost to the full disk")
        assert str(caught.value) == (
            f"no space left for {data_dir} (database or disk is full): free some space"
        )
        # The engine is still up, and the connection is not stuck in the failed transaction.
        full.full = False
        await conversation.send("after freeing space")
        store._writer = real
    db = data_dir / DB_FILENAME
    assert integrity(db) == "ok"
    assert stored_texts(db) == [
        ("user", "first"),
        ("assistant", "echo: first"),
        ("user", "after freeing space"),
        ("assistant", "echo: after freeing space"),
    ]


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    if sys.platform != "linux":
        pytest.skip("tmpfs is Linux only")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or 'not root'}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def ask(
    *args: str, data_dir: Path, config: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, "--config", str(config), "ask", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=subprocess_env({"CHATCORE_DATA_DIR": str(data_dir)}),
        timeout=60,
    )


def test_ask_on_a_full_tmpfs_is_one_line_and_keeps_earlier_turns(tmp_path: Path) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(ECHO_CONFIG)
    with small_tmpfs(tmp_path / "small", "2m") as mount:
        data_dir = mount / "data"
        first = ask("--json", "kept", data_dir=data_dir, config=config)
        assert first.returncode == 0, first.stderr
        fill(mount)  # so the next turn's pages cannot be written
        full = ask("-c", data_dir=data_dir, config=config, stdin="x" * 90_000)
        assert (full.returncode, full.stdout) == (1, "")
        assert full.stderr == (
            f"error: no space left for {data_dir} (database or disk is full): free some space\n"
        )
        # Even reading needs room for the shared-memory file: free the space first.
        (mount / "filler").unlink()
        db = data_dir / DB_FILENAME
        assert integrity(db) == "ok"
        assert stored_texts(db) == [("user", "kept"), ("assistant", "echo: kept")]
        again = ask("-c", "space again", data_dir=data_dir, config=config)
        assert (again.returncode, again.stdout) == (0, "echo: space again\n"), again.stderr
        assert integrity(db) == "ok"
        assert [text for _, text in stored_texts(db)] == [
            "kept",
            "echo: kept",
            "space again",
            "echo: space again",
        ]


def fill(mount: Path) -> Path:
    """Take every free byte of ``mount`` (its size is small) and return the filler file."""
    filler = mount / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


async def test_the_disk_filling_up_mid_session_fails_one_turn_and_the_engine_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text(ECHO_CONFIG)
    with small_tmpfs(tmp_path / "small", "4m") as mount:
        data_dir = mount / "data"
        monkeypatch.setenv("CHATCORE_DATA_DIR", str(data_dir))
        async with open_engine(config) as engine:
            conversation = engine.conversation()
            await conversation.send("kept")
            filler = fill(mount)
            with pytest.raises(StoreFull, match=f"^no space left for {data_dir} "):
                await conversation.send("y" * 90_000)
            filler.unlink()
            await conversation.send("after freeing space")
        db = data_dir / DB_FILENAME
        assert integrity(db) == "ok"
        assert [text for _, text in stored_texts(db)] == [
            "kept",
            "echo: kept",
            "after freeing space",
            "echo: after freeing space",
        ]


async def test_closing_the_engine_on_a_full_disk_loses_no_turn_and_raises_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The counters the engine saves on the way out are not worth an error at exit.
    config = tmp_path / "chatcore.toml"
    config.write_text(ECHO_CONFIG)
    with small_tmpfs(tmp_path / "small", "4m") as mount:
        data_dir = mount / "data"
        monkeypatch.setenv("CHATCORE_DATA_DIR", str(data_dir))
        async with open_engine(config) as engine:
            await engine.conversation().send("kept")
            filler = fill(mount)
        filler.unlink()
        db = data_dir / DB_FILENAME
        assert integrity(db) == "ok"
        assert [text for _, text in stored_texts(db)] == ["kept", "echo: kept"]
