"""Retries, circuit breaking and fallback between backends, through the public API.

The backends here are scripted in-process (`engine_plugins:ScriptedBackend`) so
each rule is exercised exactly; the HTTP backends' own tests run the same rules
against the loopback fakes of the real APIs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import engine_plugins
import pytest
import trio
import trio.testing

from chatcore import BackendError, MessageStatus, open_engine
from chatcore.errors import BackendAuthError, BackendRateLimited, BackendUnavailable

WriteConfig = Callable[..., Path]


def backend(name: str, **settings: object) -> str:
    lines = [f"[backends.{name}]", 'plugin = "engine_plugins:ScriptedBackend"']
    for key, value in settings.items():
        rendered = f'"{value}"' if isinstance(value, str) else str(value).lower()
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def router(*fallbacks: str) -> str:
    names = ", ".join(f'"{f}"' for f in fallbacks)
    return f"[router]\nfallbacks = [{names}]\n"


@pytest.fixture(autouse=True)
def reset_calls() -> None:
    engine_plugins.CALLS.clear()


async def test_a_transient_failure_is_retried_then_succeeds(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(backend("flaky", fail_times=2, max_retries=2, retry_backoff_seconds=1.0))
    async with open_engine(config, backend="flaky") as engine:
        start = trio.current_time()
        reply = await engine.conversation().send("hi")
        assert reply.content == "flaky: hi"
        assert engine_plugins.CALLS["flaky"] == 3
        # Two jittered delays, each at most 1 s then 2 s.
        assert trio.current_time() - start <= 3.0
        status = engine.plugins.get_plugin_status()["flaky"]
        assert (status.calls, status.failures, status.circuit) == (3, 2, "closed")


async def test_retry_after_from_the_server_sets_the_delay(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        backend("limited", fail_times=1, error="rate_limited", retry_after=7, max_retries=1)
    )
    async with open_engine(config, backend="limited") as engine:
        start = trio.current_time()
        reply = await engine.conversation().send("hi")
        assert reply.content == "limited: hi"
        assert 7.0 <= trio.current_time() - start < 7.5


async def test_spent_retries_fall_back_to_the_next_backend_and_the_reply_says_so(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        backend("down", fail_times=99, max_retries=2) + backend("spare") + router("spare")
    )
    async with open_engine(config, backend="down") as engine:
        conversation = engine.conversation()
        reply = await conversation.send("hi")
        assert reply.content == "spare: hi"
        assert reply.metadata["backend"] == "spare"
        assert reply.metadata["fallback_from"] == ["down"]
        assert engine_plugins.CALLS == {"down": 3, "spare": 1}
        summary = (await engine.list_conversations())[0]
        assert summary.backend == "down"  # a fallback answers one turn; the conversation stays


async def test_an_open_circuit_skips_the_backend_without_calling_it(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        backend("down", fail_times=99, max_retries=0, circuit_failure_threshold=2)
        + backend("spare")
        + router("spare")
    )
    async with open_engine(config, backend="down") as engine:
        conversation = engine.conversation()
        for _ in range(4):
            assert (await conversation.send("hi")).metadata["backend"] == "spare"
        assert engine_plugins.CALLS["down"] == 2  # then its circuit opened
        status = engine.plugins.get_plugin_status()["down"]
        assert (status.circuit, status.failures) == ("open", 2)


async def test_errors_a_person_must_fix_are_neither_retried_nor_rerouted(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        backend("locked", fail_times=99, error="auth", max_retries=3)
        + backend("spare")
        + router("spare")
    )
    async with open_engine(config, backend="locked") as engine:
        conversation = engine.conversation()
        with pytest.raises(BackendAuthError, match="locked failure 1"):
            await conversation.send("hi")
        assert engine_plugins.CALLS == {"locked": 1}
        stored = await conversation.messages()
        assert [(m.role, m.status) for m in stored] == [
            ("user", MessageStatus.COMPLETE),
            ("assistant", MessageStatus.ERROR),
        ]


async def test_nothing_is_retried_once_text_has_streamed(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        backend("cut", fail_times=99, fail_mid_stream=True, max_retries=3)
        + backend("spare")
        + router("spare")
    )
    async with open_engine(config, backend="cut") as engine:
        conversation = engine.conversation()
        with pytest.raises(BackendUnavailable, match="cut failure 1"):
            await conversation.send("hi")
        assert engine_plugins.CALLS == {"cut": 1}
        stored = await conversation.messages()
        assert (stored[1].content, stored[1].status) == ("partial ", MessageStatus.PARTIAL)


async def test_when_every_backend_fails_the_error_names_them(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        backend("one", fail_times=99, error="rate_limited", max_retries=0)
        + backend("two", fail_times=99, error="timeout", max_retries=0)
        + router("two")
    )
    async with open_engine(config, backend="one") as engine:
        with pytest.raises(BackendError) as info:
            await engine.conversation().send("hi")
        assert "two failure 1" in str(info.value)
        assert info.value.__notes__ == ["also failed: one"]
        assert not isinstance(info.value, BackendRateLimited)


async def test_a_conversation_continues_across_backends(
    write_config: WriteConfig,
) -> None:
    config = write_config(backend("a") + backend("b") + '[backends.echo]\nplugin = "echo"\n')
    async with open_engine(config, backend="a") as engine:
        conversation = engine.conversation()
        assert (await conversation.send("first")).content == "a: first"
        assert (await conversation.send("second", backend="b")).content == "b: second"
        assert (await conversation.send("third", backend="echo")).content == "echo: third"
        stored = await conversation.messages()
        assert [m.metadata.get("backend") for m in stored[1::2]] == ["a", "b", "echo"]
