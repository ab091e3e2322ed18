"""A conversation's summary, rename, delete and export, and the engine's list, as a
script sees them through ``open_engine`` (echo backend, a real database)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatcore import (
    BackendError,
    ConversationNotFound,
    ConversationSummary,
    InvalidInput,
    Message,
    MessageStatus,
    open_engine,
)
from chatcore.cli import cli
from chatcore.store import DB_FILENAME, Store, TurnRecord

WriteConfig = Callable[..., Path]

CONFIG = """
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.failing]
plugin = "engine_plugins:FailingBackend"
"""

T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
CITED = "0190cccc-0000-7000-8000-000000000003"


def when(message: Message) -> str:
    return message.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- summary


async def test_summary_is_the_stored_conversation(data_dir: Path) -> None:
    async with open_engine(backend="echo") as engine:
        conversation = engine.conversation()
        with pytest.raises(ConversationNotFound, match=conversation.id):
            await conversation.summary()  # nothing is stored before the first turn
        await conversation.send("plans for the weekend")
        await conversation.send("and for Monday")
        summary = await conversation.summary()
        assert isinstance(summary, ConversationSummary)
        assert (summary.id, summary.title, summary.message_count) == (
            conversation.id,
            "plans for the weekend",
            4,
        )
        assert (summary.backend, summary.model) == ("echo", "echo")
        first, *_, last = await conversation.messages()
        # Created when the first turn was stored, updated when the last one was.
        assert first.created_at <= summary.created_at < last.created_at <= summary.updated_at
        # The same conversation opened by id (or a prefix of it) has the same summary.
        assert await engine.conversation(conversation.id[:13]).summary() == summary


# --------------------------------------------------------------------------- list


async def test_conversations_lists_the_newest_first_up_to_a_limit(data_dir: Path) -> None:
    async with open_engine(backend="echo") as engine:
        ids = []
        for text in ("first", "second", "third"):
            conversation = engine.conversation()
            await conversation.send(text)
            ids.append(conversation.id)
        listed = await engine.conversations()
        assert [(c.id, c.title) for c in listed] == [
            (ids[2], "third"),
            (ids[1], "second"),
            (ids[0], "first"),
        ]
        assert [c.id for c in await engine.conversations(limit=2)] == [ids[2], ids[1]]
        await engine.conversation(ids[0]).send("back to the first")
        assert [c.id for c in await engine.conversations(limit=1)] == [ids[0]]
        assert await engine.list_conversations() == await engine.conversations()
        with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
            await engine.conversations(limit=0)


# --------------------------------------------------------------------------- rename


async def test_rename_changes_the_title_everywhere_it_shows(data_dir: Path) -> None:
    async with open_engine(backend="echo") as engine:
        conversation = engine.conversation()
        await conversation.send("first words")
        renamed = await conversation.rename("  Weekend   plans ")
        assert renamed.title == "Weekend plans"
        assert (await conversation.summary()).title == "Weekend plans"
        assert [c.title for c in await engine.conversations()] == ["Weekend plans"]
        with pytest.raises(InvalidInput, match="a conversation title cannot be blank"):
            await conversation.rename("   ")
        assert (await conversation.summary()).title == "Weekend plans"
    async with open_engine(backend="echo") as engine:  # it was stored, not just shown
        assert (await engine.conversation(conversation.id).summary()).title == "Weekend plans"


async def test_rename_before_the_first_turn_is_not_found(data_dir: Path) -> None:
    async with open_engine(backend="echo") as engine:
        conversation = engine.conversation()
        with pytest.raises(ConversationNotFound, match=conversation.id):
            await conversation.rename("too early")
        assert await engine.conversations() == []


# --------------------------------------------------------------------------- delete


async def test_delete_removes_the_conversation_and_its_messages(data_dir: Path) -> None:
    async with open_engine(backend="echo") as engine:
        keep, drop = engine.conversation(), engine.conversation()
        await keep.send("keep me")
        await drop.send("drop me")
        await drop.delete()
        with pytest.raises(ConversationNotFound, match=drop.id):
            await drop.summary()
        with pytest.raises(ConversationNotFound, match=drop.id):
            engine.conversation(drop.id)
        with pytest.raises(ConversationNotFound, match=drop.id):
            await drop.export()
        with pytest.raises(ConversationNotFound, match=drop.id):
            await drop.delete()  # already gone
        assert await drop.messages() == []
        assert [c.title for c in await engine.conversations()] == ["keep me"]
    async with open_engine(backend="echo") as engine:
        assert [c.id for c in await engine.conversations()] == [keep.id]


# --------------------------------------------------------------------------- export


async def test_export_markdown_has_what_a_reader_needs(
    write_config: WriteConfig, data_dir: Path
) -> None:
    async with open_engine(write_config(CONFIG)) as engine:
        conversation = engine.conversation()
        await conversation.send("Plans: Q3 / 2026!", system="Answer in one line.")
        with pytest.raises(BackendError, match="connection reset by peer"):
            await conversation.send("and then?", backend="failing")
        text = await conversation.export()
        assert await conversation.export("markdown") == text
        summary = await conversation.summary()
        user, reply, user2, partial = await conversation.messages()
    assert summary.backend == "failing"  # the backend of the latest turn
    assert text == (
        "# Plans: Q3 / 2026!\n"
        "\n"
        # The failing backend has no model: echo's model stayed with echo.
        f"Conversation `{conversation.id}` · backend `failing`\n"
        "\n"
        "**System prompt**\n"
        "\n"
        "Answer in one line.\n"
        "\n"
        f"**User** · {when(user)}\n"
        "\n"
        "Plans: Q3 / 2026!\n"
        "\n"
        f"**Assistant** · {when(reply)} · `echo`\n"
        "\n"
        "echo: Plans: Q3 / 2026!\n"
        "\n"
        f"**User** · {when(user2)}\n"
        "\n"
        "and then?\n"
        "\n"
        f"**Assistant** · {when(partial)} *(partial)*\n"
        "\n"
        "half a reply\n"
        "\n"
        f"> {partial.metadata['error']}\n"
    )
    # `chatcore history export` writes the same text: there is one exporter.
    cli_export = CliRunner().invoke(cli, ["history", "export", conversation.id])
    assert cli_export.exit_code == 0, cli_export.output
    assert cli_export.output == text


async def test_export_json_is_the_whole_record(write_config: WriteConfig, data_dir: Path) -> None:
    async with open_engine(write_config(CONFIG)) as engine:
        conversation = engine.conversation()
        await conversation.send("hello", system="Be brief.")
        with pytest.raises(BackendError, match="connection reset by peer"):
            await conversation.send("more", backend="failing")
        document = json.loads(await conversation.export("json"))
        summary = await conversation.summary()
        stored = await conversation.messages()
    assert document["conversation"] == {**summary.as_dict(), "system": "Be brief."}
    assert [(m["role"], m["content"], m["status"]) for m in document["messages"]] == [
        ("user", "hello", "complete"),
        ("assistant", "echo: hello", "complete"),
        ("user", "more", "complete"),
        ("assistant", "half a reply", "partial"),
    ]
    reply = document["messages"][1]
    assert (reply["id"], reply["model"], reply["tokens_in"], reply["tokens_out"]) == (
        stored[1].id,
        "echo",
        stored[1].tokens_in,
        stored[1].tokens_out,
    )
    assert reply["tokens_out"] == 2
    assert reply["created_at"] == stored[1].created_at.isoformat()
    assert "connection reset by peer" in document["messages"][3]["metadata"]["error"]
    cli_export = CliRunner().invoke(cli, ["history", "export", conversation.id, "--format", "json"])
    assert json.loads(cli_export.output) == document


async def test_export_shows_citations_and_a_failed_reply_with_no_text(data_dir: Path) -> None:
    citations = [
        {"document": "guide.md", "heading": "Install", "chunk": 3, "score": 0.4213},
        {"document": "notes.txt"},
    ]
    with Store(data_dir / DB_FILENAME) as store:  # as an earlier run with RAG left it
        store.write_turns(
            [
                TurnRecord(
                    CITED,
                    (
                        Message.user("How do I install it?", created_at=T0),
                        Message.assistant(
                            "Run the installer [1].",
                            created_at=T0 + timedelta(seconds=2),
                            model="llama3",
                            metadata={"citations": citations},
                        ),
                        Message.user("And on Windows?", created_at=T0 + timedelta(seconds=9)),
                        Message.assistant(
                            "",
                            created_at=T0 + timedelta(seconds=10),
                            status=MessageStatus.ERROR,
                            metadata={"error": "backend 'ollama' failed:\nconnection refused"},
                        ),
                    ),
                    backend="ollama",
                    model="llama3",
                )
            ]
        )
    async with open_engine(backend="echo") as engine:
        text = await engine.conversation(CITED).export()
        document = json.loads(await engine.conversation(CITED).export("json"))
    assert text == (
        "# How do I install it?\n"
        "\n"
        f"Conversation `{CITED}` · backend `ollama` · model `llama3`\n"
        "\n"
        "**User** · 2024-05-01 09:30:00 UTC\n"
        "\n"
        "How do I install it?\n"
        "\n"
        "**Assistant** · 2024-05-01 09:30:02 UTC\n"
        "\n"
        "Run the installer [1].\n"
        "\n"
        "**Sources**\n"
        "\n"
        "- [1] guide.md > Install (chunk 3, score 0.42)\n"
        "- [2] notes.txt\n"
        "\n"
        "**User** · 2024-05-01 09:30:09 UTC\n"
        "\n"
        "And on Windows?\n"
        "\n"
        "**Assistant** · 2024-05-01 09:30:10 UTC *(error)*\n"
        "\n"
        "> backend 'ollama' failed:\n"
        "> connection refused\n"
    )
    assert document["messages"][1]["metadata"]["citations"] == citations
    assert document["conversation"]["system"] is None


async def test_export_names_the_formats_it_knows(data_dir: Path) -> None:
    async with open_engine(backend="echo") as engine:
        conversation = engine.conversation()
        with pytest.raises(ConversationNotFound, match=conversation.id):
            await conversation.export()  # nothing stored yet
        await conversation.send("hi")
        with pytest.raises(
            ValueError, match=r"unknown export format 'pdf': expected one of markdown, json"
        ):
            await conversation.export("pdf")  # type: ignore[arg-type]
