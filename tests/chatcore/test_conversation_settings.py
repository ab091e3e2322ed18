"""A conversation's system prompt, backend and model belong to the conversation.

They are stored with it, sent on every later turn (in the same engine, a new one,
or `chatcore ask -c`), replaced when a turn names others, shown by `history show`,
and the memory plugin's trimming never drops the system prompt.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import chatcore
from chatcore import ChatContext, Chunk, open_engine
from chatcore.cli import cli
from chatcore.plugin import BaseBackendProvider, PluginMetadata, PluginType

WriteConfig = Callable[..., Path]

SENT: list[ChatContext] = []
"""Every chat request the recording backends received, in order (summaries left out)."""


class Recorder(BaseBackendProvider):
    """Records what it was sent and answers with a short fixed reply."""

    metadata = PluginMetadata(name="recorder", plugin_type=PluginType.BACKEND_PROVIDER)

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        if context.metadata.get("purpose") is None:
            SENT.append(context)
        yield Chunk(text=f"ok from {self.name}", index=0, done=True, model=context.model)


CONFIG = """
default_backend = "main"
[backends.main]
plugin = "test_conversation_settings:Recorder"
model = "main-model"
[backends.other]
plugin = "test_conversation_settings:Recorder"
model = "other-model"
"""

MEMORY = """
[[plugins]]
plugin = "memory"
[plugins.config]
max_context_tokens = 2000
reserve_reply_tokens = 200
summarize = false
long_term = false
"""


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> None:
    SENT.clear()
    monkeypatch.delenv("CHATCORE_BACKEND", raising=False)  # the config's default backend


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def test_the_system_prompt_of_a_turn_is_sent_on_every_later_turn(
    write_config: WriteConfig,
) -> None:
    async with open_engine(write_config(CONFIG)) as engine:
        conversation = engine.conversation()
        await conversation.send("hello", system="You are terse.")
        await conversation.send("and again")
        await conversation.send("a third time")
    assert [c.system for c in SENT] == ["You are terse."] * 3


async def test_a_reopened_conversation_keeps_its_system_prompt_backend_and_model(
    write_config: WriteConfig,
) -> None:
    config = write_config(CONFIG)
    async with open_engine(config) as engine:
        first = engine.conversation()
        await first.send("hello", backend="other", model="picked", system="Be brief.")
    async with open_engine(config) as engine:
        await engine.conversation(first.id).send("more")
        # The id of another conversation's last turn is what `ask -c` opens.
        latest = engine.latest_conversation()
        assert latest is not None and latest.id == first.id
        await latest.send("and more")
    assert [(c.backend, c.model, c.system) for c in SENT] == [("other", "picked", "Be brief.")] * 3


async def test_a_later_system_prompt_replaces_the_first_and_an_empty_one_removes_it(
    write_config: WriteConfig,
) -> None:
    config = write_config(CONFIG)
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("one", system="First.")
        await conversation.send("two", system="Second.")
        await conversation.send("three")
    async with open_engine(config) as engine:
        reopened = engine.conversation(conversation.id)
        await reopened.send("four")
        await reopened.send("five", system="")
        await reopened.send("six")
    assert [c.system for c in SENT] == ["First.", "Second.", "Second.", "Second.", None, None]


async def test_naming_another_backend_moves_the_conversation_without_its_old_model(
    write_config: WriteConfig,
) -> None:
    config = write_config(CONFIG)
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("one", model="special")
        await conversation.send("two")
        await conversation.send("three", backend="other")
        await conversation.send("four")
    async with open_engine(config) as engine:
        await engine.conversation(conversation.id).send("five")
    assert [(c.backend, c.model) for c in SENT] == [
        ("main", "special"),
        ("main", "special"),
        ("other", "other-model"),
        ("other", "other-model"),
        ("other", "other-model"),
    ]


async def test_the_sixtieth_turn_under_memory_still_sends_the_system_prompt(
    write_config: WriteConfig,
) -> None:
    config = write_config(CONFIG + MEMORY)
    words = " ".join(f"word{i}" for i in range(120))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        reply = await conversation.send(f"turn 1: {words}", system="You are terse.")
    # Every later turn in an engine of its own, as `chatcore ask -c` runs them.
    for turn in range(2, 61):
        async with open_engine(config) as engine:
            reply = await engine.conversation(conversation.id).send(f"turn {turn}: {words}")
    assert len(SENT) == 60
    assert reply.metadata["memory"]["dropped"] > 0  # trimming did drop earlier turns
    assert SENT[-1].system == "You are terse."
    assert all(c.system == "You are terse." for c in SENT)


def test_ask_system_holds_for_ask_continue_and_history_show_shows_it(
    write_config: WriteConfig,
) -> None:
    config = str(write_config(CONFIG))
    started = json.loads(
        invoke("ask", "--config", config, "--json", "--system", "You are terse.", "hi")
    )
    invoke("ask", "--config", config, "-c", "again")
    invoke("ask", "--config", config, "--conversation", started["conversation_id"], "more")
    assert [c.system for c in SENT] == ["You are terse."] * 3
    shown = invoke("history", "show", "--config", config, started["conversation_id"])
    assert "system: You are terse." in shown
    as_json = json.loads(
        invoke("history", "show", "--config", config, "--json", started["conversation_id"])
    )
    assert (as_json["system"], as_json["backend"], as_json["model"]) == (
        "You are terse.",
        "main",
        "main-model",
    )
    invoke("ask", "--config", config, "-c", "--system", "You are chatty.", "now")
    invoke("ask", "--config", config, "-c", "last")
    assert [c.system for c in SENT[-2:]] == ["You are chatty."] * 2


async def test_configure_changes_later_turns_without_sending_one(
    write_config: WriteConfig,
) -> None:
    config = write_config(CONFIG)
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("hello")
        await conversation.configure(system="Be terse.", backend="other", model="picked")
        assert len(await conversation.messages()) == 2  # no turn was sent
        await conversation.send("more")
        fresh = engine.conversation()
        await fresh.configure(system="Fresh start.")  # nothing stored yet: the first turn keeps it
        assert await engine.conversations() != [] and len(await engine.conversations()) == 1
        await fresh.send("first")
        with pytest.raises(chatcore.UnknownBackend):
            await conversation.configure(backend="nope")
    async with open_engine(config) as engine:
        await engine.conversation(conversation.id).send("after a restart")
    assert [(c.backend, c.model, c.system) for c in SENT] == [
        ("main", "main-model", None),
        ("other", "picked", "Be terse."),
        ("main", "main-model", "Fresh start."),
        ("other", "picked", "Be terse."),
    ]
