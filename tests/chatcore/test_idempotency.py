"""A retried send is not a second turn: ``send``/``stream(client_id=...)`` and ``ask --id``.

A caller whose send was cut off after the turn was stored (the process was killed
before ``send`` returned) retries with the same key and gets the stored reply; the
backend is not called again and nothing more is stored.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from test_conversation_settings import CONFIG, SENT

from chatcore import BackendError, InvalidInput, MessageStatus, open_engine
from chatcore.cli import cli

WriteConfig = Callable[..., Path]

FAILING = """
[backends.failing]
plugin = "engine_plugins:FailingBackend"
[backends.down]
plugin = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "m"
api_key = "k"
max_retries = 0
"""


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> None:
    SENT.clear()
    monkeypatch.delenv("CHATCORE_BACKEND", raising=False)


def stored(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "chatcore.db") as db:
        return db.execute("SELECT conversation_id, role FROM messages ORDER BY seq").fetchall()


async def test_a_retry_in_a_new_engine_returns_the_stored_reply_without_a_second_turn(
    write_config: WriteConfig, data_dir: Path
) -> None:
    config = write_config(CONFIG)
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        first = await conversation.send("hello", client_id="req-1")
    async with open_engine(config) as engine:
        again = await engine.conversation(conversation.id).send("hello", client_id="req-1")
    assert (again.id, again.content, again.conversation_id) == (
        first.id,
        first.content,
        conversation.id,
    )
    assert len(SENT) == 1
    assert len(stored(data_dir)) == 2


async def test_a_retried_first_turn_finds_the_conversation_it_started(
    write_config: WriteConfig, data_dir: Path
) -> None:
    # The caller never learnt the new conversation's id: the retry opens a new one.
    config = write_config(CONFIG)
    async with open_engine(config) as engine:
        first = await engine.conversation().send("hello", client_id="req-2")
    async with open_engine(config) as engine:
        retry = engine.conversation()
        again = await retry.send("hello", client_id="req-2")
        assert retry.id == first.conversation_id == again.conversation_id
        await retry.send("and then?")  # goes on in the conversation the key found
        listed = await engine.conversations()
    assert again.id == first.id
    assert [c.id for c in listed] == [first.conversation_id]
    assert len(SENT) == 2
    assert len(stored(data_dir)) == 4


async def test_two_sends_of_one_key_at_once_run_one_turn(
    write_config: WriteConfig, data_dir: Path
) -> None:
    replies = []
    async with open_engine(write_config(CONFIG)) as engine:
        conversation = engine.conversation()

        async def send() -> None:
            replies.append(await conversation.send("hello", client_id="req-3"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(send)
    assert len(SENT) == 1
    assert replies[0].id == replies[1].id
    assert len(stored(data_dir)) == 2


async def test_a_streamed_retry_streams_the_stored_reply(write_config: WriteConfig) -> None:
    async with open_engine(write_config(CONFIG)) as engine:
        conversation = engine.conversation()
        first = await conversation.send("hello", client_id="req-4")
        async with conversation.stream("hello", client_id="req-4") as stream:
            text = "".join([chunk.text async for chunk in stream])
        assert stream.message is not None and stream.message.id == first.id
    assert text == first.content == "ok from main"
    assert len(SENT) == 1


async def test_a_retry_of_a_failed_turn_returns_its_partial_or_raises_its_error(
    write_config: WriteConfig, data_dir: Path
) -> None:
    async with open_engine(write_config(CONFIG + FAILING)) as engine:
        conversation = engine.conversation()
        with pytest.raises(BackendError):
            await conversation.send("hi", backend="failing", client_id="req-5")
        partial = await conversation.send("hi", backend="failing", client_id="req-5")
        assert (partial.status, partial.content) == (MessageStatus.PARTIAL, "half a reply")
        with pytest.raises(BackendError) as first_error:
            await conversation.send("hi", backend="down", client_id="req-6")
        with pytest.raises(BackendError) as retried_error:
            await conversation.send("hi", backend="down", client_id="req-6")
    assert str(retried_error.value) == str(first_error.value)
    assert len(stored(data_dir)) == 4


async def test_a_key_of_another_conversations_turn_is_refused(write_config: WriteConfig) -> None:
    async with open_engine(write_config(CONFIG)) as engine:
        await engine.conversation().send("hello", client_id="req-7")
        other = engine.conversation()
        await other.send("something else")
        with pytest.raises(InvalidInput, match=r"req-7.*another conversation"):
            await other.send("hello", client_id="req-7")
        with pytest.raises(InvalidInput, match="client_id"):
            await other.send("hello", client_id="")
    assert len(SENT) == 2


def test_ask_id_retried_prints_the_same_reply_and_stores_one_turn(
    write_config: WriteConfig, data_dir: Path
) -> None:
    config = str(write_config(CONFIG))
    outputs = []
    for _ in range(2):
        result = CliRunner().invoke(
            cli, ["ask", "--config", config, "--json", "--id", "req-8", "hello"]
        )
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.output))
    assert outputs[0] == outputs[1]
    assert len(SENT) == 1
    assert len(stored(data_dir)) == 2
