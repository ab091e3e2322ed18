"""The ``rate_limit`` middleware through the engine: buckets, refusals, and Trio's clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from chatcore import ConfigError, open_engine

WriteConfig = Callable[..., Path]


def config_text(**settings: float) -> str:
    lines = "\n".join(f"{key} = {value}" for key, value in settings.items())
    return f"""
default_backend = "echo"
[backends.echo]
plugin = "echo"
[[plugins]]
plugin = "rate_limit"
[plugins.config]
{lines}
"""


async def test_over_the_conversation_limit_the_turn_is_refused_without_the_backend(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(config_text(per_conversation_per_minute=6, per_conversation_burst=2))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        assert (await conversation.send("one")).content == "echo: one"
        assert (await conversation.send("two")).content == "echo: two"
        refused = await conversation.send("three")
        assert refused.content == (
            "Rate limit: at most 6 messages per minute in this conversation; try again in 10 s."
        )
        assert refused.metadata["answered_by"] == "rate_limit"
        assert refused.metadata["rate_limited"] == {"scope": "conversation", "retry_after_s": 10}
        assert engine.plugins.get_plugin_status()["echo"].calls == 2
        # Another conversation has its own bucket.
        assert (await engine.conversation().send("elsewhere")).content == "echo: elsewhere"
        # One token comes back every 10 s (virtual time).
        await trio.sleep(10)
        assert (await conversation.send("four")).content == "echo: four"
        assert [m.content for m in await conversation.messages()][4:6] == [
            "three",
            refused.content,
        ]


async def test_the_wait_shrinks_as_the_bucket_refills(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(config_text(per_conversation_per_minute=2, per_conversation_burst=1))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("one")
        await trio.sleep(12)
        refused = await conversation.send("two")
        assert refused.content.endswith("try again in 18 s.")


async def test_the_global_limit_covers_all_conversations(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        config_text(per_conversation_per_minute=0, global_per_minute=30, global_burst=2)
    )
    async with open_engine(config) as engine:
        assert (await engine.conversation().send("a")).content == "echo: a"
        assert (await engine.conversation().send("b")).content == "echo: b"
        refused = await engine.conversation().send("c")
        assert refused.content == (
            "Rate limit: at most 30 messages per minute in total; try again in 2 s."
        )
        assert refused.metadata["rate_limited"]["scope"] == "global"
        await trio.sleep(2)
        assert (await engine.conversation().send("d")).content == "echo: d"


async def test_a_refused_turn_takes_no_token_from_the_other_bucket(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(
        config_text(
            per_conversation_per_minute=1,
            per_conversation_burst=1,
            global_per_minute=1,
            global_burst=2,
        )
    )
    async with open_engine(config) as engine:
        first = engine.conversation()
        assert (await first.send("a")).content == "echo: a"
        assert "in this conversation" in (await first.send("b")).content
        # The refusal above left the global token for this one.
        assert (await engine.conversation().send("c")).content == "echo: c"
        assert "in total" in (await engine.conversation().send("d")).content


async def test_a_streamed_refusal_arrives_as_one_chunk(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    config = write_config(config_text(per_conversation_per_minute=1, per_conversation_burst=1))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("first")
        stream = conversation.stream("second")
        chunks = [chunk.text async for chunk in stream]
        assert chunks == [
            "Rate limit: at most 1 messages per minute in this conversation; try again in 60 s."
        ]


async def test_a_bad_setting_names_the_key(write_config: WriteConfig) -> None:
    config = write_config(config_text(per_conversation_burst=0))
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config\.per_conversation_burst"):
        async with open_engine(config):
            pass
