"""The rag feature inside a real engine: passages reach the backend, citations the reply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RAG_DOCS
from test_rag_index import SYNONYM_DOCS, HashEmbedder

from chatcore import open_engine
from chatcore.errors import ConfigError
from features.rag import PASSAGES_INTRO, Rag

WriteConfig = Callable[..., Path]
DOCS = RAG_DOCS

BACKENDS = """
[backends.echo]
plugin = "echo"
[backends.context]
plugin = "engine_plugins:ContextBackend"
[backends.hash]
plugin = "test_rag_index:HashEmbedder"
model = "hash-v1"
[backends.down]
plugin = "test_rag_index:DownEmbedder"
"""


def config_text(**rag: object) -> str:
    lines = ['default_backend = "echo"', BACKENDS, "[[plugins]]", 'plugin = "rag"']
    lines.append("[plugins.config]")
    for key, value in rag.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


async def test_the_reply_lists_citations_with_document_chunk_and_score(
    write_config: WriteConfig,
) -> None:
    async with open_engine(write_config(config_text())) as engine:
        rag = engine.plugins.get_plugin("rag")
        assert isinstance(rag, Rag)
        report = await rag.add([DOCS])
        assert report.summary() == "added 5, updated 0, unchanged 0, skipped 1"

        conversation = engine.conversation()
        reply = await conversation.send("How do I clean my solar panels?")
        assert reply.content == "echo: How do I clean my solar panels?"
        citations = reply.metadata["citations"]
        assert 1 <= len(citations) <= 4
        assert all({"document", "chunk", "score"} <= set(c) for c in citations)
        first = citations[0]
        assert first["document"] == str((DOCS / "solar.html").resolve())
        assert (first["chunk"], first["heading"]) == (1, "Solar Panels > Cleaning")
        assert isinstance(first["score"], float) and first["score"] > 0
        # Stored with the reply, so history shows where an answer came from.
        stored = await conversation.messages()
        assert stored[-1].metadata["citations"] == citations


async def test_the_backend_sees_numbered_passages_after_the_system_prompt(
    write_config: WriteConfig,
) -> None:
    async with open_engine(write_config(config_text(top_k=1)), backend="context") as engine:
        await engine.plugins.get_plugin("rag").add([DOCS / "install.md"])  # type: ignore[attr-defined]
        conversation = engine.conversation()
        reply = await conversation.send("install on linux with apt-get", system="Be brief.")
        expected_system = (
            f"Be brief.\n\n{PASSAGES_INTRO}\n\n"
            "[1] (source: install.md > Widget Guide > Install > Linux)\n"
            "Install the package with `sudo apt-get install zephyrwidget`, then start the\n"
            "service with `systemctl start zephyrwidget`."
        )
        assert reply.content.startswith(f"system={expected_system} model=")
        assert [c["heading"] for c in reply.metadata["citations"]] == [
            "Widget Guide > Install > Linux"
        ]


async def test_no_matching_passage_leaves_the_context_alone(write_config: WriteConfig) -> None:
    async with open_engine(write_config(config_text()), backend="context") as engine:
        await engine.plugins.get_plugin("rag").add([DOCS])  # type: ignore[attr-defined]
        reply = await engine.conversation().send("quantum chromodynamics")
        assert reply.content.startswith("system=None model=")
        assert "citations" not in reply.metadata
        status = engine.plugins.get_plugin_status()["rag"]
        assert (status.calls, status.failures) == (1, 0)


async def test_hybrid_retrieval_finds_synonyms_through_the_embed_backend(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    folder = tmp_path / "cars"
    folder.mkdir()
    for name, text in SYNONYM_DOCS.items():
        (folder / name).write_text(text)
    config = write_config(config_text(top_k=3, embed_backend="hash"))
    async with open_engine(config) as engine:
        rag = engine.plugins.get_plugin("rag")
        report = await rag.add([folder])  # type: ignore[attr-defined]
        assert (report.embedded, report.embed_error) == (len(SYNONYM_DOCS), None)
        reply = await engine.conversation().send("automobile")
        cited = [Path(c["document"]).name for c in reply.metadata["citations"]]
        # b.txt never says "automobile": only its vector ("car", "vehicle") finds it.
        assert cited == ["c.txt", "a.txt", "b.txt"]
        assert reply.metadata["citations"][0]["score"] == pytest.approx(1 / 61 + 1 / 62, abs=1e-4)
        assert HashEmbedder.calls >= 2


async def test_an_unreachable_embed_backend_falls_back_to_bm25(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_engine(write_config(config_text(embed_backend="down"))) as engine:
        rag = engine.plugins.get_plugin("rag")
        report = await rag.add([DOCS])  # type: ignore[attr-defined]
        assert report.count("added") == 5
        assert report.embed_error is not None
        assert "embed backend 'down' failed: BackendUnavailable" in report.embed_error
        reply = await engine.conversation().send("refund policy")
        assert [Path(c["document"]).name for c in reply.metadata["citations"]] == ["faq.txt"]
        assert engine.plugins.get_plugin_status()["rag"].failures == 0
    assert "retrieving by BM25 only" in caplog.text


async def test_a_bad_setting_names_the_config_key(write_config: WriteConfig) -> None:
    path = write_config(config_text(chunk_chars=300, overlap_chars=200))
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config\.overlap_chars: .*half"):
        async with open_engine(path):
            pass
