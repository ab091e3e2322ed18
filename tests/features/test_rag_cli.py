"""`chatcore rag ...` as a user runs it: add, search, list, remove; exit codes and output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import RAG_DOCS, subprocess_env
from test_rag_index import SYNONYM_DOCS
from test_rag_ingest import make_pdf

from chatcore.cli import cli
from chatcore.messages import citation_lines
from features._rag_index import Hit
from features.rag import add_passages

DOCS = RAG_DOCS
CHATCORE = str(Path(sys.executable).with_name("chatcore"))


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A copy of the sample documents that tests may change."""
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy)
    return copy.resolve()


def test_add_reports_progress_and_a_summary_and_readding_is_a_no_op(docs: Path) -> None:
    result = run("rag", "add", str(docs))
    assert (result.exit_code, result.stdout) == (0, "added 5, updated 0, unchanged 0, skipped 1\n")
    assert "Adding documents" in result.stderr

    again = run("rag", "add", str(docs))
    assert (again.exit_code, again.stdout) == (0, "added 0, updated 0, unchanged 5, skipped 1\n")

    (docs / "faq.txt").write_text("Shipping takes three days.\n")
    (docs / "new.md").write_text("# New\n\nFresh text.\n")
    changed = run("rag", "add", str(docs))
    assert changed.stdout == "added 1, updated 1, unchanged 4, skipped 1\n"
    assert run_json("rag", "search", "refund") == []
    assert [Path(h["document"]).name for h in run_json("rag", "search", "shipping")] == ["faq.txt"]


def test_binary_and_undecodable_files_are_skipped_with_a_warning_naming_them(
    docs: Path,
) -> None:
    (docs / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (docs / "latin1.md").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    result = run("rag", "add", str(docs))
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {docs / 'image.txt'}: binary file, not text (it contains NUL bytes); skipped",
        f"warning: {docs / 'latin1.md'}: not UTF-8 text (byte 0xe9 at offset 3); "
        "convert it to UTF-8 first; skipped",
    ]
    assert "error:" not in result.stderr
    assert result.stdout == "added 5, updated 0, unchanged 0, skipped 3\n"
    assert sorted(Path(d["path"]).name for d in run_json("rag", "list")) == [
        "config.rst",
        "faq.txt",
        "install.md",
        "solar.html",
        "tortoise.md",
    ]
    report = run_json("rag", "add", str(docs / "latin1.md"))
    assert report["warnings"] == [
        {
            "path": str(docs / "latin1.md"),
            "warning": "not UTF-8 text (byte 0xe9 at offset 3); convert it to UTF-8 first",
        }
    ]
    assert (report["skipped"], report["failed"]) == (1, [])


def test_a_corrupt_pdf_alone_exits_1_and_the_others_are_added(docs: Path) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    result = run("rag", "add", str(docs))
    assert result.exit_code == 1
    assert result.stdout == "added 5, updated 0, unchanged 0, skipped 1, failed 1\n"


def test_a_corrupt_pdf_is_a_named_error_the_others_are_added_and_a_missing_path_exits_2(
    docs: Path,
) -> None:
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    (docs / "report.pdf").write_bytes(make_pdf(["Harvest outlook\nThe barley looks strong."]))
    result = run("rag", "add", str(docs), str(docs / "missing.md"))
    # A path that is not there is bad input (2); a file that can't be read, a failure (1).
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert errors[0] == f"error: {docs / 'missing.md'}: no such file or directory"
    assert errors[1].startswith(f"error: {docs / 'broken.pdf'}: not a readable PDF (")
    # pypdf's own complaints stay out of the user's way: one line per bad file.
    assert len(result.stderr.splitlines()) == 3  # the progress label and two errors
    assert result.stdout == "added 6, updated 0, unchanged 0, skipped 1, failed 2\n"
    listed = {Path(d["path"]).name: d["chunks"] for d in run_json("rag", "list")}
    assert listed == {
        "config.rst": 4,
        "faq.txt": 1,
        "install.md": 5,
        "report.pdf": 1,
        "solar.html": 3,
        "tortoise.md": 1,
    }


def test_add_json_lists_each_document(docs: Path) -> None:
    report = run_json("rag", "add", str(docs / "install.md"), str(docs / "notes"))
    assert {k: report[k] for k in ("added", "updated", "unchanged", "skipped", "failed")} == {
        "added": 2,
        "updated": 0,
        "unchanged": 0,
        "skipped": 1,
        "failed": [],
    }
    assert [(Path(d["path"]).name, d["status"], d["chunks"]) for d in report["documents"]] == [
        ("install.md", "added", 5),
        ("tortoise.md", "added", 1),
    ]


def test_search_json_has_exactly_document_chunk_score_text(docs: Path) -> None:
    run("rag", "add", str(docs))
    hits = run_json("rag", "search", "how do I clean solar panels")
    assert hits and all(set(hit) == {"document", "chunk", "score", "text"} for hit in hits)
    assert hits[0]["document"] == str(docs / "solar.html")
    assert hits[0]["chunk"] == 1
    assert hits[0]["text"].startswith("Clean the panels twice a year")
    assert isinstance(hits[0]["score"], float)
    assert len(run_json("rag", "search", "widget", "--limit", "2")) == 2

    text = run("rag", "search", "hibernate tortoise")
    assert text.exit_code == 0
    assert text.stdout.splitlines()[0].startswith(
        f"[1] {docs / 'notes/deep/tortoise.md'} > Tortoise Notes (chunk 0, score "
    )
    assert "Tortoises hibernate through the winter" in text.stdout


@pytest.mark.parametrize("query", ['"', "AND", "NEAR(", "solar*", "heading:x", "*"])
def test_search_with_fts_syntax_in_the_query_does_not_fail(docs: Path, query: str) -> None:
    run("rag", "add", str(docs / "solar.html"))
    result = run("rag", "search", query, "--json")
    assert result.exit_code == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_list_and_remove_by_path_folder_and_id(docs: Path) -> None:
    assert run("rag", "list").stdout == (
        "no documents yet (add some with `chatcore rag add PATH`)\n"
    )
    run("rag", "add", str(docs))
    documents = run_json("rag", "list")
    assert [Path(d["path"]).name for d in documents] == [
        "config.rst",
        "faq.txt",
        "install.md",
        "tortoise.md",
        "solar.html",
    ]
    assert set(documents[0]) == {"id", "path", "title", "size", "added_at", "chunks", "embedded"}
    human = run("rag", "list").stdout.splitlines()
    assert human[2] == f"{documents[2]['id']}      5 chunks  {docs / 'install.md'}  (Widget Guide)"

    removed = run("rag", "remove", str(docs / "faq.txt"), documents[0]["id"])
    assert removed.exit_code == 0
    assert removed.stdout.splitlines() == [
        f"removed {docs / 'faq.txt'} (1 chunks)",
        f"removed {docs / 'config.rst'} (4 chunks)",
    ]
    assert run_json("rag", "search", "refund policy") == []

    folder = run("rag", "remove", str(docs / "notes"), "no-such-doc")
    assert folder.exit_code == 2  # bad input: nothing of that name
    assert folder.stdout == f"removed {docs / 'notes/deep/tortoise.md'} (1 chunks)\n"
    assert folder.stderr == "error: no document matches 'no-such-doc' (see `chatcore rag list`)\n"
    assert [Path(d["path"]).name for d in run_json("rag", "list")] == ["install.md", "solar.html"]


def embed_config(tmp_path: Path, backend: str) -> Path:
    config = tmp_path / "rag.toml"
    config.write_text(
        f"""
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.hash]
plugin = "test_rag_index:HashEmbedder"
model = "hash-v1"
[backends.down]
plugin = "test_rag_index:DownEmbedder"
[[plugins]]
plugin = "rag"
[plugins.config]
embed_backend = "{backend}"
"""
    )
    return config


def test_with_an_embed_backend_add_embeds_and_search_is_hybrid(tmp_path: Path) -> None:
    folder = tmp_path / "cars"
    folder.mkdir()
    for name, text in SYNONYM_DOCS.items():
        (folder / name).write_text(text)
    config = str(embed_config(tmp_path, "hash"))
    result = run("--config", config, "rag", "add", str(folder))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"added {len(SYNONYM_DOCS)}, updated 0, unchanged 0, skipped 0; "
        f"embedded {len(SYNONYM_DOCS)} chunks\n"
    )
    assert "Embedding" in result.stderr
    hits = run_json("--config", config, "rag", "search", "automobile")
    assert [Path(h["document"]).name for h in hits] == ["c.txt", "a.txt", "b.txt"]
    # Without the embed backend, BM25 alone cannot see the synonyms.
    assert [Path(h["document"]).name for h in run_json("rag", "search", "automobile")] == [
        "a.txt",
        "c.txt",
    ]
    assert all(d["embedded"] == 1 for d in run_json("rag", "list"))


def test_an_unreachable_embed_backend_is_one_warning_and_bm25_still_works(
    docs: Path, tmp_path: Path
) -> None:
    config = str(embed_config(tmp_path, "down"))
    result = run("--config", config, "rag", "add", str(docs))
    assert (result.exit_code, result.stdout) == (0, "added 5, updated 0, unchanged 0, skipped 1\n")
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    assert "embed backend 'down' failed: BackendUnavailable" in warnings[0]
    assert "searchable by BM25" in warnings[0]

    search = run("--config", config, "rag", "search", "refund policy", "--json")
    assert search.exit_code == 0
    assert [Path(h["document"]).name for h in json.loads(search.stdout)] == ["faq.txt"]
    assert search.stderr.count("warning:") == 1
    assert "using BM25 only" in search.stderr


def test_a_bad_rag_setting_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[plugins]]\nplugin = "rag"\n[plugins.config]\ntop_k = 0\n')
    result = run("--config", str(config), "rag", "list")
    assert result.exit_code == 2
    assert f"{config}: plugins[0].config.top_k:" in result.stderr


@pytest.mark.slow
def test_the_installed_command_adds_and_searches(docs: Path) -> None:
    def chatcore(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHATCORE, "rag", *args],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    added = chatcore("add", str(docs))
    assert (added.returncode, added.stdout) == (0, "added 5, updated 0, unchanged 0, skipped 1\n")
    found = chatcore("search", "--json", "zephyrwidget")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["document"] == str(docs / "install.md")


def test_citations_the_feature_attaches_print_with_the_one_shared_formatter() -> None:
    from chatcore import ChatContext, Message, Role
    from chatcore.messages import REPLY_METADATA

    hits = [
        Hit(1, "d1", "/d/install.md", "Guide", 3, "Install > Linux", "apt-get it", 0.4213),
        Hit(2, "d2", "/d/faq.txt", "faq.txt", 0, "", "Refunds in 30 days.", 2),
    ]
    context = ChatContext("c1", messages=(Message(role=Role.USER, content="install?"),))
    cited = add_passages(context, hits).metadata[REPLY_METADATA]["citations"]
    assert citation_lines(cited) == [
        "[1] /d/install.md > Install > Linux (chunk 3, score 0.42)",
        "[2] /d/faq.txt (chunk 0, score 2.00)",
    ]


def test_adding_an_empty_folder_adds_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("rag", "add", str(empty))
    assert (result.exit_code, result.stdout) == (0, "added 0, updated 0, unchanged 0, skipped 0\n")
