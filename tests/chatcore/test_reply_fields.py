"""A reply the API hands out says which conversation it is in and what it cited, typed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from helpers import RAG_DOCS

import chatcore
from chatcore import Citation, Message, open_engine

WriteConfig = Callable[..., Path]


async def test_send_stream_and_messages_carry_the_conversation_id() -> None:
    async with open_engine(backend="echo") as engine:
        conversation = engine.conversation()
        reply = await conversation.send("hello")
        async with conversation.stream("again") as stream:
            async for _ in stream:
                pass
        streamed = stream.message
        stored = await conversation.messages()
    assert reply.conversation_id == conversation.id
    assert streamed is not None and streamed.conversation_id == conversation.id
    assert {m.conversation_id for m in stored} == {conversation.id}


def test_the_one_off_ask_reply_carries_its_new_conversation() -> None:
    assert chatcore.ask("one-off", backend="echo").conversation_id is not None


def test_the_reply_of_asyncio_callers_carries_it_too() -> None:
    async def main() -> tuple[str | None, str]:
        async with open_engine(backend="echo") as engine:
            conversation = engine.conversation()
            return (await conversation.send("hi")).conversation_id, conversation.id

    got, expected = asyncio.run(main())
    assert got == expected


async def test_citations_are_typed(write_config: WriteConfig, tmp_path: Path) -> None:
    config = write_config(
        'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n[[plugins]]\nplugin = "rag"\n'
    )
    async with open_engine(config) as engine:
        rag = engine.plugins.get_plugin("rag")
        await rag.add([RAG_DOCS / "faq.txt"])  # type: ignore[attr-defined]
        reply = await engine.conversation().send("What is the refund policy?")
    assert reply.citations, reply.metadata
    first = reply.citations[0]
    assert isinstance(first, Citation)
    assert first.document.endswith("faq.txt")
    assert isinstance(first.chunk, int) and isinstance(first.score, float)


def test_malformed_citations_are_skipped_not_raised() -> None:
    reply = Message.assistant(
        "x",
        metadata={
            "citations": [
                {"document": "a.md", "chunk": 2, "score": 0.5, "heading": "Intro"},
                "junk",
                {"chunk": 1},
                {"document": "b.md", "chunk": "two", "score": "high"},
            ]
        },
    )
    assert reply.citations == (
        Citation("a.md", chunk=2, score=0.5, heading="Intro"),
        Citation("b.md"),
    )
    assert Message.assistant("y").citations == ()
    assert Message.assistant("z", metadata={"citations": "nope"}).citations == ()
