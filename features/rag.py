"""The ``rag`` feature: answers from the user's own documents, with citations.

Documents are added with ``chatcore rag add PATH…`` (Markdown, text, reST, HTML,
PDF), cut into chunks along their headings and paragraphs, and stored in the
engine's SQLite file with an FTS5 index. On each turn the passages that best
match the user's message go into the system prompt, numbered, and the reply's
metadata lists them as ``citations``. With ``embed_backend`` set, chunks also
get embedding vectors and retrieval fuses BM25 and cosine rankings (RRF).
"""

from __future__ import annotations

import functools
import logging
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click
import trio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatcore.errors import ChatcoreError, PluginError
from chatcore.messages import REPLY_METADATA
from chatcore.plugin import (
    BaseFeatureExtension,
    PluginMetadata,
    config_option,
    json_option,
    load_command_config,
    print_json,
    run_guarded,
)
from chatcore.result import PluginResult

from ._ingest import (
    DEFAULT_CHUNK_CHARS,
    DEFAULT_OVERLAP_CHARS,
    HEADING_SEPARATOR,
    IngestError,
    NotText,
    discover,
)
from ._rag_index import RRF_K, Hit, IngestOutcome, RagError, RagIndex

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

    from chatcore import Engine
    from chatcore.config import Config
    from chatcore.messages import ChatContext

__all__ = [
    "DEFAULT_TOP_K",
    "AddReport",
    "Embedder",
    "EmbeddingUnavailable",
    "Rag",
    "RagSettings",
    "add_files",
    "add_passages",
    "citation",
    "embed_missing",
    "rag_command",
    "resolve_embedder",
    "retrieve",
]

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 4
DEFAULT_EMBED_BATCH = 32
RAG_PLUGIN_SPECS = frozenset({"rag", "features.rag:Rag"})
"""How a [[plugins]] entry names this feature (for the CLI to find its settings)."""
PASSAGES_INTRO = (
    "Passages from the user's documents follow. Use them when they are relevant to the "
    "question and cite them by number, like [1]. If they do not contain the answer, say so."
)
PREVIEW_CHARS = 300


class RagSettings(BaseModel):
    """The ``[plugins.config]`` table of the ``rag`` plugin."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=50)
    """Passages added to the context on each turn (at most)."""

    min_score: float = Field(default=0.0, ge=0.0)
    """BM25 score (SQLite's -bm25(), higher is better) a passage must exceed."""

    min_similarity: float = Field(default=0.0, ge=-1.0, le=1.0)
    """Cosine similarity a passage must exceed to be found by its vector (hybrid only)."""

    chunk_chars: int = Field(default=DEFAULT_CHUNK_CHARS, ge=100, le=100_000)
    """Longest chunk, in characters."""

    overlap_chars: int = Field(default=DEFAULT_OVERLAP_CHARS, ge=0)
    """Characters of a chunk repeated at the start of the next when a section is split."""

    embed_backend: str | None = None
    """A configured backend with `embed` (ollama, openai): enables hybrid retrieval."""

    embed_batch_size: int = Field(default=DEFAULT_EMBED_BATCH, ge=1, le=2048)
    """Chunks sent to the embed backend per request."""

    rrf_k: int = Field(default=RRF_K, ge=1)
    """The k of reciprocal rank fusion, 1 / (k + rank)."""

    @field_validator("overlap_chars")
    @classmethod
    def _overlap_fits(cls, value: int, info: Any) -> int:
        chunk_chars = info.data.get("chunk_chars", DEFAULT_CHUNK_CHARS)
        if value * 2 > chunk_chars:
            raise ValueError(f"must be at most half of chunk_chars ({chunk_chars}), got {value}")
        return value


class EmbeddingUnavailable(RagError):
    """The embed backend failed or cannot embed: retrieval falls back to BM25."""


@dataclass(frozen=True, slots=True)
class Embedder:
    """A configured backend that can embed, and the label its vectors are stored under."""

    backend: str
    model: str
    provider: Any = field(repr=False)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order.

        Raises:
            EmbeddingUnavailable: the backend failed or answered with the wrong shape.
        """
        try:
            vectors = await self.provider.embed(list(texts))
        except Exception as exc:
            raise EmbeddingUnavailable(
                f"embed backend {self.backend!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if len(vectors) != len(texts) or any(len(v) == 0 for v in vectors):
            raise EmbeddingUnavailable(
                f"embed backend {self.backend!r} returned {len(vectors)} vectors "
                f"for {len(texts)} texts"
            )
        return [[float(x) for x in vector] for vector in vectors]


async def resolve_embedder(name: str, backend: Callable[[str], Awaitable[Any]]) -> Embedder:
    """The embedder for backend ``name``, loaded through ``backend`` (host or engine).

    Raises:
        EmbeddingUnavailable: the backend failed to load or has no ``embed``.
        UnknownBackend: no backend of that name is configured.
    """
    try:
        provider = await backend(name)
    except PluginError as exc:
        raise EmbeddingUnavailable(str(exc)) from exc
    if not callable(getattr(provider, "embed", None)):
        raise EmbeddingUnavailable(
            f"backend {name!r} ({type(provider).__name__}) cannot embed text; "
            "use an ollama or openai backend as embed_backend"
        )
    config: Mapping[str, Any] = getattr(provider, "config", {}) or {}
    model = config.get("embed_model") or config.get("embedding_model") or config.get("model")
    return Embedder(name, f"{name}:{model}" if model else name, provider)


# --------------------------------------------------------------------------- retrieval


async def retrieve(
    index: RagIndex,
    query: str,
    *,
    settings: RagSettings,
    embedder: Embedder | None = None,
    limit: int | None = None,
) -> list[Hit]:
    """The best passages for ``query``: hybrid with an embedder, BM25 alone without.

    Raises:
        EmbeddingUnavailable: the embedder failed (callers fall back to ``embedder=None``).
    """
    top = settings.top_k if limit is None else limit
    if embedder is not None:
        vector = (await embedder.embed([query]))[0]
        search = functools.partial(
            index.search_hybrid,
            query,
            vector,
            model=embedder.model,
            limit=top,
            min_score=settings.min_score,
            min_similarity=settings.min_similarity,
            k=settings.rrf_k,
        )
    else:
        search = functools.partial(
            index.search_bm25, query, limit=top, min_score=settings.min_score
        )
    return await trio.to_thread.run_sync(search)


def source_label(hit: Hit) -> str:
    """Where a passage comes from, for the model: "install.md > Install > Linux"."""
    name = Path(hit.path).name
    return f"{name}{HEADING_SEPARATOR}{hit.heading}" if hit.heading else name


def citation(hit: Hit) -> dict[str, Any]:
    """A passage as the reply's metadata lists it: document, chunk, score (+ title, heading)."""
    found: dict[str, Any] = {
        "document": hit.path,
        "chunk": hit.ordinal,
        "score": round(hit.score, 4),
        "title": hit.title,
    }
    if hit.heading:
        found["heading"] = hit.heading
    return found


def add_passages(context: ChatContext, hits: Sequence[Hit]) -> ChatContext:
    """The context with numbered passages after its system prompt and their citations.

    The citations go under ``REPLY_METADATA`` (keeping what other features put
    there), so the pipeline copies them into the reply's metadata.
    """
    if not hits:
        return context
    parts = [PASSAGES_INTRO]
    for number, hit in enumerate(hits, start=1):
        parts.append(f"[{number}] (source: {source_label(hit)})\n{hit.text}")
    block = "\n\n".join(parts)
    system = f"{context.system}\n\n{block}" if context.system else block
    reply_metadata = {
        **context.metadata.get(REPLY_METADATA, {}),
        "citations": [citation(hit) for hit in hits],
    }
    return context.replace(system=system).with_metadata(**{REPLY_METADATA: reply_metadata})


# --------------------------------------------------------------------------- adding documents


@dataclass(slots=True)
class AddReport:
    """What ``rag add`` did to each file.

    ``skipped`` counts unsupported files and, with a reason in ``warnings``, text
    files that turned out binary or not UTF-8; ``failed`` are files that should
    have been readable and were not (missing, unreadable, a damaged PDF).
    """

    outcomes: list[IngestOutcome] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    embedded: int = 0
    embed_error: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def summary(self) -> str:
        """One line: "added 3, updated 1, unchanged 2, skipped 1" (+ failed, embedded)."""
        parts = [
            f"added {self.count('added')}",
            f"updated {self.count('updated')}",
            f"unchanged {self.count('unchanged')}",
            f"skipped {len(self.skipped)}",
        ]
        if self.failed:
            parts.append(f"failed {len(self.failed)}")
        line = ", ".join(parts)
        if self.embedded:
            line += f"; embedded {self.embedded} chunks"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.count("added"),
            "updated": self.count("updated"),
            "unchanged": self.count("unchanged"),
            "skipped": len(self.skipped),
            "failed": [{"path": str(path), "error": error} for path, error in self.failed],
            "warnings": [{"path": str(path), "warning": why} for path, why in self.warnings],
            "embedded": self.embedded,
            "embed_error": self.embed_error,
            "documents": [
                {"path": str(o.path), "status": o.status, "id": o.document_id, "chunks": o.chunks}
                for o in self.outcomes
            ],
        }


async def add_files(
    index: RagIndex,
    files: Iterable[Path],
    *,
    settings: RagSettings,
    force: bool = False,
    report: AddReport | None = None,
    progress: Callable[[int], None] | None = None,
) -> AddReport:
    """Ingest each file (blocking work in a worker thread); a bad file is noted, not fatal.

    A binary or undecodable file is skipped with a warning; other unreadable
    files (a damaged PDF, an I/O error) are failures.
    """
    report = report if report is not None else AddReport()
    for path in files:
        ingest = functools.partial(
            index.ingest_file,
            path,
            chunk_chars=settings.chunk_chars,
            overlap_chars=settings.overlap_chars,
            force=force,
        )
        try:
            report.outcomes.append(await trio.to_thread.run_sync(ingest))
        except NotText as exc:
            report.skipped.append(path)
            report.warnings.append((path, str(exc)))
        except IngestError as exc:
            report.failed.append((path, str(exc)))
        if progress is not None:
            progress(1)
    return report


async def embed_missing(
    index: RagIndex,
    embedder: Embedder,
    *,
    batch_size: int = DEFAULT_EMBED_BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed every chunk that has no vector from ``embedder`` yet; returns how many.

    Raises:
        EmbeddingUnavailable: the backend failed; what was embedded before stays.
    """
    done = 0
    while True:
        batch = await trio.to_thread.run_sync(index.chunks_to_embed, embedder.model, batch_size)
        if not batch:
            return done
        vectors = await embedder.embed([text for _, text in batch])
        pairs = list(zip((chunk_id for chunk_id, _ in batch), vectors, strict=True))
        await trio.to_thread.run_sync(index.set_embeddings, embedder.model, pairs)
        done += len(batch)
        if progress is not None:
            progress(len(batch))


# --------------------------------------------------------------------------- the plugin


class Rag(BaseFeatureExtension):
    """Adds the passages that best match the user's message to the context, with citations."""

    metadata = PluginMetadata(
        name="rag",
        version="1.0.0",
        description="Answers from your documents: retrieved passages with citations",
        tags=("rag", "retrieval"),
        permissions=("store",),
    )
    settings_model: ClassVar[type[BaseModel] | None] = RagSettings
    settings: RagSettings

    def __init__(self) -> None:
        super().__init__()
        self._index: RagIndex | None = None
        self._embedder: Embedder | None = None
        self._embed_warning: str | None = None

    async def _do_initialize(self) -> None:
        if self.host is None:
            raise PluginError("the rag feature needs an engine: it keeps its index in the database")
        if self.host.database_path is None:
            raise PluginError(
                "the rag feature needs the engine's database: its metadata must declare the "
                "'store' permission"
            )
        self._index = await trio.to_thread.run_sync(RagIndex, self.host.database_path)

    async def _do_shutdown(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    @property
    def index(self) -> RagIndex:
        if self._index is None:
            raise PluginError("the rag feature is not initialised")
        return self._index

    async def _get_embedder(self) -> Embedder | None:
        name = self.settings.embed_backend
        if name is None or self.host is None:
            return None
        if self._embedder is None:
            try:
                self._embedder = await resolve_embedder(name, self.host.backend)
            except ChatcoreError as exc:
                self._warn(str(exc))
                return None
        return self._embedder

    def _warn(self, problem: str) -> None:
        # Once per distinct problem: a backend that stays down should not flood the log.
        if problem != self._embed_warning:
            self._embed_warning = problem
            logger.warning("rag: %s; retrieving by BM25 only", problem)

    async def search(self, query: str, *, limit: int | None = None) -> list[Hit]:
        """The passages for ``query``, hybrid when the embed backend answers, else BM25."""
        embedder = await self._get_embedder()
        if embedder is not None:
            try:
                hits = await retrieve(
                    self.index, query, settings=self.settings, embedder=embedder, limit=limit
                )
            except EmbeddingUnavailable as exc:
                self._warn(str(exc))
            else:
                self._embed_warning = None
                return hits
        return await retrieve(self.index, query, settings=self.settings, limit=limit)

    async def add(self, paths: Iterable[Path | str], *, force: bool = False) -> AddReport:
        """Add files and folders to the index (and embed them when an embedder answers)."""
        found = await trio.to_thread.run_sync(discover, list(paths))
        report = AddReport(
            skipped=found.skipped,
            failed=[(path, "no such file or directory") for path in found.missing],
        )
        await add_files(self.index, found.files, settings=self.settings, force=force, report=report)
        embedder = await self._get_embedder()
        if embedder is not None:
            try:
                report.embedded = await embed_missing(
                    self.index, embedder, batch_size=self.settings.embed_batch_size
                )
            except EmbeddingUnavailable as exc:
                report.embed_error = str(exc)
        return report

    async def enrich(self, context: ChatContext) -> PluginResult[ChatContext]:
        last = context.last_user_message
        if last is None or not last.content.strip():
            return PluginResult.ok(context)
        hits = await self.search(last.content)
        return PluginResult.ok(add_passages(context, hits))


# --------------------------------------------------------------------------- CLI


def rag_command() -> click.Command:
    """Documents the chat answers from (RAG): add, search, list, remove.

    The ``chatcore.commands`` entry point ``rag`` (see pyproject.toml).
    """
    return rag_cli


def _rag_settings(config: Config) -> RagSettings:
    """The settings of the first enabled rag entry in ``[[plugins]]`` (defaults without one)."""
    from chatcore.config import validate_settings

    for index, entry in enumerate(config.plugins):
        if entry.enabled and (entry.plugin in RAG_PLUGIN_SPECS or entry.name == "rag"):
            return validate_settings(
                RagSettings, entry.config, path=config.source, key=f"plugins[{index}].config"
            )
    return RagSettings()


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _engine_backend(engine: Engine) -> Callable[[str], Awaitable[Any]]:
    async def get(name: str) -> Any:
        from chatcore.plugin import PluginState

        record = await engine.plugins.ensure_backend(name)
        if record.lifecycle.state is not PluginState.ACTIVE or record.instance is None:
            why = f": {record.lifecycle.reason}" if record.lifecycle.reason else ""
            raise PluginError(f"backend {name!r} is {record.lifecycle.state}{why}")
        return record.instance

    return get


@asynccontextmanager
async def _cli_session(
    config: Config, settings: RagSettings, *, use_embedder: bool = True
) -> AsyncIterator[tuple[RagIndex, Embedder | None]]:
    """The index (its tables migrated as it opens) and, when configured, the embedder.

    Without ``embed_backend`` no engine starts: BM25 needs only the database.
    """
    index = await trio.to_thread.run_sync(RagIndex, config.db_path)
    try:
        name = settings.embed_backend
        if name is None or not use_embedder:
            yield index, None
            return
        from chatcore import open_engine

        async with open_engine(config) as engine:
            try:
                embedder: Embedder | None = await resolve_embedder(name, _engine_backend(engine))
            except EmbeddingUnavailable as exc:
                _warn(f"{exc}; using BM25 only")
                embedder = None
            yield index, embedder
    finally:
        index.close()


def _config(config_path: Path | None) -> tuple[Config, RagSettings]:
    config = load_command_config(config_path)
    settings: RagSettings = run_guarded(lambda: _rag_settings(config))
    return config, settings


@click.group("rag")
def rag_cli() -> None:
    """Documents the chat answers from (RAG): add, search, list, remove."""


@rag_cli.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Read and chunk files again even when unchanged.")
@config_option
@json_option
def rag_add(paths: tuple[Path, ...], force: bool, config_path: Path | None, as_json: bool) -> None:
    """Add files and folders (recursively): .md .txt .rst .html .pdf.

    Unchanged files are left alone, changed ones replaced. A binary or non-UTF-8
    file is skipped with a warning. Exits 2 when a path given is not there, 1 when
    a file could not be read (a damaged PDF); the others are still added.
    """
    config, settings = _config(config_path)
    found = discover(paths)

    async def main() -> AddReport:
        report = AddReport(
            skipped=found.skipped,
            failed=[(path, "no such file or directory") for path in found.missing],
        )
        async with _cli_session(config, settings) as (index, embedder):
            with click.progressbar(
                length=len(found.files), label="Adding documents", file=sys.stderr
            ) as bar:
                await add_files(
                    index,
                    found.files,
                    settings=settings,
                    force=force,
                    report=report,
                    progress=bar.update,
                )
            if embedder is not None:
                await _embed_with_progress(index, embedder, settings, report)
        return report

    report: AddReport = run_guarded(lambda: trio.run(main))
    for path, why in report.warnings:
        click.echo(f"warning: {path}: {why}; skipped", err=True)
    for path, error in report.failed:
        click.echo(f"error: {path}: {error}", err=True)
    if as_json:
        print_json(report.as_dict())
    else:
        click.echo(report.summary())
    sys.exit(2 if found.missing else 1 if report.failed else 0)


async def _embed_with_progress(
    index: RagIndex, embedder: Embedder, settings: RagSettings, report: AddReport
) -> None:
    total = await trio.to_thread.run_sync(index.count_to_embed, embedder.model)
    if not total:
        return
    with click.progressbar(length=total, label="Embedding", file=sys.stderr) as bar:

        def advance(n: int) -> None:
            report.embedded += n
            bar.update(n)

        try:
            await embed_missing(
                index, embedder, batch_size=settings.embed_batch_size, progress=advance
            )
        except EmbeddingUnavailable as exc:
            report.embed_error = str(exc)
    if report.embed_error is not None:
        _warn(
            f"{report.embed_error}; the documents are searchable by BM25, "
            "and `chatcore rag add` embeds the rest once the backend answers"
        )


@rag_cli.command("search")
@click.argument("query")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=None, help="Passages to show.")
@config_option
@json_option
def rag_search(query: str, limit: int | None, config_path: Path | None, as_json: bool) -> None:
    """Show the passages the chat would retrieve for QUERY."""
    config, settings = _config(config_path)

    async def main() -> list[Hit]:
        async with _cli_session(config, settings) as (index, embedder):
            if embedder is not None:
                try:
                    return await retrieve(
                        index, query, settings=settings, embedder=embedder, limit=limit
                    )
                except EmbeddingUnavailable as exc:
                    _warn(f"{exc}; using BM25 only")
            return await retrieve(index, query, settings=settings, limit=limit)

    hits: list[Hit] = run_guarded(lambda: trio.run(main))
    if as_json:
        print_json(
            [
                {
                    "document": hit.path,
                    "chunk": hit.ordinal,
                    "score": round(hit.score, 4),
                    "text": hit.text,
                }
                for hit in hits
            ]
        )
        return
    if not hits:
        click.echo("no matching passages")
        return
    for number, hit in enumerate(hits, start=1):
        where = f"{hit.path}{HEADING_SEPARATOR}{hit.heading}" if hit.heading else hit.path
        click.echo(f"[{number}] {where} (chunk {hit.ordinal}, score {hit.score:.2f})")
        preview = " ".join(hit.text.split())
        if len(preview) > PREVIEW_CHARS:
            preview = preview[: PREVIEW_CHARS - 1].rstrip() + "…"
        click.echo(f"    {preview}")


@rag_cli.command("list")
@config_option
@json_option
def rag_list(config_path: Path | None, as_json: bool) -> None:
    """List the indexed documents with their chunk counts."""
    config, settings = _config(config_path)

    async def main() -> list[Any]:
        async with _cli_session(config, settings, use_embedder=False) as (index, _):
            return await trio.to_thread.run_sync(index.list_documents)

    documents = run_guarded(lambda: trio.run(main))
    if as_json:
        print_json([doc.as_dict() for doc in documents])
        return
    if not documents:
        click.echo("no documents yet (add some with `chatcore rag add PATH`)")
        return
    for doc in documents:
        click.echo(f"{doc.id}  {doc.chunks:>5} chunks  {doc.path}  ({doc.title})")


@rag_cli.command("remove")
@click.argument("keys", nargs=-1, required=True, metavar="PATH_OR_ID...")
@config_option
def rag_remove(keys: tuple[str, ...], config_path: Path | None) -> None:
    """Remove documents by path, folder (everything under it) or id (a unique prefix will do).

    Exits 2 when something given matches no document (the others are still removed).
    """
    config, settings = _config(config_path)

    async def main() -> list[tuple[str, list[Any]]]:
        async with _cli_session(config, settings, use_embedder=False) as (index, _):
            return [(key, await trio.to_thread.run_sync(index.remove, key)) for key in keys]

    results = run_guarded(lambda: trio.run(main))
    unmatched = 0
    for key, removed in results:
        if not removed:
            unmatched += 1
            click.echo(f"error: no document matches {key!r} (see `chatcore rag list`)", err=True)
        for doc in removed:
            click.echo(f"removed {doc.path} ({doc.chunks} chunks)")
    sys.exit(2 if unmatched else 0)
