"""Replication against a real redis-server on a free port: outages, flapping, dedupe, merge."""

from __future__ import annotations

import json
import logging
import random
import shutil
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers import SUPPORT_DIR
from redis_server import RedisServer, machine_redis, redis_factory, redis_server

from chatcore import Message, load_config, open_engine
from chatcore.hooks import HookRegistration, HookRegistry, HookType
from chatcore.messages import LOCAL_METADATA
from chatcore.replication import (
    ConnectivityChange,
    ConnectivityState,
    ReplicationUnavailable,
    Replicator,
)
from chatcore.replication._sharing import shared_record, with_shared, without_local
from chatcore.result import PluginResult
from chatcore.store import Change, ChangeKind, Store, StoreError, TurnRecord

__all__ = ["machine_redis", "redis_factory", "redis_server"]  # fixtures used here

FAST = {
    "backoff_base_seconds": 0.01,
    "backoff_max_seconds": 0.05,
    "connect_timeout_seconds": 1.0,
    "command_timeout_seconds": 2.0,
}
DRAIN_CEILING_S = 30.0


def settings_for(url: str, **extra: Any) -> Any:
    config = load_config(replication={"redis_url": url, **FAST, **extra})
    return config.replication


def engine_config(data_dir: Path, url: str, **extra: Any) -> Any:
    return load_config(
        default_backend="echo",
        data_dir=str(data_dir),
        replication={"redis_url": url, **FAST, **extra},
    )


def seed_store(path: Path, conversations: int, turns: int) -> list[str]:
    """Write turns straight through the store (with outbox rows), as the engine would."""
    ids = [f"conv-{n:03d}" for n in range(conversations)]
    with Store(path, outbox=True) as store:
        records = [
            TurnRecord(cid, (Message.user(f"q{t} in {cid}"), Message.assistant(f"a{t} in {cid}")))
            for t in range(turns)
            for cid in ids
        ]
        for start in range(0, len(records), 200):
            store.write_turns(records[start : start + 200])
    return ids


def outbox_kinds(store: Store) -> Counter[str]:
    return Counter(e.change.kind.value for e in store.outbox_pending(1_000_000))


def redis_messages(server: RedisServer, prefix: str = "chatcore") -> dict[str, dict[str, Any]]:
    """Every message stored in Redis, by id (asserting no id is in two conversations)."""
    found: dict[str, dict[str, Any]] = {}
    with server.client() as client:
        for key in client.scan_iter(match=f"{prefix}:{{conv:*}}:msgs", count=1000):
            for message_id, text in client.hgetall(key).items():
                assert message_id not in found
                found[message_id] = json.loads(text)
    return found


def stream_changes(server: RedisServer, prefix: str = "chatcore") -> list[dict[str, Any]]:
    with server.client() as client:
        return [json.loads(f["change"]) for _, f in client.xrange(f"{prefix}:changes")]


def recorder(hooks: HookRegistry) -> list[ConnectivityChange]:
    seen: list[ConnectivityChange] = []

    async def record(change: ConnectivityChange, context: Any) -> PluginResult[Any]:
        seen.append(change)
        return PluginResult.ok(change)

    hooks.register(HookRegistration("recorder", HookType.ON_CONNECTIVITY_CHANGE, record))
    return seen


async def wait_until(condition: Any, ceiling: float = DRAIN_CEILING_S) -> None:
    """Poll ``condition`` (a blocking check, run in a thread) until it holds."""
    with trio.fail_after(ceiling):
        while not await trio.to_thread.run_sync(condition):
            await trio.sleep(0.02)


# --- the acceptance scenarios ------------------------------------------------------------------


async def test_offline_then_online_drains_everything_exactly_once(
    tmp_path: Path, redis_factory: Any
) -> None:
    server = redis_factory()  # not started: Redis is down
    config = engine_config(tmp_path / "data", server.url)
    async with open_engine(config) as engine:
        seen = recorder(engine.hooks)
        conversations = [engine.conversation() for _ in range(4)]

        async def talk(conversation: Any) -> None:
            for n in range(50):
                await conversation.send(f"turn {n} of {conversation.id}")

        async with trio.open_nursery() as nursery:
            for conversation in conversations:
                nursery.start_soon(talk, conversation)

        status = engine.sync_status()
        assert status is not None
        kinds = await trio.to_thread.run_sync(outbox_kinds, engine.store)
        assert kinds["message"] == 400
        assert kinds["conversation"] >= 4
        assert status.pending == 400 + kinds["conversation"]
        assert status.state in ("offline", "connecting")
        assert status.last_push is None

        await trio.to_thread.run_sync(server.start)
        await wait_until(lambda: engine.sync_status().pending == 0)
        assert engine.sync_status().state == "online"
        assert engine.sync_status().last_push is not None

    messages = redis_messages(server)
    assert len(messages) == 400
    ids = {m.id for c in conversations for m in await_messages(config, c.id)}
    assert set(messages) == ids
    changes = stream_changes(server)
    per_message = Counter(c["data"]["id"] for c in changes if c["kind"] == "message")
    assert set(per_message.values()) == {1}
    assert len(changes) == 400 + kinds["conversation"]
    states = [change.state for change in seen]
    assert ConnectivityState.OFFLINE in states
    assert states[-1] is ConnectivityState.ONLINE
    assert all(c.target == f"redis://127.0.0.1:{server.port}" for c in seen)


def await_messages(config: Any, conversation_id: str) -> list[Message]:
    with Store(config.db_path) as store:
        return store.get_messages(conversation_id)


class FlappingStore(Store):
    """A store that has Redis killed (and restarted) at chosen batches of a drain.

    At ``kill_at`` batches the kill is started in its own thread as the batch is read,
    so it lands before, during or after that batch's pipeline. At ``lose_ack_at``
    batches Redis is killed after it acknowledged the batch and the local delete
    fails, as if the process died in between: those changes are sent again.
    """

    def __init__(
        self, path: Path, server: RedisServer, kill_at: set[int], lose_ack_at: set[int]
    ) -> None:
        super().__init__(path, outbox=True)
        self.server = server
        self.kill_at = kill_at
        self.lose_ack_at = lose_ack_at
        self.batches = 0
        self.acks = 0
        self.kills = 0
        self.killers: list[threading.Thread] = []
        self.depth_at_kill: list[int] = []

    def _kill(self, *, wait: bool) -> None:
        for killer in self.killers:
            killer.join()
        self.kills += 1
        self.depth_at_kill.append(self.outbox_depth())
        killer = threading.Thread(target=self.server.restart)
        self.killers.append(killer)
        killer.start()
        if wait:
            killer.join()

    def outbox_rows(self, limit: int, *, after: int = 0) -> list[tuple[int, str]]:
        rows = super().outbox_rows(limit, after=after)
        if limit > 1 and rows:
            self.batches += 1
            if self.batches in self.kill_at:
                self._kill(wait=False)
        return rows

    def outbox_ack_range(self, first: int, last: int) -> int:
        self.acks += 1
        if self.acks in self.lose_ack_at:
            self._kill(wait=True)
            raise StoreError("simulated: the process died before deleting the sent rows")
        return super().outbox_ack_range(first, last)


async def test_flapping_redis_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, redis_factory: Any
) -> None:
    # Acknowledged writes must survive a SIGKILL: fsync-always AOF in the test's folder.
    server = redis_factory(persistent=True)
    server.start()
    seed_store(tmp_path / "flap.db", conversations=10, turns=100)
    store = FlappingStore(tmp_path / "flap.db", server, kill_at={5, 25, 45}, lose_ack_at={15, 35})
    try:
        kinds = outbox_kinds(store)
        assert kinds["message"] == 2000
        hooks = HookRegistry()
        seen = recorder(hooks)
        replicator = Replicator(
            store, settings_for(server.url, batch_size=25), hooks=hooks, rng=random.Random(5)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replicator.run)
            await wait_until(lambda: store.outbox_depth() == 0 and store.kills == 5)
            for killer in store.killers:
                await trio.to_thread.run_sync(killer.join)
            nursery.cancel_scope.cancel()
        replicator.close()
    finally:
        store.close()

    assert server.starts == 6
    # 80 batches of 25, plus at least the two whose acknowledgement was lost, sent again.
    assert store.batches >= 82
    assert all(depth > 0 for depth in store.depth_at_kill)
    assert {ConnectivityState.OFFLINE, ConnectivityState.ONLINE} <= {c.state for c in seen}
    messages = redis_messages(server)
    assert len(messages) == 2000
    changes = stream_changes(server)
    per_change = Counter((c["kind"], c["conversation_id"], c["hlc"]) for c in changes)
    assert set(per_change.values()) == {1}
    assert Counter(c["kind"] for c in changes) == kinds


async def test_pushing_the_same_changes_again_changes_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    seed_store(tmp_path / "a.db", conversations=3, turns=5)
    # A copy taken before the push still has every outbox row: pushing it again is a
    # redelivery of changes Redis already applied (what a crash after the push does).
    shutil.copy(tmp_path / "a.db", tmp_path / "copy.db")
    settings = settings_for(redis_server.url, batch_size=7)
    with Store(tmp_path / "a.db", outbox=True) as store:
        replicator = Replicator(store, settings)
        assert await replicator.push_once() == 33
        assert store.outbox_depth() == 0
        replicator.close()
    before = (redis_messages(redis_server), stream_changes(redis_server))
    with Store(tmp_path / "copy.db", outbox=True) as copy:
        replicator = Replicator(copy, settings)
        assert await replicator.push_once() == 33
        replicator.close()
    assert (redis_messages(redis_server), stream_changes(redis_server)) == before
    assert len(before[0]) == 30


async def test_two_devices_write_while_partitioned_and_converge(
    tmp_path: Path, redis_factory: Any
) -> None:
    server = redis_factory(persistent=True)
    server.start()
    settings = settings_for(server.url)
    a = Store(tmp_path / "a.db", outbox=True)
    b = Store(tmp_path / "b.db", outbox=True)
    push_a, push_b = Replicator(a, settings), Replicator(b, settings)
    try:
        a.write_turns([TurnRecord("shared", (Message.user("hi from a"), Message.assistant("1")))])
        await push_a.push_once()
        assert await push_b.pull_once() == 3  # conversation + two messages
        assert [m.content for m in b.get_messages("shared")] == ["hi from a", "1"]

        server.kill()  # partition: both keep working offline
        with pytest.raises(ReplicationUnavailable, match=r"Redis at redis://127\.0\.0\.1:\d+ is"):
            await push_a.push_once()
        for n in range(3):
            a.write_turns([TurnRecord("shared", (Message.user(f"a{n}"), Message.assistant("ok")))])
            b.write_turns([TurnRecord("shared", (Message.user(f"b{n}"), Message.assistant("ok")))])
        a.set_title("shared", "title from a")
        b.set_title("shared", "title from b")  # concurrent: the greater stamp wins everywhere
        b.write_turns([TurnRecord("b-only", (Message.user("only b"), Message.assistant("x")))])

        server.start()
        await push_a.push_once()
        await push_b.push_once()
        await push_a.pull_once()
        await push_b.pull_once()

        def view(store: Store, cid: str) -> tuple[Any, ...]:
            summary = store.get_conversation(cid)
            assert summary is not None
            messages = [(m.id, m.role, m.content, m.created_at) for m in store.get_messages(cid)]
            return summary.title, summary.backend, summary.model, messages

        assert view(a, "shared") == view(b, "shared")
        assert view(a, "b-only") == view(b, "b-only")
        title, _, _, messages = view(a, "shared")
        assert title in ("title from a", "title from b")
        assert len(messages) == 14
        assert messages == sorted(messages, key=lambda m: (m[3], m[0]))
        # A second round finds nothing new.
        assert await push_a.pull_once() == 0
        assert await push_b.pull_once() == 0
        # B has seen A's stamps, so a rename on B now is later than anything A wrote.
        b.set_title("shared", "renamed on b")
        await push_b.push_once()
        assert await push_a.pull_once() == 1
        assert view(a, "shared") == view(b, "shared")
        assert view(a, "shared")[0] == "renamed on b"
    finally:
        push_a.close()
        push_b.close()
        a.close()
        b.close()


async def test_a_running_engine_pulls_other_devices_changes_on_its_interval(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = engine_config(tmp_path / "b", redis_server.url, pull_interval_seconds=0.05)
    async with open_engine(config) as engine:
        with Store(tmp_path / "a.db", outbox=True) as a:
            a.write_turns([TurnRecord("from-a", (Message.user("hello b"),))])
            pusher = Replicator(a, settings_for(redis_server.url))
            await pusher.push_once()
            await wait_until(lambda: engine.store.get_conversation("from-a") is not None)
            assert [m.content for m in engine.store.get_messages("from-a")] == ["hello b"]

            # A deletion travels as a tombstone.
            assert a.delete_conversation("from-a")
            await pusher.push_once()
            await wait_until(lambda: engine.store.get_conversation("from-a") is None)
            assert engine.store.get_messages("from-a") == []
            pusher.close()
        status = engine.sync_status()
        assert status is not None and status.last_pull is not None
    with redis_server.client() as client:
        meta = client.hgetall("chatcore:{conv:from-a}:meta")
        assert "deleted_at" in meta
        assert client.hlen("chatcore:{conv:from-a}:msgs") == 0


async def test_the_stored_json_reaches_redis_unchanged(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The script takes the message JSON out of the change's text, never re-encoding it:
    # escapes, non-ASCII, floats and empty arrays arrive exactly as the store wrote them.
    cid = 'odd "conv" \\ ü'
    tricky = Message.user(
        'quote " backslash \\ "data":{"id":"x"}} tab\t newline\n ünï 😀',
        metadata={"score": 0.1, "tags": [], "nested": {"empty": {}, "big": 2**60}},
    )
    with Store(tmp_path / "j.db", outbox=True) as store:
        store.write_turns([TurnRecord(cid, (tricky, Message.assistant("}}")), system='s "x"')])
        stored = [text for _, text in store.outbox_rows(100)]
        replicator = Replicator(store, settings_for(redis_server.url, batch_size=2))
        assert await replicator.push_once() == 3
        replicator.close()
    with redis_server.client() as client:
        stream = [(f["device"], f["change"]) for _, f in client.xrange("chatcore:changes")]
        messages = client.hgetall(f"chatcore:{{conv:{cid}}}:msgs")
        meta = client.hgetall(f"chatcore:{{conv:{cid}}}:meta")
    assert [text for _, text in stream] == stored
    for text in stored[1:]:
        change = json.loads(text)
        assert messages[change["data"]["id"]] == json.dumps(
            change["data"], ensure_ascii=False, separators=(",", ":")
        )
    assert json.loads(messages[tricky.id])["content"] == tricky.content
    assert json.loads(messages[tricky.id])["metadata"] == dict(tricky.metadata)
    conversation = json.loads(stored[0])
    assert meta["system"] == 's "x"' and meta["backend"] == "" and meta["metadata"] == "{}"
    assert (meta["hlc"], meta["device"]) == (conversation["hlc"], conversation["device_id"])


@pytest.mark.parametrize(
    ("bad_text", "reason"),
    [
        # Passed on as text: the apply script finds the bad stamp, before writing anything.
        (
            '{"kind":"message","conversation_id":"c","hlc":"yesterday","device_id":"d",'
            '"data":{"id":"m1"}}',
            "hlc: expected <13 digits>.<5 digits>.<device id>",
        ),
        # Not a message: parsed here, and refused before it is sent.
        ("{", "not JSON"),
    ],
)
async def test_a_malformed_outbox_row_is_named_and_the_rows_before_it_are_delivered(
    tmp_path: Path, redis_server: RedisServer, bad_text: str, reason: str
) -> None:
    seed_store(tmp_path / "m.db", conversations=1, turns=10)  # 21 rows
    with Store(tmp_path / "m.db", outbox=True) as store:
        rows = store.outbox_rows(100)
        bad_id = rows[12][0]  # in the third batch of 5
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE outbox SET change = ? WHERE id = ?", [bad_text, bad_id])
        replicator = Replicator(store, settings_for(redis_server.url, batch_size=5))
        with pytest.raises(StoreError, match=rf"outbox row {bad_id}: malformed change: {reason}"):
            await replicator.push_once()
        # The two batches Redis acknowledged left the outbox; nothing of the bad one is sent.
        assert [row_id for row_id, _ in store.outbox_rows(100)] == [r[0] for r in rows[10:]]
        assert len(redis_messages(redis_server)) == 10 - 1  # 10 rows: 1 conversation, 9 msgs
        assert len(stream_changes(redis_server)) == 10
        # A local problem: Redis is not blamed for it.
        assert replicator.state is not ConnectivityState.DEGRADED
        assert replicator.status().last_error is None

        with sqlite3.connect(store.path) as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", [bad_id])
        assert await replicator.push_once() == 10
        assert store.outbox_depth() == 0
        replicator.close()
    assert len(redis_messages(redis_server)) == 19


class BusyStore(Store):
    """Writes turns and deletes a conversation while a drain is reading its batches."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, outbox=True)
        self.reads = 0

    def outbox_rows(self, limit: int, *, after: int = 0) -> list[tuple[int, str]]:
        rows = super().outbox_rows(limit, after=after)
        if limit > 1:
            self.reads += 1
            if self.reads <= 3:
                turn = (Message.user(f"late {self.reads}"), Message.assistant("ok"))
                self.write_turns([TurnRecord(f"conv-00{self.reads}", turn)])
            if self.reads == 2:
                # Its rows are being sent and read right now: the tombstone must still win.
                assert self.delete_conversation("conv-000")
        return rows


async def test_rows_written_and_deleted_during_a_drain_are_neither_lost_nor_dropped(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    seed_store(tmp_path / "busy.db", conversations=4, turns=5)
    store = BusyStore(tmp_path / "busy.db")
    try:
        replicator = Replicator(store, settings_for(redis_server.url, batch_size=6))
        await replicator.push_once()
        await replicator.push_once()  # what arrived after the last read of the first push
        replicator.close()
        assert store.outbox_depth() == 0
        local = {
            m.id: m.content
            for cid in ("conv-000", "conv-001", "conv-002", "conv-003")
            for m in store.get_messages(cid)
        }
    finally:
        store.close()
    sent = redis_messages(redis_server)
    assert {mid: m["content"] for mid, m in sent.items()} == local
    with redis_server.client() as client:
        assert client.hexists("chatcore:{conv:conv-000}:meta", "deleted_hlc")
        assert client.hlen("chatcore:{conv:conv-000}:msgs") == 0
    assert len(local) == 3 * 10 + 3 * 2  # three live conversations, plus three late turns
    assert sum(content.startswith("late") for content in local.values()) == 3


# --- states, backoff, hooks ---------------------------------------------------------------------


class RecordingRandom(random.Random):
    def __init__(self) -> None:
        super().__init__(1)
        self.ceilings: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return super().uniform(a, b)


async def test_reconnects_with_full_jitter_backoff_and_reports_every_state_change(
    tmp_path: Path, redis_factory: Any, patient_clock: trio.testing.MockClock
) -> None:
    server = redis_factory()
    settings = settings_for(server.url, backoff_base_seconds=0.5, backoff_max_seconds=3.0)
    hooks = HookRegistry()
    seen = recorder(hooks)
    rng = RecordingRandom()
    with Store(tmp_path / "s.db", outbox=True) as store:
        replicator = Replicator(store, settings, hooks=hooks, rng=rng)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replicator.run)
            with trio.fail_after(600):
                while len(rng.ceilings) < 6:
                    await trio.sleep(0.5)
            assert replicator.state is ConnectivityState.OFFLINE
            assert "Connection refused" in (replicator.status().last_error or "")
            await trio.to_thread.run_sync(server.start)
            replicator.request_sync()  # "Sync now" also cuts a backoff short
            with trio.fail_after(600):
                while replicator.state is not ConnectivityState.ONLINE:
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        replicator.close()
    # Full jitter: a uniform wait in [0, min(cap, base * 2**attempt)].
    assert rng.ceilings[:6] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    pairs = [(c.previous.value, c.state.value) for c in seen]
    assert pairs[:4] == [
        ("offline", "connecting"),
        ("connecting", "offline"),
        ("offline", "connecting"),
        ("connecting", "offline"),
    ]
    assert pairs[-2:] == [("offline", "connecting"), ("connecting", "online")]
    assert all(c.error for c in seen if c.state is ConnectivityState.OFFLINE)


async def test_a_redis_that_refuses_writes_is_degraded_and_nothing_is_lost(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    seed_store(tmp_path / "d.db", conversations=1, turns=3)
    with redis_server.client() as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")  # every write now fails with OOM; PING still works
        with Store(tmp_path / "d.db", outbox=True) as store:
            replicator = Replicator(store, settings_for(redis_server.url))
            with pytest.raises(
                ReplicationUnavailable,
                match="refused the work: OutOfMemoryError: command not allowed",
            ):
                await replicator.push_once()
            status = replicator.status()
            assert (status.state, status.pending) == ("degraded", 7)
            assert "OutOfMemoryError" in (status.last_error or "")
            admin.config_set("maxmemory", "0")
            assert await replicator.push_once() == 7
            assert replicator.status().state == "online"
            replicator.close()
    assert len(redis_messages(redis_server)) == 6


async def test_without_a_redis_url_nothing_is_queued_and_there_is_no_replicator(
    data_dir: Path,
) -> None:
    async with open_engine(backend="echo") as engine:
        await engine.conversation().send("stays here")
        assert engine.sync_status() is None
        assert engine.sync_now() is False
        assert engine.store.outbox_depth() == 0
        assert "replicator" not in [a.name for a in engine.status().actors]


# --- what leaves the machine --------------------------------------------------------------------


async def pii_redactor_share(store: Store) -> Any:
    """The share hook of a real PII redactor plugin, as the engine would lend it."""
    from chatcore._plugins import PluginManager

    manager = PluginManager(load_config(None, env={}, default_backend="echo"), store=store)
    await manager.load_plugin("pii_redactor")
    return manager


async def test_redacted_pii_is_replicated_redacted(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # As the PII redactor leaves it: the stored user message keeps what the user typed,
    # with {placeholder: original} in its plugin-local metadata; the title is made from
    # that message.
    pii = {"<EMAIL_1>": "bob@example.com", "<NAME_1>": "Bob", "<NAME_2>": "Bob Smith"}
    with Store(tmp_path / "p.db", outbox=True) as store:
        question = Message.user(
            "Bob Smith says mail bob@example.com or Bob",
            metadata={LOCAL_METADATA: {"pii_redactor": pii}, "lang": "en"},
        )
        reply = Message.assistant("Noted, <NAME_1>.")
        store.write_turns([TurnRecord("c", (question, reply))])
        plugins = await pii_redactor_share(store)
        replicator = Replicator(store, settings_for(redis_server.url), share=plugins.share)
        await replicator.push_once()
        replicator.close()
        await plugins.shutdown()
        assert store.get_messages("c")[0].content == question.content  # kept locally
    sent = redis_messages(redis_server)
    assert sent[question.id]["content"] == "<NAME_2> says mail <EMAIL_1> or <NAME_1>"
    assert sent[question.id]["metadata"] == {"lang": "en"}
    assert sent[reply.id]["content"] == "Noted, <NAME_1>."
    with redis_server.client() as client:
        assert client.hget("chatcore:{conv:c}:meta", "title") == (
            "<NAME_2> says mail <EMAIL_1> or <NAME_1>"
        )
        everything = {
            key: client.hgetall(key) if client.type(key) == "hash" else client.smembers(key)
            for key in client.keys("chatcore:{conv:*")
        }
        dump = json.dumps(everything, default=sorted)
        dump += json.dumps(client.xrange("chatcore:changes"))
    assert "<NAME_2>" in dump
    assert "bob@example.com" not in dump and "Smith" not in dump and "Bob" not in dump


async def test_plugin_local_metadata_never_leaves_even_with_no_plugin_to_share(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with Store(tmp_path / "p.db", outbox=True) as store:
        kept = Message.user(
            "hello", metadata={LOCAL_METADATA: {"someplugin": {"secret": "s3"}}, "x": 1}
        )
        store.write_turns([TurnRecord("c", (kept,))])
        replicator = Replicator(store, settings_for(redis_server.url))
        assert await replicator.push_once() == 2
        replicator.close()
        assert store.get_messages("c")[0].local("someplugin") == {"secret": "s3"}
    sent = redis_messages(redis_server)
    assert sent[kept.id]["metadata"] == {"x": 1}
    assert sent[kept.id]["content"] == "hello"


async def test_a_change_without_local_data_is_shared_as_it_is() -> None:
    change = Change(
        kind=ChangeKind.CONVERSATION,
        conversation_id="c",
        hlc="0000000000001.00000.dev",
        device_id="dev",
        data={
            "title": "Bob",
            "created_at": "2026-01-01T00:00:00+00:00",
            "backend": None,
            "model": None,
            "system": None,
            "metadata": {"pii": {"<N>": "Bob"}},
        },
    )
    assert without_local(change) is change
    record = shared_record(change, ())
    assert dict(record.texts) == {"title": "Bob"}
    assert with_shared(change, record) is change
    assert with_shared(change, record.with_texts(title="<N>")).data["title"] == "<N>"


async def test_password_never_reaches_logs_status_or_the_database(
    tmp_path: Path,
    redis_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "pw-Zq81-secret"
    server = redis_factory(password=password)
    server.start()
    monkeypatch.setenv("REDIS_PASSWORD", password)
    path = tmp_path / "chatcore.toml"
    path.write_text(
        'default_backend = "echo"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        "[replication]\n"
        f'redis_url = "redis://:${{REDIS_PASSWORD}}@127.0.0.1:{server.port}/0"\n'
        "backoff_base_seconds = 0.01\nbackoff_max_seconds = 0.05\n"
    )
    caplog.set_level(logging.DEBUG)
    config = load_config(path)
    async with open_engine(config) as engine:
        await engine.conversation().send("hello")
        await wait_until(lambda: engine.sync_status().pending == 0)
        status = engine.sync_status()
        assert status is not None and status.state == "online"
        assert password not in json.dumps(status.as_dict())
    assert len(redis_messages(server)) == 2

    # A wrong password: Redis answers but refuses, and the password is not in the error.
    wrong = settings_for(f"redis://:wrong-{password}@127.0.0.1:{server.port}/0")
    with Store(config.db_path, outbox=True) as store:
        store.write_turns([TurnRecord("x", (Message.user("again"),))])
        replicator = Replicator(store, wrong)
        with pytest.raises(ReplicationUnavailable) as caught:
            await replicator.push_once()
        assert caught.value.state is ConnectivityState.DEGRADED
        assert password not in str(caught.value)
        assert password not in json.dumps(replicator.status().as_dict())
        replicator.close()
    assert password not in caplog.text
    for file in config.db_path.parent.iterdir():
        assert password.encode() not in file.read_bytes(), file


# --- the machine's own Redis --------------------------------------------------------------------


async def test_smoke_against_the_machines_redis(
    tmp_path: Path, machine_redis: tuple[str, str]
) -> None:
    import redis

    url, prefix = machine_redis
    config = engine_config(tmp_path / "data", url, key_prefix=prefix)
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("smoke one")
        await conversation.send("smoke two")
        await wait_until(lambda: engine.sync_status().pending == 0)
    with redis.Redis.from_url(url, decode_responses=True) as client:
        stored = client.hgetall(f"{prefix}:{{conv:{conversation.id}}}:msgs")
        contents = sorted(json.loads(text)["content"] for text in stored.values())
        assert contents == ["echo: smoke one", "echo: smoke two", "smoke one", "smoke two"]
        assert client.xlen(f"{prefix}:changes") >= 5


async def test_pii_notes_of_a_0_1_database_stay_redacted_after_the_upgrade(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # chatcore 0.1 kept the redactor's notes under a top-level "pii" key, in the
    # messages and in the outbox rows still waiting for Redis; the redactor's own
    # migration moves them under its local key, and they go out redacted.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    fixture = SUPPORT_DIR / "old_release_db" / "chatcore-0.1.0.db"
    shutil.copy(fixture, data_dir / "chatcore.db")
    config = load_config(
        default_backend="echo",
        data_dir=str(data_dir),
        plugins=[{"plugin": "pii_redactor"}],
        replication={"redis_url": redis_server.url, **FAST},
    )
    async with open_engine(config) as engine:
        with trio.fail_after(20):
            while engine.store.outbox_depth():
                await trio.sleep(0.05)
        conversations = {s.id for s in await engine.list_conversations()}
        stored = [m for cid in conversations for m in engine.store.get_messages(cid)]
    noted = [m for m in stored if m.local("pii_redactor")]
    assert len(noted) == 2 and all("pii" not in m.metadata for m in stored)
    assert "jane.doe@example.com" in noted[0].content  # kept as typed, locally
    sent = redis_messages(redis_server)
    assert sent[noted[0].id]["content"] == "Mail me at <EMAIL_1> or call <PHONE_1>."
    with redis_server.client() as client:
        dump = json.dumps(
            {
                k: client.hgetall(k)
                for k in client.keys("chatcore:{conv:*")
                if client.type(k) == "hash"
            }
        )
        dump += json.dumps(client.xrange("chatcore:changes"))
    assert "jane.doe" not in dump and "7946" not in dump and '\\"pii\\"' not in dump
