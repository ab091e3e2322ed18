"""Process isolation: plugins in child processes, their limits, restarts and network denial."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from chatcore import ChatContext, Chunk, Message, MessageStatus, PluginResult, Usage, open_engine
from chatcore.cli import cli
from chatcore.errors import PluginLoadError
from chatcore.hooks import HookFailure, HookType
from chatcore.isolation._wire import from_wire, to_wire, wire_json
from chatcore.messages import REPLY_METADATA

WriteConfig = Callable[..., Path]

BASE = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
PLUGINS = "isolation_plugins"


def entry(spec: str, **fields: Any) -> str:
    """A ``[[plugins]]`` table running ``spec`` in a child process."""
    lines = ["[[plugins]]", f'plugin = "{PLUGINS}.{spec}"', 'isolation = "process"']
    config = fields.pop("config", None)
    for key, value in fields.items():
        lines.append(f"{key} = {json.dumps(value)}")
    if config:
        lines.append("[plugins.config]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in config.items())
    return "\n".join(lines) + "\n"


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    """Wait until ``condition()`` holds (a restart happens in the background)."""
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.01)


# --- the wire format -------------------------------------------------------------------------


async def test_messages_contexts_chunks_and_results_round_trip_through_json_lines() -> None:
    message = Message.user("héllo\nworld", model="m", tokens_in=3, metadata={"tags": ["a", 1]})
    context = ChatContext(
        conversation_id="c1",
        messages=(Message.system("sys"), message),
        backend="echo",
        model="m",
        temperature=0.5,
        max_tokens=9,
        stream=False,
        system="be brief",
        metadata={REPLY_METADATA: {"citations": [{"document": "d.md"}]}},
    )
    chunk = Chunk(text="par", index=2, done=True, usage=Usage(1, 2), model="m")
    values: list[Any] = [
        message,
        context,
        chunk,
        PluginResult.ok(message, note="x"),
        PluginResult.fail("RuntimeError: no"),
        PluginResult.short_circuit("refused", data=message),
        HookFailure("p", HookType.BEFORE_MESSAGE, "boom", timed_out=True),
        None,
        {"plain": [1, 2.5, True, None]},
    ]
    for value in values:
        line = wire_json({"id": 1, "ok": True, "result": to_wire(value)})
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert from_wire(json.loads(line)["result"]) == value
    decoded = from_wire(json.loads(wire_json(to_wire(message))))
    assert decoded.created_at == message.created_at and decoded.id == message.id


async def test_a_value_json_cannot_carry_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="object cannot cross the process boundary"):
        to_wire(Message.user("hi", metadata={"bad": object()}))


# --- well-behaved plugins in a child -------------------------------------------------------


async def test_a_process_processor_changes_what_the_backend_sees(
    write_config: WriteConfig, data_dir: Path
) -> None:
    config = write_config(BASE + entry("wellbehaved:Shouter", config={"tag_pid": True}))
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("hello")
        status = engine.status().plugins["shouter"]
    assert status.process is not None
    pid = status.process["pid"]
    assert pid != os.getpid()
    assert reply.content == f"echo: HELLO [pid {pid}]"
    # process_reply ran in the child too (AFTER_MESSAGE).
    assert reply.metadata["shouted_by"] == pid
    assert (status.state, status.calls, status.failures) == ("active", 2, 0)
    assert status.process["restarts"] == 0 and status.process["peak_memory_mb"] > 0
    assert not alive(pid)  # closing the engine ended the child


async def test_a_process_processor_can_block_a_turn(write_config: WriteConfig) -> None:
    config = write_config(BASE + entry("wellbehaved:Blocker", config={"word": "secret"}))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        blocked = await conversation.send("tell me the secret")
        passed = await conversation.send("tell me a joke")
    assert blocked.content == "blocked in a child process"
    assert blocked.metadata["answered_by"] == "isolated_blocker"
    assert passed.content == "echo: tell me a joke"


async def test_a_feature_in_a_process_enriches_the_context(write_config: WriteConfig) -> None:
    config = write_config(BASE + entry("wellbehaved:Enricher"))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("one")
        reply = await conversation.send("two")
        pid = engine.status().plugins["enricher"].process["pid"]  # type: ignore[index]
    assert reply.content == "echo: two"
    assert reply.metadata["enriched_by"] == pid != os.getpid()
    assert reply.metadata["history"] == 3  # one, its reply, two


async def test_middleware_in_a_process_passes_turns_on_and_can_answer_itself(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + entry("wellbehaved:Wrapper"))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        passed = await conversation.send("hello")
        answered = await conversation.send("is this cached")
        status = engine.status().plugins["wrapper"]
        messages = await conversation.messages()
    assert passed.content == "echo: hello"
    assert answered.content == "answered by the middleware"
    assert answered.metadata["answered_by"] == "wrapper"
    assert [m.content for m in messages][-1] == "answered by the middleware"
    assert (status.calls, status.failures) == (2, 0)


async def test_chunks_and_extra_hooks_cross_the_boundary(write_config: WriteConfig) -> None:
    config = write_config(BASE + entry("wellbehaved:ChunkAndHook"))
    async with open_engine(config) as engine:
        pieces = [c.text async for c in engine.conversation().stream("see here")]
        reply = await engine.conversation().send("tree")
    assert "".join(pieces) == "3cho: s33 h3r3"
    assert reply.model == "chosen-in-child"


async def test_a_plugin_that_fails_to_start_is_in_error_with_the_childs_reason(
    write_config: WriteConfig,
) -> None:
    # Optional, so turns go on without it (tests/chatcore/test_fail_closed.py).
    config = write_config(
        BASE + entry("misbehaving:FailsToStart", required=False, config={"need": "api_key"})
    )
    async with open_engine(config) as engine:
        status = engine.status().plugins["fails_to_start"]
        reply = await engine.conversation().send("still works")
    assert status.state == "error"
    assert "ValueError: missing setting 'api_key'" in (status.last_error or "")
    assert reply.content == "echo: still works"


# --- the acceptance test: four misbehaving plugins -------------------------------------------

MISBEHAVING = ("raiser", "hanger", "memory_hog", "exiter")


async def test_misbehaving_process_plugins_fail_only_their_own_calls(
    write_config: WriteConfig, data_dir: Path
) -> None:
    limits = {
        "timeout_seconds": 0.2,
        "max_memory_mb": 64,
        "circuit_failure_threshold": 3,
        "circuit_reset_seconds": 3600,
    }
    config = write_config(
        BASE
        + entry("misbehaving:Raiser", **limits)
        + entry("misbehaving:Hanger", **limits)
        + entry("misbehaving:MemoryHog", **limits)
        + entry("misbehaving:Exiter", **limits)
        + entry("wellbehaved:Shouter", timeout_seconds=5)
    )
    async with open_engine(config) as engine:
        first_pids = {
            name: engine.status().plugins[name].process["pid"]  # type: ignore[index]
            for name in MISBEHAVING
        }
        before = rss_mb()
        conversation = engine.conversation()
        replies = [await conversation.send(f"turn {n}") for n in range(100)]
        after = rss_mb()
        # Restarts happen in the background, after a backoff: wait for them.
        await wait_for(
            lambda: all(
                engine.status().plugins[name].process["state"] == "running"  # type: ignore[index]
                for name in MISBEHAVING
            )
        )
        plugins = engine.status().plugins
        stored = await conversation.messages()

    assert [r.content for r in replies] == [f"echo: TURN {n}" for n in range(100)]
    assert all(r.status is MessageStatus.COMPLETE for r in replies)
    assert len(stored) == 200
    assert after - before < 50, f"engine RSS grew from {before:.0f} MB to {after:.0f} MB"

    for name in MISBEHAVING:
        status = plugins[name]
        process = status.process
        assert process is not None
        assert status.circuit == "open", name
        # The circuit opened after 3 failures; every later turn skipped the plugin.
        assert (status.calls, status.failures) == (3, 3), (name, status)
        if name == "raiser":
            # An exception is the plugin's failure, not its process's: no restart.
            assert process["restarts"] == 0 and process["pid"] == first_pids[name]
            assert status.last_error == "RuntimeError: raiser always raises"
        else:
            assert process["restarts"] >= 1, (name, process)
            assert process["pid"] != first_pids[name]
            assert not alive(first_pids[name])
    # The first call timed out and its child was killed; the next ones failed fast
    # while the child was restarting.
    assert plugins["hanger"].timeouts >= 1
    assert "timeout" in plugins["hanger"].process["last_exit"]  # type: ignore[index]
    assert "ran out of memory" in plugins["memory_hog"].process["last_exit"]  # type: ignore[index]
    assert plugins["memory_hog"].process["peak_memory_mb"] <= 64  # type: ignore[index]
    assert "exit code 7" in plugins["exiter"].process["last_exit"]  # type: ignore[index]
    # 100 user messages and 100 replies, all through its child.
    assert (plugins["shouter"].calls, plugins["shouter"].failures) == (200, 0)
    # The engine's own actors never restarted: a plugin's crashes are not theirs.
    assert all(a.restarts == 0 for a in engine.status().actors)


# --- network denial --------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


async def test_a_process_plugin_without_network_permission_cannot_connect(
    write_config: WriteConfig, listener: int
) -> None:
    probe = {"host": "127.0.0.1", "port": listener}
    config = write_config(
        BASE
        + entry("wellbehaved:NetworkProbe", config=probe)
        + entry("wellbehaved:NetworkedProbe", config=probe, priority=60)
    )
    async with open_engine(config) as engine:
        plugins = engine.status().plugins
        denied, allowed = plugins["network_probe"], plugins["networked_probe"]
        assert allowed.process["network"] == "allowed"  # type: ignore[index]
        network = denied.process["network"]  # type: ignore[index]
        # The probes run in priority order; the second sees what the first wrote, so
        # send the same request to each alone by pausing the other.
        await engine.plugins.pause("networked_probe")
        denied_reply = await engine.conversation().send("probe")
        await engine.plugins.resume("networked_probe")
        await engine.plugins.pause("network_probe")
        allowed_reply = await engine.conversation().send("probe")
    assert allowed_reply.content == "echo: connected"
    if network == "denied":
        assert denied_reply.content.startswith("echo: no connection")
    else:
        # Denial could not be applied here; status says why, and the probe connects.
        assert network.startswith("not denied: ")
        assert denied_reply.content == "echo: connected"


async def test_plugins_json_shows_the_process(write_config: WriteConfig) -> None:
    config = write_config(
        BASE + entry("wellbehaved:Shouter") + '[[plugins]]\nplugin = "normalizer"\n'
    )
    result = await trio.to_thread.run_sync(
        lambda: CliRunner().invoke(cli, ["plugins", "--json", "--config", str(config)])
    )
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    process = rows["shouter"]["process"]
    assert set(process) >= {"pid", "restarts", "peak_memory_mb", "network"}
    assert process["restarts"] == 0 and isinstance(process["pid"], int)
    assert rows["normalizer"]["process"] is None
    assert rows["echo"]["process"] is None


async def test_process_isolation_outside_an_engine_is_a_clear_error() -> None:
    from chatcore._plugins import PluginManager
    from chatcore.config import load_config

    config = load_config(None, env={}, default_backend="echo")
    manager = PluginManager(config)
    with pytest.raises(PluginLoadError, match="needs a running engine"):
        await manager.load_plugin(f"{PLUGINS}.wellbehaved:Shouter", isolation="process")


async def test_a_plugin_written_the_new_way_runs_in_a_process(write_config: WriteConfig) -> None:
    config = write_config(BASE + entry("wellbehaved:Whisper"))
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("QUIET Please")
        status = engine.status().plugins["whisper"]
    assert reply.content == "echo: quiet please"
    assert (status.state, status.calls, status.failures) == ("active", 2, 0)
    assert status.process is not None and status.process["state"] == "running"


async def test_a_child_that_keeps_crashing_is_given_up_on_and_the_engine_goes_on(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatcore.isolation import _process

    monkeypatch.setattr(_process, "PROCESS_MAX_RESTARTS", 2)
    limits = {"circuit_failure_threshold": 100, "timeout_seconds": 5}
    config = write_config(
        BASE + entry("misbehaving:Exiter", **limits) + entry("wellbehaved:Shouter")
    )
    async with open_engine(config) as engine:
        conversation = engine.conversation()

        def exiter() -> dict[str, Any]:
            process = engine.status().plugins["exiter"].process
            assert process is not None
            return dict(process)

        for n in range(8):
            reply = await conversation.send(f"turn {n}")
            assert reply.content == f"echo: TURN {n}"
            if exiter()["state"] == "failed":
                break
            await wait_for(lambda: exiter()["state"] in ("running", "failed"))
        process = exiter()
        actors = {a.name: a for a in engine.status().actors}
        after = await conversation.send("still answered")
    # Three crashes: the first and two restarts; a third restart would exceed the intensity.
    assert process["state"] == "failed"
    assert process["restarts"] == 2
    assert "was given up on" in process["last_exit"]
    assert "crashed 3 times in 60 s (max_restarts=2)" in process["last_exit"]
    supervisor = actors["plugin-process:exiter"]
    assert supervisor.state == "failed" and supervisor.restarts == 0
    assert all(a.restarts == 0 for a in actors.values())
    assert after.content == "echo: STILL ANSWERED"
