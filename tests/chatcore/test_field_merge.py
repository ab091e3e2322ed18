"""Conversation metadata merges per field: an edit of one field never reverts another.

Each of title, backend, model, system and metadata has its own stamp; a device
replicates only the fields it changed. Stores on separate files, through the
store's replication surface and through a real redis-server.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_server import RedisServer, redis_factory, redis_server

from chatcore import Message, load_config
from chatcore.hlc import format_stamp
from chatcore.messages import SharedRecord
from chatcore.replication import Replicator
from chatcore.store import Change, ChangeKind, Store, StoreError, TurnRecord

__all__ = ["redis_factory", "redis_server"]  # fixtures used here

FIELDS = ("title", "backend", "model", "system", "metadata")
EDITABLE = ("title", "backend", "model", "system")
"""What a user can change on a device (conversation metadata only arrives from elsewhere)."""
CREATED = "2024-03-01T12:00:00.000000+00:00"


def fields_of(store: Store, cid: str) -> dict[str, Any]:
    """The merged fields of a conversation, read with an independent connection."""
    with sqlite3.connect(store.path) as conn:
        row = conn.execute(
            "SELECT title, backend, model, system, metadata FROM conversations WHERE id = ?",
            [cid],
        ).fetchone()
    assert row is not None, f"{store.path} has no conversation {cid!r}"
    values = dict(zip(FIELDS, row, strict=True))
    values["metadata"] = json.loads(values["metadata"])
    return values


def edit(store: Store, cid: str, name: str, value: str) -> None:
    """Change one field the way the engine and the CLI do."""
    if name == "title":
        store.set_title(cid, value)
    else:
        store.write_turns([TurnRecord(cid, (), **{name: value})])


def legacy_change(cid: str, hlc: str, **values: Any) -> Change:
    """A conversation change as chatcore wrote it before per-field merge: every field."""
    data = {
        "title": "legacy title",
        "created_at": CREATED,
        "backend": "legacy-backend",
        "model": "legacy-model",
        "system": "legacy system",
        "metadata": {"from": "legacy"},
        **values,
    }
    return Change(ChangeKind.CONVERSATION, cid, hlc, hlc.rsplit(".", 1)[1], data)


def settings_for(url: str, prefix: str = "chatcore") -> Any:
    return load_config(
        replication={"redis_url": url, "key_prefix": prefix, "backoff_base_seconds": 0.01}
    ).replication


# --------------------------------------------------------------------------- the acceptance case


async def test_a_model_change_on_a_device_that_did_not_pull_keeps_the_rename_everywhere(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = settings_for(redis_server.url)
    stores = [Store(tmp_path / f"{name}.db", outbox=True) for name in "abc"]
    a, b, c = stores
    replicators = [Replicator(s, settings) for s in stores]
    push_a, push_b, push_c = replicators
    try:
        a.write_turns(
            [TurnRecord("chat", (Message.user("plan the trip"),), backend="echo", model="m1")]
        )
        await push_a.push_once()
        await push_b.pull_once()
        await push_c.pull_once()

        b.set_title("chat", "Trip to Lisbon")
        await push_b.push_once()
        # C has not pulled the rename: its stamp is later, but it changed the model only.
        edit(c, "chat", "model", "m2")
        await push_c.push_once()
        for replicator in replicators:
            await replicator.pull_once()

        for store in stores:
            got = fields_of(store, "chat")
            assert (got["title"], got["backend"], got["model"]) == ("Trip to Lisbon", "echo", "m2")
        with redis_server.client() as client:
            meta = client.hgetall("chatcore:{conv:chat}:meta")
        assert (meta["title"], meta["model"], meta["backend"]) == ("Trip to Lisbon", "m2", "echo")
        # What C sent is the model, not the whole record.
        sent = [
            json.loads(f["change"])
            for _, f in redis_server.client().xrange("chatcore:changes")
            if json.loads(f["change"])["device_id"] == c.device_id
        ]
        assert [sorted(s["data"]) for s in sent] == [["created_at", "model"]]
    finally:
        for replicator in replicators:
            replicator.close()
        for store in stores:
            store.close()


# --------------------------------------------------------------------------- local writes


def test_an_edit_queues_only_the_fields_it_changed(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db", outbox=True) as store:
        store.write_turns([TurnRecord("c", (Message.user("hello"),), backend="echo")])
        edit(store, "c", "model", "m2")
        store.write_turns([TurnRecord("c", (), backend="ollama", system="be brief")])
        store.set_title("c", "Renamed")
        changes = [
            e.change for e in store.outbox_pending(100) if e.change.kind is ChangeKind.CONVERSATION
        ]
    assert [sorted(c.data) for c in changes] == [
        ["backend", "created_at", "metadata", "model", "system", "title"],
        ["created_at", "model"],
        # A new backend brings its own model: the old one is reset along with it.
        ["backend", "created_at", "model", "system"],
        ["created_at", "title"],
    ]
    assert changes[2].data["system"] == "be brief"


def test_a_conversation_change_must_carry_a_field() -> None:
    with pytest.raises(StoreError, match=r"data: expected at least one of title, backend"):
        Change(ChangeKind.CONVERSATION, "c", format_stamp(1, 0, "d"), "d", {"created_at": CREATED})
    with pytest.raises(StoreError, match=r"data\.metadata: expected an object"):
        Change(
            ChangeKind.CONVERSATION,
            "c",
            format_stamp(1, 0, "d"),
            "d",
            {"created_at": CREATED, "metadata": "x"},
        )


# --------------------------------------------------------------------------- old records


def test_a_whole_record_change_stamps_every_field_it_carries(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db", outbox=True) as store:
        store.apply_changes([legacy_change("c", format_stamp(1000, 0, "old"))])
        # A newer per-field change of the model, then an old record between the two.
        newer = Change(
            ChangeKind.CONVERSATION,
            "c",
            format_stamp(3000, 0, "new"),
            "new",
            {"created_at": CREATED, "model": "per-field model"},
        )
        between = legacy_change("c", format_stamp(2000, 0, "old"), title="between", model="stale")
        assert store.apply_changes([newer]) == 1
        assert store.apply_changes([between]) == 1
        assert fields_of(store, "c") == {
            "title": "between",
            "backend": "legacy-backend",
            "model": "per-field model",
            "system": "legacy system",
            "metadata": {"from": "legacy"},
        }
        assert store.apply_changes([between, newer]) == 0


async def test_an_old_record_queued_in_an_outbox_and_old_redis_data_merge_per_field(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = settings_for(redis_server.url)
    old_stamp = format_stamp(1000, 0, "old")
    with redis_server.client() as client:
        # A conversation as the whole-record script left it: one stamp, no field stamps.
        client.hset(
            "chatcore:{conv:c}:meta",
            mapping={
                "title": "old title",
                "created_at": CREATED,
                "backend": "old-backend",
                "model": "old-model",
                "system": "",
                "metadata": "{}",
                "hlc": old_stamp,
                "device": "old",
            },
        )
    with Store(tmp_path / "a.db", outbox=True) as a, Store(tmp_path / "b.db", outbox=True) as b:
        push_a, pull_b = Replicator(a, settings), Replicator(b, settings)
        try:
            a.apply_changes([legacy_change("c", old_stamp, title="old title")])
            edit(a, "c", "model", "new-model")
            # A whole-record change still queued from before the upgrade, stamped between.
            queued = legacy_change("c", format_stamp(1500, 0, "old"), title="queued title")
            with sqlite3.connect(a.path) as conn:
                conn.execute(
                    "INSERT INTO outbox (conversation_id, change, created_at) VALUES (?, ?, ?)",
                    ["c", queued.to_json(), CREATED],
                )
            assert await push_a.push_once() == 2
            with redis_server.client() as client:
                meta = client.hgetall("chatcore:{conv:c}:meta")
            assert (meta["title"], meta["model"], meta["backend"]) == (
                "queued title",
                "new-model",
                "legacy-backend",
            )
            assert meta["system:hlc"] == format_stamp(1500, 0, "old")
            await pull_b.pull_once()
            a.apply_changes([queued])
            assert fields_of(b, "c")["title"] == "queued title"
            assert fields_of(b, "c")["model"] == "new-model"
            assert fields_of(a, "c") == fields_of(b, "c")
        finally:
            push_a.close()
            pull_b.close()


# --------------------------------------------------------------------------- the property


@dataclass
class Device:
    """One device in the property test: its store and what it has pushed and pulled."""

    store: Store
    pulled: int = 0
    seen: dict[str, str] = field(default_factory=dict)
    """Per field, the newest stamp of a value this device has held."""


def stamp_of(stamps: dict[tuple[str, str], str], name: str, value: Any) -> str:
    return stamps[(name, json.dumps(value, sort_keys=True))]


def record_stamps(stamps: dict[tuple[str, str], str], changes: list[Change]) -> None:
    for change in changes:
        if change.kind is ChangeKind.CONVERSATION:
            for name in FIELDS:
                if name in change.data:
                    key = (name, json.dumps(change.data[name], sort_keys=True))
                    stamps[key] = max(stamps.get(key, ""), change.hlc)


def record_edit(stamps: dict[tuple[str, str], str], store: Store, name: str) -> None:
    """The stamps of the values a user just gave: those of the change it queued.

    An edit queues only the fields it changed, ``name`` among them; a new backend
    resets the model too (the old model belongs to the old backend), which is an
    edit of the model as well.
    """
    [*_, last] = [
        e.change for e in store.outbox_pending(1000) if e.change.kind is ChangeKind.CONVERSATION
    ]
    assert name in last.data
    record_stamps(stamps, [last])


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(0, 2), st.sampled_from(EDITABLE)),
        st.tuples(st.just("push"), st.integers(0, 2), st.just("")),
        st.tuples(st.just("pull"), st.integers(0, 2), st.just("")),
        st.tuples(st.just("legacy"), st.integers(0, 2), st.just("")),
    ),
    max_size=30,
)


@pytest.fixture(scope="module")
def trio_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("devices")
    return [base / f"{name}.db" for name in "abc"]


def _fresh(path: Path) -> Store:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return Store(path, outbox=True)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_three_devices_converge_and_no_field_goes_back(
    trio_paths: list[Path], ops: list[tuple[str, int, str]]
) -> None:
    """Random interleavings of per-field edits, pushes and pulls on three devices.

    The shared log stands for the Redis stream: a push moves a device's outbox
    into it, a pull applies what others put there since the last pull. A ``legacy``
    step is a device still running a whole-record release (its change carries
    every field under one stamp, from the device's clock).
    """
    devices = [Device(_fresh(path)) for path in trio_paths]
    log: list[Change] = []
    stamps: dict[tuple[str, str], str] = {}
    try:
        first = devices[0].store
        first.write_turns([TurnRecord("c", (Message.user("start"),), backend="b0", model="m0")])
        record_stamps(stamps, [e.change for e in first.outbox_pending(100)])
        log += [e.change for e in first.outbox_pending(100)]
        first.outbox_ack([e.id for e in first.outbox_pending(100)])
        for device in devices[1:]:
            device.store.apply_changes(log)
            device.pulled = len(log)

        def check_no_regression(device: Device) -> None:
            for name, value in fields_of(device.store, "c").items():
                now = stamp_of(stamps, name, value)
                assert now >= device.seen.get(name, ""), (name, value)
                device.seen[name] = now

        for step, (op, index, name) in enumerate(ops):
            device = devices[index]
            store = device.store
            if op == "edit":
                edit(store, "c", name, f"{name}-{step}")
                record_edit(stamps, store, name)
            elif op == "legacy":
                hlc = store._clock.now()  # a whole-record release on this device's clock
                change = legacy_change(
                    "c",
                    hlc,
                    title=f"legacy-{step}",
                    backend=f"lb-{step}",
                    model=f"lm-{step}",
                    system=None,
                    metadata={"step": step},
                )
                store.apply_changes([change])
                record_stamps(stamps, [change])
                log.append(change)
            elif op == "push":
                pending = store.outbox_pending(100)
                log += [e.change for e in pending]
                store.outbox_ack([e.id for e in pending])
            else:
                mine = store.device_id
                store.apply_changes([c for c in log[device.pulled :] if c.device_id != mine])
                device.pulled = len(log)
            check_no_regression(device)

        for device in devices:  # everyone pushes, then everyone pulls
            pending = device.store.outbox_pending(100)
            log += [e.change for e in pending]
            device.store.outbox_ack([e.id for e in pending])
        for device in devices:
            device.store.apply_changes(log[device.pulled :])
            check_no_regression(device)
        views = [fields_of(d.store, "c") for d in devices]
        assert views[0] == views[1] == views[2]
        # And what they agree on is, per field, the value with the newest stamp.
        for name, value in views[0].items():
            newest = max(s for (n, _), s in stamps.items() if n == name)
            assert stamp_of(stamps, name, value) == newest, name
    finally:
        for device in devices:
            device.store.close()


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=_OPS)
async def test_three_devices_converge_through_redis(
    tmp_path: Path, redis_server: RedisServer, ops: list[tuple[str, int, str]]
) -> None:
    """The same interleavings through a real Redis: the apply script merges per field too.

    A ``legacy`` step here is a whole-record change left in the outbox by the
    release before the upgrade.
    """
    prefix = f"p{uuid.uuid4().hex[:10]}"
    settings_ = settings_for(redis_server.url, prefix)
    folder = tmp_path / prefix
    devices = [Device(Store(folder / f"{name}.db", outbox=True)) for name in "abc"]
    replicators = [Replicator(d.store, settings_) for d in devices]
    stamps: dict[tuple[str, str], str] = {}

    async def push(index: int) -> None:
        await replicators[index].push_once()

    def check_no_regression(device: Device) -> None:
        for name, value in fields_of(device.store, "c").items():
            now = stamp_of(stamps, name, value)
            assert now >= device.seen.get(name, ""), (name, value)
            device.seen[name] = now

    try:
        first = devices[0].store
        first.write_turns([TurnRecord("c", (Message.user("start"),), model="m0")])
        record_stamps(stamps, [e.change for e in first.outbox_pending(100)])
        await push(0)
        for replicator in replicators[1:]:
            await replicator.pull_once()
        for step, (op, index, name) in enumerate(ops):
            store = devices[index].store
            if op == "edit":
                edit(store, "c", name, f"{name}-{step}")
                record_edit(stamps, store, name)
            elif op == "legacy":
                change = legacy_change(
                    "c", store._clock.now(), title=f"legacy-{step}", model=f"lm-{step}"
                )
                change = Change(change.kind, "c", change.hlc, store.device_id, change.data)
                store.apply_changes([change])
                with sqlite3.connect(store.path) as conn:
                    conn.execute(
                        "INSERT INTO outbox (conversation_id, change, created_at) VALUES (?, ?, ?)",
                        ["c", change.to_json(), CREATED],
                    )
                record_stamps(stamps, [change])
            elif op == "push":
                await push(index)
            else:
                await replicators[index].pull_once()
            check_no_regression(devices[index])
        for index in range(3):
            await push(index)
        for index, replicator in enumerate(replicators):
            await replicator.pull_once()
            check_no_regression(devices[index])
        views = [fields_of(d.store, "c") for d in devices]
        assert views[0] == views[1] == views[2]
        for name, value in views[0].items():
            newest = max(s for (n, _), s in stamps.items() if n == name)
            assert stamp_of(stamps, name, value) == newest, name
        with redis_server.client() as client:
            meta = client.hgetall(f"{prefix}:{{conv:c}}:meta")
        for name in ("title", "backend", "model", "system"):
            assert meta[name] == (views[0][name] or ""), name
    finally:
        for replicator in replicators:
            replicator.close()
        for device in devices:
            device.store.close()


async def test_plugins_see_a_conversation_change_only_when_it_carries_text(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    seen: list[SharedRecord] = []

    async def share(record: SharedRecord) -> SharedRecord:
        seen.append(record)
        return SharedRecord(record.conversation_id, {"title": "[redacted]"}, record.local)

    with Store(tmp_path / "a.db", outbox=True) as store:
        replicator = Replicator(store, settings_for(redis_server.url), share=share)
        try:
            store.write_turns([TurnRecord("c", (Message.user("secret plan"),), model="m1")])
            await replicator.push_once()
            assert [r.texts for r in seen] == [{"title": "secret plan"}]
            edit(store, "c", "model", "m2")
            await replicator.push_once()
            assert len(seen) == 1  # nothing to redact in a model change
            store.set_title("c", "another secret")
            await replicator.push_once()
            assert [r.texts for r in seen][1:] == [{"title": "another secret"}]
        finally:
            replicator.close()
    with redis_server.client() as client:
        meta = client.hgetall("chatcore:{conv:c}:meta")
    assert (meta["title"], meta["model"]) == ("[redacted]", "m2")
