"""The chat screen's conversation work: what it asks of the engine, and what comes back.

``ChatSession`` takes the screen's requests (send, stop, open, rename, delete,
export, add documents) and runs each as a Trio task through the bridge, using only
the public engine API. It reports back by posting the messages defined here; the
screen changes what it shows in their handlers, and never touches the engine itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from textual.message import Message as UIMessage

from chatcore import (
    BackendError,
    ChatcoreError,
    ConversationNotFound,
    EngineClosed,
    EngineStopped,
    PluginError,
    UnknownBackend,
)
from chatcore.errors import BackendAuthError, BackendTimeout, BackendUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from pathlib import Path

    from chatcore import ConversationSummary, Engine, Message, ReplyStream
    from tui.bridge import EngineBridge

__all__ = [
    "CONTENT_SEARCH_LIMIT",
    "EXPORTS_DIR",
    "RAG_PLUGIN",
    "Advice",
    "BackendNotReady",
    "BackendReadiness",
    "ChatSession",
    "ContentMatches",
    "ConversationDeleted",
    "ConversationExported",
    "ConversationOpened",
    "ConversationRenamed",
    "ConversationsLoaded",
    "DocumentsWanted",
    "Level",
    "Notice",
    "ReplyChunk",
    "ReplyDone",
    "StreamedText",
    "TurnStarted",
    "describe_error",
    "export_filename",
    "readiness",
]

RAG_PLUGIN = "rag"
"""The plugin that "Add documents to RAG" hands files to (it offers ``add(paths)``)."""
EXPORTS_DIR = "exports"
"""Folder under the data dir that "Export to Markdown" writes to."""
SLUG_MAX_CHARS = 50
RAG_MISSING = (
    f"Adding documents needs the {RAG_PLUGIN} plugin, which is not enabled: add [[plugins]] "
    f'with plugin = "{RAG_PLUGIN}" to your config (`chatcore config path` shows which file), '
    "then restart."
)
CONTENT_SEARCH_LIMIT = 500
"""Messages the conversation filter reads from a full-text search, newest first."""

Advice = Literal["switch_backend", "plugins", "restart"]
"""What a notice suggests doing; the UI words it with the key currently bound."""
Level = Literal["error", "warning", "info"]


# --- what the session tells the screen ----------------------------------------------------------


@dataclass
class ConversationsLoaded(UIMessage):
    summaries: list[ConversationSummary]


@dataclass
class ConversationOpened(UIMessage):
    conversation_id: str
    title: str
    messages: list[Message]
    backend: str | None = None
    """The backend the conversation is on; later turns continue there."""


@dataclass
class TurnStarted(UIMessage):
    turn: int
    conversation_id: str


class StreamedText:
    """Text streamed by the engine that the screen has not shown yet.

    Both loops run on one thread, so this is shared without a lock. The engine
    posts one ``ReplyChunk`` when the buffer goes from empty to not; the screen
    takes everything gathered by then. At 200 chunks a second, a message per
    chunk keeps the screen's queue busy, and Textual paints only when it is idle.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []

    def add(self, text: str) -> bool:
        """Gather ``text``; True when the screen must be told (the buffer was empty)."""
        self._parts.append(text)
        return len(self._parts) == 1

    def take(self) -> str:
        text = "".join(self._parts)
        self._parts.clear()
        return text


@dataclass
class ReplyChunk(UIMessage):
    turn: int
    streamed: StreamedText


@dataclass
class ReplyDone(UIMessage):
    turn: int
    message: Message | None
    error: Exception | None = None


@dataclass
class Notice(UIMessage):
    text: str
    level: Level = "error"
    advice: Advice | None = None


@dataclass
class BackendReadiness(UIMessage):
    """How ready ``backend`` is to answer (``readiness()``), for the backend switcher."""

    backend: str
    state: str


@dataclass
class BackendNotReady(Notice):
    """The warning that ``backend`` can't answer now; stale once a backend answers."""

    backend: str = ""


@dataclass
class DocumentsWanted(UIMessage):
    """The rag plugin is there to take documents: ask which."""


@dataclass
class ContentMatches(UIMessage):
    """Conversations with a message matching ``query`` (the filter as it was typed)."""

    query: str
    conversation_ids: frozenset[str]


@dataclass
class ConversationRenamed(UIMessage):
    conversation_id: str
    title: str


@dataclass
class ConversationDeleted(UIMessage):
    conversation_id: str
    title: str


@dataclass
class ConversationExported(UIMessage):
    path: Path


# --- pure helpers --------------------------------------------------------------------------------


def describe_error(exc: BaseException) -> tuple[str, Advice | None]:
    """The text of a notice for ``exc`` and what to suggest: never a traceback."""
    if isinstance(exc, ChatcoreError):
        # Not ``cli_hint``: the app's advice names its keys instead of command-line flags.
        text = str(exc) + "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
    else:  # a bug somewhere below: say so in one line, the app stays up
        text = f"unexpected error: {type(exc).__name__}: {exc}"
    advice: Advice | None = None
    if isinstance(exc, BackendError | UnknownBackend):
        advice = "switch_backend"
    elif isinstance(exc, PluginError):
        advice = "plugins"
    elif isinstance(exc, EngineClosed | EngineStopped):
        advice = "restart"
    return text, advice


def readiness(report: Mapping[str, Any] | None, error: BaseException | None) -> str:
    """One word or two for the backend switcher: ready, no key, unreachable, not ready."""
    if error is None and report is not None and report.get("ok", True):
        return "ready"
    if isinstance(error, BackendAuthError):
        return "no key" if "no API key" in str(error) else "key refused"
    if isinstance(error, BackendUnavailable | BackendTimeout):
        return "unreachable"
    return "not ready"


def export_filename(title: str, conversation_id: str) -> str:
    """``<title-slug>-<first 8 characters of the id>.md``."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.casefold()).strip("-")[:SLUG_MAX_CHARS].rstrip("-")
    return f"{slug or 'conversation'}-{conversation_id[:8]}.md"


def _write_export(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- the session ---------------------------------------------------------------------------------


class ChatSession:
    """The chat screen's link to the engine.

    The public methods are called from the UI and return at once; each starts a Trio
    task that reports through ``post``. A task's failure becomes a ``Notice``: it never
    reaches the engine's nursery, which it would take down with the engine.
    """

    def __init__(self, bridge: EngineBridge, post: Callable[[UIMessage], object]) -> None:
        self._bridge = bridge
        self._post = post
        # Trio side only: the live reply of each turn, stops asked before it existed,
        # and the newest turn that has ended.
        self._replies: dict[int, ReplyStream] = {}
        self._stop_asked: set[int] = set()
        self._last_finished = 0

    # -- requests (from the UI) -------------------------------------------------------------

    def load_conversations(self) -> None:
        self._spawn(self._load_conversations)

    def search(self, query: str) -> None:
        """Find the conversations whose messages match ``query``, every word a prefix (it
        is being typed); they come back as ``ContentMatches``."""
        self._spawn(self._search, query)

    def open(self, conversation_id: str) -> None:
        """Read a stored conversation (id or unique prefix); it comes back as
        ``ConversationOpened``."""
        self._spawn(self._open, conversation_id)

    def send(self, turn: int, conversation_id: str | None, text: str, backend: str) -> None:
        """Start turn number ``turn`` (a new conversation when ``conversation_id`` is None)."""
        self._spawn(self._run_turn, turn, conversation_id, text, backend)

    def stop(self, turn: int) -> None:
        """Stop the reply of ``turn``; what arrived so far is kept as partial."""
        self._bridge.call(lambda: self._stop(turn))

    def check_backend(self, backend: str) -> None:
        """Post a warning ``Notice`` if ``backend`` cannot answer now."""
        self._spawn(self._health, backend)

    def check_readiness(self, backends: Iterable[str]) -> None:
        """Ask each backend whether it can answer; each says as ``BackendReadiness``."""
        for backend in backends:
            self._spawn(self._readiness, backend)

    def want_documents(self) -> None:
        """``DocumentsWanted`` if the rag plugin can take documents, else a ``Notice``
        saying how to enable it (before anyone types a path for nothing)."""
        self._spawn(self._want_documents)

    def rename(self, conversation_id: str, title: str) -> None:
        self._spawn(self._rename, conversation_id, title)

    def delete(self, conversation_id: str, title: str) -> None:
        self._spawn(self._delete, conversation_id, title)

    def export(self, conversation_id: str) -> None:
        """Write the conversation as Markdown under the data dir's ``exports`` folder."""
        self._spawn(self._export, conversation_id)

    def add_documents(self, path: Path) -> None:
        self._spawn(self._add_documents, path)

    # -- Trio tasks -------------------------------------------------------------------------

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        self._bridge.spawn(self._guarded, fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await fn(*args)
        except Exception as exc:
            text, advice = describe_error(exc)
            self._post(Notice(text, advice=advice))

    @property
    def _engine(self) -> Engine:
        engine = self._bridge.engine
        if engine is None:
            raise EngineClosed("the engine is not running")
        return engine

    async def _load_conversations(self) -> None:
        self._post(ConversationsLoaded(await self._engine.conversations()))

    async def _search(self, query: str) -> None:
        words = " ".join(f"{word.rstrip('*')}*" for word in query.split())
        hits = await self._engine.search(words, limit=CONTENT_SEARCH_LIMIT)
        self._post(ContentMatches(query, frozenset(hit.conversation_id for hit in hits)))

    async def _open(self, conversation_id: str) -> None:
        conversation = self._engine.conversation(conversation_id)
        messages = await conversation.messages()
        summary = await conversation.summary()
        self._post(ConversationOpened(conversation.id, summary.title, messages, summary.backend))

    async def _run_turn(
        self, key: int, conversation_id: str | None, text: str, backend: str
    ) -> None:
        reply: ReplyStream | None = None
        error: Exception | None = None
        try:
            conversation = self._engine.conversation(conversation_id)
            self._post(TurnStarted(key, conversation.id))
            reply = conversation.stream(text, backend=backend)
            self._replies[key] = reply
            if key in self._stop_asked:
                reply.cancel()
            streamed = StreamedText()
            async with reply:
                async for chunk in reply:
                    if chunk.text and streamed.add(chunk.text):
                        self._post(ReplyChunk(key, streamed))
        except Exception as exc:  # ends the turn in the UI whatever went wrong
            error = exc
        finally:
            self._replies.pop(key, None)
            self._stop_asked.discard(key)
            self._last_finished = max(self._last_finished, key)
        self._post(ReplyDone(key, reply.message if reply is not None else None, error))
        await self._load_conversations()

    def _stop(self, key: int) -> None:
        reply = self._replies.get(key)
        if reply is not None:
            reply.cancel()
        elif key > self._last_finished:
            self._stop_asked.add(key)  # the turn's task hasn't made its reply yet

    async def _health(self, backend: str) -> None:
        engine = self._engine
        try:
            await engine.plugins.ensure_backend(backend)
            report = await engine.plugins.get_backend_provider(backend).health()
        except ChatcoreError as exc:
            text = f"Backend {backend} is not ready: {exc}"
            self._post(BackendNotReady(text, "warning", "switch_backend", backend=backend))
            return
        if not report.get("ok", True):
            detail = report.get("detail") or "no answer to a health check"
            text = f"Backend {backend} is not ready: {detail}"
            self._post(BackendNotReady(text, "warning", "switch_backend", backend=backend))

    async def _readiness(self, backend: str) -> None:
        plugins = self._engine.plugins
        report: Mapping[str, Any] | None = None
        error: ChatcoreError | None = None
        try:
            await plugins.ensure_backend(backend)
            provider = plugins.get_backend_provider(backend)
            report = await provider.health()
            if not report.get("ok", True):
                # health() says that it failed, not why: the model list tells (no key,
                # unreachable), or answers, and then the report's detail stands.
                await provider.list_models()
        except ChatcoreError as exc:
            error = exc
        self._post(BackendReadiness(backend, readiness(report, error)))

    async def _want_documents(self) -> None:
        try:
            self._engine.plugins.get_plugin(RAG_PLUGIN)
        except PluginError:
            self._post(Notice(RAG_MISSING, "warning"))
            return
        self._post(DocumentsWanted())

    async def _rename(self, conversation_id: str, title: str) -> None:
        summary = await self._engine.conversation(conversation_id).rename(title)
        self._post(ConversationRenamed(conversation_id, summary.title))
        await self._load_conversations()

    async def _delete(self, conversation_id: str, title: str) -> None:
        await self._engine.conversation(conversation_id).delete()
        self._post(ConversationDeleted(conversation_id, title))
        await self._load_conversations()

    async def _export(self, conversation_id: str) -> None:
        engine = self._engine
        try:
            conversation = engine.conversation(conversation_id)
            summary = await conversation.summary()
            text = await conversation.export("markdown")
        except ConversationNotFound:
            self._post(Notice("Nothing to export: this conversation is not saved yet."))
            return
        path = (
            engine.config.resolved_data_dir
            / EXPORTS_DIR
            / export_filename(summary.title, conversation_id)
        )
        try:
            await self._bridge.run_in_thread(_write_export, path, text)
        except OSError as exc:
            self._post(Notice(f"Could not write {path}: {exc.strerror or exc}"))
            return
        self._post(ConversationExported(path))

    async def _add_documents(self, path: Path) -> None:
        try:
            rag = self._engine.plugins.get_plugin(RAG_PLUGIN)
        except PluginError:
            self._post(Notice(RAG_MISSING, "warning"))
            return
        add = getattr(rag, "add", None)
        if add is None:
            self._post(Notice(f"The {RAG_PLUGIN!r} plugin cannot add documents."))
            return
        self._post(Notice(f"Adding {path} to RAG…", "info"))
        try:
            report = await add([path])
        except ChatcoreError as exc:
            self._post(Notice(f"Adding {path} failed: {exc}"))
            return
        failed = [f"{failed_path}: {why}" for failed_path, why in getattr(report, "failed", [])]
        skipped = [f"skipped {where}: {why}" for where, why in getattr(report, "warnings", [])]
        lines = [f"RAG: {report.summary()} ({path})", *failed, *skipped]
        if getattr(report, "embed_error", None):
            lines.append(f"Embeddings skipped: {report.embed_error}")
        self._post(Notice("\n".join(lines), "warning" if failed else "info"))
