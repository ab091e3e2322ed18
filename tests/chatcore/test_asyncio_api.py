"""The Python API under asyncio: ``open_engine``, ``send`` and ``stream`` as under Trio.

The engine runs as a Trio guest on the asyncio loop. These tests are plain functions
calling ``asyncio.run`` (this folder's async tests run on Trio), as a script would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import chatcore
from chatcore import (
    ConfigError,
    InvalidInput,
    MessageStatus,
    PluginLoadError,
    UnknownBackend,
    open_engine,
)

WriteConfig = Callable[..., Path]
SLOW = 'default_backend = "slow"\n[backends.slow]\nplugin = "echo"\ndelay_seconds = 0.2\n'


def test_send_stream_and_the_stored_messages_under_asyncio() -> None:
    async def main() -> tuple[str, list[str], str | None, list[tuple[str, str]], int]:
        async with open_engine(backend="echo") as engine:
            conversation = engine.conversation()
            reply = await conversation.send("hello")
            async with conversation.stream("and streaming") as stream:
                chunks = [chunk.text async for chunk in stream]
            streamed = stream.message.content if stream.message else None
            stored = [(m.role, m.content) for m in await conversation.messages()]
            listed = len(await engine.conversations())
        return reply.content, chunks, streamed, stored, listed

    reply, chunks, streamed, stored, listed = asyncio.run(main())
    assert reply == "echo: hello"
    assert "".join(chunks) == "echo: and streaming"
    assert streamed == "echo: and streaming"
    assert stored == [
        ("user", "hello"),
        ("assistant", "echo: hello"),
        ("user", "and streaming"),
        ("assistant", "echo: and streaming"),
    ]
    assert listed == 1


def test_cancelling_the_asyncio_task_keeps_what_arrived_as_partial(
    write_config: WriteConfig,
) -> None:
    config = write_config(SLOW)

    async def main() -> list[tuple[str, MessageStatus]]:
        async with open_engine(config, backend="slow") as engine:
            conversation = engine.conversation()
            task = asyncio.create_task(conversation.send("a long answer please"))
            await asyncio.sleep(0.5)  # a few chunks of 0.2 s
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return [(m.role, m.status) for m in await conversation.messages()]

    assert asyncio.run(main()) == [
        ("user", MessageStatus.COMPLETE),
        ("assistant", MessageStatus.PARTIAL),
    ]


def test_leaving_a_stream_early_stops_the_reply_and_keeps_it_partial(
    write_config: WriteConfig,
) -> None:
    config = write_config(SLOW)

    async def main() -> tuple[str, list[tuple[str, MessageStatus]]]:
        async with open_engine(config, backend="slow") as engine:
            conversation = engine.conversation()
            async with conversation.stream("a long answer please") as stream:
                async for chunk in stream:
                    first = chunk.text
                    break
            return first, [(m.role, m.status) for m in await conversation.messages()]

    first, stored = asyncio.run(main())
    assert first == "echo: "
    assert stored == [("user", MessageStatus.COMPLETE), ("assistant", MessageStatus.PARTIAL)]


def test_errors_reach_asyncio_callers_as_they_reach_trio_callers(
    write_config: WriteConfig,
) -> None:
    broken = write_config(
        'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
        '[[plugins]]\nplugin = "content_filtr"\n'
    )

    async def main() -> None:
        async with open_engine(backend="echo") as engine:
            conversation = engine.conversation()
            with pytest.raises(InvalidInput, match="empty prompt"):
                await conversation.send("   ")
            with pytest.raises(UnknownBackend):
                await conversation.send("hi", backend="nope")
            with pytest.raises(InvalidInput):
                async for _ in conversation.stream(""):
                    pass
        async with open_engine(broken) as engine:
            with pytest.raises(PluginLoadError, match=r"plugins\[0\]\.plugin"):
                await engine.conversation().send("hi")

    asyncio.run(main())


def test_a_bad_config_fails_open_engine_under_asyncio(write_config: WriteConfig) -> None:
    config = write_config('[runtime]\nmax_restarts = "many"\n')

    async def main() -> None:
        async with open_engine(config):
            raise AssertionError("the engine must not open")

    with pytest.raises(ConfigError, match=r"runtime\.max_restarts"):
        asyncio.run(main())


def test_concurrent_conversations_under_asyncio(write_config: WriteConfig) -> None:
    async def main() -> list[str]:
        async with open_engine(backend="echo") as engine:
            replies = await asyncio.gather(
                *(engine.conversation().send(f"hi {n}") for n in range(5))
            )
        return [reply.content for reply in replies]

    assert asyncio.run(main()) == [f"echo: hi {n}" for n in range(5)]


def test_ask_works_inside_a_running_loop_as_in_jupyter() -> None:
    async def cell() -> str:
        # A notebook cell runs inside the kernel's loop: the blocking call still works.
        return chatcore.ask("from a notebook", backend="echo").content

    assert asyncio.run(cell()) == "echo: from a notebook"


def test_a_closed_engine_refuses_calls_under_asyncio() -> None:
    async def main() -> None:
        async with open_engine(backend="echo") as engine:
            conversation = engine.conversation()
        with pytest.raises(chatcore.EngineClosed):
            await conversation.send("too late")

    asyncio.run(main())
