"""The Ollama backend over real HTTP: the official client against a faithful fake."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from fakes.ollama import FakeOllama

from backends.ollama import DEFAULT_HOST, OllamaBackend
from chatcore import open_engine
from chatcore.errors import (
    BackendAuthError,
    BackendBadRequest,
    BackendError,
    BackendRateLimited,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ModelNotFound,
)
from chatcore.messages import ChatContext, Chunk, Message, Role, Usage
from chatcore.plugin import PluginConfig

WriteConfig = Callable[..., Path]

HINT = "start it with `ollama serve` or set host in [backends.ollama]"
CHUNKS = ["Hel", "lo, ", "wor", "ld!"]
MODES = ["stream", "chat"]


@pytest.fixture(autouse=True)
def no_ollama_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama(reply_chunks=list(CHUNKS), usage=(7, 4))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def closed_url() -> str:
    """A loopback URL where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@asynccontextmanager
async def open_backend(url: str | None, **config: Any) -> AsyncIterator[OllamaBackend]:
    settings: dict[str, Any] = {"model": "llama3.2", "timeout_seconds": 5.0, **config}
    if url is not None:
        settings["host"] = url
    backend = OllamaBackend()
    await backend.initialize(PluginConfig(name="ollama", config=settings))
    try:
        yield backend
    finally:
        await backend.shutdown()


def context(text: str = "hi", **fields: Any) -> ChatContext:
    return ChatContext(conversation_id="c1", messages=(Message.user(text),), **fields)


async def collect(backend: OllamaBackend, ctx: ChatContext, into: list[Chunk]) -> None:
    async for chunk in backend.stream(ctx):
        into.append(chunk)


async def call(backend: OllamaBackend, mode: str, ctx: ChatContext | None = None) -> str:
    """One turn through ``stream`` or ``chat``; returns the reply text."""
    ctx = ctx or context()
    if mode == "stream":
        chunks: list[Chunk] = []
        await collect(backend, ctx, chunks)
        return "".join(c.text for c in chunks)
    return (await backend.chat(ctx)).content


# -- replies ----------------------------------------------------------------------------------


async def test_stream_yields_the_pieces_then_usage_and_the_reported_model(
    fake: FakeOllama,
) -> None:
    fake.model_reported = "llama3.2:latest"
    chunks: list[Chunk] = []
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            await collect(backend, context(), chunks)
    assert [c.text for c in chunks] == [*CHUNKS, ""]
    assert [c.index for c in chunks] == list(range(len(CHUNKS) + 1))
    assert [c.done for c in chunks] == [False] * len(CHUNKS) + [True]
    assert chunks[-1].usage == Usage(7, 4)
    assert chunks[-1].model == "llama3.2:latest"
    assert all(c.usage is None and c.model is None for c in chunks[:-1])
    assert fake.requests_to("/api/chat")[0].json["stream"] is True


async def test_chat_is_one_non_streaming_request_with_the_same_reply(fake: FakeOllama) -> None:
    fake.model_reported = "llama3.2:latest"
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            reply = await backend.chat(context())
    assert reply.role is Role.ASSISTANT
    assert reply.content == "Hello, world!"
    assert (reply.model, reply.tokens_in, reply.tokens_out) == ("llama3.2:latest", 7, 4)
    [request] = fake.requests_to("/api/chat")
    assert request.json["stream"] is False


async def test_pieces_without_text_are_skipped_and_indices_stay_contiguous(
    fake: FakeOllama,
) -> None:
    # A thinking model streams pieces whose content is empty (the text is in `thinking`).
    fake.reply_chunks = ["", "Hi", "", " there"]
    chunks: list[Chunk] = []
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            await collect(backend, context(), chunks)
    assert [(c.text, c.index, c.done) for c in chunks] == [
        ("Hi", 0, False),
        (" there", 1, False),
        ("", 2, True),
    ]


# -- the request ------------------------------------------------------------------------------


async def test_request_carries_model_messages_system_first_options_and_keep_alive(
    fake: FakeOllama,
) -> None:
    ctx = ChatContext(
        conversation_id="c1",
        messages=(Message.user("hi"), Message.assistant("hello"), Message.user("and now?")),
        system="Be brief.",
        temperature=0.3,
        max_tokens=64,
    )
    with trio.fail_after(5):
        async with open_backend(
            fake.url,
            temperature=0.9,
            max_tokens=512,
            options={"num_ctx": 4096, "temperature": 0.1, "seed": 7},
            keep_alive="10m",
        ) as backend:
            await backend.chat(ctx)
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/api/chat")
    body = request.json
    assert body["model"] == "llama3.2"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and now?"},
    ]
    # The turn's temperature and max_tokens win over the config and the raw options.
    assert body["options"] == {"num_ctx": 4096, "temperature": 0.3, "seed": 7, "num_predict": 64}
    assert body["keep_alive"] == "10m"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


async def test_config_temperature_and_max_tokens_apply_when_the_turn_sets_none(
    fake: FakeOllama,
) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url, temperature=0.9, max_tokens=512) as backend:
            await call(backend, "stream", context(model="llama3.2:latest"))
    body = fake.requests[0].json
    assert body["model"] == "llama3.2:latest"
    assert body["options"] == {"temperature": 0.9, "num_predict": 512}


async def test_nothing_optional_is_sent_when_nothing_is_set(fake: FakeOllama) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            await backend.chat(context())
    body = fake.requests[0].json
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert "options" not in body
    assert "keep_alive" not in body


async def test_ollama_api_key_is_sent_as_bearer_and_never_shown(
    fake: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-ollama-secret")
    fake.fail(401, message="unauthorized")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(BackendAuthError) as caught:
                await backend.chat(context())
    assert fake.requests[0].headers["authorization"] == "Bearer sk-ollama-secret"
    assert "sk-ollama-secret" not in str(caught.value)


async def test_host_defaults_to_ollama_host_then_localhost(
    fake: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_backend(None) as backend:
        assert backend.url == DEFAULT_HOST
    # Like `ollama` itself, a bare host:port means http.
    with trio.fail_after(5):
        async with open_backend(fake.url.removeprefix("http://")) as backend:
            assert backend.url == fake.url
            assert await call(backend, "stream") == "Hello, world!"
    monkeypatch.setenv("OLLAMA_HOST", fake.url)
    with trio.fail_after(5):
        async with open_backend(None) as backend:
            assert backend.url == fake.url
            assert await call(backend, "chat") == "Hello, world!"


async def test_without_a_model_nothing_is_sent(fake: FakeOllama) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url, model=None) as backend:
            for mode in MODES:
                with pytest.raises(BackendBadRequest, match=r"set model in \[backends\.ollama\]"):
                    await call(backend, mode)
    assert fake.requests == []


async def test_options_that_are_not_a_table_are_a_config_error(fake: FakeOllama) -> None:
    with pytest.raises(ConfigError, match=r"backends\.ollama\.options: expected a table"):
        async with open_backend(fake.url, options="num_ctx=4096"):
            pass


async def test_an_unusable_host_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"backends\.ollama\.host: not a usable address"):
        async with open_backend("http://[::1"):
            pass


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_model_is_model_not_found_with_ollamas_reason(
    fake: FakeOllama, mode: str
) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url, model="mistral") as backend:
            with pytest.raises(
                ModelNotFound,
                match=rf"^ollama: model 'mistral' not found at {re.escape(fake.url)} "
                r"\(model \"mistral\" not found, try pulling it first\)",
            ):
                await call(backend, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_401_names_the_key_variable(fake: FakeOllama, mode: str) -> None:
    fake.fail(401, message="unauthorized")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(
                BackendAuthError,
                match=r"refused the credentials \(401: unauthorized\): "
                r"check \$OLLAMA_API_KEY",
            ):
                await call(backend, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_400_is_a_bad_request(fake: FakeOllama, mode: str) -> None:
    fake.fail(400, message="invalid options: num_ctx")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(
                BackendBadRequest, match=r"refused the request \(400: invalid options: num_ctx\)"
            ):
                await call(backend, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_429_carries_retry_after(fake: FakeOllama, mode: str) -> None:
    fake.fail(429, message="too many requests", headers={"Retry-After": "1"})
    fake.fail(429, message="too many requests")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(BackendRateLimited, match=r"retry after 1 s") as first:
                await call(backend, mode)
            # The next error's headers are its own: no stale Retry-After.
            with pytest.raises(BackendRateLimited) as second:
                await call(backend, mode)
    assert first.value.retry_after == 1.0
    assert second.value.retry_after is None


@pytest.mark.parametrize("mode", MODES)
async def test_500_is_unavailable_and_retryable(fake: FakeOllama, mode: str) -> None:
    fake.fail(500, message="llama runner process has terminated")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(
                BackendUnavailable, match=r"answered 500: llama runner process has terminated"
            ) as caught:
                await call(backend, mode)
    assert caught.value.retryable
    assert caught.value.backend == "ollama"


@pytest.mark.parametrize("mode", MODES)
async def test_connection_refused_says_how_to_start_ollama(closed_url: str, mode: str) -> None:
    with trio.fail_after(5):
        async with open_backend(closed_url) as backend:
            with pytest.raises(BackendUnavailable) as caught:
                await call(backend, mode)
    assert str(caught.value) == f"ollama: cannot reach {closed_url} (connection refused); {HINT}"


@pytest.mark.parametrize("mode", MODES)
async def test_a_server_that_never_answers_times_out(fake: FakeOllama, mode: str) -> None:
    fake.hang()
    with trio.fail_after(3):
        async with open_backend(fake.url, timeout_seconds=0.5) as backend:
            with pytest.raises(
                BackendTimeout,
                match=rf"no answer from {re.escape(fake.url)} within 0\.5 s "
                r"\(timeout_seconds in \[backends\.ollama\]\)",
            ):
                await call(backend, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_an_error_text_with_line_breaks_becomes_one_line(fake: FakeOllama, mode: str) -> None:
    fake.fail(
        400, message='invalid options:\n  num_ctx: must be positive\n  top_k: "x" is not a number'
    )
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(BackendBadRequest) as caught:
                await call(backend, mode)
    assert str(caught.value).endswith(
        '(400: invalid options: num_ctx: must be positive top_k: "x" is not a number)'
    )


@pytest.mark.parametrize("mode", MODES)
async def test_an_answer_the_client_cannot_validate_is_one_line(
    fake: FakeOllama, mode: str
) -> None:
    fake.model_reported = cast("Any", 12)  # a number where Ollama sends the model's name
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(BackendUnavailable, match="not Ollama's API") as caught:
                await call(backend, mode)
    assert "\n" not in str(caught.value)


async def test_a_stream_that_stalls_after_text_says_so(fake: FakeOllama) -> None:
    fake.stall_after(2)
    chunks: list[Chunk] = []
    with trio.fail_after(5):
        async with open_backend(fake.url, timeout_seconds=0.5) as backend:
            with pytest.raises(
                BackendTimeout,
                match=rf"^ollama: the stream from {re.escape(fake.url)} stalled after 2 chunks "
                r"\(nothing more within 0\.5 s; timeout_seconds in \[backends\.ollama\]\)$",
            ):
                await collect(backend, context(), chunks)
    assert [c.text for c in chunks] == CHUNKS[:2]


async def test_a_connection_cut_mid_stream_fails_after_the_chunks_it_sent(
    fake: FakeOllama,
) -> None:
    fake.drop_after(2)
    chunks: list[Chunk] = []
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(BackendUnavailable, match=r"cut mid-reply, after 2 chunks"):
                await collect(backend, context(), chunks)
    assert [c.text for c in chunks] == CHUNKS[:2]
    assert not any(c.done for c in chunks)


async def test_an_error_line_in_the_stream_fails_after_the_chunks_it_sent(
    fake: FakeOllama,
) -> None:
    fake.stream_error = "model runner has unexpectedly stopped"
    chunks: list[Chunk] = []
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(
                BackendUnavailable,
                match=r"stopped the reply after 4 chunks: model runner has unexpectedly stopped",
            ):
                await collect(backend, context(), chunks)
    assert [c.text for c in chunks] == CHUNKS


async def test_leaving_a_stream_early_leaves_the_backend_usable(fake: FakeOllama) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            async with aclosing(backend.stream(context())) as stream:
                first = await stream.__anext__()
            assert first.text == CHUNKS[0]
            # The abandoned reply must not block the next request on the same client.
            assert await call(backend, "chat") == "Hello, world!"


async def test_cancelling_a_stream_mid_reply_leaves_the_backend_usable(fake: FakeOllama) -> None:
    fake.chunk_delay_s = 0.3
    chunks: list[Chunk] = []
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with trio.move_on_after(0.15) as scope:
                await collect(backend, context(), chunks)
            assert scope.cancelled_caught
            assert [c.text for c in chunks] == CHUNKS[:1]
            fake.chunk_delay_s = 0.0
            assert await call(backend, "stream") == "Hello, world!"


async def test_a_host_without_the_ollama_api_says_to_check_host(fake: FakeOllama) -> None:
    with trio.fail_after(5):
        async with open_backend(f"{fake.url}/not-ollama") as backend:
            with pytest.raises(
                BackendUnavailable,
                match=rf"no Ollama API at {re.escape(fake.url)}/not-ollama "
                r"\(404: 404 page not found\); check host in \[backends\.ollama\]",
            ):
                await backend.list_models()
            with pytest.raises(BackendUnavailable, match=r"no Ollama API at"):
                await backend.chat(context())


async def test_calls_after_close_fail_cleanly(fake: FakeOllama) -> None:
    async with open_backend(fake.url) as backend:
        pass
    with pytest.raises(BackendUnavailable, match=r"not initialised \(or already closed\)"):
        await backend.chat(context())


# -- models, embeddings, health ---------------------------------------------------------------


async def test_list_models_are_the_pulled_models(fake: FakeOllama) -> None:
    fake.models = ["llama3.2:latest", "qwen2.5:7b", "nomic-embed-text:latest"]
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            assert await backend.list_models() == fake.models
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/api/tags")]


async def test_list_models_errors_are_mapped(fake: FakeOllama) -> None:
    fake.fail(503, message="server busy")
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            with pytest.raises(BackendUnavailable, match=r"answered 503: server busy"):
                await backend.list_models()


async def test_embed_returns_one_vector_per_text_from_the_embed_model(fake: FakeOllama) -> None:
    texts = ["first passage", "second passage"]
    with trio.fail_after(5):
        async with open_backend(
            fake.url, embed_model="nomic-embed-text", keep_alive="1m"
        ) as backend:
            vectors = await backend.embed(texts)
            assert await backend.embed([]) == []
    assert vectors == [fake.embedding_for(t) for t in texts]
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/api/embed")
    assert request.json == {"model": "nomic-embed-text", "input": texts, "keep_alive": "1m"}


async def test_embed_with_a_model_not_pulled_is_model_not_found(fake: FakeOllama) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url, embed_model="mxbai-embed-large") as backend:
            with pytest.raises(ModelNotFound, match=r"model 'mxbai-embed-large' not found"):
                await backend.embed(["x"])


async def test_health_ok_after_listing_models(fake: FakeOllama) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url) as backend:
            health = await backend.health()
    assert health == {"ok": True, "url": fake.url, "detail": "2 models available"}


async def test_health_says_which_model_to_pull(fake: FakeOllama) -> None:
    with trio.fail_after(5):
        async with open_backend(fake.url, model="mistral") as backend:
            health = await backend.health()
    assert health == {
        "ok": False,
        "url": fake.url,
        "detail": "model 'mistral' is not pulled: run `ollama pull mistral`",
    }


async def test_health_on_a_closed_port_reports_without_raising(closed_url: str) -> None:
    with trio.fail_after(5):
        async with open_backend(closed_url) as backend:
            health = await backend.health()
    assert health["ok"] is False
    assert health["url"] == closed_url
    assert health["detail"] == f"ollama: cannot reach {closed_url} (connection refused); {HINT}"


# -- through the engine -----------------------------------------------------------------------


def engine_config(write_config: WriteConfig, url: str) -> Path:
    return write_config(
        f"""
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.local]
plugin = "ollama"
host = "{url}"
model = "llama3.2"
keep_alive = "5m"
max_retries = 0
[backends.local.options]
num_ctx = 2048
"""
    )


async def test_engine_send_and_stream_through_the_ollama_plugin(
    fake: FakeOllama, write_config: WriteConfig
) -> None:
    fake.model_reported = "llama3.2:latest"
    with trio.fail_after(10):
        async with open_engine(engine_config(write_config, fake.url), backend="local") as engine:
            conversation = engine.conversation()
            reply = await conversation.send("hi")
            streamed = conversation.stream("and again")
            pieces = [chunk.text async for chunk in streamed]
            stored = await conversation.messages()
    assert reply.content == "Hello, world!"
    assert (reply.model, reply.tokens_in, reply.tokens_out) == ("llama3.2:latest", 7, 4)
    assert "".join(pieces) == "Hello, world!"
    assert streamed.message is not None
    assert streamed.message.content == "Hello, world!"
    assert [(m.role, m.content) for m in stored] == [
        (Role.USER, "hi"),
        (Role.ASSISTANT, "Hello, world!"),
        (Role.USER, "and again"),
        (Role.ASSISTANT, "Hello, world!"),
    ]
    assert stored[1].model == "llama3.2:latest"
    assert (stored[1].tokens_in, stored[1].tokens_out) == (7, 4)
    first = fake.requests_to("/api/chat")[0].json
    assert first["model"] == "llama3.2"
    assert first["messages"][-1] == {"role": "user", "content": "hi"}
    assert first["options"] == {"num_ctx": 2048}
    assert first["keep_alive"] == "5m"


async def test_engine_reports_an_unreachable_ollama_in_words(
    closed_url: str, write_config: WriteConfig
) -> None:
    with trio.fail_after(10):
        async with open_engine(engine_config(write_config, closed_url), backend="local") as engine:
            with pytest.raises(BackendError, match=re.escape(f"cannot reach {closed_url}")) as e:
                await engine.conversation().send("hi")
    assert HINT.replace("backends.ollama", "backends.local") in str(e.value)
    assert "--backend" not in str(e.value)  # the CLI's hint is its own: e.value.cli_hint
