"""The Anthropic backend over real HTTP, through the official client, against the fake API."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import trio
from fakes.anthropic import DEFAULT_API_KEY, FakeAnthropic

from backends._common import DEFAULT_MAX_TOKENS
from backends.anthropic import AnthropicBackend, to_anthropic_messages
from chatcore import open_engine
from chatcore.errors import (
    BackendAuthError,
    BackendBadRequest,
    BackendError,
    BackendRateLimited,
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
)
from chatcore.messages import ChatContext, Chunk, Message, Role, Usage
from chatcore.plugin import PluginConfig

MODEL = "claude-sonnet-5-5"
NAME = "claude"
WriteConfig = Callable[..., Path]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys come only from what each test sets, never from the developer's shell."""
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@asynccontextmanager
async def open_backend(url: str, **config: Any) -> AsyncIterator[AnthropicBackend]:
    settings: dict[str, Any] = {
        "model": MODEL,
        "base_url": url,
        "api_key": DEFAULT_API_KEY,
        "timeout_seconds": 5.0,
    }
    settings.update(config)
    settings = {k: v for k, v in settings.items() if v is not None}
    backend = AnthropicBackend()
    await backend.initialize(PluginConfig(name=NAME, config=MappingProxyType(settings)))
    try:
        yield backend
    finally:
        await backend.aclose()


def ask(text: str = "hi", **changes: Any) -> ChatContext:
    return ChatContext(conversation_id="c1", messages=(Message.user(text),), **changes)


async def collect(backend: AnthropicBackend, context: ChatContext) -> list[Chunk]:
    return [chunk async for chunk in backend.stream(context)]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def last_body(fake: FakeAnthropic) -> Any:
    return fake.requests_to("/v1/messages")[-1].json


# -- replies ----------------------------------------------------------------------------------


async def test_stream_reassembles_the_text_and_ends_with_usage_and_reported_model(
    fake: FakeAnthropic,
) -> None:
    fake.reply_chunks = ["Bonjour", ", ", "le ", "monde", " !"]
    fake.model_reported = "claude-sonnet-5-5-20260301"
    fake.usage = (21, 9)
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            chunks = await collect(backend, ask())
    assert [c.text for c in chunks[:-1]] == fake.reply_chunks
    assert "".join(c.text for c in chunks) == "Bonjour, le monde !"
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.done for c in chunks] == [False] * 5 + [True]
    assert all(c.usage is None and c.model is None for c in chunks[:-1])
    last = chunks[-1]
    assert (last.text, last.usage, last.model) == (
        "",
        Usage(21, 9),
        "claude-sonnet-5-5-20260301",
    )
    assert last_body(fake)["stream"] is True


async def test_chat_is_the_non_streaming_call_with_the_same_text_and_usage(
    fake: FakeAnthropic,
) -> None:
    fake.model_reported = "claude-sonnet-5-5-20260301"
    fake.usage = (21, 9)
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            streamed = "".join([c.text for c in await collect(backend, ask())])
            reply = await backend.chat(ask())
    assert reply.role is Role.ASSISTANT
    assert reply.content == streamed == fake.reply_text
    assert (reply.model, reply.tokens_in, reply.tokens_out) == (
        "claude-sonnet-5-5-20260301",
        21,
        9,
    )
    assert "stream" not in last_body(fake)


# -- the request ------------------------------------------------------------------------------


async def test_the_request_puts_the_system_prompt_top_level_and_alternates_turns(
    fake: FakeAnthropic,
) -> None:
    context = ChatContext(
        conversation_id="c1",
        system="Be brief.",
        messages=(
            Message.system("Answer in French."),
            Message.user("Hello"),
            Message.user("Are you there?"),
            Message.assistant("Oui."),
            Message(role=Role.TOOL, content="weather: sunny"),
            Message.user("And the weather?"),
        ),
        max_tokens=300,
    )
    with trio.fail_after(5):
        async with open_backend(fake.url, max_tokens=200) as backend:
            await collect(backend, context)
    [request] = fake.requests_to("/v1/messages")
    assert request.method == "POST"
    body = request.json
    assert body["model"] == MODEL
    assert body["max_tokens"] == 300  # the turn's limit wins over the config's
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "Hello\n\nAre you there?"},
        {"role": "assistant", "content": "Oui."},
        {"role": "user", "content": "weather: sunny\n\nAnd the weather?"},
    ]
    assert all(m["role"] != "system" for m in body["messages"])
    assert request.headers["anthropic-version"]
    assert request.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"


async def test_max_tokens_defaults_to_1024_and_the_config_model_and_limit_apply(
    fake: FakeAnthropic,
) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            await backend.chat(ask())
        assert last_body(fake)["max_tokens"] == DEFAULT_MAX_TOKENS == 1024
        assert "system" not in last_body(fake)
        async with open_backend(fake.url, model="claude-haiku-5-5", max_tokens=64) as backend:
            await backend.chat(ask())
        assert (last_body(fake)["model"], last_body(fake)["max_tokens"]) == ("claude-haiku-5-5", 64)
        async with open_backend(fake.url, model="claude-haiku-5-5") as backend:
            await backend.chat(ask(model="claude-opus-5-5"))
        assert last_body(fake)["model"] == "claude-opus-5-5"


async def test_temperature_is_never_sent_because_the_api_version_refuses_it(
    fake: FakeAnthropic,
) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url, temperature=0.7) as backend:
            reply = await backend.chat(ask(temperature=0.2))
            chunks = await collect(backend, ask(temperature=0.2))
    assert reply.content == "".join(c.text for c in chunks) == fake.reply_text
    assert all("temperature" not in r.json for r in fake.requests_to("/v1/messages"))


async def test_a_history_opening_with_the_assistant_still_starts_with_a_user_turn(
    fake: FakeAnthropic,
) -> None:
    context = ChatContext(
        conversation_id="c1",
        messages=(Message.assistant("(an answer whose question was trimmed)"), Message.user("hi")),
    )
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            reply = await backend.chat(context)
    assert reply.content == fake.reply_text
    assert last_body(fake)["messages"] == [{"role": "user", "content": "hi"}]


async def test_message_conversion_drops_empty_messages_and_folds_system_ones() -> None:
    context = ChatContext(
        conversation_id="c1",
        messages=(
            Message.user("   "),
            Message.system("Rule one."),
            Message.user("q"),
            Message.assistant(""),
            Message.system("Rule two."),
        ),
    )
    assert to_anthropic_messages(context) == (
        "Rule one.\n\nRule two.",
        [{"role": "user", "content": "q"}],
    )
    assert to_anthropic_messages(ChatContext(conversation_id="c1")) == (None, [])


async def test_a_conversation_without_a_user_message_is_refused_before_any_request(
    fake: FakeAnthropic,
) -> None:
    context = ChatContext(conversation_id="c1", messages=(Message.system("only rules"),))
    async with open_backend(fake.url) as backend:
        with pytest.raises(BackendBadRequest, match=r"^claude: nothing to send"):
            await backend.chat(context)
        with pytest.raises(BackendBadRequest, match=r"^claude: nothing to send"):
            await collect(backend, context)
    assert fake.requests == []


# -- the key ----------------------------------------------------------------------------------


async def test_the_key_comes_from_the_environment(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", DEFAULT_API_KEY)
    with trio.fail_after(5):
        async with open_backend(fake.url, api_key=None) as backend:
            await backend.chat(ask())
    # Client 2.x sends the key as a bearer token (the API also takes x-api-key).
    assert fake.requests[-1].headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"


async def test_api_key_env_names_another_variable(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_CLAUDE_KEY", DEFAULT_API_KEY)
    with trio.fail_after(5):
        async with open_backend(fake.url, api_key=None, api_key_env="TEAM_CLAUDE_KEY") as backend:
            reply = await backend.chat(ask())
    assert reply.content == fake.reply_text


async def test_a_refused_key_names_the_variable_and_never_shows_the_key(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-ant-wrong-and-secret-0123456789"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    with trio.fail_after(5):
        async with open_backend(fake.url, api_key=None) as backend:
            with pytest.raises(BackendAuthError, match=r"refused the credentials") as streamed:
                await collect(backend, ask())
            with pytest.raises(BackendAuthError, match=r"\(401: invalid x-api-key\)") as called:
                await backend.chat(ask())
    for error in (streamed.value, called.value):
        assert str(error).endswith("check $ANTHROPIC_API_KEY")
        assert secret not in str(error)
        assert error.backend == NAME
        assert not error.retryable


async def test_a_missing_key_fails_at_call_time_without_a_request(fake: FakeAnthropic) -> None:
    async with open_backend(fake.url, api_key=None) as backend:  # loading needs no key
        expected = (
            r"^claude: no API key: set \$ANTHROPIC_API_KEY \(or api_key in \[backends\.claude\]\)$"
        )
        with pytest.raises(BackendAuthError, match=expected):
            await collect(backend, ask())
        with pytest.raises(BackendAuthError, match=expected):
            await backend.chat(ask())
        health = await backend.health()
    assert health["ok"] is False
    assert "$ANTHROPIC_API_KEY" in health["detail"]
    assert fake.requests == []


# -- errors -----------------------------------------------------------------------------------


async def call(backend: AnthropicBackend, mode: str, context: ChatContext) -> None:
    if mode == "stream":
        await collect(backend, context)
    else:
        await backend.chat(context)


both_modes = pytest.mark.parametrize("mode", ["stream", "chat"])


@both_modes
async def test_an_unknown_model_is_model_not_found(fake: FakeAnthropic, mode: str) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url, model="claude-nope") as backend:
            with pytest.raises(
                ModelNotFound,
                match=r"^claude: model 'claude-nope' not found at http://127\.0\.0\.1:\d+ "
                r"\(model: claude-nope\); set model in \[backends\.claude\] "
                r"\(or the turn's model=\) to one it serves$",
            ):
                await call(backend, mode, ask())


@both_modes
async def test_a_bad_request_carries_the_apis_reason(fake: FakeAnthropic, mode: str) -> None:
    fake.fail(400, message="messages.0.content: Input should be a valid list")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(
                BackendBadRequest,
                match=r"refused the request \(400: messages\.0\.content: Input should be a "
                r"valid list\)$",
            ):
                await call(backend, mode, ask())


@both_modes
async def test_a_prompt_over_the_window_names_the_conversation_size_and_the_memory_plugin(
    fake: FakeAnthropic, mode: str
) -> None:
    fake.fail(400, message="prompt is too long: 210417 tokens > 200000 maximum")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(
                BackendBadRequest,
                match=r"prompt is too long: 210417 tokens > 200000 maximum\); this conversation "
                r"sends 1 message, about \d+ tokens: .*memory plugin",
            ):
                await call(backend, mode, ask())


@both_modes
async def test_rate_limited_with_retry_after(fake: FakeAnthropic, mode: str) -> None:
    fake.fail(
        429,
        message="Number of request tokens has exceeded your per-minute rate limit",
        headers={"Retry-After": "1"},
    )
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(BackendRateLimited, match=r"retry after 1 s$") as caught:
                await call(backend, mode, ask())
    assert caught.value.retry_after == 1.0
    assert caught.value.retryable


@both_modes
@pytest.mark.parametrize(
    ("status", "message"), [(500, "Internal server error"), (529, "Overloaded")]
)
async def test_server_errors_and_overload_are_unavailable(
    fake: FakeAnthropic, mode: str, status: int, message: str
) -> None:
    fake.fail(status, message=message)
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(
                BackendUnavailable,
                match=rf"^claude: http://127\.0\.0\.1:\d+ answered {status}: {message}$",
            ) as caught:
                await call(backend, mode, ask())
    assert caught.value.retryable


@both_modes
async def test_a_closed_port_is_unavailable(mode: str) -> None:
    url = closed_port_url()
    with trio.fail_after(5):
        async with open_backend(url) as backend:
            with pytest.raises(BackendUnavailable, match=rf"^claude: cannot reach {url} \("):
                await call(backend, mode, ask())


@both_modes
async def test_a_hung_server_times_out(fake: FakeAnthropic, mode: str) -> None:
    fake.hang()
    started = time.monotonic()
    with trio.fail_after(5):
        async with open_backend(fake.url, timeout_seconds=0.5) as backend:
            with pytest.raises(
                BackendTimeout,
                match=r"no answer from http://127\.0\.0\.1:\d+ within 0\.5 s "
                r"\(timeout_seconds in \[backends\.claude\]\)$",
            ):
                await call(backend, mode, ask())
    assert time.monotonic() - started < 1.5


async def test_a_stream_that_stalls_after_text_says_so(fake: FakeAnthropic) -> None:
    fake.stall_after(FakeAnthropic.PREAMBLE_EVENTS + 2)
    received: list[str] = []
    with trio.fail_after(5):
        async with open_backend(fake.url, timeout_seconds=0.5) as backend:
            with pytest.raises(
                BackendTimeout,
                match=r"^claude: the stream from http://127\.0\.0\.1:\d+ stalled after 2 chunks "
                r"\(nothing more within 0\.5 s; timeout_seconds in \[backends\.claude\]\)$",
            ):
                async for chunk in backend.stream(ask()):
                    received.append(chunk.text)
    assert received == fake.reply_chunks[:2]


@both_modes
async def test_an_error_text_with_line_breaks_becomes_one_line(
    fake: FakeAnthropic, mode: str
) -> None:
    fake.fail(400, message="messages.0.content:\n  Input should be a valid list\n")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(
                BackendBadRequest,
                match=r"\(400: messages\.0\.content: Input should be a valid list\)$",
            ):
                await call(backend, mode, ask())


async def test_a_stream_cut_after_two_chunks_keeps_them_and_then_fails(
    fake: FakeAnthropic,
) -> None:
    fake.drop_after(FakeAnthropic.PREAMBLE_EVENTS + 2)
    received: list[str] = []
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(BackendUnavailable, match=r"was cut after 2 chunks") as caught:
                async for chunk in backend.stream(ask()):
                    received.append(chunk.text)
    assert received == fake.reply_chunks[:2]
    assert caught.value.retryable


async def test_a_stream_that_stalls_midway_times_out(fake: FakeAnthropic) -> None:
    fake.chunk_delay_s = 1.0
    received: list[str] = []
    with trio.fail_after(5):
        async with open_backend(fake.url, timeout_seconds=0.5) as backend:
            with pytest.raises(BackendTimeout, match=r"within 0\.5 s"):
                async for chunk in backend.stream(ask()):
                    received.append(chunk.text)
    assert received == []  # the first delta is the 4th event, after the first stall


@pytest.mark.parametrize(
    ("error_type", "message", "expected", "pattern"),
    [
        ("overloaded_error", "Overloaded", BackendUnavailable, r"answered 529: Overloaded$"),
        ("rate_limit_error", "Slow down", BackendRateLimited, r"rate limited by .* \(Slow down\)$"),
        ("api_error", "Internal server error", BackendUnavailable, r"answered 500: Internal"),
    ],
)
async def test_an_error_event_inside_the_stream_is_mapped_by_its_type(
    fake: FakeAnthropic,
    error_type: str,
    message: str,
    expected: type[BackendError],
    pattern: str,
) -> None:
    fake.fail_midstream(error_type, message=message, after_deltas=1)
    received: list[str] = []
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(expected, match=pattern):
                async for chunk in backend.stream(ask()):
                    received.append(chunk.text)
    assert received == fake.reply_chunks[:1]


@both_modes
async def test_a_base_url_ending_in_v1_is_a_wrong_address_not_an_unknown_model(
    fake: FakeAnthropic, mode: str
) -> None:
    with trio.fail_after(5):
        async with open_backend(f"{fake.url}/v1") as backend:
            with pytest.raises(BackendUnavailable) as caught:
                await call(backend, mode, ask())
    assert not isinstance(caught.value, ModelNotFound)
    assert str(caught.value) == (
        f"claude: no Anthropic API at {fake.url}/v1 (404: Not Found); check base_url in "
        f'[backends.claude]: the client adds /v1 itself, try "{fake.url}"'
    )


async def test_listing_models_at_a_wrong_address_names_the_address_not_a_model(
    fake: FakeAnthropic,
) -> None:
    with trio.fail_after(5):
        async with open_backend(f"{fake.url}/v1") as backend:
            with pytest.raises(BackendUnavailable, match=r"no Anthropic API at .*try ") as caught:
                await backend.list_models()
    assert "None" not in str(caught.value)


# -- models and health ------------------------------------------------------------------------


async def test_list_models_follows_the_pages(fake: FakeAnthropic) -> None:
    fake.models = [f"claude-test-{i:02d}" for i in range(25)]
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            models = await backend.list_models()
    assert models == fake.models
    pages = fake.requests_to("/v1/models")
    assert len(pages) == 2  # 20 per page by default
    assert pages[1].query["after_id"] == ["claude-test-19"]


async def test_list_models_maps_errors(fake: FakeAnthropic) -> None:
    fake.fail(401, message="invalid x-api-key")
    async with open_backend(fake.url) as backend:
        with pytest.raises(BackendAuthError, match=r"check \$ANTHROPIC_API_KEY$"):
            await backend.list_models()


async def test_health_lists_models(fake: FakeAnthropic) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            health = await backend.health()
    assert health == {"ok": True, "url": fake.url, "detail": f"3 models, {MODEL!r} listed"}


async def test_health_on_a_closed_port_reports_without_raising() -> None:
    url = closed_port_url()
    with trio.fail_after(5):
        async with open_backend(url) as backend:
            health = await backend.health()
    assert health["ok"] is False
    assert health["url"] == url
    assert health["detail"].startswith(f"claude: cannot reach {url} (")


async def test_there_is_no_embed_because_anthropic_has_no_embeddings_api() -> None:
    assert not hasattr(AnthropicBackend, "embed")


# -- end to end -------------------------------------------------------------------------------


async def test_end_to_end_through_the_engine(
    fake: FakeAnthropic, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", DEFAULT_API_KEY)
    fake.model_reported = "claude-sonnet-5-5-20260301"
    fake.usage = (30, 7)
    config = write_config(
        f"""
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.{NAME}]
plugin = "anthropic"
base_url = "{fake.url}"
model = "{MODEL}"
timeout_seconds = 5
"""
    )
    with trio.fail_after(10):
        async with open_engine(config, backend=NAME) as engine:
            conversation = engine.conversation()
            reply = await conversation.send("hi", system="Be brief.")
            assert reply.content == fake.reply_text
            assert (reply.model, reply.tokens_in, reply.tokens_out) == (
                "claude-sonnet-5-5-20260301",
                30,
                7,
            )
            stream = conversation.stream("again")
            chunks = [chunk async for chunk in stream]
            assert "".join(c.text for c in chunks) == fake.reply_text
            assert chunks[-1].done and chunks[-1].usage == Usage(30, 7)
            assert stream.message is not None
            assert stream.message.content == fake.reply_text
            stored = await conversation.messages()
    assert [(m.role, m.content) for m in stored] == [
        (Role.USER, "hi"),
        (Role.ASSISTANT, fake.reply_text),
        (Role.USER, "again"),
        (Role.ASSISTANT, fake.reply_text),
    ]
    first = fake.requests_to("/v1/messages")[0].json
    assert first["system"] == "Be brief."
    assert first["messages"][-1] == {"role": "user", "content": "hi"}
