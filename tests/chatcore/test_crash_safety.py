"""Crash safety: kill chatcore with SIGKILL mid-conversation, restart, check nothing is lost.

A child process opens the real engine (echo backend, slowed a little so kills land
mid-reply, and replication configured so every turn queues outbox rows) and runs
up to 300 turns, printing each reply's id once ``send`` has returned. The parent
kills it at a seeded-random point, checks the file, restarts it, and so on.

``run_crash_scenario`` is the reusable part: the replication tests drain the data
dir it returns into Redis.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import subprocess_env

from chatcore.messages import MessageStatus, Role
from chatcore.store import DB_FILENAME

pytestmark = pytest.mark.slow

TURNS_PER_RUN = 300
ECHO_PREFIX = "echo: "
FILLER = "lorem ipsum dolor sit amet"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
"""Nothing listens on port 1: replication stays offline and the outbox only grows."""

CHILD = """
import sys
import trio
from chatcore import open_engine

async def main(config: str, run: int, turns: int, continue_latest: bool) -> None:
    async with open_engine(config) as engine:
        conversation = (engine.latest_conversation() if continue_latest else None)
        conversation = conversation or engine.conversation()
        print(f"ready {conversation.id}", flush=True)
        for i in range(turns):
            reply = await conversation.send(f"r{run} t{i} {FILLER}")
            print(f"sent {reply.id} {i}", flush=True)

trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
""".replace("{FILLER}", FILLER)


@dataclass
class CrashRun:
    """What a crash scenario left behind: the data dir and the turns known to be saved."""

    data_dir: Path
    config: Path
    returned: dict[str, str] = field(default_factory=dict)
    """Reply message id → the user text of its turn, for every ``send`` that returned."""
    kills: int = 0

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILENAME


def write_crash_config(path: Path, *, redis_url: str, delay_seconds: float = 0.0005) -> Path:
    path.write_text(
        'default_backend = "echo"\n'
        "[backends.echo]\n"
        'plugin = "echo"\n'
        f"delay_seconds = {delay_seconds}\n"
        "[replication]\n"
        f'redis_url = "{redis_url}"\n'
    )
    return path


def run_crash_scenario(
    base: Path,
    *,
    redis_url: str = UNREACHABLE_REDIS,
    seed: int = 20240501,
    runs: int = 4,
    turns: int = TURNS_PER_RUN,
) -> CrashRun:
    """Run the child ``runs`` times, each killed with SIGKILL after a seeded-random turn.

    Odd runs continue the latest conversation, even runs start a new one. The
    database is checked for integrity after every kill.
    """
    rng = random.Random(seed)
    base.mkdir(parents=True, exist_ok=True)
    data_dir = base / "data"
    outcome = CrashRun(data_dir, write_crash_config(base / "crash.toml", redis_url=redis_url))
    env = subprocess_env({"CHATCORE_DATA_DIR": str(data_dir)})
    for run in range(runs):
        # Kill after `after` replies came back, then a little later still, so
        # the kill lands anywhere in the next turn: streaming, storing, printing.
        after = rng.randrange(turns)
        extra_s = rng.uniform(0, 0.02)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(outcome.config), str(run), str(turns), str(run % 2)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        try:
            seen = 0
            for line in child.stdout:
                kind, *rest = line.split()
                if kind == "sent":
                    reply_id, index = rest
                    outcome.returned[reply_id] = f"r{run} t{index} {FILLER}"
                    seen += 1
                    if seen > after:
                        break
            time.sleep(extra_s)
            child.send_signal(signal.SIGKILL)
            # What the child printed before dying also counts as returned.
            for line in child.stdout:
                kind, *rest = line.split()
                if kind == "sent":
                    outcome.returned[rest[0]] = f"r{run} t{rest[1]} {FILLER}"
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if child.returncode != -signal.SIGKILL:
            stderr = child.stderr.read() if child.stderr else ""
            raise AssertionError(f"run {run} ended with {child.returncode}: {stderr}")
        if child.stderr:
            child.stderr.close()
        child.stdout.close()
        outcome.kills += 1
        assert integrity(outcome.db_path) == "ok"
    return outcome


def integrity(db_path: Path) -> str:
    with sqlite3.connect(db_path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_killed_mid_conversation_nothing_returned_is_lost(tmp_path: Path) -> None:
    outcome = run_crash_scenario(tmp_path)
    assert outcome.kills == 4
    assert len(outcome.returned) > 0

    with sqlite3.connect(outcome.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        messages = conn.execute(
            "SELECT id, conversation_id, role, content, status, metadata, hlc FROM messages "
            "ORDER BY conversation_id, created_at, id"
        ).fetchall()
        conversations = {row[0] for row in conn.execute("SELECT id FROM conversations")}
        outbox = [json.loads(row[0]) for row in conn.execute("SELECT change FROM outbox")]

    by_id = {row[0]: row for row in messages}
    # Every reply whose send returned is stored complete, after its question.
    for reply_id, question in outcome.returned.items():
        _, conversation_id, role, content, status, _, _ = by_id[reply_id]
        assert (role, status) == (Role.ASSISTANT, MessageStatus.COMPLETE)
        assert content == ECHO_PREFIX + question
        thread = [row for row in messages if row[1] == conversation_id]
        position = next(i for i, row in enumerate(thread) if row[0] == reply_id)
        assert thread[position - 1][2:4] == (Role.USER, question)

    # Nothing is half-written: each stored turn is a question and its whole answer
    # (a killed turn is absent); no reply is cut or garbled.
    for conversation_id in conversations:
        thread = [row for row in messages if row[1] == conversation_id]
        assert [row[2] for row in thread] == ["user", "assistant"] * (len(thread) // 2)
        for question, answer in zip(thread[::2], thread[1::2], strict=True):
            assert question[3].endswith(FILLER)
            assert answer[4] in {"complete", "partial"}
            assert (ECHO_PREFIX + question[3]).startswith(answer[3])
            json.loads(answer[5])
    assert len(messages) >= 2 * len(outcome.returned)

    # The outbox holds exactly one change per stored message (nothing was acked:
    # Redis was unreachable), with the stored stamp, and nothing dangling.
    message_changes = [c for c in outbox if c["kind"] == "message"]
    assert sorted(c["data"]["id"] for c in message_changes) == sorted(by_id)
    for change in message_changes:
        row = by_id[change["data"]["id"]]
        assert (change["conversation_id"], change["hlc"]) == (row[1], row[6])
        assert change["data"]["content"] == row[3]
    created = sorted(c["conversation_id"] for c in outbox if c["kind"] == "conversation")
    assert created == sorted(conversations)
