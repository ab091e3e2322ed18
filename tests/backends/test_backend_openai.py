"""The ``openai`` backend through the official client, over real HTTP to ``FakeOpenAI``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import trio
from fakes.openai import DEFAULT_REPLY_CHUNKS, FakeOpenAI

from backends.openai import LOCAL_PLACEHOLDER_KEY, OpenAIBackend
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
from chatcore.messages import ChatContext, Chunk, Message, MessageStatus, Role, Usage
from chatcore.plugin import PluginConfig

KEY = "sk-test-0123456789abcdefWXYZ"
MODEL = "gpt-4o-mini"
REPLY = "".join(DEFAULT_REPLY_CHUNKS)
# Variables the official client reads on its own; the machine's must not leak in.
CLIENT_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_ADMIN_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_CUSTOM_HEADERS",
)

WriteConfig = Callable[..., Path]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(expected_api_key=KEY) as server:
        yield server


async def start_backend(**config: Any) -> OpenAIBackend:
    settings: dict[str, Any] = {"model": MODEL, "timeout_seconds": 5.0, **config}
    backend = OpenAIBackend()
    await backend.initialize(PluginConfig(name="openai", config=settings))
    return backend


@pytest.fixture
async def backend(fake: FakeOpenAI, keyed: str) -> AsyncIterator[OpenAIBackend]:
    started = await start_backend(base_url=f"{fake.url}/v1")
    yield started
    await started.aclose()


def ask(text: str = "hi", **fields: Any) -> ChatContext:
    return ChatContext(conversation_id="c1", messages=(Message.user(text),), **fields)


async def collect(backend: OpenAIBackend, context: ChatContext) -> list[Chunk]:
    with trio.fail_after(5):
        return [chunk async for chunk in backend.stream(context)]


async def call(backend: OpenAIBackend, how: str, context: ChatContext) -> str:
    """One reply by ``stream`` or by ``chat``, as text."""
    if how == "stream":
        return "".join(c.text for c in await collect(backend, context))
    with trio.fail_after(5):
        return (await backend.chat(context)).content


BOTH = pytest.mark.parametrize("how", ["stream", "chat"])


# -- replies -----------------------------------------------------------------------------


async def test_stream_yields_the_pieces_then_usage_and_the_reported_model(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.model_reported = "gpt-4o-mini-2024-07-18"
    chunks = await collect(backend, ask())
    assert [c.text for c in chunks] == [*DEFAULT_REPLY_CHUNKS, ""]
    assert [c.index for c in chunks] == list(range(len(DEFAULT_REPLY_CHUNKS) + 1))
    assert [c.done for c in chunks] == [False] * len(DEFAULT_REPLY_CHUNKS) + [True]
    assert chunks[-1].usage == Usage(11, 7)
    assert chunks[-1].model == "gpt-4o-mini-2024-07-18"
    assert all(c.usage is None and c.model is None for c in chunks[:-1])


async def test_chat_gives_the_same_text_usage_and_model_without_streaming(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.model_reported = "gpt-4o-mini-2024-07-18"
    fake.usage = (23, 9)
    with trio.fail_after(5):
        reply = await backend.chat(ask())
    assert reply.role is Role.ASSISTANT
    assert reply.content == REPLY
    assert (reply.model, reply.tokens_in, reply.tokens_out) == ("gpt-4o-mini-2024-07-18", 23, 9)
    body = fake.requests_to("/v1/chat/completions")[-1].json
    assert "stream" not in body and "stream_options" not in body


async def test_an_empty_leading_role_delta_yields_no_chunk(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.leading_role_chunk = True
    chunks = await collect(backend, ask())
    assert [c.text for c in chunks] == [*DEFAULT_REPLY_CHUNKS, ""]


async def test_a_server_that_reports_no_usage_still_ends_the_stream(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.usage = None
    chunks = await collect(backend, ask())
    assert "".join(c.text for c in chunks) == REPLY
    assert chunks[-1].done and chunks[-1].usage is None and chunks[-1].model == MODEL


# -- the request -------------------------------------------------------------------------


async def test_the_request_carries_model_messages_system_sampling_and_the_key(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    context = ChatContext(
        conversation_id="c1",
        messages=(Message.user("one"), Message.assistant("two"), Message.user("three")),
        system="be brief",
        temperature=0.25,
        max_tokens=50,
    )
    await collect(backend, context)
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.json
    assert body["model"] == MODEL
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 50
    assert "max_completion_tokens" not in body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_config_sampling_applies_when_the_turn_sets_none_and_the_turn_wins(
    fake: FakeOpenAI, keyed: str
) -> None:
    backend = await start_backend(base_url=f"{fake.url}/v1", temperature=0.7, max_tokens=99)
    try:
        await collect(backend, ask())
        await collect(backend, ask(temperature=0.1, max_tokens=5, model="gpt-4o"))
    finally:
        await backend.aclose()
    first, second = (r.json for r in fake.requests)
    assert (first["model"], first["temperature"], first["max_tokens"]) == (MODEL, 0.7, 99)
    assert (second["model"], second["temperature"], second["max_tokens"]) == ("gpt-4o", 0.1, 5)


async def test_unset_sampling_is_left_out_and_no_system_message_is_invented(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    await collect(backend, ask())
    body = fake.requests[0].json
    assert "temperature" not in body and "max_tokens" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]


async def test_a_tool_message_keeps_its_role_and_call_id(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    tool = Message(role=Role.TOOL, content='{"temp": 21}', metadata={"tool_call_id": "call_1"})
    await collect(backend, ask().with_message(tool))
    assert fake.requests[0].json["messages"][-1] == {
        "role": "tool",
        "content": '{"temp": 21}',
        "tool_call_id": "call_1",
    }


async def test_organization_and_a_custom_key_variable_are_sent(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_OPENAI_KEY", KEY)
    backend = await start_backend(
        base_url=f"{fake.url}/v1", organization="org-42", api_key_env="TEAM_OPENAI_KEY"
    )
    try:
        await collect(backend, ask())
    finally:
        await backend.aclose()
    headers = fake.requests[0].headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-42"


async def test_openai_itself_gets_max_completion_tokens() -> None:
    # Request building only: nothing is sent to api.openai.com.
    backend = await start_backend(api_key="sk-unused")
    try:
        params = backend._request(ask(max_tokens=64))
    finally:
        await backend.aclose()
    assert backend.base_url == "https://api.openai.com/v1"
    assert params["max_completion_tokens"] == 64
    assert "max_tokens" not in params


async def test_a_compatible_local_server_works_without_any_key() -> None:
    with FakeOpenAI(models=("llama-3.2-3b",)) as local:
        backend = await start_backend(base_url=f"{local.url}/v1", model="llama-3.2-3b")
        try:
            chunks = await collect(backend, ask())
            with trio.fail_after(5):
                models = await backend.list_models()
        finally:
            await backend.aclose()
        assert "".join(c.text for c in chunks) == REPLY
        assert chunks[-1].model == "llama-3.2-3b"
        assert models == ["llama-3.2-3b"]
        assert {r.headers["authorization"] for r in local.requests} == {
            f"Bearer {LOCAL_PLACEHOLDER_KEY}"
        }


# -- errors ------------------------------------------------------------------------------


@BOTH
async def test_a_wrong_key_names_the_variable_and_never_shows_the_key(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    wrong = "sk-wrong-9876543210zyxwvuts"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    backend = await start_backend(base_url=f"{fake.url}/v1")
    try:
        with pytest.raises(BackendAuthError, match=r"check \$OPENAI_API_KEY") as info:
            await call(backend, how, ask())
    finally:
        await backend.aclose()
    assert fake.requests[0].headers["authorization"] == f"Bearer {wrong}"
    assert "Incorrect API key provided" in str(info.value)
    assert wrong not in str(info.value)
    assert info.value.backend == "openai"


async def test_a_server_echoing_the_key_is_scrubbed(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.fail(401, message=f"key {KEY} was revoked")
    with pytest.raises(BackendAuthError, match=r"key \*\*\* was revoked") as info:
        await collect(backend, ask())
    assert KEY not in str(info.value)


async def test_no_key_for_openai_itself_fails_at_call_time_not_at_load() -> None:
    backend = await start_backend()  # default base_url, no key anywhere: still loads
    try:
        with pytest.raises(BackendAuthError, match=r"no API key: set \$OPENAI_API_KEY"):
            await collect(backend, ask())
        health = await backend.health()
    finally:
        await backend.aclose()
    assert health["ok"] is False
    assert "$OPENAI_API_KEY" in health["detail"]


@BOTH
async def test_an_unknown_model_is_model_not_found(
    fake: FakeOpenAI, backend: OpenAIBackend, how: str
) -> None:
    with pytest.raises(ModelNotFound, match=r"model 'gpt-nope' not found .*does not exist"):
        await call(backend, how, ask(model="gpt-nope"))


@BOTH
async def test_a_refused_request_is_bad_request(
    fake: FakeOpenAI, backend: OpenAIBackend, how: str
) -> None:
    fake.fail(400, message="Invalid value for 'temperature': must be at most 2.")
    with pytest.raises(BackendBadRequest, match=r"refused the request \(400: Invalid value"):
        await call(backend, how, ask())


@BOTH
async def test_a_rate_limit_carries_retry_after(
    fake: FakeOpenAI, backend: OpenAIBackend, how: str
) -> None:
    fake.fail(429, message="Rate limit reached for requests", headers={"Retry-After": "1"})
    with pytest.raises(BackendRateLimited, match=r"rate limited .*retry after 1 s") as info:
        await call(backend, how, ask())
    assert info.value.retry_after == 1.0
    assert info.value.retryable


@BOTH
async def test_a_server_error_is_unavailable(
    fake: FakeOpenAI, backend: OpenAIBackend, how: str
) -> None:
    fake.fail(500, message="The server had an error while processing your request.")
    with pytest.raises(BackendUnavailable, match=r"answered 500: The server had an error"):
        await call(backend, how, ask())


@BOTH
async def test_a_refused_connection_is_unavailable(keyed: str, closed_port: int, how: str) -> None:
    backend = await start_backend(base_url=f"http://127.0.0.1:{closed_port}/v1")
    try:
        with pytest.raises(
            BackendUnavailable, match=rf"cannot reach http://127\.0\.0\.1:{closed_port}"
        ):
            await call(backend, how, ask())
    finally:
        await backend.aclose()


@BOTH
async def test_a_hanging_server_times_out(fake: FakeOpenAI, keyed: str, how: str) -> None:
    backend = await start_backend(base_url=f"{fake.url}/v1", timeout_seconds=0.5)
    fake.hang()
    try:
        with pytest.raises(BackendTimeout, match=r"no answer .* within 0\.5 s"):
            await call(backend, how, ask())
    finally:
        await backend.aclose()


async def test_a_connection_cut_mid_stream_is_unavailable_after_the_pieces_that_came(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.drop_after(2)
    received: list[str] = []
    with trio.fail_after(5), pytest.raises(BackendUnavailable, match=r"cut after 2 chunks"):
        async for chunk in backend.stream(ask()):
            received.append(chunk.text)
    assert received == list(DEFAULT_REPLY_CHUNKS[:2])


@BOTH
async def test_litellms_rate_limit_text_with_line_breaks_becomes_one_line(
    fake: FakeOpenAI, backend: OpenAIBackend, how: str
) -> None:
    fake.fail(
        429,
        message="litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached\n"
        "Received Model Group=gpt-4o-mini\nAvailable Model Group Fallbacks=None",
    )
    with pytest.raises(BackendRateLimited) as info:
        await call(backend, how, ask())
    assert str(info.value) == (
        f"openai: rate limited by {fake.url}/v1 (litellm.RateLimitError: RateLimitError: "
        "OpenAIException - Rate limit reached Received Model Group=gpt-4o-mini "
        "Available Model Group Fallbacks=None)"
    )


async def test_a_stream_that_stalls_after_text_says_so(fake: FakeOpenAI, keyed: str) -> None:
    backend = await start_backend(base_url=f"{fake.url}/v1", timeout_seconds=0.5)
    fake.stall_after(2)
    received: list[str] = []
    try:
        with (
            trio.fail_after(5),
            pytest.raises(
                BackendTimeout,
                match=rf"^openai: the stream from {fake.url}/v1 stalled after 2 chunks "
                r"\(nothing more within 0\.5 s; timeout_seconds in \[backends\.openai\]\)$",
            ),
        ):
            async for chunk in backend.stream(ask()):
                received.append(chunk.text)
    finally:
        await backend.aclose()
    assert received == list(DEFAULT_REPLY_CHUNKS[:2])


async def test_an_error_event_mid_stream_is_unavailable_after_the_pieces_that_came(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.stream_error = (3, "The model is overloaded")
    received: list[str] = []
    with trio.fail_after(5), pytest.raises(BackendUnavailable, match=r"overloaded"):
        async for chunk in backend.stream(ask()):
            received.append(chunk.text)
    assert received == list(DEFAULT_REPLY_CHUNKS[:3])


LONG_PROMPT = "tell me everything about the history of the whole wide world please"


async def test_an_empty_stream_over_the_context_window_is_an_error_not_an_empty_reply(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.context_window = 5
    history = (Message.user("an earlier question"), Message.assistant("an earlier answer"))
    context = ChatContext(conversation_id="c1", messages=(*history, Message.user(LONG_PROMPT)))
    with pytest.raises(BackendUnavailable) as info:
        await collect(backend, context)
    text = str(info.value)
    assert text.startswith(
        f"openai: the stream from {fake.url}/v1 ended without finishing "
        "(the prompt may exceed the model's context window"
    )
    assert "3 messages" in text and "tokens" in text and "memory plugin" in text
    assert "\n" not in text


async def test_the_same_client_answers_again_after_a_stream_that_ended_without_finishing(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.context_window = 5
    with pytest.raises(BackendUnavailable, match="ended without finishing"):
        await collect(backend, ask(LONG_PROMPT))
    assert await call(backend, "stream", ask()) == REPLY
    assert await call(backend, "chat", ask()) == REPLY


async def test_a_stream_cut_cleanly_after_some_text_is_incomplete(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.finish_stream = False
    received: list[str] = []
    with (
        trio.fail_after(5),
        pytest.raises(
            BackendUnavailable,
            match=r"ended without finishing after 6 chunks; the reply is incomplete",
        ),
    ):
        async for chunk in backend.stream(ask()):
            received.append(chunk.text)
    assert "".join(received) == REPLY


async def test_a_context_length_refusal_names_the_conversation_size_and_the_memory_plugin(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    fake.context_window = 5
    with pytest.raises(BackendBadRequest) as info:
        await call(backend, "chat", ask(LONG_PROMPT))
    text = str(info.value)
    assert "maximum context length is 5 tokens" in text
    assert "1 message" in text and "tokens" in text and "memory plugin" in text


async def test_no_model_anywhere_is_a_bad_request_naming_the_config_key(
    fake: FakeOpenAI, keyed: str
) -> None:
    backend = await start_backend(base_url=f"{fake.url}/v1", model=None)
    try:
        with pytest.raises(BackendBadRequest, match=r"set model in \[backends\.openai\]"):
            await collect(backend, ask())
    finally:
        await backend.aclose()
    assert fake.requests == []


@BOTH
async def test_a_base_url_without_v1_is_a_wrong_address_not_an_unknown_model(
    fake: FakeOpenAI, keyed: str, how: str
) -> None:
    backend = await start_backend(base_url=fake.url)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await call(backend, how, ask())
    finally:
        await backend.aclose()
    assert not isinstance(info.value, ModelNotFound)
    assert str(info.value) == (
        f"openai: no OpenAI-compatible API at {fake.url} (404: Invalid URL "
        f'(POST /chat/completions)); check base_url in [backends.openai]: try "{fake.url}/v1"'
    )


async def test_listing_models_at_a_wrong_address_names_the_address_not_a_model(
    fake: FakeOpenAI, keyed: str
) -> None:
    backend = await start_backend(base_url=fake.url)
    try:
        with pytest.raises(BackendUnavailable, match=r"no OpenAI-compatible API at .*try ") as info:
            await backend.list_models()
    finally:
        await backend.aclose()
    assert "model" not in str(info.value).replace("/models", "")


async def test_a_server_whose_404_names_the_model_is_model_not_found(
    fake: FakeOpenAI, backend: OpenAIBackend
) -> None:
    # vLLM and Ollama's compatible API send no code, only a message naming the model.
    fake.fail(404, message="The model `gpt-4o-mini` does not exist.")
    with pytest.raises(ModelNotFound, match=r"model 'gpt-4o-mini' not found"):
        await collect(backend, ask())


# -- models, embeddings, health ----------------------------------------------------------


async def test_list_models(fake: FakeOpenAI, backend: OpenAIBackend) -> None:
    fake.models = ("gpt-4o-mini", "o3-mini")
    with trio.fail_after(5):
        assert await backend.list_models() == ["gpt-4o-mini", "o3-mini"]
    assert (fake.requests[0].method, fake.requests[0].path) == ("GET", "/v1/models")


async def test_embed_returns_one_vector_per_text_in_order(fake: FakeOpenAI, keyed: str) -> None:
    backend = await start_backend(
        base_url=f"{fake.url}/v1", embedding_model="text-embedding-3-small"
    )
    try:
        with trio.fail_after(5):
            vectors = await backend.embed(["alpha", "beta"])
    finally:
        await backend.aclose()
    assert vectors == [fake.embedding_for("alpha"), fake.embedding_for("beta")]
    request = fake.requests_to("/v1/embeddings")[0]
    assert request.json == {
        "model": "text-embedding-3-small",
        "input": ["alpha", "beta"],
        "encoding_format": "float",
    }


async def test_one_vector_per_token_is_refused_naming_the_missing_pooling(
    fake: FakeOpenAI, keyed: str
) -> None:
    fake.pooling = False
    backend = await start_backend(base_url=f"{fake.url}/v1", embedding_model="nomic-embed")
    fake.models = (*fake.models, "nomic-embed")
    try:
        with trio.fail_after(5), pytest.raises(BackendError) as info:
            await backend.embed(["three word text", "one"])
    finally:
        await backend.aclose()
    assert not info.value.retryable
    assert str(info.value) == (
        f"openai: the embedding model 'nomic-embed' at {fake.url}/v1 returned one vector "
        "per token (3 vectors for text 1), not one per text: it runs without "
        "pooling; set embedding_model in [backends.openai] to an embedding model, or start "
        "llama.cpp's server with --pooling mean"
    )


async def test_embed_with_an_unknown_model_is_model_not_found(fake: FakeOpenAI, keyed: str) -> None:
    backend = await start_backend(base_url=f"{fake.url}/v1", embedding_model="text-embedding-nope")
    try:
        with pytest.raises(ModelNotFound, match=r"model 'text-embedding-nope' not found"):
            await backend.embed(["x"])
    finally:
        await backend.aclose()


async def test_health_is_ok_and_says_whether_the_model_is_listed(
    backend: OpenAIBackend, fake: FakeOpenAI
) -> None:
    with trio.fail_after(5):
        health = await backend.health()
    assert health == {
        "ok": True,
        "url": f"{fake.url}/v1",
        "detail": "3 models, 'gpt-4o-mini' listed",
    }


async def test_health_on_a_closed_port_is_not_ok_and_does_not_raise(
    keyed: str, closed_port: int
) -> None:
    backend = await start_backend(base_url=f"http://127.0.0.1:{closed_port}/v1")
    try:
        with trio.fail_after(5):
            health = await backend.health()
    finally:
        await backend.aclose()
    assert health["ok"] is False
    assert health["url"] == f"http://127.0.0.1:{closed_port}/v1"
    assert "cannot reach" in health["detail"]


# -- end to end through the engine -------------------------------------------------------


def engine_config(write_config: WriteConfig, fake: FakeOpenAI) -> Path:
    return write_config(
        f"""
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.gpt]
plugin = "openai"
model = "{MODEL}"
base_url = "{fake.url}/v1"
timeout_seconds = 5
max_retries = 0
"""
    )


async def test_engine_send_and_stream_store_the_fakes_reply(
    write_config: WriteConfig, fake: FakeOpenAI, keyed: str
) -> None:
    fake.model_reported = "gpt-4o-mini-2024-07-18"
    with trio.fail_after(10):
        async with open_engine(engine_config(write_config, fake), backend="gpt") as engine:
            conversation = engine.conversation()
            reply = await conversation.send("hi")
            assert reply.content == REPLY
            assert reply.status is MessageStatus.COMPLETE
            assert (reply.model, reply.tokens_in, reply.tokens_out) == (
                "gpt-4o-mini-2024-07-18",
                11,
                7,
            )
            stream = conversation.stream("again")
            chunks = [chunk async for chunk in stream]
            assert "".join(c.text for c in chunks) == REPLY
            assert chunks[-1].done and chunks[-1].usage == Usage(11, 7)
            stored = await conversation.messages()
    assert [(m.role, m.content) for m in stored] == [
        (Role.USER, "hi"),
        (Role.ASSISTANT, REPLY),
        (Role.USER, "again"),
        (Role.ASSISTANT, REPLY),
    ]
    # The second turn sent the first one as history.
    second = fake.requests_to("/v1/chat/completions")[-1].json
    assert [(m["role"], m["content"]) for m in second["messages"]][-3:] == [
        ("user", "hi"),
        ("assistant", REPLY),
        ("user", "again"),
    ]


async def test_engine_stores_an_error_not_an_empty_complete_reply_over_the_context_window(
    write_config: WriteConfig, fake: FakeOpenAI, keyed: str
) -> None:
    fake.context_window = 5
    with trio.fail_after(10):
        async with open_engine(engine_config(write_config, fake), backend="gpt") as engine:
            conversation = engine.conversation()
            with pytest.raises(BackendUnavailable, match="ended without finishing"):
                await conversation.send(LONG_PROMPT)
            stored = await conversation.messages()
    assert stored[-1].role is Role.ASSISTANT
    assert stored[-1].status is MessageStatus.ERROR
    assert "context window" in stored[-1].metadata["error"]


async def test_engine_send_with_a_wrong_key_raises_the_auth_error(
    write_config: WriteConfig, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-9876543210zyxwvuts")
    with trio.fail_after(10):
        async with open_engine(engine_config(write_config, fake), backend="gpt") as engine:
            with pytest.raises(BackendError, match=r"\$OPENAI_API_KEY") as info:
                await engine.conversation().send("hi")
    assert isinstance(info.value, BackendAuthError)
    assert len(fake.requests) == 1


# -- the fake itself ---------------------------------------------------------------------


async def test_the_fake_answers_the_clients_default_base64_embeddings(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key=KEY, max_retries=0)
    try:
        with trio.fail_after(5):
            result = await client.embeddings.create(model="text-embedding-3-small", input=["alpha"])
    finally:
        await client.close()
    assert fake.requests[0].json["encoding_format"] == "base64"
    assert result.data[0].embedding == fake.embedding_for("alpha")


async def test_the_fake_refuses_a_request_without_a_key_as_openai_does(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{fake.url}/v1", api_key=KEY, max_retries=0, default_headers={"Authorization": ""}
    )
    try:
        with trio.fail_after(5), pytest.raises(openai.AuthenticationError) as info:
            await client.models.list()
    finally:
        await client.close()
    body = info.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["param"], body["code"]) == ("invalid_request_error", None, None)
    assert "You didn't provide an API key" in info.value.message
