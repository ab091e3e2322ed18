"""A database that survived SIGKILLs mid-conversation drains to Redis with no duplicate."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from redis_server import RedisServer, redis_factory, redis_server
from test_crash_safety import run_crash_scenario

from chatcore import load_config
from chatcore.replication import sync_push

pytestmark = pytest.mark.slow

__all__ = ["redis_factory", "redis_server"]  # fixtures used here


def test_the_outbox_of_a_crashed_chatcore_drains_exactly_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Killed with Redis unreachable, so every stored change is still in the outbox.
    outcome = run_crash_scenario(tmp_path / "crash", runs=3, seed=7)
    assert outcome.kills == 3
    with sqlite3.connect(outcome.db_path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM messages")}
        pending = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert len(stored) >= 2 * len(outcome.returned)

    config = load_config(
        outcome.config,
        data_dir=str(outcome.data_dir),
        replication={"redis_url": redis_server.url, "batch_size": 100},
    )
    assert sync_push(config) == pending
    assert sync_push(config) == 0  # nothing left, nothing sent twice

    with redis_server.client() as client:
        entries = [json.loads(f["change"]) for _, f in client.xrange("chatcore:changes")]
        in_hashes = Counter(
            message_id
            for key in client.scan_iter(match="chatcore:{conv:*}:msgs")
            for message_id in client.hkeys(key)
        )
    assert len(entries) == pending
    per_message = Counter(e["data"]["id"] for e in entries if e["kind"] == "message")
    assert set(per_message) == stored == set(in_hashes)
    assert set(per_message.values()) == {1} and set(in_hashes.values()) == {1}
    with sqlite3.connect(outcome.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
