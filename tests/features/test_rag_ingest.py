"""RAG ingest: real files into a real, migrated SQLite file; chunking by structure."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import RAG_DOCS
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.store import Store
from features._ingest import (
    Block,
    IngestError,
    chunk_blocks,
    discover,
    parse_markdown,
    parse_rst,
    piece_limit,
)
from features._rag_index import RagIndex

DOCS = RAG_DOCS


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one text line per line of each page (Helvetica)."""
    page_ids = [4 + 2 * i for i in range(len(pages))]
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for page_id, text in zip(page_ids, pages, strict=True):
        shown = " ".join(f"({line}) Tj T*" for line in text.split("\n"))
        stream = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode()
        objects[page_id] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>"
        ).encode()
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[i] for i in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


@pytest.fixture
def index(tmp_path: Path) -> Any:
    db = tmp_path / "rag.db"
    Store(db).close()  # the engine's file: the store's tables beside the index's
    with RagIndex(db) as opened:
        yield opened


def add(index: RagIndex, path: Path, **kwargs: int) -> Any:
    return index.ingest_file(
        path, chunk_chars=kwargs.get("chunk_chars", 1200), overlap_chars=kwargs.get("overlap", 200)
    )


def chunk_rows(db: Path, name: str | None = None) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        sql = (
            "SELECT d.path, c.ordinal, c.heading, c.text FROM chunks c "
            "JOIN documents d ON d.id = c.document_id"
        )
        rows = conn.execute(sql + " ORDER BY d.path, c.ordinal").fetchall()
    return [r for r in rows if name is None or Path(r[0]).name == name]


def headings(index: RagIndex, name: str) -> list[str | None]:
    return [row[2] for row in chunk_rows(index.path, name)]


# --------------------------------------------------------------------------- formats


def test_markdown_chunks_carry_their_heading_path(index: RagIndex) -> None:
    outcome = add(index, DOCS / "install.md")
    assert (outcome.status, outcome.chunks) == ("added", 5)
    assert headings(index, "install.md") == [
        "Widget Guide",
        "Widget Guide > Install",
        "Widget Guide > Install > Linux",
        "Widget Guide > Install > Windows",
        "Widget Guide > Usage",
    ]
    linux = chunk_rows(index.path, "install.md")[2][3]
    assert linux.startswith("Install the package with `sudo apt-get install zephyrwidget`")
    assert index.list_documents()[0].title == "Widget Guide"


def test_markdown_fenced_code_is_never_a_heading_and_setext_headings_are() -> None:
    text = (
        "Top\n===\n\nintro\n\n```sh\n# a comment, not a heading\n\necho hi\n```\n\nSub\n---\n\nend"
    )
    parsed = parse_markdown(text, name="x.md")
    assert [(b.headings, b.text) for b in parsed.blocks] == [
        (("Top",), "intro"),
        (("Top",), "```sh\n# a comment, not a heading\n\necho hi\n```"),
        (("Top", "Sub"), "end"),
    ]
    assert parsed.title == "Top"  # final once the blocks were read


def test_a_late_first_heading_still_titles_the_stored_document(
    index: RagIndex, tmp_path: Path
) -> None:
    path = tmp_path / "late.md"
    path.write_text("Some preamble.\n\n# The Real Title\n\nBody text.\n")
    add(index, path)
    assert [d.title for d in index.list_documents()] == ["The Real Title"]


def test_rst_titles_nest_by_the_order_their_styles_appear(index: RagIndex) -> None:
    add(index, DOCS / "config.rst")
    assert headings(index, "config.rst") == [
        "Configuration",
        "Configuration > Colours",
        "Configuration > Colours > Keybindings",
        "Configuration > Logging",
    ]
    assert index.list_documents()[0].title == "Configuration"
    # A transition line (punctuation alone between blank lines) is not text.
    parsed = parse_rst("Title\n=====\n\none\n\n----\n\ntwo\n", name="x.rst")
    assert [b.text for b in parsed.blocks] == ["one", "two"]


def test_html_uses_h1_to_h6_and_leaves_out_script_and_style(index: RagIndex) -> None:
    add(index, DOCS / "solar.html")
    rows = chunk_rows(index.path, "solar.html")
    assert [r[2] for r in rows] == [
        "Solar Panels",
        "Solar Panels > Cleaning",
        "Solar Panels > Inverters",
    ]
    assert rows[0][3] == "Photovoltaic panels turn sunlight into electricity & save money."
    assert rows[1][3] == (
        "Clean the panels twice a year with soft water and a sponge.\n\n"
        "Never use a pressure washer.\n\nWork in the early morning."
    )
    everything = " ".join(r[3] for r in rows)
    assert "secretscripttoken" not in everything
    assert "secretstyletoken" not in everything
    assert index.list_documents()[0].title == "Solar Panels Handbook"


def test_plain_text_is_paragraphs_without_headings(index: RagIndex) -> None:
    add(index, DOCS / "faq.txt", chunk_chars=150, overlap=30)
    rows = chunk_rows(index.path, "faq.txt")
    assert all(r[2] is None for r in rows)
    assert rows[0][3].startswith("Frequently asked questions about Widget.")
    assert any("thirty days" in r[3] for r in rows)
    assert index.list_documents()[0].title == "faq.txt"


def test_pdf_pages_become_chunks_under_page_headings(index: RagIndex, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_pdf(["Quarterly report\nRevenue grew by nine percent.", "Outlook"]))
    outcome = add(index, pdf)
    assert (outcome.status, outcome.chunks) == ("added", 2)
    rows = chunk_rows(index.path, "report.pdf")
    assert [(r[2], r[3]) for r in rows] == [
        ("Page 1", "Quarterly report\nRevenue grew by nine percent."),
        ("Page 2", "Outlook"),
    ]
    assert index.search_bm25("revenue", limit=3)[0].heading == "Page 1"


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf\n", "not a readable PDF"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("latin1.md", "caf\xe9 cr\xe8me".encode("latin-1"), r"not UTF-8 text \(byte 0xe9"),
    ],
)
def test_unreadable_files_raise_a_named_error_and_store_nothing(
    index: RagIndex, tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError, match=problem):
        add(index, path)
    assert index.list_documents() == []


# --------------------------------------------------------------------------- re-adding


def snapshot(db: Path) -> tuple[list[Any], list[Any]]:
    with sqlite3.connect(db) as conn:
        documents = conn.execute("SELECT * FROM documents ORDER BY id").fetchall()
        chunks = conn.execute("SELECT * FROM chunks ORDER BY id").fetchall()
    return documents, chunks


def test_readding_an_unchanged_file_changes_no_row(index: RagIndex) -> None:
    first = add(index, DOCS / "install.md")
    before = snapshot(index.path)
    again = add(index, DOCS / "install.md")
    assert (again.status, again.document_id, again.chunks) == ("unchanged", first.document_id, 5)
    assert snapshot(index.path) == before


def test_a_changed_file_replaces_its_chunks(index: RagIndex, tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\nThe llama eats grass.\n\n## More\n\nThe alpaca eats hay.\n")
    first = add(index, path)
    assert first.chunks == 2
    path.write_text("# Notes\n\nThe heron eats fish.\n")
    second = add(index, path)
    assert (second.status, second.document_id, second.chunks) == ("updated", first.document_id, 1)
    assert [r[3] for r in chunk_rows(index.path, "notes.md")] == ["The heron eats fish."]
    assert index.search_bm25("llama alpaca", limit=5) == []
    assert [h.text for h in index.search_bm25("heron", limit=5)] == ["The heron eats fish."]
    (document,) = index.list_documents()
    assert document.chunks == 1


def test_other_chunk_settings_rechunk_an_unchanged_file(index: RagIndex) -> None:
    add(index, DOCS / "faq.txt")
    outcome = add(index, DOCS / "faq.txt", chunk_chars=120, overlap=20)
    assert outcome.status == "updated"
    assert outcome.chunks > 1


def test_removing_a_document_removes_its_chunks_from_search(index: RagIndex) -> None:
    add(index, DOCS / "faq.txt")
    add(index, DOCS / "install.md")
    assert index.search_bm25("refund", limit=3)
    removed = index.remove(str(DOCS / "faq.txt"))
    assert [Path(d.path).name for d in removed] == ["faq.txt"]
    assert index.search_bm25("refund", limit=3) == []
    assert [Path(d.path).name for d in index.list_documents()] == ["install.md"]
    assert index.remove("no-such-document") == []


# --------------------------------------------------------------------------- folders


def test_folders_are_walked_recursively_skipping_hidden_and_unsupported_files() -> None:
    found = discover([DOCS])
    names = sorted(p.relative_to(DOCS.resolve()).as_posix() for p in found.files)
    assert names == ["config.rst", "faq.txt", "install.md", "notes/deep/tortoise.md", "solar.html"]
    assert [p.name for p in found.skipped] == ["inventory.csv"]
    assert found.missing == []
    assert all(p.is_absolute() for p in found.files)


def test_discover_reports_missing_paths_and_dedupes(tmp_path: Path) -> None:
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy)
    found = discover([copy, copy / "faq.txt", tmp_path / "nowhere.md"])
    assert len(found.files) == 5
    assert found.missing == [tmp_path / "nowhere.md"]


# --------------------------------------------------------------------------- chunking

_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=30)
_paragraphs = st.lists(_words, min_size=1, max_size=60).map(" ".join)
_sections = st.lists(
    st.tuples(st.sampled_from([(), ("A",), ("A", "B"), ("C",)]), st.lists(_paragraphs, min_size=1)),
    min_size=1,
    max_size=5,
)


def _blocks(sections: list[tuple[tuple[str, ...], list[str]]]) -> list[Block]:
    return [Block(heading, text) for heading, texts in sections for text in texts]


def _shared_edge(left: str, right: str, most: int) -> int:
    """Length of the longest suffix of ``left`` (at most ``most``) that starts ``right``."""
    return max((n for n in range(1, most + 1) if right.startswith(left[-n:])), default=0)


@settings(max_examples=60, deadline=None)
@given(
    sections=_sections,
    chunk_chars=st.integers(min_value=100, max_value=600),
    overlap_ratio=st.floats(min_value=0.0, max_value=0.5),
    long_word=st.integers(min_value=0, max_value=1500),
)
def test_chunker_keeps_every_word_respects_the_bound_and_overlaps(
    sections: list[tuple[tuple[str, ...], list[str]]],
    chunk_chars: int,
    overlap_ratio: float,
    long_word: int,
) -> None:
    overlap = int(chunk_chars * overlap_ratio)
    if long_word:
        sections = [*sections, (("Z",), ["start " + "x" * long_word + " end"])]
    blocks = _blocks(sections)
    chunks = list(chunk_blocks(blocks, chunk_chars=chunk_chars, overlap_chars=overlap))
    limit = piece_limit(chunk_chars, overlap)

    # The size bound holds for every chunk, even one cut out of a giant word.
    assert all(0 < len(c.text) <= chunk_chars for c in chunks)
    for block in blocks:
        heading = " > ".join(block.headings)
        mine = [c.text for c in chunks if c.heading == heading]
        # Nothing is lost: a paragraph that fits a chunk is in one whole...
        if len(block.text) <= limit:
            assert any(block.text in text for text in mine)
            continue
        # ...and every word of a longer one is whole in some chunk (a giant word in slices).
        words = {word for text in mine for word in text.split()}
        joined = " ".join(mine)
        for word in set(block.text.split()):
            if len(word) <= limit:
                assert word in words, word
            else:
                assert word[:limit] in joined
    # A split section repeats the end of each chunk at the start of the next.
    for left, right in itertools.pairwise(chunks):
        if left.heading == right.heading and overlap > 0:
            assert _shared_edge(left.text, right.text, overlap) > 0


def test_a_long_section_splits_with_overlap_and_keeps_its_heading() -> None:
    sentences = [f"Sentence number {n} talks about irrigation valves." for n in range(60)]
    blocks = [Block(("Guide", "Valves"), " ".join(sentences[i : i + 5])) for i in range(0, 60, 5)]
    chunks = list(chunk_blocks(blocks, chunk_chars=400, overlap_chars=80))
    assert len(chunks) > 5
    assert {c.heading for c in chunks} == {"Guide > Valves"}
    assert all(len(c.text) <= 400 for c in chunks)
    for left, right in itertools.pairwise(chunks):
        assert 0 < _shared_edge(left.text, right.text, 80) <= 80


def test_chunk_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="overlap_chars must be between 0 and half"):
        list(chunk_blocks([Block((), "text")], chunk_chars=100, overlap_chars=60))


# --------------------------------------------------------------------------- a large file

BIG_FILE_BYTES = 50_000_000
PEAK_LIMIT = 2.5
"""Peak Python memory while ingesting, as a multiple of the file's size: the bytes and
the decoded text (2x) with room to spare. Lists of lines, paragraphs or chunks would
each add about another 1x (the old reader peaked at about 3.5x)."""


@pytest.mark.slow
def test_a_50_mb_file_is_chunked_without_holding_its_chunks(
    index: RagIndex, tmp_path: Path
) -> None:
    import tracemalloc

    path = tmp_path / "big.md"
    words = ["solar", "panel", "tortoise", "widget", "harvest", "barley", "linux", "refund"]
    body = " ".join(itertools.islice(itertools.cycle(words), 90))
    with path.open("w", encoding="utf-8") as out:
        section = 0
        while out.tell() < BIG_FILE_BYTES:
            out.write(f"## Section {section}\n\n{body} {section}.\n\n{body}.\n\n")
            section += 1
    size = path.stat().st_size
    tracemalloc.start()
    try:
        outcome = add(index, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.status == "added"
    # Each paragraph is ~600 characters: two do not fit one 1,200-character chunk.
    assert outcome.chunks == 2 * section
    print(f"peak {peak / size:.2f}x of {size / 1e6:.0f} MB")
    assert peak < PEAK_LIMIT * size, f"peak {peak / size:.2f}x the file size"
    last = index.search_bm25(f"{section - 1}", limit=1)
    assert last[0].heading == f"Section {section - 1}"
