"""What counts toward a backend's circuit: only failures that retrying could cure.

A mistyped ``--model`` or a malformed request is the user's to fix; the backend
answered, so such errors must not shut out the next, good request for
``circuit_reset_seconds``. Real HTTP: the openai backend against ``FakeOpenAI``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from fakes.openai import DEFAULT_REPLY_CHUNKS, FakeOpenAI

from chatcore import MessageStatus, open_engine
from chatcore.errors import BackendBadRequest, BackendUnavailable, ModelNotFound

WriteConfig = Callable[..., Path]
REPLY = "".join(DEFAULT_REPLY_CHUNKS)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def config(write_config: WriteConfig, fake: FakeOpenAI, threshold: int = 5) -> Path:
    return write_config(
        f"""
[backends.local]
plugin = "openai"
base_url = "{fake.url}/v1"
model = "gpt-4o-mini"
max_retries = 0
circuit_failure_threshold = {threshold}
circuit_reset_seconds = 30
"""
    )


async def test_a_mistyped_model_many_times_does_not_open_the_circuit(
    write_config: WriteConfig, fake: FakeOpenAI
) -> None:
    with trio.fail_after(20):
        async with open_engine(config(write_config, fake), backend="local") as engine:
            conversation = engine.conversation()
            for _ in range(6):
                with pytest.raises(ModelNotFound):
                    await conversation.send("hi", model="gpt-4o-mnii")
            reply = await conversation.send("hi")
            status = engine.plugins.get_plugin_status()["local"]
    assert (reply.content, reply.status) == (REPLY, MessageStatus.COMPLETE)
    assert status.circuit == "closed"
    assert status.failures == 6  # still counted as failed calls, just not against the circuit
    assert len(fake.requests_to("/v1/chat/completions")) == 7


async def test_refused_requests_do_not_open_the_circuit(
    write_config: WriteConfig, fake: FakeOpenAI
) -> None:
    fake.fail(400, message="Invalid value for 'temperature'", times=2)
    with trio.fail_after(20):
        async with open_engine(config(write_config, fake, threshold=2), backend="local") as engine:
            conversation = engine.conversation()
            for _ in range(2):
                with pytest.raises(BackendBadRequest):
                    await conversation.send("hi")
            reply = await conversation.send("hi")
    assert reply.content == REPLY


async def test_server_errors_still_open_the_circuit(
    write_config: WriteConfig, fake: FakeOpenAI
) -> None:
    fake.fail(503, message="Service Unavailable", times=2)
    with trio.fail_after(20):
        async with open_engine(config(write_config, fake, threshold=2), backend="local") as engine:
            conversation = engine.conversation()
            for _ in range(2):
                with pytest.raises(BackendUnavailable, match="answered 503"):
                    await conversation.send("hi")
            with pytest.raises(BackendUnavailable, match="circuit opened after 2"):
                await conversation.send("hi")
            status = engine.plugins.get_plugin_status()["local"]
    assert status.circuit == "open"
    assert len(fake.requests_to("/v1/chat/completions")) == 2


async def test_a_client_error_between_server_errors_neither_resets_nor_adds_to_the_count(
    write_config: WriteConfig, fake: FakeOpenAI
) -> None:
    fake.fail(503, message="Service Unavailable")
    with trio.fail_after(20):
        async with open_engine(config(write_config, fake, threshold=2), backend="local") as engine:
            conversation = engine.conversation()
            with pytest.raises(BackendUnavailable):
                await conversation.send("hi")
            with pytest.raises(ModelNotFound):
                await conversation.send("hi", model="gpt-4o-mnii")
            assert engine.plugins.get_plugin_status()["local"].circuit == "closed"
            fake.fail(503, message="Service Unavailable")
            with pytest.raises(BackendUnavailable, match="answered 503"):
                await conversation.send("hi")
            assert engine.plugins.get_plugin_status()["local"].circuit == "open"
