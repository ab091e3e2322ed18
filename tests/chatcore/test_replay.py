"""`chatcore replay` as a user runs it: a conversation stored by a real engine, replayed
through a changed pipeline (the CLI in-process via CliRunner), with the database files
compared byte for byte before and after.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from click.testing import CliRunner, Result
from fakes.openai import FakeOpenAI

from chatcore import open_engine
from chatcore.cli import cli
from chatcore.messages import Message, Role
from chatcore.replay import snapshot_database
from chatcore.store import DB_FILENAME, Store, StoreError, TurnRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REFUSAL = "Not on this channel."
BLOCKED_WORD = "forbidden"
MASKED_WORD = "secretive"
PLAIN = "turn {n}: the weather is fine"
# Turns 3 and 7 name the blocked word, 5 has stray whitespace, 9 the masked word.
SPECIAL = {
    3: f"turn 3: tell me the {BLOCKED_WORD} recipe",
    5: "   turn 5: padded   ",
    7: f"turn 7: {BLOCKED_WORD.upper()} again",
    9: f"turn 9: a {MASKED_WORD} answer",
}
PROMPTS = [SPECIAL.get(n, PLAIN.format(n=n)) for n in range(1, 11)]

FILTERS = f"""
[[plugins]]
plugin = "normalizer"
priority = 10

[[plugins]]
plugin = "content_filter"
priority = 20
[plugins.config]
blocked = ["{BLOCKED_WORD}"]
masked = ["{MASKED_WORD}"]
refusal = "{REFUSAL}"
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def replay_json(*args: str) -> list[dict[str, Any]]:
    result = invoke("replay", *args, "--json")
    assert result.exit_code == 0, result.output
    turns: list[dict[str, Any]] = json.loads(result.stdout)
    return turns


def database_files(data_dir: Path) -> dict[str, str]:
    """Every file of the data dir (db, -wal, -shm if present) → sha256."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data_dir.iterdir())
    }


def store_conversation(prompts: list[str]) -> str:
    """Talk to the echo backend through a real engine (the env points at the test data dir)."""

    async def main() -> str:
        async with open_engine(backend="echo") as engine:
            conversation = engine.conversation()
            for prompt in prompts:
                await conversation.send(prompt)
            return conversation.id

    return trio.run(main)


@pytest.fixture
def conversation_id(data_dir: Path) -> str:
    return store_conversation(PROMPTS)


@pytest.fixture
def filters_config(write_config: Callable[..., Path]) -> Path:
    return write_config(f'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n{FILTERS}')


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply_chunks=("Fresh ", "answer.")) as server:
        yield server


def test_replay_shows_blocked_turns_changes_and_leaves_the_database_untouched(
    conversation_id: str, filters_config: Path, data_dir: Path
) -> None:
    before = database_files(data_dir)
    assert DB_FILENAME in before

    turns = replay_json(conversation_id, "--config", str(filters_config))

    assert [t["turn"] for t in turns] == list(range(1, 11))
    assert [t["user"] for t in turns] == PROMPTS
    assert [t["turn"] for t in turns if t["blocked"]] == [3, 7]
    for turn in turns:
        assert {"turn", "user", "blocked", "changes", "reply_before", "reply_after"} <= set(turn)
        assert turn["reply_before"] == f"echo: {turn['user']}"
        if turn["blocked"]:
            assert turn["reply_after"] == REFUSAL
            assert turn["answered_by"] == "content_filter"
    changes = {t["turn"]: t["changes"] for t in turns if t["changes"]}
    assert changes == {
        5: [{"plugin": "normalizer", "before": PROMPTS[4], "after": "turn 5: padded"}],
        9: [{"plugin": "content_filter", "before": PROMPTS[8], "after": "turn 9: a *** answer"}],
    }
    assert turns[4]["reply_after"] == "echo: turn 5: padded"
    assert turns[8]["reply_after"] == "echo: turn 9: a *** answer"
    assert turns[0]["reply_after"] == turns[0]["reply_before"]

    # Byte for byte, and no side file (-wal, -shm) appeared or vanished.
    assert database_files(data_dir) == before


def test_human_report_names_each_turn_and_sums_up(
    conversation_id: str, filters_config: Path, data_dir: Path
) -> None:
    before = database_files(data_dir)

    result = invoke("replay", conversation_id[:13], "--config", str(filters_config))

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Replay of {conversation_id}" in out
    assert "Turn 3: BLOCKED by content_filter" in out
    assert "Turn 7: BLOCKED by content_filter" in out
    assert "Turn 1: answered" in out
    assert f"normalizer      {PROMPTS[4]!r} -> 'turn 5: padded'" in out
    assert f"reply after     {REFUSAL}" in out
    assert out.rstrip().endswith(
        "2 of 10 turns would be blocked; 2 changed by processors; 4 replies differ"
    )
    assert database_files(data_dir) == before


def test_replay_without_config_uses_the_usual_pipeline(conversation_id: str) -> None:
    turns = replay_json(conversation_id)

    assert not any(t["blocked"] or t["changes"] for t in turns)
    assert all(t["reply_after"] == t["reply_before"] for t in turns)


def test_backend_switch_answers_with_the_new_backend_over_the_new_history(
    conversation_id: str,
    openai: FakeOpenAI,
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-replay")
    config = write_config(
        f"""
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.openai]
plugin = "openai"
base_url = "{openai.url}/v1"
model = "gpt-4o-mini"
{FILTERS}
""",
        name="switch.toml",
    )
    before = database_files(data_dir)

    turns = replay_json(conversation_id, "--config", str(config), "--backend", "openai")

    assert [t["turn"] for t in turns if t["blocked"]] == [3, 7]
    assert [t["reply_after"] for t in turns if not t["blocked"]] == ["Fresh answer."] * 8
    requests = openai.requests_to("/v1/chat/completions")
    assert len(requests) == 8  # blocked turns never reach a backend
    # The last turn saw the replayed turns with the NEW replies, not the stored ones.
    sent = requests[-1].json["messages"]
    contents = [m["content"] for m in sent]
    assert contents[-1] == PROMPTS[9]
    assert contents.count("Fresh answer.") == 7
    assert REFUSAL in contents
    assert "turn 9: a *** answer" in contents
    assert not any(str(c).startswith("echo:") for c in contents)
    assert database_files(data_dir) == before


def test_replay_reads_turns_still_in_the_wal_without_touching_any_file(
    data_dir: Path, filters_config: Path
) -> None:
    # A chatcore still running (or killed) holds recent turns in the WAL only.
    store = Store(data_dir / DB_FILENAME)
    try:
        conversation = "0190cccc-0000-7000-8000-000000000003"
        for prompt in PROMPTS[:4]:
            user = Message(role=Role.USER, content=prompt)
            reply = Message(role=Role.ASSISTANT, content=f"stored: {prompt}")
            store.write_turns([TurnRecord(conversation_id=conversation, messages=(user, reply))])
        names = {p.name for p in data_dir.iterdir()}
        assert {f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm"} <= names
        before = database_files(data_dir)

        turns = replay_json(conversation[:8], "--config", str(filters_config))

        assert [t["reply_before"] for t in turns] == [f"stored: {p}" for p in PROMPTS[:4]]
        assert [t["blocked"] for t in turns] == [False, False, True, False]
        assert database_files(data_dir) == before
    finally:
        store.close()


def test_saved_circuits_of_real_use_do_not_skip_plugins_in_the_replay(
    conversation_id: str, filters_config: Path, data_dir: Path
) -> None:
    with Store(data_dir / DB_FILENAME) as store:
        store.kv_set(
            "@stats",
            "content_filter",
            {
                "saved_at": time.time(),
                "stats": {"calls": 5, "failures": 5},
                "circuit": {"state": "open", "failures": 5, "open_for_s": 0.0},
            },
        )
    before = database_files(data_dir)

    turns = replay_json(conversation_id, "--config", str(filters_config))

    assert [t["turn"] for t in turns if t["blocked"]] == [3, 7]
    assert database_files(data_dir) == before


def test_unknown_conversation_is_one_line_and_exit_2(conversation_id: str) -> None:
    result = invoke("replay", "0000ffff-no-such")

    assert result.exit_code == 2
    assert (
        result.stderr == "error: no conversation '0000ffff-no-such' (see `chatcore history list`)\n"
    )
    assert result.stdout == ""


def test_unknown_conversation_without_any_history_creates_no_database(data_dir: Path) -> None:
    result = invoke("replay", "0190aaaa")

    assert result.exit_code == 2
    assert "no conversation '0190aaaa'" in result.stderr
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_unknown_backend_is_one_line_and_exit_2(conversation_id: str) -> None:
    result = invoke("replay", conversation_id, "--backend", "nope")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown backend 'nope'; configured backends: ")
    assert result.stderr.count("\n") == 1


def test_snapshot_retakes_a_copy_torn_by_a_concurrent_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src.db"
    source.write_bytes(b"v1")
    target = tmp_path / "copy.db"
    real_copy = __import__("shutil").copyfile
    writes = iter([b"v2", b"v3"])

    def copy_while_someone_writes(src: Path, dst: Path) -> Any:
        copied = real_copy(src, dst)
        data = next(writes, None)
        if data is not None:  # another process commits during the first two copies
            Path(src).write_bytes(data)
        return copied

    monkeypatch.setattr("chatcore.replay.shutil.copyfile", copy_while_someone_writes)
    snapshot_database(source, target)
    assert target.read_bytes() == b"v3"

    writes = iter([b"w"] * 10)
    with pytest.raises(StoreError, match=r"src\.db: the database kept changing .*3 attempts"):
        snapshot_database(source, target, attempts=3)


def test_human_report_when_no_processor_changed_anything(data_dir: Path) -> None:
    conversation_id = store_conversation(["hello", "and again"])

    result = invoke("replay", conversation_id)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Turn 1: answered" in out
    assert "Turn 2: answered" in out
    assert "  user          hello" in out
    assert "  reply after   (same)" in out
    assert out.rstrip().endswith(
        "0 of 2 turns would be blocked; 0 changed by processors; 0 replies differ"
    )
