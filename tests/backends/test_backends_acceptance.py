"""The backends issue's acceptance, end to end: the official clients against the
loopback fakes of the three APIs, through the engine and the CLI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from fakes.anthropic import DEFAULT_API_KEY as ANTHROPIC_KEY
from fakes.anthropic import FakeAnthropic
from fakes.ollama import FakeOllama
from fakes.openai import FakeOpenAI

from chatcore import MessageStatus, open_engine
from chatcore.errors import BackendAuthError, BackendTimeout

if TYPE_CHECKING:
    from collections.abc import Iterator

OPENAI_KEY = "sk-test-openai"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(reply_chunks=["Hi", " from", " Ollama"]) as server:
        yield server


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply_chunks=("Hi", " from", " OpenAI"), expected_api_key=OPENAI_KEY) as server:
        yield server


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(reply_chunks=["Hi", " from", " Claude"]) as server:
        yield server


@pytest.fixture
def config(
    tmp_path: Path,
    ollama: FakeOllama,
    openai: FakeOpenAI,
    anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    monkeypatch.delenv("CHATCORE_BACKEND")
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    path = tmp_path / "backends.toml"
    path.write_text(
        f"""
default_backend = "ollama"
[backends.ollama]
plugin = "ollama"
host = "{ollama.url}"
model = "llama3.2"
[backends.openai]
plugin = "openai"
base_url = "{openai.url}/v1"
model = "gpt-4o-mini"
max_retries = 2
retry_backoff_seconds = 0.05
[backends.anthropic]
plugin = "anthropic"
base_url = "{anthropic.url}"
model = "claude-sonnet-5-5"
[router]
fallbacks = ["anthropic"]
"""
    )
    return path


async def test_one_conversation_continues_across_three_backends_in_each_format(
    config: Path, ollama: FakeOllama, openai: FakeOpenAI, anthropic: FakeAnthropic
) -> None:
    async with open_engine(config) as engine:
        conversation = engine.conversation(system="be brief")
        first = await conversation.send("one", backend="ollama")
        second = await conversation.send("two", backend="openai")
        third = await conversation.send("three", backend="anthropic")
    assert [first.content, second.content, third.content] == [
        "Hi from Ollama",
        "Hi from OpenAI",
        "Hi from Claude",
    ]
    assert [m.metadata["backend"] for m in (first, second, third)] == [
        "ollama",
        "openai",
        "anthropic",
    ]

    sent_to_ollama = ollama.requests_to("/api/chat")[-1].json
    assert sent_to_ollama["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
    ]
    sent_to_openai = openai.requests_to("/v1/chat/completions")[-1].json
    assert [(m["role"], m["content"]) for m in sent_to_openai["messages"]] == [
        ("system", "be brief"),
        ("user", "one"),
        ("assistant", "Hi from Ollama"),
        ("user", "two"),
    ]
    sent_to_anthropic = anthropic.requests_to("/v1/messages")[-1].json
    assert sent_to_anthropic["system"] == "be brief"
    assert [(m["role"], m["content"]) for m in sent_to_anthropic["messages"]] == [
        ("user", "one"),
        ("assistant", "Hi from Ollama"),
        ("user", "two"),
        ("assistant", "Hi from OpenAI"),
        ("user", "three"),
    ]


@pytest.mark.parametrize("backend", ["ollama", "openai", "anthropic"])
async def test_streaming_reassembles_exactly_and_usage_is_recorded(
    config: Path, backend: str
) -> None:
    async with open_engine(config, backend=backend) as engine:
        conversation = engine.conversation()
        stream = conversation.stream("hello")
        pieces = [chunk.text async for chunk in stream]
        assert len([p for p in pieces if p]) == 3
        reply = stream.message
        assert reply is not None
        assert "".join(pieces) == reply.content
        provider = engine.plugins.get_backend_provider(backend)
        whole = await provider.chat(reply_context(conversation.id, backend))
        assert whole.content == reply.content  # the non-streaming call: the same text
        assert reply.tokens_in and reply.tokens_out
        assert reply.model
        stored = (await conversation.messages())[1]
        assert (stored.content, stored.tokens_in, stored.tokens_out) == (
            reply.content,
            reply.tokens_in,
            reply.tokens_out,
        )


def reply_context(conversation_id: str, backend: str) -> object:
    from chatcore import ChatContext, Message

    return ChatContext(
        conversation_id=conversation_id, messages=(Message.user("hello"),), backend=backend
    )


async def test_a_429_with_retry_after_is_retried_once_after_that_long(
    config: Path, openai: FakeOpenAI
) -> None:
    openai.fail(429, headers={"Retry-After": "1"}, message="Rate limit reached")
    async with open_engine(config, backend="openai") as engine:
        started = time.monotonic()
        reply = await engine.conversation().send("hi")
        waited = time.monotonic() - started
    assert reply.content == "Hi from OpenAI"
    assert len(openai.requests_to("/v1/chat/completions")) == 2
    assert waited >= 0.95  # the server's Retry-After, not the 0.05 s backoff


async def test_three_server_errors_move_the_turn_to_the_fallback(
    config: Path, openai: FakeOpenAI, anthropic: FakeAnthropic
) -> None:
    openai.fail(500, times=3, message="The server had an error")
    async with open_engine(config, backend="openai") as engine:
        reply = await engine.conversation().send("hi")
        circuit = engine.plugins.get_plugin_status()["openai"]
    assert len(openai.requests_to("/v1/chat/completions")) == 3
    assert reply.content == "Hi from Claude"
    assert (reply.metadata["backend"], reply.metadata["fallback_from"]) == (
        "anthropic",
        ["openai"],
    )
    assert (circuit.calls, circuit.failures) == (3, 3)
    assert len(anthropic.requests_to("/v1/messages")) == 1


async def test_a_wrong_key_fails_at_once_naming_the_env_var(
    config: Path, openai: FakeOpenAI, anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key")
    async with open_engine(config, backend="openai") as engine:
        with pytest.raises(BackendAuthError, match=r"\$OPENAI_API_KEY") as info:
            await engine.conversation().send("hi")
    assert "sk-wrong-key" not in str(info.value)
    assert len(openai.requests_to("/v1/chat/completions")) == 1
    assert anthropic.requests_to("/v1/messages") == []  # not a reason to fall back


async def test_a_hang_is_a_timeout_after_timeout_seconds(config: Path, ollama: FakeOllama) -> None:
    ollama.hang()
    text = config.read_text().replace(
        'model = "llama3.2"', 'model = "llama3.2"\ntimeout_seconds = 0.5\nmax_retries = 0'
    )
    config.write_text(text.replace('fallbacks = ["anthropic"]', "fallbacks = []"))
    async with open_engine(config, backend="ollama") as engine:
        started = trio.current_time()
        with pytest.raises(BackendTimeout, match=r"within 0\.5 s"):
            await engine.conversation().send("hi")
        assert trio.current_time() - started >= 0.5


async def test_a_drop_after_two_chunks_keeps_them_as_a_partial_reply(
    config: Path, openai: FakeOpenAI, anthropic: FakeAnthropic
) -> None:
    openai.drop_after(2)
    async with open_engine(config, backend="openai") as engine:
        conversation = engine.conversation()
        with pytest.raises(Exception, match="cut"):
            await conversation.send("hi")
        stored = await conversation.messages()
    assert (stored[1].content, stored[1].status) == ("Hi from", MessageStatus.PARTIAL)
    assert anthropic.requests_to("/v1/messages") == []  # never retried mid-reply
