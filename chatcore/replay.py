"""Replay a stored conversation through a (changed) pipeline without storing anything.

``chatcore replay ID --config OTHER`` answers "what would this filter or prompt
change have done to real history?": the user turns of a stored conversation are
sent, in order, to an engine built from ``OTHER``, and each turn reports what every
processor changed in the user message, whether a plugin answered the turn itself
(blocked), and the stored reply next to the new one.

Nothing of the replay reaches the real database: the database file and its WAL
are copied byte for byte (plain file reads, SQLite never opens the original,
so not even ``-wal``/``-shm`` side files appear) into a temporary data folder,
and the replay engine runs there. See ``docs/replay.md``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .errors import BackendError, ConversationNotFound, InvalidInput, UnknownBackend
from .hooks import HookType
from .messages import Message, Role
from .result import PluginResult
from .store import DB_FILENAME, Store, StoreError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .config import Config
    from .hooks import HookCallback, HookRegistry
    from .messages import ChatContext

__all__ = [
    "SNAPSHOT_ATTEMPTS",
    "ProcessorChange",
    "ReplayReport",
    "ReplayTurn",
    "render_report",
    "replay_conversation",
    "snapshot_database",
]

SNAPSHOT_ATTEMPTS = 5
"""Copies tried before giving up on a database that another process keeps writing."""
REPLAY_DIR_PREFIX = "chatcore-replay-"
_ANSWERED_BY = "answered_by"
_STATS_NAMESPACE = "@stats"
"""The engine's namespace of saved counters and circuits (``chatcore._engine``)."""


@dataclass(frozen=True, slots=True)
class ProcessorChange:
    """One processor's change to the user message of a turn."""

    plugin: str
    before: str
    after: str

    def as_dict(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class ReplayTurn:
    """What became of one stored user turn when it was sent through the replay pipeline."""

    turn: int
    """1-based position among the conversation's user messages."""
    user: str
    """The stored user message, as sent to the replay pipeline."""
    blocked: bool
    """A plugin (processor, feature or middleware) answered the turn; no backend was asked."""
    answered_by: str | None
    """Which plugin answered it, when ``blocked``."""
    changes: tuple[ProcessorChange, ...]
    """Each processor that changed the user message, in pipeline order."""
    reply_before: str | None
    """The stored reply (None when the turn has none, e.g. it was cut off)."""
    reply_after: str | None
    """The new reply (None when the turn failed; see ``error``)."""
    error: str | None = None
    """Why the new turn failed (backend error, prompt rejected by the new config)."""

    @property
    def reply_changed(self) -> bool:
        return self.reply_before != self.reply_after

    def as_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "user": self.user,
            "blocked": self.blocked,
            "answered_by": self.answered_by,
            "changes": [c.as_dict() for c in self.changes],
            "reply_before": self.reply_before,
            "reply_after": self.reply_after,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The whole replay: which conversation, through what, and every turn."""

    conversation_id: str
    title: str
    backend: str
    """The backend the replay talked to."""
    config: str | None
    """The config file the replay pipeline came from."""
    turns: tuple[ReplayTurn, ...]

    @property
    def blocked(self) -> int:
        return sum(t.blocked for t in self.turns)

    @property
    def changed(self) -> int:
        """Turns whose user message some processor changed."""
        return sum(bool(t.changes) for t in self.turns)

    @property
    def replies_differing(self) -> int:
        return sum(t.reply_changed for t in self.turns)

    @property
    def failed(self) -> int:
        return sum(t.error is not None for t in self.turns)


# --- reading the stored conversation without touching it ---------------------------------


def _side_files(db: Path) -> tuple[Path, Path]:
    return db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")


def _fingerprint(*paths: Path) -> tuple[tuple[int, int] | None, ...]:
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((st.st_size, st.st_mtime_ns))
    return tuple(out)


def snapshot_database(source: Path, target: Path, *, attempts: int = SNAPSHOT_ATTEMPTS) -> None:
    """Copy the SQLite file ``source`` and its WAL to ``target`` with plain reads.

    Opening the original with SQLite, even read-only, would create ``-wal``/``-shm``
    files next to it or rewrite the ``-shm`` index; copying the bytes touches
    nothing. The ``-shm`` file is never copied (SQLite rebuilds it from the WAL).
    A copy taken while another process wrote is detected (size or mtime moved)
    and taken again.

    Raises:
        StoreError: the files kept changing for ``attempts`` copies in a row.
    """
    source_wal, _ = _side_files(source)
    target_wal, target_shm = _side_files(target)
    for _ in range(attempts):
        before = _fingerprint(source, source_wal)
        for stale in (target_wal, target_shm):
            stale.unlink(missing_ok=True)
        shutil.copyfile(source, target)
        if before[1] is not None:
            try:
                shutil.copyfile(source_wal, target_wal)
            except FileNotFoundError:
                continue  # checkpointed away mid-copy: take it again
        if _fingerprint(source, source_wal) == before:
            return
    raise StoreError(
        f"{source}: the database kept changing while it was copied for the replay "
        f"({attempts} attempts); try again when no other chatcore is writing to it"
    )


@dataclass(frozen=True, slots=True)
class _StoredTurn:
    user: Message
    reply: Message | None


def _pair_turns(messages: Sequence[Message]) -> list[_StoredTurn]:
    """Each user message with the assistant reply that follows it (if any)."""
    turns: list[_StoredTurn] = []
    user: Message | None = None
    for message in messages:
        if message.role is Role.USER:
            if user is not None:
                turns.append(_StoredTurn(user, None))
            user = message
        elif message.role is Role.ASSISTANT and user is not None:
            turns.append(_StoredTurn(user, message))
            user = None
    if user is not None:
        turns.append(_StoredTurn(user, None))
    return turns


def _read_copy(db: Path, conversation_id: str) -> tuple[str, str, list[_StoredTurn]]:
    """Resolve the id in the copied database, read its turns, forget saved circuits."""
    with Store(db) as store:
        full_id = store.resolve_conversation_id(conversation_id)
        summary = store.get_conversation(full_id) if full_id else None
        if summary is None:
            raise ConversationNotFound(conversation_id)
        turns = _pair_turns(store.get_messages(summary.id))
        # Circuits opened in real use would make the replay skip those plugins:
        # the replay judges the pipeline as configured, from a clean start.
        store.db.execute("DELETE FROM plugin_kv WHERE namespace = ?", [_STATS_NAMESPACE])
    return summary.id, summary.title, turns


# --- observing the processors ----------------------------------------------------------------


class _ChangeRecorder:
    """Wraps the BEFORE_MESSAGE callbacks of the replay engine to see each one's effect.

    Only the replay's own engine is instrumented, so ordinary turns pay nothing.
    """

    def __init__(self) -> None:
        self.changes: list[ProcessorChange] = []

    def instrument(self, hooks: HookRegistry) -> None:
        for registration in hooks.registrations(HookType.BEFORE_MESSAGE):
            registration.callback = self._observe(registration.name, registration.callback)

    def _observe(self, plugin: str, callback: HookCallback) -> HookCallback:
        async def observed(message: Message, context: ChatContext) -> Any:
            result = await callback(message, context)
            # The same tests HookRegistry.run applies before it takes a hook's value.
            after = result
            if isinstance(result, PluginResult):
                after = result.data if result.success else None
            if isinstance(after, Message) and after.content != message.content:
                self.changes.append(ProcessorChange(plugin, message.content, after.content))
            return result

        return observed


# --- the replay ------------------------------------------------------------------------------


def _replay_config(pipeline: Config, data_dir: Path, backend: str | None) -> Config:
    """The pipeline config, pointed at the temporary folder, replicating nowhere."""
    if backend is not None and backend not in pipeline.backends:
        raise UnknownBackend(backend, list(pipeline.backends))
    replication = {**pipeline.replication.model_dump(), "redis_url": ""}
    return pipeline.with_overrides(
        data_dir=str(data_dir), replication=replication, dev=False, default_backend=backend
    )


async def replay_conversation(
    conversation_id: str,
    *,
    source: Config,
    pipeline: Config | None = None,
    backend: str | None = None,
) -> ReplayReport:
    """Send the user turns of a stored conversation through a pipeline; store nothing.

    Args:
        conversation_id: the stored conversation, by id or unique prefix.
        source: the config whose database holds the conversation.
        pipeline: the config to replay through (default: ``source``).
        backend: the backend to answer with (default: ``pipeline``'s default).

    Raises:
        ConversationNotFound: no stored conversation has that id or prefix.
        UnknownBackend: ``backend`` is not configured in ``pipeline``.
        ConfigError: ``pipeline`` is invalid (as when starting an engine).
    """
    from ._engine import open_engine

    pipeline = pipeline or source
    database = source.db_path
    if not database.is_file():
        # No history at all: say so without creating a database where there was none.
        raise ConversationNotFound(conversation_id)
    with tempfile.TemporaryDirectory(prefix=REPLAY_DIR_PREFIX) as tmp:
        folder = Path(tmp)  # mkdtemp makes it owner-only: the copy is private history
        copy = folder / DB_FILENAME
        await trio.to_thread.run_sync(snapshot_database, database, copy)
        full_id, title, stored = await trio.to_thread.run_sync(_read_copy, copy, conversation_id)
        config = _replay_config(pipeline, folder, backend)
        recorder = _ChangeRecorder()
        turns: list[ReplayTurn] = []
        async with open_engine(config) as engine:
            recorder.instrument(engine.hooks)
            # A new conversation: each turn sees the replayed user turns and the NEW replies.
            conversation = engine.conversation()
            for number, turn in enumerate(stored, start=1):
                recorder.changes = []
                reply_after: str | None = None
                answered_by: str | None = None
                error: str | None = None
                try:
                    reply = await conversation.send(turn.user.content)
                except (BackendError, InvalidInput) as exc:
                    error = str(exc)
                else:
                    reply_after = reply.content
                    by = reply.metadata.get(_ANSWERED_BY)
                    answered_by = None if by is None else str(by)
                turns.append(
                    ReplayTurn(
                        turn=number,
                        user=turn.user.content,
                        blocked=answered_by is not None,
                        answered_by=answered_by,
                        changes=tuple(recorder.changes),
                        reply_before=None if turn.reply is None else turn.reply.content,
                        reply_after=reply_after,
                        error=error,
                    )
                )
    return ReplayReport(
        conversation_id=full_id,
        title=title,
        backend=config.default_backend,
        config=None if pipeline.source is None else str(pipeline.source),
        turns=tuple(turns),
    )


# --- the human report ------------------------------------------------------------------------


def _block(label: str, text: str | None, width: int) -> list[str]:
    """``label: text`` with continuation lines indented under the text."""
    head = f"  {label.ljust(width)}  "
    if text is None:
        return [f"{head}(none)"]
    lines = text.split("\n")
    pad = " " * len(head)
    return [head + lines[0], *(pad + line for line in lines[1:])]


def render_report(report: ReplayReport) -> str:
    """The per-turn report ``chatcore replay`` prints, ending with a summary line."""
    out = [
        f"Replay of {report.conversation_id}  {report.title}",
        f"through {report.config or 'the built-in defaults'}, backend {report.backend!r}"
        " (nothing stored)",
    ]
    names = [c.plugin for t in report.turns for c in t.changes]
    width = max([len("reply before"), *map(len, names)])
    for turn in report.turns:
        if turn.error is not None:
            verdict = "FAILED"
        elif turn.blocked:
            verdict = f"BLOCKED by {turn.answered_by}"
        else:
            verdict = "answered"
        out += ["", f"Turn {turn.turn}: {verdict}"]
        out += _block("user", turn.user, width)
        for change in turn.changes:
            out += _block(change.plugin, f"{change.before!r} -> {change.after!r}", width)
        out += _block("reply before", turn.reply_before, width)
        if turn.error is not None:
            out += _block("error", turn.error, width)
        elif turn.reply_changed:
            out += _block("reply after", turn.reply_after, width)
        else:
            out += _block("reply after", "(same)", width)
    total = len(report.turns)
    summary = (
        f"{report.blocked} of {total} turns would be blocked; "
        f"{report.changed} changed by processors; {report.replies_differing} replies differ"
    )
    if report.failed:
        summary += f"; {report.failed} failed"
    out += ["", summary]
    return "\n".join(out)
