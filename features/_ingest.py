"""Reading documents for RAG and cutting them into chunks along their structure.

Each reader turns one file into ``Block``s: a paragraph of text and the path of
headings it sits under. ``chunk_blocks`` then packs the paragraphs of each
section into chunks of at most ``chunk_chars`` characters, repeating the tail
of a chunk at the start of the next one when a section needs several.

Everything after decoding is lazy: the text is held once, and lines, blocks and
chunks are generated as they are consumed, so a 50 MB file never exists as a
list of lines, paragraphs or chunks.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

__all__ = [
    "DEFAULT_CHUNK_CHARS",
    "DEFAULT_OVERLAP_CHARS",
    "FORMATS",
    "HEADING_SEPARATOR",
    "Block",
    "ChunkDraft",
    "Discovery",
    "IngestError",
    "NotText",
    "ParsedDocument",
    "chunk_blocks",
    "discover",
    "parse_bytes",
    "parse_html",
    "parse_markdown",
    "parse_pdf",
    "parse_rst",
    "parse_text",
]

DEFAULT_CHUNK_CHARS = 1200
DEFAULT_OVERLAP_CHARS = 200
HEADING_SEPARATOR = " > "
PARAGRAPH_SEPARATOR = "\n\n"
SPLIT_PIECES = 4
"""A paragraph too long for one chunk is cut into pieces of about 1/4 of a chunk."""
BINARY_SNIFF_BYTES = 8192
"""A NUL byte in this many leading bytes marks a file as binary, not text."""

FORMATS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
"""File suffix (lower case) → format name; anything else is skipped."""


class IngestError(Exception):
    """A file could not be read as a document (binary, undecodable, corrupt PDF...)."""


class NotText(IngestError):
    """A text-format file that is binary or not UTF-8: skipped with a warning, not a failure.

    Such a file is usually a stray (an image renamed ``.txt``, a legacy-encoded
    note) among good ones; a damaged PDF stays a plain ``IngestError``, a failure.
    """


@dataclass(frozen=True, slots=True)
class Block:
    """One paragraph and the headings above it, outermost first."""

    headings: tuple[str, ...]
    text: str


@dataclass(slots=True)
class _Title:
    """The title a reader settles on while it reads (front matter, <title>, first h1)."""

    fallback: str
    found: str | None = None

    def get(self) -> str:
        return self.found or self.fallback


@dataclass(slots=True)
class ParsedDocument:
    """A document being read: its paragraphs in order, produced lazily as they are consumed.

    ``title`` is final once ``blocks`` is exhausted (a first-level heading may come
    late); before that it may still be the fallback (the file name).
    """

    format: str
    blocks: Iterator[Block]
    _title: _Title = field(repr=False)

    @property
    def title(self) -> str:
        return self._title.get()


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    """A chunk before it is stored: its heading path ("Install > Linux") and text."""

    heading: str
    text: str


# --------------------------------------------------------------------------- finding files


@dataclass(frozen=True, slots=True)
class Discovery:
    """The files to ingest, what was skipped (hidden or unsupported) and what is missing."""

    files: list[Path]
    skipped: list[Path]
    missing: list[Path]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def discover(paths: Iterable[Path | str]) -> Discovery:
    """Expand files and folders (recursively) into the supported files, resolved and sorted.

    Hidden files and folders (a name starting with ".") inside a folder are left
    out silently; unsupported files count as skipped.
    """
    files: dict[Path, None] = {}
    skipped: list[Path] = []
    missing: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
                for name in sorted(names):
                    if _is_hidden(name):
                        continue
                    found = Path(root, name)
                    if found.suffix.lower() in FORMATS and found.is_file():
                        files.setdefault(found.resolve(), None)
                    else:
                        skipped.append(found)
        elif path.is_file():
            if path.suffix.lower() in FORMATS:
                files.setdefault(path.resolve(), None)
            else:
                skipped.append(path)
        else:
            missing.append(path)
    return Discovery(files=list(files), skipped=skipped, missing=missing)


# --------------------------------------------------------------------------- decoding


def decode_text(data: bytes) -> str:
    """UTF-8 text (newlines are left to the line readers, so the text is not copied again).

    Raises:
        NotText: the data is binary (NUL bytes near the start) or not UTF-8.
    """
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise NotText("binary file, not text (it contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotText(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it to UTF-8 first"
        ) from None


_NEWLINE = re.compile(r"\r\n|\r|\n")


def iter_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` (any newline convention) one at a time, like ``split("\\n")``.

    A generator rather than a list: a large file's lines are never all in memory.
    """
    start = 0
    for newline in _NEWLINE.finditer(text):
        yield text[start : newline.start()]
        start = newline.end()
    yield text[start:]


def parse_bytes(data: bytes, *, format: str, name: str) -> ParsedDocument:
    """Parse a file's bytes as ``format`` (a value of ``FORMATS``); ``name`` is the fallback title.

    Text is decoded here, eagerly, so the caller can drop ``data`` before reading
    the blocks; the blocks themselves are produced lazily.

    Raises:
        IngestError: the bytes are not a readable document of that format
            (``NotText`` when a text format is binary or not UTF-8).
    """
    if format == "pdf":
        return parse_pdf(data, name=name)
    text = decode_text(data)
    if format == "markdown":
        return parse_markdown(text, name=name)
    if format == "rst":
        return parse_rst(text, name=name)
    if format == "html":
        return parse_html(text, name=name)
    if format == "text":
        return parse_text(text, name=name)
    raise ValueError(f"unknown document format {format!r}")


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


# --------------------------------------------------------------------------- plain text


def parse_text(text: str, *, name: str) -> ParsedDocument:
    """Plain text: paragraphs separated by blank lines, no headings."""

    def blocks() -> Iterator[Block]:
        sections = _Sections()
        for line in iter_lines(text):
            if line.strip(" \t"):
                sections.lines.append(line)
            else:
                sections.flush()
                yield from sections.drain()
        sections.flush()
        yield from sections.drain()

    return ParsedDocument("text", blocks(), _Title(name))


# --------------------------------------------------------------------------- Markdown

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FRONT_TITLE = re.compile(r"^title:\s*(.+?)\s*$", re.MULTILINE)


class _Sections:
    """The heading stack and paragraphs collected so far, shared by the readers."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []
        self.blocks: list[Block] = []
        self.lines: list[str] = []
        self.first_top: str | None = None

    def heading(self, level: int, text: str) -> None:
        self.flush()
        text = " ".join(text.split())
        if not text:
            return
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        if level == 1 and self.first_top is None:
            self.first_top = text

    def flush(self) -> None:
        paragraph = "\n".join(self.lines).strip()
        self.lines = []
        if paragraph:
            self.blocks.append(Block(tuple(t for _, t in self.stack), paragraph))

    def drain(self) -> list[Block]:
        """The blocks completed since the last drain (readers yield them as they go)."""
        done, self.blocks = self.blocks, []
        return done


def parse_markdown(text: str, *, name: str) -> ParsedDocument:
    """Markdown: ATX (``#``) and setext headings; fenced code is one paragraph, never a heading."""
    title = _Title(name)
    return ParsedDocument("markdown", _markdown_blocks(iter_lines(text), title), title)


def _front_matter(lines: Iterator[str], title: _Title) -> Iterator[str]:
    """The lines after YAML front matter (its ``title:`` is kept); all lines if there is none."""
    first = next(lines, None)
    if first is None:
        return
    if first.strip() != "---":
        yield first
        yield from lines
        return
    held = [first]
    for line in lines:
        if line.strip() in ("---", "..."):
            found = _FRONT_TITLE.search("\n".join(held[1:]))
            if found:
                title.found = found.group(1).strip("'\"")
            yield from lines
            return
        held.append(line)
    # Never closed: not front matter after all, just text.
    yield from held


def _markdown_blocks(lines: Iterator[str], title: _Title) -> Iterator[Block]:
    sections = _Sections()
    fence: str | None = None
    for line in _front_matter(lines, title):
        if fence is not None:
            sections.lines.append(line)
            if line.strip().startswith(fence):
                fence = None
            continue
        opened = _FENCE.match(line)
        if opened:
            fence = opened.group(1)
            sections.lines.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            sections.heading(len(atx.group(1)), atx.group(2) or "")
        elif (
            (underline := _SETEXT.match(line))
            and len(sections.lines) == 1
            and sections.lines[0].strip()
        ):
            level = 1 if underline.group(1).startswith("=") else 2
            sections.heading(level, sections.lines.pop())
        elif not line.strip():
            sections.flush()
        else:
            sections.lines.append(line)
            continue
        # A heading or a blank line completes the paragraph before it.
        yield from sections.drain()
        if title.found is None and sections.first_top is not None:
            title.found = sections.first_top
    sections.flush()
    yield from sections.drain()
    if title.found is None:
        title.found = sections.first_top


# --------------------------------------------------------------------------- reStructuredText

_RST_ADORNMENT = re.compile(r"""^([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])\1{2,}[ \t]*$""")


def parse_rst(text: str, *, name: str) -> ParsedDocument:
    """reStructuredText: titles underlined (and optionally overlined) by punctuation.

    As in docutils, the level of a title style is the order in which the style
    first appears in the document.
    """
    title = _Title(name)
    return ParsedDocument("rst", _rst_blocks(iter_lines(text), title), title)


def _rst_blocks(lines: Iterator[str], title: _Title) -> Iterator[Block]:
    sections = _Sections()
    styles: list[tuple[str, bool]] = []
    # Three lines of lookahead: an overlined title is adornment, text, adornment.
    window: deque[str] = deque()

    def level_of(style: tuple[str, bool]) -> int:
        if style not in styles:
            styles.append(style)
        return styles.index(style) + 1

    def advance(count: int) -> None:
        for _ in range(count):
            window.popleft()

    while True:
        while len(window) < 3:
            line = next(lines, None)
            if line is None:
                break
            window.append(line)
        if not window:
            break
        line = window[0]
        nxt = window[1] if len(window) > 1 else ""
        over = _RST_ADORNMENT.match(line)
        if over and len(window) > 2 and not sections.lines:
            heading, under = window[1], _RST_ADORNMENT.match(window[2])
            if heading.strip() and under and under.group(1) == over.group(1):
                sections.heading(level_of((over.group(1), True)), heading.strip())
                advance(3)
                yield from sections.drain()
                continue
        under = _RST_ADORNMENT.match(nxt)
        if (
            under
            and line.strip()
            and not _RST_ADORNMENT.match(line)
            and not sections.lines
            and not line.startswith((" ", "\t"))
        ):
            sections.heading(level_of((under.group(1), False)), line.strip())
            advance(2)
            yield from sections.drain()
            continue
        if not line.strip() or (over and not sections.lines):
            # A blank line ends a paragraph; a lone adornment line is a transition.
            sections.flush()
            yield from sections.drain()
        else:
            sections.lines.append(line)
        advance(1)
    sections.flush()
    yield from sections.drain()
    title.found = sections.first_top


# --------------------------------------------------------------------------- HTML

_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg"})
_HEADING_TAGS = {f"h{n}": n for n in range(1, 7)}
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "li",
        "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "td",
        "tfoot", "th", "thead", "tr", "ul", "body", "html",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})


class _HTMLText(HTMLParser):
    """Collects paragraphs under h1-h6 headings; script and style are left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = _Sections()
        self.skip_depth = 0
        self.in_title = False
        self.title_parts: list[str] = []
        self.heading_level: int | None = None
        self.heading_parts: list[str] = []
        self.pre_depth = 0
        self.parts: list[str] = []

    def _flush(self) -> None:
        text = "".join(self.parts)
        self.parts = []
        if self.pre_depth == 0:
            text = " ".join(text.split())
        if text.strip():
            self.sections.lines.append(text.strip("\n"))
        self.sections.flush()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and not self.skip_depth:
            self.in_title = True
            return
        if tag in _SKIPPED_TAGS:
            self.skip_depth += 1
            return
        if tag in _HEADING_TAGS:
            self._flush()
            self.heading_level = _HEADING_TAGS[tag]
            self.heading_parts = []
        elif tag in _CELL_TAGS:
            self.parts.append(" ")
        elif tag in _BLOCK_TAGS:
            self._flush()
        if tag == "pre":
            self.pre_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS and tag not in _CELL_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            return
        if tag in _SKIPPED_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if tag in _HEADING_TAGS and self.heading_level is not None:
            self.sections.heading(self.heading_level, "".join(self.heading_parts))
            self.heading_level = None
        elif tag in _BLOCK_TAGS and tag not in _CELL_TAGS:
            self._flush()
        if tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        elif self.skip_depth:
            return
        elif self.heading_level is not None:
            self.heading_parts.append(data)
        else:
            self.parts.append(data)

    def close(self) -> None:
        super().close()
        if self.heading_level is not None:
            self.sections.heading(self.heading_level, "".join(self.heading_parts))
            self.heading_level = None
        self._flush()


def parse_html(text: str, *, name: str) -> ParsedDocument:
    """HTML: text without tags; h1-h6 give the structure, block elements end paragraphs."""
    title = _Title(name)
    return ParsedDocument("html", _html_blocks(text, title), title)


def _html_blocks(text: str, title: _Title) -> Iterator[Block]:
    parser = _HTMLText()
    # Fed a line at a time (the parser keeps an unfinished tag for the next feed), so
    # the paragraphs are handed on as they are found.
    lines = iter_lines(text)
    line = next(lines)
    for following in lines:
        parser.feed(line + "\n")
        yield from parser.sections.drain()
        line = following
    parser.feed(line)
    parser.close()
    yield from parser.sections.drain()
    found = " ".join("".join(parser.title_parts).split())
    title.found = found or parser.sections.first_top


# --------------------------------------------------------------------------- PDF


def parse_pdf(data: bytes, *, name: str) -> ParsedDocument:
    """PDF through pypdf: each page's text, under the heading "Page N".

    Read eagerly, page by page, so a damaged file fails before anything is stored.

    Raises:
        IngestError: the file is not a readable PDF, is encrypted, or has no text.
    """
    from pypdf import PdfReader

    # pypdf logs the damage it works around; a file it cannot read gets one error
    # line naming it instead, so its log lines would only be noise on stderr.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    blocks: list[Block] = []
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError("the PDF is encrypted")
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
        for number, page in enumerate(reader.pages, start=1):
            page_text = (page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n")
            blocks.extend(Block((f"Page {number}",), p) for p in _paragraphs(page_text))
    except IngestError:
        raise
    except Exception as exc:
        # pypdf raises many kinds of errors on damaged files; each means "unreadable".
        raise IngestError(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    if not blocks:
        raise IngestError("no text found in the PDF (a scanned PDF needs OCR first)")
    return ParsedDocument("pdf", iter(blocks), _Title(name, str(meta_title).strip() or None))


# --------------------------------------------------------------------------- chunking


def piece_limit(chunk_chars: int, overlap_chars: int) -> int:
    """Longest piece of a paragraph: room for the overlap and a separator in every chunk."""
    return max(1, chunk_chars - overlap_chars - len(PARAGRAPH_SEPARATOR))


def _pieces(paragraph: str, whole: int) -> Iterator[tuple[str, str]]:
    """Cut a paragraph longer than ``whole`` chars into verbatim pieces at whitespace.

    Yields ``(piece, separator)``; the separator is what joins the piece to the
    previous one of the same paragraph ("" before the first). Pieces of about a
    quarter of ``whole`` let chunks fill up; a word is never cut unless it is
    longer than ``whole``, and then into ``whole``-sized slices.
    """
    if len(paragraph) <= whole:
        yield paragraph, ""
        return
    target = max(1, whole // SPLIT_PIECES)
    start = end = -1
    separator = ""
    for word in re.finditer(r"\S+", paragraph):
        if start >= 0 and word.end() - start <= target:
            end = word.end()
            continue
        if start >= 0:
            yield paragraph[start:end], separator
            gap = paragraph[end : word.start()]
            separator = "\n" if "\n" in gap else " "
        length = word.end() - word.start()
        start = word.start()
        if length > whole:
            for offset in range(0, length - whole, whole):
                yield paragraph[start + offset : start + offset + whole], separator
                separator = ""
            start += ((length - 1) // whole) * whole
        end = word.end()
    if start >= 0:
        yield paragraph[start:end], separator


def _overlap_tail(text: str, size: int) -> str:
    """The last ``size`` chars of ``text``, starting at a word when the tail has a space."""
    if size <= 0:
        return ""
    tail = text[-size:]
    if len(text) <= size or text[-size - 1].isspace():
        return tail.lstrip()
    # The tail starts mid-word: begin at the next word, unless the tail is one word.
    match = re.search(r"\s+", tail)
    if match and match.end() < len(tail):
        return tail[match.end() :]
    return tail


def _chunk_section(
    heading: str, paragraphs: Iterable[str], chunk_chars: int, overlap_chars: int
) -> Iterator[ChunkDraft]:
    limit = piece_limit(chunk_chars, overlap_chars)
    current = ""
    for paragraph in paragraphs:
        for index, (piece, inner_separator) in enumerate(_pieces(paragraph, limit)):
            separator = PARAGRAPH_SEPARATOR if index == 0 else inner_separator
            if not current:
                current = piece
            elif len(current) + len(separator) + len(piece) <= chunk_chars:
                current += separator + piece
            else:
                yield ChunkDraft(heading, current)
                overlap = _overlap_tail(current, overlap_chars)
                current = f"{overlap}{separator or ' '}{piece}" if overlap else piece
    if current:
        yield ChunkDraft(heading, current)


def chunk_blocks(
    blocks: Iterable[Block],
    *,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
) -> Iterator[ChunkDraft]:
    """Pack each section's paragraphs into chunks of at most ``chunk_chars`` characters.

    A chunk never spans two sections. When a section needs several chunks, each
    one after the first starts with up to ``overlap_chars`` of the previous one,
    so a passage cut at a chunk boundary is still found whole in one of them.
    Chunks are produced lazily: a large file is never held as chunks all at once.
    """
    if overlap_chars < 0 or overlap_chars * 2 > chunk_chars:
        raise ValueError(
            f"overlap_chars must be between 0 and half of chunk_chars ({chunk_chars}), "
            f"got {overlap_chars}"
        )
    for headings, group in itertools.groupby(blocks, key=lambda block: block.headings):
        heading = HEADING_SEPARATOR.join(headings)
        yield from _chunk_section(
            heading, (block.text for block in group), chunk_chars, overlap_chars
        )


def heading_path(headings: Sequence[str]) -> str:
    """The heading path as stored and shown: "Install > Linux"."""
    return HEADING_SEPARATOR.join(headings)
