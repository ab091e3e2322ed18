"""Tests for the SQLite store and the group-committing writer actor.

Migrations are tested in ``test_store_migrations.py``.

Every test uses a real database file under ``tmp_path``. Plain and Trio tests mix
here (trio mode runs the async ones on Trio). Writer tests use the real clock:
commits run in a worker thread, and an autojumping clock would fire the
``fail_after`` ceiling while a thread is busy.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import stat
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.errors import AmbiguousConversationId, ConversationNotFound, InvalidInput
from chatcore.messages import Message, MessageStatus, Role
from chatcore.store import (
    CHECKPOINT_EVERY_COMMITS,
    DB_FILENAME,
    DEFAULT_TITLE,
    TITLE_MAX_CHARS,
    ConversationSummary,
    MessageConflict,
    Store,
    StoreWriter,
    TurnRecord,
    make_title,
)
from chatcore.store._readers import MESSAGE_SLOTS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / DB_FILENAME


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as opened:
        yield opened


def turn(conversation_id: str, user: str = "hello", reply: str = "hi", **kw: Any) -> TurnRecord:
    return TurnRecord(conversation_id, (Message.user(user), Message.assistant(reply)), **kw)


def raw(path: Path) -> sqlite3.Connection:
    """An independent connection: what another process would see."""
    return sqlite3.connect(path, isolation_level=None)


# --------------------------------------------------------------------------- file and connections


def test_file_and_directory_permissions(store: Store, db_path: Path) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert store.path == db_path


def test_existing_directory_is_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    with Store(tmp_path / DB_FILENAME):
        pass
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / DB_FILENAME).stat().st_mode) == 0o600


def test_wal_mode_and_connection_pragmas(store: Store, db_path: Path) -> None:
    assert raw(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for conn in (store._writer, store._reader):
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.isolation_level is None
    assert store._reader is not store._writer


def test_close_is_idempotent(db_path: Path) -> None:
    opened = Store(db_path)
    opened.close()
    opened.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        opened.list_conversations()


# --------------------------------------------------------------------------- writing and reading


def test_messages_round_trip_exactly(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    sent = (
        Message.system("be brief", created_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        Message.user(
            "naïve ☃ question\n\twith tabs\x00and a NUL",
            created_at=datetime(2024, 5, 1, 14, 0, 1, 5, tzinfo=plus_two),
            metadata={"lang": "en", "nested": {"list": [1, 2.5, None, True]}},
        ),
        Message.assistant(
            "answer",
            model="llama3",
            tokens_in=12,
            tokens_out=34,
            status=MessageStatus.ERROR,
            metadata={"error": "timeout"},
        ),
        Message(role=Role.TOOL, content='{"result": 1}', status=MessageStatus.PARTIAL),
    )
    store.write_turns([TurnRecord("c1", sent)])
    got = store.get_messages("c1")
    assert got == list(sent)
    for message in got:
        assert message.created_at.utcoffset() == timedelta(0)
        assert type(message.role) is Role
        assert type(message.status) is MessageStatus
    assert got[1].created_at == datetime(2024, 5, 1, 12, 0, 1, 5, tzinfo=UTC)
    assert dict(got[1].metadata) == {"lang": "en", "nested": {"list": [1, 2.5, None, True]}}
    assert (got[2].model, got[2].tokens_in, got[2].tokens_out) == ("llama3", 12, 34)


def test_loaded_messages_have_every_field_of_the_model(store: Store) -> None:
    # Loading sets Message fields directly (fast path): a new field must be loaded too.
    # The conversation id is not a column of the row: it is the one asked for.
    fields = {f.name for f in dataclasses.fields(Message)}
    assert {*MESSAGE_SLOTS, "conversation_id"} == fields
    sent = Message.assistant("x", metadata={"a": 1}, tokens_in=1)
    store.write_turns([TurnRecord("c", (sent,))])
    [got] = store.get_messages("c")
    assert got == sent and hash(got.role) == hash(Role.ASSISTANT)
    assert got.conversation_id == "c"
    assert dataclasses.replace(got, content="y").content == "y"


def test_unknown_conversation_reads_as_empty(store: Store) -> None:
    assert store.get_messages("nope") == []
    assert store.get_conversation("nope") is None
    assert store.latest_conversation_id() is None
    assert store.list_conversations() == []


@pytest.mark.parametrize(
    ("content", "title"),
    [
        ("What is Trio?", "What is Trio?"),
        ("\n  \n   first   real\tline  \nsecond line", "first real line"),
        ("x" * 60, "x" * 60),
        ("y" * 61, "y" * 60 + "…"),
        ("word " * 20, ("word " * 12).rstrip() + "…"),
        ("", DEFAULT_TITLE),
        (" \n\t\n ", DEFAULT_TITLE),
    ],
)
def test_title_from_first_user_message(store: Store, content: str, title: str) -> None:
    assert make_title(content) == title
    store.write_turns([TurnRecord("c", (Message.user(content), Message.user("later")))])
    summary = store.get_conversation("c")
    assert summary is not None
    assert summary.title == title


def test_title_without_user_message_and_kept_on_later_turns(store: Store) -> None:
    store.write_turns([TurnRecord("c", (Message.system("setup"),))])
    store.write_turns([turn("c", user="Now a question")])
    summary = store.get_conversation("c")
    assert summary is not None
    assert summary.title == DEFAULT_TITLE


def test_upsert_keeps_seq_and_completes_partial_message(store: Store) -> None:
    user = Message.user("tell me a story")
    partial = Message.assistant("Once upon", status=MessageStatus.PARTIAL)
    store.write_turns([TurnRecord("c", (user, partial))])
    completed = partial.replace(
        content="Once upon a time.",
        status=MessageStatus.COMPLETE,
        model="m1",
        tokens_in=5,
        tokens_out=4,
        metadata={"finish": "stop"},
    )
    store.write_turns([TurnRecord("c", (completed,)), turn("c", user="another")])
    got = store.get_messages("c")
    assert [m.id for m in got[:2]] == [user.id, partial.id]
    assert got[1] == completed
    assert [m.content for m in got[2:]] == ["another", "hi"]
    seqs = raw(store.path).execute(
        "SELECT seq FROM messages WHERE conversation_id = 'c' ORDER BY seq"
    )
    assert [row[0] for row in seqs] == [1, 2, 3, 4]
    summary = store.get_conversation("c")
    assert summary is not None
    assert summary.message_count == 4


def test_message_id_in_another_conversation_fails_whole_batch(store: Store) -> None:
    first = turn("a")
    store.write_turns([first])
    stolen = first.messages[1].replace(content="moved?")
    with pytest.raises(MessageConflict, match=r"belongs to conversation 'a', not 'b'"):
        store.write_turns([turn("c"), TurnRecord("b", (stolen,))])
    assert store.get_conversation("b") is None
    assert store.get_conversation("c") is None
    assert store.get_messages("a") == list(first.messages)


def test_unserialisable_metadata_writes_nothing(store: Store) -> None:
    bad = Message.user("hi", metadata={"when": object()})
    with pytest.raises(TypeError, match="cannot store a object as JSON"):
        store.write_turns([turn("ok"), TurnRecord("bad", (bad,))])
    assert store.list_conversations() == []


def test_backend_model_and_system_follow_latest_turn(store: Store) -> None:
    store.write_turns([turn("c", backend="ollama", model="llama3", system="be nice")])
    store.write_turns([turn("c", backend="openai", model="gpt-4o")])
    store.write_turns([turn("c")])
    summary = store.get_conversation("c")
    assert summary is not None
    assert (summary.backend, summary.model) == ("openai", "gpt-4o")
    row = raw(store.path).execute("SELECT system FROM conversations WHERE id = 'c'").fetchone()
    assert row == ("be nice",)


def test_list_is_newest_first_with_counts(store: Store) -> None:
    store.write_turns([turn("a")])
    store.write_turns([turn("b"), turn("b")])
    store.write_turns([turn("c")])
    store.write_turns([turn("a")])  # "a" becomes the most recent
    listed = store.list_conversations()
    assert [(c.id, c.message_count) for c in listed] == [("a", 4), ("c", 2), ("b", 4)]
    assert [c.id for c in store.list_conversations(limit=2)] == ["a", "c"]
    assert listed[0].updated_at > listed[1].updated_at > listed[2].updated_at
    assert all(c.created_at <= c.updated_at for c in listed)
    assert store.latest_conversation_id() == "a"


def test_summary_as_dict_is_json(store: Store) -> None:
    store.write_turns([turn("c", user="Title here", backend="echo", model="e1")])
    summary = store.get_conversation("c")
    assert isinstance(summary, ConversationSummary)
    data = json.loads(json.dumps(summary.as_dict()))
    assert data == {
        "id": "c",
        "title": "Title here",
        "created_at": summary.created_at.isoformat(),
        "updated_at": summary.updated_at.isoformat(),
        "message_count": 2,
        "backend": "echo",
        "model": "e1",
        "failed": False,
    }
    assert datetime.fromisoformat(data["updated_at"]) == summary.updated_at


def test_resolve_conversation_id(store: Store) -> None:
    ids = ["0190aaaa-1111", "0190aaab-2222", "0190bbbb-3333", "abc", "ab*[?x-4444", "abXY-5555"]
    store.write_turns([turn(cid) for cid in ids])
    assert store.resolve_conversation_id("0190aaaa-1111") == "0190aaaa-1111"
    assert store.resolve_conversation_id("0190b") == "0190bbbb-3333"
    with pytest.raises(
        AmbiguousConversationId, match=r"matches 0190aaab-2222 \(.*\), 0190aaaa-1111 \("
    ):
        store.resolve_conversation_id("0190aaa")
    with pytest.raises(AmbiguousConversationId):
        store.resolve_conversation_id("0190")
    assert store.resolve_conversation_id("019") is None  # too short to be a prefix
    assert store.resolve_conversation_id("abc") == "abc"  # a whole id may be short
    assert store.resolve_conversation_id("ffff") is None
    assert store.resolve_conversation_id("ab*[?") == "ab*[?x-4444"  # metacharacters are literal
    assert store.resolve_conversation_id("abxy") is None  # case-sensitive


def test_messages_are_listed_by_time_then_id(store: Store) -> None:
    late = Message.user("late", created_at=datetime(2024, 1, 2, tzinfo=UTC))
    early = Message.assistant("early", created_at=datetime(2024, 1, 1, tzinfo=UTC))
    store.write_turns([TurnRecord("c", (late, early))])
    assert [m.content for m in store.get_messages("c")] == ["early", "late"]


def test_search_matches_words_newest_first_and_follows_edits(store: Store) -> None:
    store.write_turns([turn("a", user="Where do penguins live?", reply="In the south.")])
    store.write_turns([turn("b", user="penguin facts", reply="They swim.")])
    hits = store.search("penguins")
    assert [(h.conversation_id, h.role, h.snippet) for h in hits] == [
        ("b", Role.USER, "**penguin** facts"),
        ("a", Role.USER, "Where do **penguins** live?"),
    ]
    assert hits[1].title == "Where do penguins live?"
    assert hits[0].as_dict()["role"] == "user"
    assert [h.conversation_id for h in store.search("penguin", limit=1)] == ["b"]
    reply = store.get_messages("a")[1]
    store.write_turns([TurnRecord("a", (reply.replace(content="Antarctica, mostly."),))])
    assert store.search("south") == []
    assert [h.message_id for h in store.search("antarctica")] == [reply.id]
    store.delete_conversation("a")
    assert [h.conversation_id for h in store.search("penguins")] == ["b"]
    assert store.search("!!! ***") == []
    with pytest.raises(ValueError, match="at least 1"):
        store.search("x", limit=0)


def test_delete_removes_messages_and_keeps_a_tombstone(store: Store) -> None:
    store.write_turns([turn("gone", user="a secret"), turn("kept")])
    assert store.delete_conversation("gone") is True
    assert store.delete_conversation("gone") is False
    assert store.delete_conversation("never-there") is False
    assert store.get_conversation("gone") is None
    count = raw(store.path).execute("SELECT COUNT(*) FROM messages WHERE conversation_id = 'gone'")
    assert count.fetchone() == (0,)
    row = raw(store.path).execute(
        "SELECT title, backend, system, deleted_at IS NOT NULL FROM conversations WHERE id = 'gone'"
    )
    assert row.fetchone() == ("", None, None, 1)  # nothing of what was said is kept
    assert len(store.get_messages("kept")) == 2


def test_set_title(store: Store) -> None:
    store.write_turns([turn("c")])
    before = store.get_conversation("c")
    store.set_title("c", "  My\nnew   title ")
    after = store.get_conversation("c")
    assert after is not None and before is not None
    assert after.title == "My new title"
    assert after.updated_at == before.updated_at
    with pytest.raises(InvalidInput, match="cannot be blank"):
        store.set_title("c", " \n ")
    with pytest.raises(ConversationNotFound, match="no conversation 'missing'"):
        store.set_title("missing", "x")


def test_kv_namespaces_are_isolated(store: Store) -> None:
    store.kv_set("memory", "k", {"a": [1, 2]})
    store.kv_set("rag", "k", "other")
    assert store.kv_get("memory", "k") == {"a": [1, 2]}
    assert store.kv_get("rag", "k") == "other"
    assert store.kv_get("nobody", "k") is None
    store.kv_set("memory", "k", 3)
    assert store.kv_get("memory", "k") == 3
    assert store.kv_delete("memory", "k") is True
    assert store.kv_delete("memory", "k") is False
    assert store.kv_get("memory", "k") is None
    assert store.kv_get("rag", "k") == "other"

    view = store.kv("memory")
    view.set("k", [True, None])
    assert (view.namespace, view.get("k")) == ("memory", [True, None])
    assert store.kv("rag").get("k") == "other"
    assert view.delete("k") is True
    with pytest.raises(ValueError, match="namespace cannot be empty"):
        store.kv("")
    with pytest.raises(TypeError, match="cannot store a set as JSON"):
        store.kv_set("memory", "k", {1, 2})


def test_reader_sees_each_new_commit(store: Store) -> None:
    store.write_turns([turn("c")])
    assert [c.message_count for c in store.list_conversations()] == [2]
    store.write_turns([turn("c")])
    # A reader stuck on an old snapshot would still count two.
    assert [c.message_count for c in store.list_conversations()] == [4]
    assert len(store.get_messages("c")) == 4
    assert raw(store.path).execute("SELECT COUNT(*) FROM messages").fetchone() == (4,)


def test_reader_connection_is_read_only(store: Store) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._reader.execute("DELETE FROM conversations")


# --------------------------------------------------------------------------- properties


@given(st.text())
def test_title_property(text: str) -> None:
    title = make_title(text)
    assert title
    assert not any(ch in title for ch in LINE_BREAKS)
    assert title == title.strip()
    assert len(title) <= TITLE_MAX_CHARS + 1
    if len(title) == TITLE_MAX_CHARS + 1:
        assert title.endswith("…")
    if not text.strip():
        assert title == DEFAULT_TITLE


@given(st.text(alphabet=string.ascii_letters + " \n", max_size=200))
def test_short_first_line_is_kept_verbatim_modulo_spaces(text: str) -> None:
    lines = [" ".join(line.split()) for line in text.splitlines()]
    first = next((line for line in lines if line), None)
    if first is not None and len(first) <= TITLE_MAX_CHARS:
        assert make_title(text) == first


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_search_never_raises_on_what_people_type(shared_store: Store, text: str) -> None:
    hits = shared_store.search(text)
    assert isinstance(hits, list)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with Store(tmp_path_factory.mktemp("shared") / DB_FILENAME) as opened:
        yield opened


@settings(max_examples=50, deadline=None)
@given(
    content=st.text(),
    metadata=st.dictionaries(st.text(), _json_values, max_size=4),
    tokens=st.none() | st.integers(min_value=0, max_value=2**62),
)
def test_arbitrary_messages_round_trip(
    shared_store: Store, content: str, metadata: dict[str, Any], tokens: int | None
) -> None:
    message = Message.assistant(content, metadata=metadata, tokens_out=tokens)
    record = TurnRecord(f"prop-{message.id}", (message,))
    shared_store.write_turns([record])
    assert shared_store.get_messages(record.conversation_id) == [message]


# --------------------------------------------------------------------------- the writer actor
async def test_concurrent_writes_are_group_committed(store: Store) -> None:
    writer = StoreWriter(store)
    calls = 200
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            async with trio.open_nursery() as callers:
                for i in range(calls):
                    callers.start_soon(writer.write, [turn(f"conv-{i % 100}", user=f"q{i}")])
            nursery.cancel_scope.cancel()
    stats = writer.statistics()
    assert stats.batches < calls
    assert stats.largest_batch > 1
    assert (stats.records, stats.queued, stats.failed) == (calls, 0, 0)
    listed = store.list_conversations()
    assert len(listed) == 100
    assert all(c.message_count == 4 for c in listed)


async def test_queued_requests_form_one_batch_up_to_max_batch(store: Store) -> None:
    writer = StoreWriter(store, capacity=16, max_batch=4)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as callers:
                for i in range(10):
                    callers.start_soon(writer.write, [turn(f"c{i}")])
                await trio.testing.wait_all_tasks_blocked()
                assert writer.statistics().queued == 10
                await nursery.start(writer.run)
            nursery.cancel_scope.cancel()
    stats = writer.statistics()
    assert (stats.batches, stats.largest_batch, stats.records, stats.queued) == (3, 4, 10, 0)


async def test_failed_batch_reaches_callers_and_writer_carries_on(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_turns = store.write_turns
    failures = iter([RuntimeError("disk on fire")])

    def flaky(records: Any, *, wait: bool = True) -> bool:
        error = next(failures, None)
        if error is not None:
            raise error
        return real_write_turns(records, wait=wait)

    monkeypatch.setattr(store, "write_turns", flaky)
    writer = StoreWriter(store)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            with pytest.raises(RuntimeError, match="disk on fire"):
                await writer.write([turn("lost")])
            await writer.write([turn("saved")])
            nursery.cancel_scope.cancel()
    assert [c.id for c in store.list_conversations()] == ["saved"]
    assert (writer.statistics().failed, writer.statistics().records) == (1, 1)


async def test_one_bad_request_fails_only_its_caller(store: Store) -> None:
    store.write_turns([turn("owner")])
    stolen = store.get_messages("owner")[0]
    writer = StoreWriter(store)
    errors: list[BaseException] = []

    async def write(record: TurnRecord) -> None:
        try:
            await writer.write([record])
        except MessageConflict as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as callers:
                for i in range(5):
                    callers.start_soon(write, turn(f"good-{i}"))
                callers.start_soon(write, TurnRecord("thief", (stolen,)))
                await trio.testing.wait_all_tasks_blocked()
                await nursery.start(writer.run)  # all six are queued: one batch
            nursery.cancel_scope.cancel()
    assert len(errors) == 1
    assert "belongs to conversation 'owner', not 'thief'" in str(errors[0])
    assert sorted(c.id for c in store.list_conversations()) == [
        "good-0",
        "good-1",
        "good-2",
        "good-3",
        "good-4",
        "owner",
    ]
    stats = writer.statistics()
    assert (stats.batches, stats.records, stats.failed) == (1, 5, 1)


async def test_write_direct_works_without_the_actor(store: Store) -> None:
    writer = StoreWriter(store)
    with trio.fail_after(10):
        await writer.write_direct([turn("direct"), turn("direct")])
        await writer.write_direct([])
    summary = store.get_conversation("direct")
    assert summary is not None
    assert summary.message_count == 4
    assert writer.statistics().records == 2


async def test_write_direct_raises_the_commit_error(store: Store) -> None:
    store.write_turns([turn("owner")])
    stolen = store.get_messages("owner")[0]
    writer = StoreWriter(store)
    with trio.fail_after(10), pytest.raises(MessageConflict, match="not 'x'"):
        await writer.write_direct([TurnRecord("x", (stolen,))])
    assert writer.statistics().failed == 1


async def test_batch_in_flight_is_committed_when_the_actor_is_cancelled(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_turns = store.write_turns
    actor_scope = trio.CancelScope()

    def cancel_then_write(records: Any, *, wait: bool = True) -> bool:
        if not wait:
            return False  # as if the lock were busy: the commit moves to the worker thread
        # Runs in the worker thread: cancel the actor mid-commit.
        trio.from_thread.run_sync(actor_scope.cancel)
        return real_write_turns(records)

    monkeypatch.setattr(store, "write_turns", cancel_then_write)
    writer = StoreWriter(store)

    async def actor() -> None:
        with actor_scope:
            await writer.run()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor)
            await writer.write([turn("in-flight")])
    assert actor_scope.cancelled_caught
    assert store.get_conversation("in-flight") is not None


async def test_batch_taken_off_the_queue_is_committed_despite_cancellation(
    store: Store,
) -> None:
    writer = StoreWriter(store)
    actor_scope = trio.CancelScope()

    async def actor() -> None:
        with actor_scope:
            await writer.run()

    with trio.fail_after(10):
        # Hold the writer's thread slot (as a write_direct would), so the
        # actor has taken the batch but not yet started its thread.
        async with trio.open_nursery() as nursery, writer._limiter:
            nursery.start_soon(writer.write, [turn("taken")])
            nursery.start_soon(actor)
            await trio.testing.wait_all_tasks_blocked()
            assert writer.statistics().queued == 0
            actor_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
    assert actor_scope.cancelled_caught
    assert store.get_conversation("taken") is not None


async def test_inbox_survives_an_actor_restart(store: Store) -> None:
    writer = StoreWriter(store)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as callers:
                callers.start_soon(writer.write, [turn("queued")])
                await trio.testing.wait_all_tasks_blocked()
                with trio.CancelScope() as first_life:
                    first_life.cancel()
                    await writer.run()
                assert writer.statistics().queued == 1
                await nursery.start(writer.run)
            nursery.cancel_scope.cancel()
    assert store.latest_conversation_id() == "queued"


def test_writer_rejects_an_empty_batch_limit(store: Store) -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
        StoreWriter(store, max_batch=0)


async def test_a_locked_database_moves_the_commit_off_the_event_loop(store: Store) -> None:
    # Another process holds the write lock: the non-blocking attempt must give up
    # at once (the event loop never waits on a lock) and the thread path waits.
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    assert store.write_turns([turn("busy")], wait=False) is False
    writer = StoreWriter(store)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            written = trio.Event()

            async def write() -> None:
                await writer.write([turn("busy")])
                written.set()

            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()  # the thread is waiting for the lock
            assert store.get_conversation("busy") is None
            other.execute("COMMIT")
            other.close()
            await written.wait()
            nursery.cancel_scope.cancel()
    assert store.get_conversation("busy") is not None


def test_checkpoints_are_due_after_many_commits_and_empty_the_wal(store: Store) -> None:
    for i in range(CHECKPOINT_EVERY_COMMITS):
        store.write_turns([turn(f"c{i}")])
    assert store.checkpoint_due
    wal = store.path.with_name(store.path.name + "-wal")
    assert wal.stat().st_size > 0
    store.checkpoint()
    assert not store.checkpoint_due
    with sqlite3.connect(store.path) as probe:
        busy, log_frames, checkpointed = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log_frames == checkpointed


def test_the_system_prompt_is_read_with_its_conversation(store: Store) -> None:
    store.write_turns([TurnRecord("c", (Message.user("hi"),), system="Be brief.")])
    store.write_turns([TurnRecord("d", (Message.user("hi"),))])
    assert store.conversation_system("c") == "Be brief."
    assert store.conversation_system("d") is None
    assert store.conversation_system("missing") is None
    store.delete_conversation("c")
    assert store.conversation_system("c") is None
