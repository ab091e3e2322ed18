"""The pipeline's own rules: ordering, short-circuits, cancellation, and who ends a turn."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pipeline_plugins
import pytest
import trio
import trio.testing

from chatcore import MessageStatus, open_engine
from chatcore.errors import HookFailed

WriteConfig = Callable[..., Path]
LOG = pipeline_plugins.LOG


def config_text(*plugins: str, step_seconds: float = 1.0, **extra: str) -> str:
    text = (
        'default_backend = "steps"\n'
        f'[backends.steps]\nplugin = "pipeline_plugins:Steps"\nstep_seconds = {step_seconds}\n'
    )
    for spec in plugins:
        text += f'[[plugins]]\nplugin = "pipeline_plugins:{spec}"\n'
        if spec in extra:
            text += extra[spec]
    return text


@pytest.fixture(autouse=True)
def clear_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATCORE_BACKEND", "steps")
    LOG.clear()


async def test_turns_of_one_conversation_run_in_order_and_conversations_overlap(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(config_text())) as engine:
        first, second = engine.conversation(), engine.conversation()
        replies: dict[str, str] = {}

        async def send(conversation: object, text: str) -> None:
            replies[text] = (await conversation.send(text)).content  # type: ignore[attr-defined]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, first, "a1 x")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send, first, "a2 x")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send, second, "b1 x")
    assert replies == {"a1 x": "a1 x ", "a2 x": "a2 x ", "b1 x": "b1 x "}
    # a2 waits for a1 to finish; b1, another conversation, runs alongside a1.
    assert LOG.index("backend:end:a1 x") < LOG.index("backend:start:a2 x")
    assert LOG.index("backend:start:b1 x") < LOG.index("backend:end:a1 x")


async def test_without_middleware_the_stage_that_stores_the_reply_completes_it(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(config_text("Completion"))) as engine:
        reply = await engine.conversation().send("hi there")
    assert reply.content == "hi there "
    assert LOG == ["backend:start:hi there", "backend:end:hi there", "complete:complete:hi there"]


async def test_with_middleware_the_turn_completes_once_after_the_onion_returns(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(config_text("Wrap", "Completion"))) as engine:
        conversation = engine.conversation()
        reply = await conversation.send("hi there")
        stored = await conversation.messages()
    assert reply.content == "hi there "
    assert [m.content for m in stored] == ["hi there", "hi there "]
    assert LOG == [
        "wrap:in:hi there",
        "backend:start:hi there",
        "backend:end:hi there",
        "wrap:out:hi there ",
        "complete:complete:hi there",
    ]


async def test_a_short_circuit_skips_features_and_backend_and_completes_once(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(config_text("Wrap", "Refuse", "Mark", "Completion"))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        refused = await conversation.send("tell me the secret")
        answered = await conversation.send("tell me a joke")
        stored = await conversation.messages()
    assert (refused.content, refused.metadata["answered_by"]) == ("I won't say.", "refuse")
    assert answered.content == "tell me a joke "
    assert [m.content for m in stored] == [
        "tell me the secret",
        "I won't say.",
        "tell me a joke",
        "tell me a joke ",
    ]
    refused_part = LOG[: LOG.index("wrap:in:tell me a joke")]
    assert refused_part == [
        "wrap:in:tell me the secret",
        "wrap:out:I won't say.",
        "complete:complete:I won't say.",
    ]
    assert "feature:tell me a joke" in LOG


async def test_a_stage_failure_while_middleware_waits_ends_the_turn_once(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        config_text("Wrap", "Explode", "Completion", Explode="fail_fast = true\n")
    )
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        with pytest.raises(HookFailed, match="boom"):
            await conversation.send("explode now")
        after = await conversation.send("calm now")
        stored = await conversation.messages()
    # What the user said is kept, with an error reply; the next turn goes on.
    assert [(m.content, m.status) for m in stored] == [
        ("explode now", MessageStatus.COMPLETE),
        ("hook 'explode' (before_message) failed: RuntimeError: boom", MessageStatus.ERROR),
        ("calm now", MessageStatus.COMPLETE),
        ("calm now ", MessageStatus.COMPLETE),
    ]
    assert after.content == "calm now "
    failed_part = LOG[: LOG.index("wrap:in:calm now")]
    boom = "hook 'explode' (before_message) failed: RuntimeError: boom"
    assert [e for e in failed_part if e.startswith("complete:error:")] == [f"complete:error:{boom}"]
    assert "backend:start:explode now" not in LOG
    # The middleware got the turn back and returned before it completed.
    assert failed_part.index(f"wrap:out:{boom}") < failed_part.index(f"complete:error:{boom}")


async def test_a_second_call_next_is_refused_and_the_turn_ends_once(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(config_text("Twice", "Completion"))) as engine:
        reply = await engine.conversation().send("once only")
    assert reply.content == "once only "
    assert LOG.count("backend:start:once only") == 1
    assert "twice:a middleware called call_next twice; a turn goes down the pipeline once" in LOG
    assert LOG.count("complete:complete:once only") == 1


async def test_cancelling_a_stream_keeps_it_partial_and_the_conversation_goes_on(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(config_text("Wrap", "Completion"))) as engine:
        conversation = engine.conversation()
        received: list[str] = []
        async with conversation.stream("one two three four five") as stream:
            async for chunk in stream:
                received.append(chunk.text)
                if len(received) == 2:
                    break
        assert stream.message is not None
        assert stream.message.status is MessageStatus.PARTIAL
        after = await conversation.send("next")
        stored = await conversation.messages()
    assert received == ["one ", "two "]
    assert [(m.content, m.status) for m in stored][1] == ("one two ", MessageStatus.PARTIAL)
    assert after.content == "next "
    # The cancelled turn still went back through the middleware and completed once.
    assert LOG.count("complete:partial:one two") == 1
    assert LOG.index("wrap:out:one two ") < LOG.index("complete:partial:one two")
