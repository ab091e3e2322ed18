"""`chatcore history search|export|delete` as a user runs them, on a real database.

Most tests drive the click command in-process (CliRunner); the confirmation
prompt needs a real terminal, so that test runs the installed command on a pty.
"""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import REPO_ROOT, subprocess_env

from chatcore.cli import cli
from chatcore.messages import Message, MessageStatus
from chatcore.store import DB_FILENAME, Store, TurnRecord

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)

CONV = "0190aaaa-0000-7000-8000-000000000001"
OTHER = "0190bbbb-0000-7000-8000-000000000002"


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def seed(data_dir: Path) -> None:
    """Two conversations with fixed times: what the assertions below are about."""
    with Store(data_dir / DB_FILENAME) as store:
        store.write_turns(
            [
                TurnRecord(
                    CONV,
                    (
                        Message.user("How do I keep my tomatoes running?", created_at=T0),
                        Message.assistant(
                            "Tomatoes need sun.\nWater them *daily*.",
                            created_at=T0 + timedelta(seconds=3),
                            model="echo",
                        ),
                    ),
                    backend="echo",
                )
            ]
        )
        store.write_turns(
            [
                TurnRecord(
                    OTHER,
                    (
                        Message.user("Do tomatoes run? (AND) NEAR", created_at=T0 + timedelta(1)),
                        Message.assistant(
                            "They were interrupted",
                            created_at=T0 + timedelta(days=1, seconds=1),
                            status=MessageStatus.PARTIAL,
                        ),
                    ),
                )
            ]
        )


@pytest.fixture
def seeded(data_dir: Path) -> Path:
    seed(data_dir)
    return data_dir


def outbox_kinds(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        rows = conn.execute("SELECT change FROM outbox ORDER BY id").fetchall()
    return [json.loads(row[0])["kind"] for row in rows]


# --------------------------------------------------------------------------- search


def test_search_finds_word_forms_newest_first(seeded: Path) -> None:
    result = invoke("history", "search", "tomato run", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert [(h["conversation_id"], h["role"]) for h in hits] == [
        (OTHER, "user"),  # "run" matches "running" and "run"; newest first
        (CONV, "user"),
    ]
    assert set(hits[0]) == {
        "conversation_id",
        "title",
        "message_id",
        "role",
        "snippet",
        "created_at",
    }
    assert hits[1]["title"] == "How do I keep my tomatoes running?"
    assert hits[1]["snippet"] == "How do I keep my **tomatoes** **running**?"
    assert hits[1]["created_at"] == T0.isoformat()

    limited = json.loads(invoke("history", "search", "tomatoes", "--limit", "1", "--json").output)
    assert [h["conversation_id"] for h in limited] == [OTHER]


def test_search_text_output(seeded: Path) -> None:
    result = invoke("history", "search", "daily")
    assert result.exit_code == 0
    assert result.output == (
        f"{CONV}  2024-05-01 09:30  assistant  How do I keep my tomatoes running?\n"
        "    Tomatoes need sun. Water them ***daily***.\n"
    )
    nothing = invoke("history", "search", "zucchini")
    assert (nothing.exit_code, nothing.output) == (0, "(no matches)\n")


@pytest.mark.parametrize(
    "text",
    ['"', "AND", "NEAR(", "(AND)", "*", "tomat*", "-run", "content:x", "^tomatoes", "a OR", "'"],
)
def test_search_takes_query_syntax_literally(seeded: Path, text: str) -> None:
    result = invoke("history", "search", "--json", "--", text)
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.output), list)


def test_search_prefix_and_operator_words(seeded: Path) -> None:
    prefix = json.loads(invoke("history", "search", "interr*", "--json").output)
    assert [h["role"] for h in prefix] == ["assistant"]
    # "AND" and "NEAR" are words someone typed, found in OTHER's question.
    words = json.loads(invoke("history", "search", "(AND) near", "--json").output)
    assert [h["conversation_id"] for h in words] == [OTHER]


def test_search_needs_a_word(seeded: Path) -> None:
    result = invoke("history", "search", "   ")
    assert result.exit_code == 2
    assert result.output == "error: nothing to search for: give at least one word\n"


def test_list_shows_the_newest_hundred_by_default(data_dir: Path) -> None:
    with Store(data_dir / DB_FILENAME) as store:
        store.write_turns([TurnRecord(f"c{i:03d}", (Message.user(f"q{i}"),)) for i in range(101)])
    result = CliRunner().invoke(cli, ["history", "list"])
    assert result.exit_code == 0
    assert result.stderr == "(the newest 100; --limit N or --all for more)\n"
    assert "c100" in result.stdout and "c000" not in result.stdout
    everything = json.loads(invoke("history", "list", "--all", "--json").output)
    assert len(everything) == 101
    assert len(json.loads(invoke("history", "list", "--limit", "3", "--json").output)) == 3


# --------------------------------------------------------------------------- export


def test_export_markdown_to_stdout(seeded: Path) -> None:
    result = invoke("history", "export", OTHER[:8], "--format", "md")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "# Do tomatoes run? (AND) NEAR\n"
        "\n"
        f"Conversation `{OTHER}`\n"
        "\n"
        "**User** · 2024-05-02 09:30:00 UTC\n"
        "\n"
        "Do tomatoes run? (AND) NEAR\n"
        "\n"
        "**Assistant** · 2024-05-02 09:30:01 UTC *(partial)*\n"
        "\n"
        "They were interrupted\n"
    )
    default = invoke("history", "export", OTHER)
    assert default.output == result.output  # Markdown is the default


def test_export_json_to_a_private_file(seeded: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    result = invoke("history", "export", CONV, "--format", "json", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert f"exported 2 message(s) to {target}" in result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    document: dict[str, Any] = json.loads(target.read_text(encoding="utf-8"))
    assert document["conversation"]["id"] == CONV
    assert document["conversation"]["title"] == "How do I keep my tomatoes running?"
    assert document["conversation"]["message_count"] == 2
    assert [(m["role"], m["content"], m["status"]) for m in document["messages"]] == [
        ("user", "How do I keep my tomatoes running?", "complete"),
        ("assistant", "Tomatoes need sun.\nWater them *daily*.", "complete"),
    ]
    assert document["messages"][1]["model"] == "echo"
    assert document["messages"][0]["created_at"] == T0.isoformat()


def test_export_is_the_markdown_docs_storage_shows(data_dir: Path) -> None:
    storage_md = (REPO_ROOT / "docs" / "storage.md").read_text()
    documented = storage_md.split("## Exports", 1)[1].split("```markdown\n", 1)[1]
    documented = documented.split("```", 1)[0]
    with Store(data_dir / DB_FILENAME) as store:
        store.write_turns(
            [
                TurnRecord(
                    CONV,
                    (
                        Message.user("How do I keep my tomatoes running?", created_at=T0),
                        Message.assistant(
                            "Tomatoes need sun.",
                            created_at=T0 + timedelta(seconds=3),
                            model="llama3",
                            status=MessageStatus.PARTIAL,
                            metadata={
                                "error": "interrupted: the engine shut down mid-reply",
                                "citations": [
                                    {
                                        "document": "garden.md",
                                        "heading": "Tomatoes",
                                        "chunk": 2,
                                        "score": 0.8123,
                                    }
                                ],
                            },
                        ),
                    ),
                    backend="ollama",
                    model="llama3",
                    system="Answer in one line.",
                )
            ]
        )
        store.set_title(CONV, "Tomato care")
    result = invoke("history", "export", CONV)
    assert result.exit_code == 0, result.output
    assert result.output == documented


def test_export_errors(seeded: Path, tmp_path: Path) -> None:
    missing = invoke("history", "export", "ffffffff")
    assert missing.exit_code == 2
    assert "no conversation 'ffffffff'" in missing.output
    bad = invoke("history", "export", CONV, "--format", "pdf")
    assert bad.exit_code == 2
    assert "'pdf' is not one of 'md', 'json'" in bad.output
    unwritable = invoke("history", "export", CONV, "-o", str(tmp_path / "no" / "dir.md"))
    assert unwritable.exit_code == 2  # a path that can't be written is bad input
    assert "error: cannot write" in unwritable.output


# --------------------------------------------------------------------------- delete


def test_delete_without_a_terminal_needs_yes(seeded: Path) -> None:
    refused = invoke("history", "delete", CONV)
    assert refused.exit_code == 2
    assert refused.output == (
        "error: standard input is not a terminal: add --yes to delete without asking\n"
    )
    with Store(seeded / DB_FILENAME) as store:
        assert store.get_conversation(CONV) is not None


def test_delete_with_yes_leaves_a_tombstone_and_no_outbox_when_offline(seeded: Path) -> None:
    result = invoke("history", "delete", CONV[:8], "--yes")
    assert result.exit_code == 0, result.output
    assert result.output == f"deleted {CONV}  How do I keep my tomatoes running?\n"
    listed = json.loads(invoke("history", "list", "--json").output)
    assert [c["id"] for c in listed] == [OTHER]
    assert json.loads(invoke("history", "search", "daily", "--json").output) == []
    with sqlite3.connect(seeded / DB_FILENAME) as conn:
        row = conn.execute("SELECT deleted_at FROM conversations WHERE id = ?", [CONV]).fetchone()
        count = conn.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?", [CONV])
        assert row[0] is not None and count.fetchone() == (0,)
    assert outbox_kinds(seeded) == []
    again = invoke("history", "delete", CONV, "--yes")
    assert again.exit_code == 2
    assert "no conversation" in again.output


def test_delete_queues_a_tombstone_when_replication_is_configured(
    seeded: Path, write_config: Any
) -> None:
    config = write_config('[replication]\nredis_url = "redis://127.0.0.1:9/0"\n')
    result = invoke("--config", str(config), "history", "delete", OTHER, "--yes")
    assert result.exit_code == 0, result.output
    assert outbox_kinds(seeded) == ["tombstone"]


@pytest.mark.slow
@pytest.mark.parametrize(("answer", "kept"), [("n", True), ("y", False)])
def test_delete_asks_on_a_terminal(seeded: Path, answer: str, kept: bool) -> None:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [CHATCORE, "history", "delete", CONV[:8]],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=subprocess_env(),
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 30
    try:
        while b"[y/N]" not in output and time.monotonic() < deadline:
            if select.select([controller], [], [], 1)[0]:
                output += os.read(controller, 1024)
        os.write(controller, answer.encode() + b"\n")
        assert process.wait(timeout=30) == 0
        while select.select([controller], [], [], 0.2)[0]:
            try:
                output += os.read(controller, 1024)
            except OSError:
                break
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    text = output.decode()
    assert "Delete “How do I keep my tomatoes running?” (" in text
    assert "2 messages)? [y/N]" in text
    assert ("kept" in text) is kept
    with Store(seeded / DB_FILENAME) as store:
        assert (store.get_conversation(CONV) is not None) is kept
