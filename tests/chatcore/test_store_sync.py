"""Tests for the store's replication surface: outbox, changes, merge, clock, sync state.

Real SQLite files under ``tmp_path``; what replication needs from the store,
exercised the way the replicator uses it (outbox → changes → another store).
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore.errors import ConversationNotFound
from chatcore.hlc import format_stamp, hlc_key
from chatcore.messages import LOCAL_METADATA, Message, MessageStatus
from chatcore.store import (
    DB_FILENAME,
    DEFAULT_TITLE,
    Change,
    ChangeKind,
    MessageConflict,
    OutboxEntry,
    Store,
    StoreError,
    TurnRecord,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def turn(cid: str, user: str = "hello", reply: str = "hi", **kw: Any) -> TurnRecord:
    return TurnRecord(cid, (Message.user(user), Message.assistant(reply)), **kw)


def message_change(
    cid: str,
    mid: str,
    hlc: str,
    *,
    content: str = "text",
    created: datetime = T0,
    status: str = "complete",
    role: str = "assistant",
) -> Change:
    return Change(
        kind=ChangeKind.MESSAGE,
        conversation_id=cid,
        hlc=hlc,
        device_id=hlc_key(hlc)[2],
        data={
            "id": mid,
            "role": role,
            "content": content,
            "status": status,
            "created_at": created.isoformat(),
            "model": None,
            "tokens_in": None,
            "tokens_out": 3,
            "metadata": {"k": [1, "x"]},
        },
    )


def conversation_change(
    cid: str,
    hlc: str,
    *,
    title: str = "T",
    created: datetime = T0,
    model: str | None = None,
    only: tuple[str, ...] | None = None,
) -> Change:
    """A CONVERSATION change; ``only`` keeps just those fields (a per-field edit)."""
    data = {
        "title": title,
        "backend": "echo",
        "model": model,
        "system": None,
        "metadata": {"by": hlc},
    }
    if only is not None:
        data = {name: value for name, value in data.items() if name in only}
    return Change(
        kind=ChangeKind.CONVERSATION,
        conversation_id=cid,
        hlc=hlc,
        device_id=hlc_key(hlc)[2],
        data={"created_at": created.isoformat(), **data},
    )


def tombstone(cid: str, hlc: str, *, when: datetime = T0) -> Change:
    return Change(
        kind=ChangeKind.TOMBSTONE,
        conversation_id=cid,
        hlc=hlc,
        device_id=hlc_key(hlc)[2],
        data={"deleted_at": when.isoformat()},
    )


def stamp(ms: int, device: str = "remote", counter: int = 0) -> str:
    return format_stamp(ms, counter, device)


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Everything replication decides, read with an independent connection.

    ``seq`` and rowids are local bookkeeping (arrival order) and left out.
    """
    with sqlite3.connect(store.path) as conn:
        return {
            "conversations": conn.execute(
                "SELECT id, title, created_at, updated_at, backend, model, system, metadata, "
                "deleted_at, hlc, device_id, field_hlc FROM conversations ORDER BY id"
            ).fetchall(),
            "messages": conn.execute(
                "SELECT id, conversation_id, role, content, status, created_at, model, "
                "tokens_in, tokens_out, metadata, hlc, device_id FROM messages ORDER BY id"
            ).fetchall(),
        }


def outbox_rows(store: Store) -> int:
    with sqlite3.connect(store.path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / DB_FILENAME


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path, outbox=True) as opened:
        yield opened


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "other" / DB_FILENAME, outbox=True) as opened:
        yield opened


# --------------------------------------------------------------------------- device id


def test_device_id_is_generated_once_and_kept(db_path: Path, tmp_path: Path) -> None:
    with Store(db_path) as first:
        device = first.device_id
    assert re.fullmatch(r"[0-9a-f]{32}", device)
    with Store(db_path, outbox=True) as again:
        assert again.device_id == device
        assert again.sync_get("device_id") == device
    with Store(tmp_path / "elsewhere.db") as elsewhere:
        assert elsewhere.device_id != device


def test_sync_state_keys(store: Store) -> None:
    assert store.sync_get("cursor") is None
    store.sync_set("cursor", "1700000000000-0")
    store.sync_set("cursor", "1700000000001-5")
    assert store.sync_get("cursor") == "1700000000001-5"
    for reserved in ("device_id", "hlc"):
        with pytest.raises(ValueError, match=f"{reserved!r} is kept by the store"):
            store.sync_set(reserved, "x")
    with pytest.raises(TypeError, match="values are text, got int"):
        store.sync_set("cursor", 5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- outbox


def test_outbox_off_writes_no_rows(db_path: Path) -> None:
    with Store(db_path) as plain:
        plain.write_turns([turn("c", backend="echo")])
        plain.write_turns([turn("c", backend="ollama")])
        plain.set_title("c", "renamed")
        plain.write_turns([turn("d")])
        assert plain.delete_conversation("d")
        assert plain.outbox_depth() == 0
        assert plain.outbox_pending(10) == []
        assert outbox_rows(plain) == 0


def test_200_turns_queue_400_messages_and_one_conversation(store: Store) -> None:
    for i in range(200):
        store.write_turns([turn("conv", user=f"q{i}", reply=f"a{i}", backend="echo")])
    assert store.outbox_depth() == 401
    pending = store.outbox_pending(1000)
    assert [e.id for e in pending] == sorted(e.id for e in pending)
    kinds = [e.change.kind for e in pending]
    assert kinds[0] is ChangeKind.CONVERSATION
    assert kinds.count(ChangeKind.MESSAGE) == 400
    stored = store.get_messages("conv")
    assert [e.change.data["id"] for e in pending[1:]] == [m.id for m in stored]
    assert len({e.change.change_id for e in pending}) == 401
    hlcs = [e.change.hlc for e in pending]
    assert hlcs == sorted(hlcs) and len(set(hlcs)) == 401
    assert all(e.change.device_id == store.device_id for e in pending)


def test_message_change_carries_the_whole_message(store: Store) -> None:
    user = Message.user("q", created_at=at(1), metadata={"lang": "en"})
    reply = Message.assistant(
        "a", created_at=at(2), model="m1", tokens_in=4, tokens_out=5, status="partial"
    )
    store.write_turns([TurnRecord("c", (user, reply), backend="echo", model="m1", system="sys")])
    conv, first, second = (e.change for e in store.outbox_pending(10))
    assert conv.kind is ChangeKind.CONVERSATION
    assert conv.conversation_id == "c"
    assert dict(conv.data) == {
        "title": "q",
        "created_at": conv.data["created_at"],
        "backend": "echo",
        "model": "m1",
        "system": "sys",
        "metadata": {},
    }
    assert conv.change_id == f"conversation:c:{conv.hlc}"
    assert dict(second.data) == {
        "id": reply.id,
        "role": "assistant",
        "content": "a",
        "status": "partial",
        "created_at": at(2).isoformat(timespec="microseconds"),
        "model": "m1",
        "tokens_in": 4,
        "tokens_out": 5,
        "metadata": {},
    }
    assert second.change_id == f"msg:{reply.id}:{second.hlc}"
    assert first.data["metadata"] == {"lang": "en"}


def test_conversation_change_only_when_metadata_changes(store: Store) -> None:
    store.write_turns([turn("c", backend="echo", model="e")])
    store.write_turns([turn("c", backend="echo")])  # same backend, model kept: no change
    store.write_turns([turn("c")])
    assert store.outbox_depth() == 1 + 6
    store.write_turns([turn("c", model="other")])
    store.set_title("c", "Renamed")
    store.set_title("c", "Renamed")  # no-op: nothing queued
    kinds = [e.change.kind for e in store.outbox_pending(100)]
    assert kinds.count(ChangeKind.CONVERSATION) == 3
    # Each carries only what changed: a device that did not pull can't revert the rest.
    model, last = [
        e.change for e in store.outbox_pending(100) if e.change.kind is ChangeKind.CONVERSATION
    ][1:]
    assert dict(model.data) == {"created_at": model.data["created_at"], "model": "other"}
    assert dict(last.data) == {"created_at": model.data["created_at"], "title": "Renamed"}


def test_ack_deletes_rows_in_one_go(store: Store) -> None:
    for i in range(5):
        store.write_turns([turn(f"c{i}")])
    pending = store.outbox_pending(100)
    assert len(pending) == 15
    assert store.outbox_pending(4) == pending[:4]
    store.outbox_ack([e.id for e in pending[:4]] + [999_999])
    assert store.outbox_pending(100) == pending[4:]
    store.outbox_ack([])
    assert store.outbox_depth() == 11
    with pytest.raises(ValueError, match="at least 1, got 0"):
        store.outbox_pending(0)


def test_outbox_rows_are_the_stored_text_in_id_order(store: Store) -> None:
    for i in range(4):
        store.write_turns([turn(f"c{i}", user='say "hi" \\ ünïcode')])
    pending = store.outbox_pending(100)
    rows = store.outbox_rows(100)
    assert [row_id for row_id, _ in rows] == [e.id for e in pending]
    # The text as stored: what Change.to_json writes, so Redis gets the same bytes.
    assert [text for _, text in rows] == [e.change.to_json() for e in pending]
    assert store.outbox_rows(5) == rows[:5]
    assert store.outbox_rows(5, after=rows[4][0]) == rows[5:10]
    assert store.outbox_rows(100, after=rows[-1][0]) == []
    with pytest.raises(ValueError, match="at least 1, got 0"):
        store.outbox_rows(0)


def test_outbox_ack_range_deletes_exactly_the_batch_read(store: Store) -> None:
    store.write_turns([turn("a"), turn("b")])
    batch = store.outbox_rows(4)
    # Written while the batch is "in flight": new ids are above it, never inside.
    store.write_turns([turn("c")])
    assert store.delete_conversation("b")  # drops b's queued rows, queues a tombstone
    after = store.outbox_rows(100)
    assert store.outbox_ack_range(batch[0][0], batch[-1][0]) == 3  # b's row went already
    left = store.outbox_rows(100)
    assert left == [row for row in after if row[0] > batch[-1][0]]
    kinds = [json.loads(text)["kind"] for _, text in left]
    assert kinds == ["conversation", "message", "message", "tombstone"]
    assert store.outbox_ack_range(batch[0][0], batch[-1][0]) == 0  # again: nothing
    with pytest.raises(ValueError, match="upwards"):
        store.outbox_ack_range(5, 4)


def test_local_metadata_is_read_only_from_messages_that_have_it(store: Store) -> None:
    def local(value: object) -> dict[str, object]:
        return {LOCAL_METADATA: value}

    first = Message.user("Bob here", created_at=at(1), metadata=local({"r": {"<N_1>": "Bob"}}))
    later = Message.user("Ann too", created_at=at(3), metadata=local({"r": {"<N_1>": "Ann"}}))
    nested = Message.user("no local", created_at=at(2), metadata={"x": local({"r": {"<A>": "a"}})})
    store.write_turns([TurnRecord("c", (first, Message.assistant("ok", created_at=at(1.5))))])
    store.write_turns([TurnRecord("c", (later, nested))])
    store.write_turns([TurnRecord("d", (Message.user("y", metadata=local("not a mapping")),))])
    store.write_turns([TurnRecord("e", (Message.user("x", metadata=local({"r": {"<E>": "e"}})),))])
    found = store.local_metadata(["c", "d", "missing"])
    assert found == [
        ("c", {"r": {"<N_1>": "Bob"}}),
        ("c", {"r": {"<N_1>": "Ann"}}),
    ]
    assert store.local_metadata([]) == []


def test_failed_write_queues_nothing(store: Store) -> None:
    store.write_turns([turn("a")])
    stolen = store.get_messages("a")[0]
    before = store.outbox_pending(100)
    with pytest.raises(MessageConflict):
        store.write_turns([turn("b"), TurnRecord("x", (stolen,))])
    assert store.outbox_pending(100) == before


def test_delete_leaves_a_tombstone_and_drops_queued_changes(store: Store) -> None:
    store.write_turns([turn("keep")])
    store.write_turns([turn("gone", user="secret words")])
    assert store.delete_conversation("gone") is True
    assert store.delete_conversation("gone") is False
    changes = [e.change for e in store.outbox_pending(100)]
    assert [(c.kind, c.conversation_id) for c in changes] == [
        (ChangeKind.CONVERSATION, "keep"),
        (ChangeKind.MESSAGE, "keep"),
        (ChangeKind.MESSAGE, "keep"),
        (ChangeKind.TOMBSTONE, "gone"),
    ]
    assert "secret" not in json.dumps([c.to_json() for c in changes])
    assert store.get_conversation("gone") is None
    assert store.get_messages("gone") == []
    assert [c.id for c in store.list_conversations()] == ["keep"]
    assert store.resolve_conversation_id("gone") is None
    with pytest.raises(ConversationNotFound, match="'gone'"):
        store.write_turns([turn("gone")])
    with pytest.raises(ConversationNotFound):
        store.set_title("gone", "back?")


# --------------------------------------------------------------------------- change values


def test_change_json_round_trip(store: Store) -> None:
    store.write_turns([turn("c")])
    for entry in store.outbox_pending(10):
        assert isinstance(entry, OutboxEntry)
        text = entry.change.to_json()
        assert json.loads(text)["kind"] == entry.change.kind.value
        assert Change.from_json(text) == entry.change
        assert Change.from_json(text.encode()) == entry.change
    change = tombstone("c", stamp(5))
    assert Change.from_json(change.to_json()) == change
    assert change.change_id == f"tombstone:c:{stamp(5)}"


def _valid() -> dict[str, Any]:
    return json.loads(message_change("c", "m", stamp(1)).to_json())


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: "nope", r"not JSON"),
        (lambda d: "[1, 2]", r"expected a JSON object"),
        (lambda d: d.pop("hlc") and d, r"missing hlc"),
        (lambda d: d.update(kind="edit") or d, r"kind: expected one of conversation, message"),
        (lambda d: d.update(conversation_id="") or d, r"conversation_id: expected non-empty"),
        (lambda d: d.update(hlc="yesterday") or d, r"hlc: malformed HLC stamp 'yesterday'"),
        (lambda d: d.update(device_id=7) or d, r"device_id: expected non-empty text"),
        (lambda d: d.update(data=[]) or d, r"data: expected an object, got list"),
        (lambda d: d["data"].pop("content") and d, r"data: missing content"),
        (lambda d: d["data"].update(role="robot") or d, r"data\.role: expected a role"),
        (lambda d: d["data"].update(status="done") or d, r"data\.status: expected a status"),
        (lambda d: d["data"].update(created_at="2024-01-01") or d, r"data\.created_at"),
        (lambda d: d["data"].update(created_at=5) or d, r"data\.created_at: expected an ISO"),
        (lambda d: d["data"].update(tokens_in=-1) or d, r"data\.tokens_in: expected a non-neg"),
        (lambda d: d["data"].update(tokens_out=True) or d, r"data\.tokens_out"),
        (lambda d: d["data"].update(metadata="x") or d, r"data\.metadata: expected an object"),
        (lambda d: d["data"].update(id="") or d, r"data\.id: expected text"),
        (lambda d: d["data"].update(content=None) or d, r"data\.content: expected text"),
    ],
)
def test_malformed_changes_raise_store_error(mutate: Any, error: str) -> None:
    value = mutate(_valid())
    text = value if isinstance(value, str) else json.dumps(value)
    with pytest.raises(StoreError, match=error):
        Change.from_json(text)


def test_malformed_conversation_and_tombstone_data() -> None:
    with pytest.raises(StoreError, match=r"conversation change of conversation 'c': data.title"):
        Change(
            ChangeKind.CONVERSATION,
            "c",
            stamp(1),
            "d",
            {**conversation_change("c", stamp(1)).data, "title": None},
        )
    with pytest.raises(StoreError, match=r"data: missing deleted_at"):
        Change(ChangeKind.TOMBSTONE, "c", stamp(1), "d", {})
    with pytest.raises(StoreError, match=r"data.backend: expected text"):
        Change(
            ChangeKind.CONVERSATION,
            "c",
            stamp(1),
            "d",
            {**conversation_change("c", stamp(1)).data, "backend": 3},
        )


def test_corrupt_outbox_row_is_named(store: Store) -> None:
    store.write_turns([turn("c")])
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE outbox SET change = '{' WHERE id = 2")
    with pytest.raises(StoreError, match=r"outbox row 2: malformed change: not JSON"):
        store.outbox_pending(10)


# --------------------------------------------------------------------------- apply


def test_changes_replay_into_another_store(store: Store, other: Store) -> None:
    store.write_turns([turn("c", user="first question", backend="echo")])
    store.write_turns([turn("c", user="second")])
    store.write_turns([turn("d", user="elsewhere")])
    store.set_title("d", "Named")
    changes = [e.change for e in store.outbox_pending(100)]
    assert other.apply_changes(changes) == len(changes)
    assert other.get_messages("c") == store.get_messages("c")
    assert other.get_messages("d") == store.get_messages("d")
    mine, theirs = store.get_conversation("d"), other.get_conversation("d")
    assert mine is not None and theirs is not None
    assert (theirs.title, theirs.message_count, theirs.created_at) == (
        "Named",
        2,
        mine.created_at,
    )
    assert other.outbox_depth() == 0  # applying never queues
    before = dump(other)
    assert other.apply_changes(changes) == 0  # idempotent
    assert dump(other) == before
    assert other.apply_changes([]) == 0


def test_message_is_replaced_only_by_a_newer_stamp(store: Store) -> None:
    partial = message_change("c", "m1", stamp(10), content="Once", status="partial")
    complete = message_change("c", "m1", stamp(20), content="Once upon a time.")
    assert store.apply_changes([complete]) == 1
    assert store.apply_changes([partial]) == 0
    [got] = store.get_messages("c")
    assert (got.content, got.status) == ("Once upon a time.", MessageStatus.COMPLETE)
    tie_winner = message_change("c", "m1", stamp(20, device="zzz"), content="tie")
    assert store.apply_changes([tie_winner]) == 1
    assert store.get_messages("c")[0].content == "tie"


def test_conversation_metadata_is_last_writer_wins(store: Store, other: Store) -> None:
    older = conversation_change("c", stamp(100, "a"), title="old")
    newer = conversation_change("c", stamp(200, "a"), title="new", model="m2")
    tie = conversation_change("c", stamp(200, "b"), title="tie wins by device id")
    store.apply_changes([older, newer, tie])
    other.apply_changes([tie, newer])
    assert other.apply_changes([older]) == 0
    for s in (store, other):
        summary = s.get_conversation("c")
        assert summary is not None
        assert summary.title == "tie wins by device id"
    assert dump(store) == dump(other)


def test_message_before_its_conversation_makes_a_placeholder(store: Store) -> None:
    store.apply_changes([message_change("c", "m2", stamp(2), created=at(30))])
    store.apply_changes([message_change("c", "m1", stamp(1), created=at(20))])
    summary = store.get_conversation("c")
    assert summary is not None
    assert (summary.title, summary.created_at, summary.updated_at) == (
        DEFAULT_TITLE,
        at(20),
        at(30),
    )
    store.apply_changes([conversation_change("c", stamp(0), title="Real", created=at(10))])
    summary = store.get_conversation("c")
    assert summary is not None
    assert (summary.title, summary.created_at, summary.message_count) == ("Real", at(10), 2)


def test_tombstones_are_final(store: Store) -> None:
    store.write_turns([turn("c")])
    local_ids = [m.id for m in store.get_messages("c")]
    assert store.apply_changes([tombstone("c", stamp(1))]) == 1  # older stamp, still wins
    assert store.get_conversation("c") is None
    assert store.get_messages("c") == []
    assert store.outbox_depth() == 0  # local changes of a deleted conversation never leave
    later = [
        message_change("c", "late", stamp(9_999_999_999_999)),
        conversation_change("c", stamp(9_999_999_999_999), title="back from the dead"),
    ]
    assert store.apply_changes(later) == 0
    assert store.get_conversation("c") is None
    with sqlite3.connect(store.path) as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM messages")}
        row = conn.execute("SELECT title, deleted_at FROM conversations WHERE id = 'c'").fetchone()
    assert ids.isdisjoint(local_ids) and "late" not in ids
    assert row == ("", at(0).isoformat(timespec="microseconds"))
    # A second tombstone: the greater stamp is the one kept, on every device.
    assert store.apply_changes([tombstone("c", stamp(0))]) == 0
    assert store.apply_changes([tombstone("c", stamp(5), when=at(9))]) == 1


def test_message_moving_between_conversations_is_ignored(store: Store) -> None:
    store.apply_changes([message_change("a", "m", stamp(1))])
    assert store.apply_changes([message_change("b", "m", stamp(2), content="moved")]) == 0
    assert [m.content for m in store.get_messages("a")] == ["text"]
    assert store.get_conversation("b") is None


def test_apply_advances_the_local_clock(db_path: Path) -> None:
    future = stamp(9_000_000_000_000, "fast-device", counter=7)
    with Store(db_path, outbox=True) as store:
        store.apply_changes([message_change("remote", "r1", future)])
        store.write_turns([turn("local")])
        local = [e.change.hlc for e in store.outbox_pending(10)]
    assert all(hlc_key(h)[:2] > hlc_key(future)[:2] for h in local)
    with Store(db_path, outbox=True) as reopened:  # the clock state survives a restart
        reopened.set_title("local", "later")
        newest = reopened.outbox_pending(10)[-1].change.hlc
    assert hlc_key(newest)[:2] > hlc_key(max(local))[:2]


def test_apply_rejects_non_changes(store: Store) -> None:
    with pytest.raises(TypeError, match="takes Change objects, got dict"):
        store.apply_changes([{"kind": "message"}])  # type: ignore[list-item]


def test_messages_are_ordered_by_time_then_id_on_every_device(store: Store) -> None:
    changes = [
        message_change("c", "b", stamp(1), created=at(5), role="user"),
        message_change("c", "a", stamp(2), created=at(5)),
        message_change("c", "z", stamp(3), created=at(1)),
    ]
    store.apply_changes(changes[::-1])
    assert [m.id for m in store.get_messages("c")] == ["z", "a", "b"]


# --------------------------------------------------------------------------- merge property

_CIDS = ["c1", "c2"]
_MIDS = ["m1", "m2", "m3"]
_DEVICES = ["dev-a", "dev-b"]


@st.composite
def change_sets(draw: st.DrawFn) -> list[Change]:
    """A set of changes as several devices could produce them for two conversations."""
    changes: list[Change] = []
    # One message id belongs to one conversation and has one creation time.
    homes = {mid: draw(st.sampled_from(_CIDS)) for mid in _MIDS}
    born = {mid: at(draw(st.integers(0, 100))) for mid in _MIDS}
    conv_born = {cid: at(draw(st.integers(0, 50))) for cid in _CIDS}
    stamps = st.builds(
        format_stamp, st.integers(1, 40), st.integers(0, 2), st.sampled_from(_DEVICES)
    )
    # A clock never issues one stamp twice: every change has its own.
    for hlc in draw(st.lists(stamps, min_size=1, max_size=12, unique=True)):
        kind = draw(st.sampled_from(["message", "message", "message", "conversation", "tomb"]))
        if kind == "message":
            mid = draw(st.sampled_from(_MIDS))
            changes.append(
                message_change(
                    homes[mid],
                    mid,
                    hlc,
                    content=draw(st.sampled_from(["a", "ab", "abc"])),
                    created=born[mid],
                    status=draw(st.sampled_from(["partial", "complete"])),
                )
            )
        elif kind == "conversation":
            cid = draw(st.sampled_from(_CIDS))
            changes.append(
                conversation_change(
                    cid,
                    hlc,
                    title=draw(st.sampled_from(["x", "y"])),
                    created=conv_born[cid],
                    model=draw(st.sampled_from([None, "m"])),
                    # A whole record (as before per-field merge) or some fields.
                    only=draw(
                        st.none()
                        | st.sets(
                            st.sampled_from(("title", "backend", "model", "system", "metadata")),
                            min_size=1,
                        ).map(tuple)
                    ),
                )
            )
        else:
            cid = draw(st.sampled_from(_CIDS))
            changes.append(tombstone(cid, hlc, when=at(draw(st.integers(0, 200)))))
    return changes


@pytest.fixture(scope="module")
def twin_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("twins")
    return base / "a.db", base / "b.db"


def _fresh(path: Path) -> Store:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return Store(path, outbox=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), changes=change_sets())
def test_merge_order_and_duplicates_do_not_matter(
    twin_paths: tuple[Path, Path], data: st.DataObject, changes: list[Change]
) -> None:
    shuffled = data.draw(st.permutations(changes))
    duplicated = data.draw(st.lists(st.sampled_from(changes), max_size=5))
    split = data.draw(st.integers(0, len(shuffled)))
    with _fresh(twin_paths[0]) as first, _fresh(twin_paths[1]) as second:
        first.apply_changes(changes)
        # In batches, in another order, with some delivered twice.
        second.apply_changes(shuffled[:split])
        second.apply_changes([*duplicated, *shuffled[split:]])
        assert dump(first) == dump(second)
        assert first.apply_changes(changes) == 0
        for cid in _CIDS:
            assert first.get_messages(cid) == second.get_messages(cid)
            assert first.get_conversation(cid) == second.get_conversation(cid)
        assert first.outbox_depth() == second.outbox_depth() == 0
