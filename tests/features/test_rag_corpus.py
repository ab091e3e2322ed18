"""Acceptance: RAG over a few hundred real documents that every Python ships.

The corpus is built at test time, never downloaded: one Markdown file per stdlib
module with a real docstring (read with ``ast``, nothing is imported) and one
text file per pydoc topic.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import sqlite3
import sysconfig
from collections import Counter
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import pytest
import trio
from click.testing import CliRunner
from test_rag_index import DIMS

from chatcore.cli import cli
from chatcore.store import Store
from features._rag_index import _STOPWORDS as STOPWORDS
from features._rag_index import RagIndex
from features.rag import Embedder, RagSettings, add_files, embed_missing, retrieve

MIN_DOCSTRING = 150
"""Shorter docstrings ("Constants for ...") say too little to be a document."""
SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages"})

QUESTIONS = {
    "Is there filename matching with shell patterns, taking case into account?": "fnmatch.md",
    "Which algorithm keeps a priority queue as a heap?": "heapq.md",
    "How can I convert RGB colors to HSV or HLS?": "colorsys.md",
    "I need a general purpose event scheduler": "sched.md",
    "compute the delta between two sequences and find close matches": "difflib.md",
}
"""Questions whose answer is in one module's docstring, and that module's document."""


def module_docstrings() -> dict[str, str]:
    """Dotted module name → its docstring, for the stdlib's .py files (parsed, not imported)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, str] = {}
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if SKIPPED_DIRS & set(relative.parts[:-1]):
            continue
        try:
            docstring = ast.get_docstring(ast.parse(path.read_bytes()))
        except (SyntaxError, ValueError):
            continue  # a few files are templates or deliberately broken test data
        if docstring and len(docstring) >= MIN_DOCSTRING:
            parts = relative.with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = docstring
    return found


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, docstring in module_docstrings().items():
        (folder / f"{name}.md").write_text(f"# {name}\n\n{docstring}\n", encoding="utf-8")
    topic_dir = folder / "topics"
    topic_dir.mkdir()
    for name, text in topics.items():
        (topic_dir / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def indexed(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A database with the whole corpus added and embedded (hash embedder); and file count."""
    db = tmp_path_factory.mktemp("corpus_db") / "rag.db"
    Store(db).close()
    files = sorted(p for p in corpus.rglob("*") if p.is_file())

    async def add() -> None:
        with RagIndex(db) as index:
            report = await add_files(index, files, settings=RagSettings())
            assert (report.failed, report.warnings) == ([], [])
            await embed_missing(index, EMBEDDER, batch_size=256)

    trio.run(add)
    return db, len(files)


def stem_vector(text: str) -> list[float]:
    """A deterministic stand-in for an embedding model: content-word stems, hashed.

    Stopwords are dropped, words cut to 6 letters (so "scheduler" meets "schedule")
    and counts damped by a log, so a few shared topic words decide the similarity.
    """
    counts = Counter(
        word[:6] for word in re.findall(r"[a-z]+", text.lower()) if word not in STOPWORDS
    )
    vector = [0.0] * DIMS
    for stem, count in counts.items():
        bucket = int.from_bytes(hashlib.sha256(stem.encode()).digest()[:4], "little") % DIMS
        vector[bucket] += 1.0 + math.log(count)
    return vector


class _StemProvider:
    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [stem_vector(text) for text in texts]


EMBEDDER = Embedder("stems", "stems:corpus", _StemProvider())


def test_the_corpus_is_a_few_hundred_real_documents(corpus: Path) -> None:
    files = list(corpus.rglob("*.md")) + list(corpus.rglob("*.txt"))
    assert len(files) >= 300
    assert {answer for answer in QUESTIONS.values()} <= {p.name for p in files}


@pytest.mark.parametrize("question", list(QUESTIONS))
async def test_a_question_finds_the_document_with_its_answer_in_the_top_3(
    indexed: tuple[Path, int], question: str
) -> None:
    db, _ = indexed
    settings = RagSettings(top_k=3)
    with RagIndex(db) as index:
        bm25 = await retrieve(index, question, settings=settings)
        hybrid = await retrieve(index, question, settings=settings, embedder=EMBEDDER)
    assert QUESTIONS[question] in [Path(h.path).name for h in bm25]
    assert QUESTIONS[question] in [Path(h.path).name for h in hybrid]


def rows(db: Path) -> tuple[list[Any], list[Any]]:
    with sqlite3.connect(db) as conn:
        documents = conn.execute("SELECT * FROM documents ORDER BY id").fetchall()
        chunks = conn.execute("SELECT * FROM chunks ORDER BY id").fetchall()
    return documents, chunks


def test_readding_is_a_no_op_and_a_removed_file_leaves_search(corpus: Path, data_dir: Path) -> None:
    def run(*args: str) -> Any:
        result = CliRunner().invoke(cli, ["rag", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        return result

    files = len([p for p in corpus.rglob("*") if p.is_file()])
    first = run("add", str(corpus))
    assert first.stdout == f"added {files}, updated 0, unchanged 0, skipped 0\n"
    db = data_dir / "chatcore.db"
    before = rows(db)

    again = json.loads(run("add", "--json", str(corpus)).stdout)
    assert {d["status"] for d in again["documents"]} == {"unchanged"}
    assert len(again["documents"]) == files
    assert rows(db) == before

    question = "Is there filename matching with shell patterns, taking case into account?"
    target = str(corpus / "fnmatch.md")
    hits = json.loads(run("search", "--json", "--limit", "3", question).stdout)
    assert target in [h["document"] for h in hits]

    assert run("remove", target).stdout.startswith(f"removed {target} (")
    hits = json.loads(run("search", "--json", "--limit", "50", question).stdout)
    assert hits
    assert target not in [h["document"] for h in hits]
    # Only that document named the module: nothing is left to find.
    assert json.loads(run("search", "--json", "fnmatch fnmatchcase").stdout) == []
    assert len(rows(db)[0]) == files - 1
