"""The engine through its public Python API: turns, plugins, failures and persistence."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import engine_plugins
import pytest
import trio
import trio.testing
from helpers import PLUGIN_STATUS_KEYS

import chatcore
from chatcore import (
    BackendError,
    ChatContext,
    ConfigError,
    EngineStopped,
    InvalidInput,
    Message,
    MessageStatus,
    UnknownBackend,
    open_engine,
)

WriteConfig = Callable[..., Path]

BASE = """
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.context]
plugin = "engine_plugins:ContextBackend"
model = "ctx-model"
[backends.failing]
plugin = "engine_plugins:FailingBackend"
[backends.slow]
plugin = "echo"
delay_seconds = 1.0
"""


def plugin_entry(spec: str, **fields: object) -> str:
    lines = ["[[plugins]]", f'plugin = "{spec}"']
    for key, value in fields.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, dict):
            inner = ", ".join(f'{k} = "{v}"' for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def clear_events() -> None:
    engine_plugins.EVENTS.clear()


def stored_rows(data_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(data_dir / "chatcore.db") as db:
        return db.execute(
            "SELECT role, content, status FROM messages ORDER BY conversation_id, seq"
        ).fetchall()


async def test_send_returns_the_echo_reply_and_stores_both_messages(data_dir: Path) -> None:
    async with open_engine(backend="echo") as engine:
        conversation = engine.conversation()
        reply = await conversation.send("hello")
        assert reply.content == "echo: hello"
        assert reply.status is MessageStatus.COMPLETE
        assert reply.model == "echo"
        assert (reply.tokens_in, reply.tokens_out) == (1, 2)
        assert reply.metadata["backend"] == "echo"
        listed = await engine.list_conversations()
        assert [(c.id, c.title, c.message_count) for c in listed] == [(conversation.id, "hello", 2)]
    assert stored_rows(data_dir) == [
        ("user", "hello", "complete"),
        ("assistant", "echo: hello", "complete"),
    ]


async def test_stream_yields_chunks_that_make_up_the_stored_reply(data_dir: Path) -> None:
    async with open_engine() as engine:
        conversation = engine.conversation()
        stream = conversation.stream("one two three")
        chunks = [chunk async for chunk in stream]
        assert len(chunks) > 1
        assert "".join(c.text for c in chunks) == "echo: one two three"
        assert chunks[-1].done
        assert stream.message is not None
        assert stream.message.content == "echo: one two three"
        stored = await conversation.messages()
        assert [m.content for m in stored] == ["one two three", "echo: one two three"]


async def test_history_is_sent_on_later_turns_and_survives_reopening(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE)
    async with open_engine(config, backend="context") as engine:
        conversation = engine.conversation()
        first = await conversation.send("first")
        assert first.content == "system=None model=ctx-model history=user:first"
        assert (first.tokens_in, first.tokens_out, first.model) == (7, 11, "ctx-model")
        conversation_id = conversation.id
    async with open_engine(config, backend="context") as engine:
        again = engine.conversation(conversation_id[:8])
        assert again.id == conversation_id
        second = await again.send("second", system="be kind")
        assert second.content == (
            "system=be kind model=ctx-model history="
            f"user:first|assistant:{first.content}|user:second"
        )


async def test_turns_of_one_conversation_keep_submission_order() -> None:
    async with open_engine() as engine:
        conversation = engine.conversation()
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(conversation.send, f"message {i}")
                # Each start_soon task submits at its first checkpoint; wait so the
                # submission order is the loop order.
                await trio.testing.wait_all_tasks_blocked()
        stored = await conversation.messages()
        assert [m.content for m in stored[::2]] == [f"message {i}" for i in range(20)]
        assert [m.content for m in stored[1::2]] == [f"echo: message {i}" for i in range(20)]


async def test_a_stream_never_iterated_holds_up_nothing() -> None:
    async with open_engine() as engine:
        conversation = engine.conversation()
        abandoned = conversation.stream("never sent")
        with trio.fail_after(5):
            reply = await conversation.send("sent")
        assert reply.content == "echo: sent"
        await abandoned.aclose()
        assert [m.content for m in await conversation.messages()] == ["sent", "echo: sent"]


async def test_breaking_out_of_a_bare_stream_loop_stops_the_reply(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(BASE), backend="slow") as engine:
        conversation = engine.conversation()
        async for _ in conversation.stream(" ".join(["word"] * 200)):
            break  # no aclose(): the dropped stream must still end the turn
        with trio.fail_after(30):
            reply = await conversation.send("next")
        assert reply.content == "echo: next"
        stored = await conversation.messages()
        assert [m.status for m in stored] == ["complete", "partial", "complete", "complete"]


async def test_a_send_cancelled_before_it_was_submitted_holds_nothing_up() -> None:
    async with open_engine() as engine:
        conversation = engine.conversation()
        with trio.CancelScope() as scope:
            scope.cancel()
            await conversation.send("never submitted")
        with trio.fail_after(5):
            reply = await conversation.send("submitted")
        assert reply.content == "echo: submitted"
        assert engine.status().turns_in_flight == 0


async def test_cancelled_sends_are_forgotten_once_they_finish(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(BASE), backend="slow") as engine:
        for i in range(3):
            with trio.move_on_after(1.5):
                await engine.conversation().send(f"give up {i}")
        with trio.fail_after(30):
            while engine.status().turns_in_flight:
                await trio.sleep(0.5)
        assert len(await engine.list_conversations()) == 3


async def test_reloading_a_backend_keeps_it_usable() -> None:
    async with open_engine() as engine:
        conversation = engine.conversation()
        await conversation.send("before")
        status = await engine.plugins.reload("echo")
        assert (status.name, status.type, status.state) == ("echo", "backend", "active")
        assert (await conversation.send("after")).content == "echo: after"


async def test_a_middleware_calling_call_next_twice_fails_only_itself(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:TwiceMiddleware"))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        reply = await conversation.send("once")
        assert reply.content == "echo: once"
        assert len(await conversation.messages()) == 2
        status = engine.plugins.get_plugin_status()
        assert "call_next twice" in (status["twice"].last_error or "")
        assert (status["echo"].calls, status["echo"].failures) == (1, 0)


async def test_a_fail_fast_hook_failing_on_the_error_path_fails_only_its_turn(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:StrictOnComplete", fail_fast=True))
    async with open_engine(config) as engine:
        with trio.fail_after(10):
            with pytest.raises(chatcore.PluginError, match="refuses"):
                await engine.conversation().send("bad")
            assert (await engine.conversation().send("good")).content == "echo: good"
        processors = {a.name: a for a in engine.status().actors}["processors"]
        assert processors.crashes == 0
        assert engine.status().turns_in_flight == 0


async def test_a_cancelled_backend_call_gives_its_circuit_no_verdict(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        BASE.replace(
            "delay_seconds = 1.0",
            "delay_seconds = 1.0\ncircuit_failure_threshold = 1\ncircuit_reset_seconds = 10",
        )
    )
    async with open_engine(config, backend="slow") as engine:
        record = engine.plugins.backend_record("slow")
        record.breaker.record_failure()  # as if the last call had failed
        await trio.sleep(10)
        assert engine.plugins.get_plugin_status()["slow"].circuit == "half_open"
        with trio.move_on_after(1.5):
            await engine.conversation().send("the trial, abandoned")
        with trio.fail_after(30):
            while engine.status().turns_in_flight:
                await trio.sleep(0.5)
        # Cancelled by the caller: the trial proves nothing, so the circuit isn't closed.
        assert engine.plugins.get_plugin_status()["slow"].circuit != "closed"


async def test_many_conversations_run_concurrently(data_dir: Path) -> None:
    async with open_engine() as engine:
        conversations = [engine.conversation() for _ in range(30)]

        async def talk(index: int) -> None:
            for turn in range(3):
                reply = await conversations[index].send(f"c{index} t{turn}")
                assert reply.content == f"echo: c{index} t{turn}"

        async with trio.open_nursery() as nursery:
            for i in range(len(conversations)):
                nursery.start_soon(talk, i)
        assert len(await engine.list_conversations()) == 30
    assert len(stored_rows(data_dir)) == 30 * 3 * 2


async def test_readme_shout_processor_changes_what_the_backend_sees(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + plugin_entry("yourmodule:Shout"))
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("hello")
    assert reply.content == "echo: HELLO"


async def test_processors_middleware_features_and_hooks_run_in_pipeline_order(
    write_config: WriteConfig,
) -> None:
    config = write_config(
        BASE
        + plugin_entry("engine_plugins:Onion")
        + plugin_entry("engine_plugins:Recorder", config={"suffix": "!"})
        + plugin_entry("engine_plugins:AddSystem", config={"system": "enriched"})
        + plugin_entry("engine_plugins:HookPlugin")
    )
    async with open_engine(config, backend="context") as engine:
        reply = await engine.conversation().send("hi")
    assert reply.content == "system=enriched model=switched-model history=user:hi!"
    assert engine_plugins.EVENTS == [
        "hook:on_request_start",
        "onion:in",
        "recorder:before:hi",
        "add_system:enrich",
        "hook:before_model_load",
        "recorder:after:system=enriched model=switched-model history=user:hi",
        "onion:out:system=enriched model=switched-model history=user:hi!",
        "hook:on_request_complete:system=enriched model=switched-model history=user:hi!",
    ]


async def test_what_a_feature_leaves_for_the_reply_is_in_its_metadata_and_stored(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:Cites"))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        reply = await conversation.send("where is the install guide?")
        stored = (await conversation.messages())[-1]
    assert reply.metadata["citations"] == engine_plugins.Cites.CITATIONS
    assert reply.metadata["backend"] == "echo"
    assert stored.metadata["citations"] == engine_plugins.Cites.CITATIONS


async def test_plugins_get_a_host_with_their_own_store_namespace_and_the_backends(
    write_config: WriteConfig, data_dir: Path
) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:Cites"))
    async with open_engine(config) as engine:
        assert engine.plugins.get_plugin_status()["cites"].state == "active"
        plugin = engine.plugins._record("cites").instance
        assert plugin is not None and plugin.host is not None
        host = plugin.host
        host.kv.set("seen", {"n": 1})
        assert engine.store.kv("cites").get("seen") == {"n": 1}
        assert engine.store.kv("other").get("seen") is None
        # Cites declares no "store" permission: its kv namespace is all of the store it gets.
        assert host.database_path is None
        echo = await host.backend("echo")
        assert (await echo.chat(ChatContext("c", (Message.user("hi"),)))).content == "echo: hi"
        done = trio.Event()

        async def job() -> None:
            done.set()

        assert host.spawn(job)
        with trio.fail_after(5):
            await done.wait()


async def test_a_plugin_gets_its_validated_settings(write_config: WriteConfig) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:Tuned", config={"threshold": 7}))
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("hi")
    assert reply.content == "echo: hi x7"


async def test_a_bad_value_in_a_plugins_own_table_names_the_file_and_key(
    write_config: WriteConfig,
) -> None:
    config = write_config(
        BASE
        + plugin_entry("engine_plugins:Cites")
        + plugin_entry("engine_plugins:Tuned", config={"threshold": "lots"})
    )
    with pytest.raises(ConfigError) as info:
        async with open_engine(config):
            pass
    assert str(info.value) == (
        f"{config}: plugins[1].config.threshold: expected a whole number, got 'lots'"
    )


async def test_a_blocking_processor_answers_and_the_backend_is_never_called(
    write_config: WriteConfig, data_dir: Path
) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:Blocker", config={"word": "secret"}))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        reply = await conversation.send("tell me the secret")
        assert reply.content == "I can't help with that."
        assert reply.metadata["answered_by"] == "blocker"
        assert engine.plugins.get_plugin_status()["echo"].calls == 0
        allowed = await conversation.send("tell me a joke")
        assert allowed.content == "echo: tell me a joke"
        assert engine.plugins.get_plugin_status()["echo"].calls == 1
    assert stored_rows(data_dir)[:2] == [
        ("user", "tell me the secret", "complete"),
        ("assistant", "I can't help with that.", "complete"),
    ]


async def test_a_middleware_can_answer_without_the_rest_of_the_pipeline(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:CannedAnswer"))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        stream = conversation.stream("anything")
        assert [c.text async for c in stream] == ["from the cache"]
        assert stream.message is not None
        assert stream.message.metadata["answered_by"] == "canned"
        assert [m.content for m in await conversation.messages()] == [
            "anything",
            "from the cache",
        ]


async def test_a_broken_middleware_is_skipped_and_counted(write_config: WriteConfig) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:BrokenMiddleware"))
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("still works")
        assert reply.content == "echo: still works"
        status = engine.plugins.get_plugin_status()["broken_mw"]
        assert (status.calls, status.failures) == (1, 1)
        assert status.last_error == "ValueError: middleware bug"


async def test_a_plugin_that_always_raises_opens_its_circuit_and_turns_go_on(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        BASE
        + plugin_entry(
            "engine_plugins:AlwaysFails",
            circuit_failure_threshold=3,
            circuit_reset_seconds=30.0,
        )
    )
    async with open_engine(config) as engine:
        conversation = engine.conversation()

        def status() -> chatcore.plugin.PluginStatus:
            return engine.plugins.get_plugin_status()["always_fails"]

        for i in range(5):
            reply = await conversation.send(f"turn {i}")
            assert reply.content == f"echo: turn {i}"
        assert (status().calls, status().failures, status().circuit) == (3, 3, "open")
        assert status().last_error == "RuntimeError: this plugin is broken"
        assert status().as_dict()["circuit"] == "open"

        await trio.sleep(30.0)
        assert status().circuit == "half_open"
        await conversation.send("trial")
        # Exactly one trial call ran; it failed, so the circuit is open again.
        assert (status().calls, status().circuit) == (4, "open")
        await conversation.send("refused")
        assert status().calls == 4


async def test_a_plugin_past_its_timeout_is_cut_off_and_counted(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        BASE + plugin_entry("engine_plugins:Sleeper", timeout_seconds=2.0, config={"seconds": "60"})
    )
    async with open_engine(config) as engine:
        start = trio.current_time()
        reply = await engine.conversation().send("wake up")
        elapsed = trio.current_time() - start
        assert reply.content == "echo: wake up"
        assert 2.0 <= elapsed < 3.0
        status = engine.plugins.get_plugin_status()["sleeper"]
        assert (status.calls, status.timeouts, status.failures) == (1, 1, 1)
        assert "exceeded 2 s" in (status.last_error or "")


async def test_dependency_cycles_and_missing_dependencies_fail_only_those_plugins(
    write_config: WriteConfig,
) -> None:
    # Optional entries, so turns go on without them (tests/chatcore/test_fail_closed.py).
    config = write_config(
        BASE
        + plugin_entry("engine_plugins:CycleA", name="cycle_a", required=False)
        + plugin_entry("engine_plugins:CycleB", name="cycle_b", required=False)
        + plugin_entry("engine_plugins:NeedsGhost", name="needs_ghost", required=False)
        + plugin_entry("yourmodule:Shout")
    )
    async with open_engine(config) as engine:
        status = engine.plugins.get_plugin_status()
        assert status["cycle_a"].state == "error"
        assert status["cycle_b"].state == "error"
        for name in ("cycle_a", "cycle_b"):
            assert "dependency cycle" in (status[name].last_error or "")
            assert "cycle_a" in (status[name].last_error or "")
            assert "cycle_b" in (status[name].last_error or "")
        assert status["needs_ghost"].state == "error"
        assert "'ghost'" in (status["needs_ghost"].last_error or "")
        assert status["shout"].state == "active"
        assert status["echo"].state == "active"
        reply = await engine.conversation().send("loud")
        assert reply.content == "echo: LOUD"


async def test_a_fail_fast_plugin_failing_fails_the_turn_but_keeps_the_message(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:AlwaysFails", fail_fast=True))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        with pytest.raises(
            chatcore.PluginError, match=r"hook 'always_fails' \(before_message\) failed"
        ):
            await conversation.send("strict")
        stored = await conversation.messages()
        assert [(m.role, m.content, m.status) for m in stored] == [
            ("user", "strict", MessageStatus.COMPLETE),
            (
                "assistant",
                "hook 'always_fails' (before_message) failed: RuntimeError: this plugin is broken",
                MessageStatus.ERROR,
            ),
        ]
        assert stored[1].metadata["error"] == stored[1].content
        assert engine.plugins.get_plugin_status()["echo"].calls == 0


async def test_cancelling_a_send_stops_the_reply_and_keeps_it_partial(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(BASE), backend="slow") as engine:
        conversation = engine.conversation()
        with trio.move_on_after(2.5):
            await conversation.send("one two three four five six")
        with trio.fail_after(10):
            while len(stored := await conversation.messages()) < 2:
                await trio.sleep(0.1)
        assert stored[1].status is MessageStatus.PARTIAL
        assert stored[1].content == "echo: one "  # pieces arrive at 1 s, 2 s, 3 s ...


async def test_a_plugin_missing_its_method_is_refused_at_load(write_config: WriteConfig) -> None:
    config = write_config(BASE + plugin_entry("engine_plugins:Incomplete", required=False))
    async with open_engine(config) as engine:
        status = engine.plugins.get_plugin_status()["incomplete"]
        assert (status.state, status.type) == ("error", "processor")
        assert status.last_error == "plugin class Incomplete does not implement process_message"
        assert (await engine.conversation().send("fine")).content == "echo: fine"


async def test_a_backend_failure_raises_and_keeps_the_partial_reply(
    write_config: WriteConfig,
) -> None:
    async with open_engine(write_config(BASE)) as engine:
        conversation = engine.conversation()
        with pytest.raises(BackendError, match=r"backend 'failing' failed: ConnectionError"):
            await conversation.send("hello", backend="failing")
        stored = await conversation.messages()
        assert [(m.role, m.content, m.status) for m in stored] == [
            ("user", "hello", MessageStatus.COMPLETE),
            ("assistant", "half a reply", MessageStatus.PARTIAL),
        ]
        assert "connection reset by peer" in stored[1].metadata["error"]
        status = engine.plugins.get_plugin_status()["failing"]
        assert (status.calls, status.failures) == (1, 1)
        # The conversation goes on with another backend.
        reply = await conversation.send("again", backend="echo")
        assert reply.content == "echo: again"


async def test_cancelling_a_stream_keeps_a_partial_reply(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(BASE), backend="slow") as engine:
        conversation = engine.conversation()
        async with conversation.stream("a long answer please") as stream:
            async for chunk in stream:
                assert chunk.text == "echo: "
                break
        assert stream.message is not None
        assert stream.message.status is MessageStatus.PARTIAL
        assert stream.message.content == "echo: "
        stored = await conversation.messages()
        assert [(m.content, m.status) for m in stored] == [
            ("a long answer please", MessageStatus.COMPLETE),
            ("echo: ", MessageStatus.PARTIAL),
        ]


async def test_closing_the_engine_mid_reply_stores_it_as_partial(
    write_config: WriteConfig, data_dir: Path, patient_clock: trio.testing.MockClock
) -> None:
    got_first_chunk = trio.Event()

    async def talk(engine: chatcore.Engine) -> None:
        with pytest.raises(chatcore.ChatcoreError):
            async for _ in engine.conversation().stream("never finished"):
                got_first_chunk.set()

    # The nursery outlives the engine: leaving the inner block closes the engine
    # while `talk` is still streaming.
    async with (
        trio.open_nursery() as nursery,
        open_engine(write_config(BASE), backend="slow") as engine,
    ):
        nursery.start_soon(talk, engine)
        await got_first_chunk.wait()
    assert stored_rows(data_dir) == [
        ("user", "never finished", "complete"),
        ("assistant", "echo: ", "partial"),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", r"empty prompt"),
        ("   \n\t", r"empty prompt"),
        ("a" * 101, r"prompt too long: 101 characters \(max_message_chars is 100\)"),
        ("nul\x00byte", r"NUL bytes"),
        # What a str holds of bytes that were not UTF-8 (surrogateescape), refused
        # before the store's UTF-8 encoding fails on it.
        ("caf\udce9", r"not valid text: a lone surrogate \(U\+DCE9\) at character 3"),
    ],
)
async def test_bad_prompts_are_refused_and_nothing_is_written(
    text: str, error: str, data_dir: Path
) -> None:
    async with open_engine(max_message_chars=100) as engine:
        conversation = engine.conversation()
        with pytest.raises(InvalidInput, match=error):
            await conversation.send(text)
        with pytest.raises(InvalidInput, match=error):
            conversation.stream(text)
        assert await engine.list_conversations() == []
    assert stored_rows(data_dir) == []


async def test_unknown_backend_is_refused_with_the_configured_names() -> None:
    async with open_engine() as engine:
        with pytest.raises(UnknownBackend, match=r"unknown backend 'nope'.*echo"):
            await engine.conversation().send("hi", backend="nope")
        with pytest.raises(UnknownBackend):
            engine.conversation(backend="nope")


async def test_unknown_conversation_id_is_refused() -> None:
    async with open_engine() as engine:
        with pytest.raises(
            chatcore.ConversationNotFound, match=r"^no conversation '0000dead'$"
        ) as e:
            engine.conversation("0000dead")
    assert e.value.cli_hint is not None and "history list" in e.value.cli_hint  # the CLI's


class CrashOnce:
    """An actor that crashes on its first run and then runs quietly."""

    def __init__(self, name: str, crashes: int) -> None:
        self.name = name
        self.crashes_left = crashes

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.crashes_left:
            self.crashes_left -= 1
            raise RuntimeError(f"{self.name} crashed")
        await trio.sleep_forever()


async def test_a_crashed_actor_is_restarted_and_visible_in_status(
    patient_clock: trio.testing.MockClock,
) -> None:
    async with open_engine() as engine:
        await engine.supervisor.start(CrashOnce("flaky", crashes=1))
        await trio.sleep(5)
        actors = {a.name: a for a in engine.status().actors}
        assert actors["flaky"].restarts == 1
        assert actors["flaky"].last_error == "RuntimeError: flaky crashed"
        assert str(actors["flaky"].state) == "running"
        assert {
            "store",
            "plugin-jobs",
            *(["gateway", "middleware", "processors", "features", "backend", "after"]),
        } <= set(actors)
        assert (await engine.conversation().send("still here")).content == "echo: still here"
        status = engine.status()
        assert (status.store.records, status.store.failed) == (1, 0)
        assert status.as_dict()["actors"][0]["name"] == "plugin-jobs"


async def test_an_actor_crashing_faster_than_the_restart_intensity_stops_the_engine(
    patient_clock: trio.testing.MockClock, data_dir: Path
) -> None:
    with pytest.raises(EngineStopped, match=r"actor 'doomed' crashed 6 times in 10 s") as info:
        async with open_engine() as engine:
            await engine.conversation().send("before the crash")
            await engine.supervisor.start(CrashOnce("doomed", crashes=1000))
            await trio.sleep_forever()
    assert "RuntimeError: doomed crashed" in str(info.value)
    assert not isinstance(info.value, BaseExceptionGroup)
    assert stored_rows(data_dir)[0] == ("user", "before the crash", "complete")


async def test_status_lists_plugins_keyed_by_name_with_the_cli_fields(
    write_config: WriteConfig,
) -> None:
    async with open_engine(write_config(BASE + plugin_entry("yourmodule:Shout"))) as engine:
        status = engine.plugins.get_plugin_status()
        assert list(status) == ["echo", "context", "failing", "slow", "shout"]
        row = status["shout"].as_dict()
        assert set(row) >= PLUGIN_STATUS_KEYS
        assert (row["type"], row["state"], row["circuit"]) == ("processor", "active", "closed")
