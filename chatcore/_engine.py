"""The engine: opens the store, loads plugins, supervises the pipeline actors.

``open_engine`` is the one way in for scripts, the CLI and the UI::

    async with open_engine(backend="echo") as engine:
        conversation = engine.conversation()
        reply = await conversation.send("hello")
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sniffio
import trio

from ._asyncio import bridged
from ._conversation import Conversation, ReplyStream
from ._plugins import BackgroundJobs, PluginManager, PluginState, PluginStatus
from .actors import ActorStatus, Supervisor, open_supervisor
from .config import Config, load_config
from .errors import (
    BackendError,
    ConversationNotFound,
    EngineClosed,
    InvalidInput,
    PluginLoadError,
    StoreFull,
    UnknownBackend,
)
from .hooks import HookRegistry
from .messages import Chunk, Message, MessageStatus, Role, new_id
from .pipeline import ConversationState, Pipeline, Turn, TurnOptions
from .store import (
    SEARCH_LIMIT,
    ConversationSummary,
    SearchHit,
    Store,
    StoreStatistics,
    StoreWriter,
    TurnRecord,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from ._asyncio import TrioGuest
    from .replication import Replicator, SyncStatus

__all__ = ["Conversation", "Engine", "EngineStatus", "ReplyStream", "ask", "open_engine"]

log = logging.getLogger("chatcore.engine")

STATS_NAMESPACE = "@stats"
"""plugin_kv namespace of plugin counters and circuits; '@' can't start a plugin name."""


@dataclass(frozen=True, slots=True)
class EngineStatus:
    actors: tuple[ActorStatus, ...]
    plugins: Mapping[str, PluginStatus]
    store: StoreStatistics
    turns_in_flight: int
    data_dir: str
    default_backend: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "actors": [a.as_dict() for a in self.actors],
            "plugins": {k: v.as_dict() for k, v in self.plugins.items()},
            "store": dataclasses.asdict(self.store),
            "turns_in_flight": self.turns_in_flight,
            "data_dir": self.data_dir,
            "default_backend": self.default_backend,
        }


class Engine:
    """A running chatcore: conversations, plugins, store and the actors behind them."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        plugins: PluginManager,
        hooks: HookRegistry,
        supervisor: Supervisor,
        pipeline: Pipeline,
        replicator: Replicator | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.plugins = plugins
        self.hooks = hooks
        self.supervisor = supervisor
        self._pipeline = pipeline
        self.replicator = replicator
        """Replication to Redis; None when ``[replication] redis_url`` is empty."""
        self._conversations: dict[str, ConversationState] = {}
        self._in_flight: set[Turn] = set()
        self._keyed: dict[str, Turn] = {}
        """Turns in flight with an idempotency key: a retry of one waits for it."""
        self._closing = False
        self._guest: TrioGuest | None = None
        """Set when the engine was opened under asyncio: calls from there run in it."""

    # -- conversations ----------------------------------------------------------------

    def conversation(
        self,
        id: str | None = None,
        *,
        backend: str | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> Conversation:
        """A conversation to talk in: a new one, or an existing one by id (or unique prefix).

        Raises:
            ConversationNotFound: ``id`` matches no stored conversation.
            UnknownBackend: ``backend`` is not configured.
        """
        if backend is not None:
            self._check_backend(backend)
        if id is None:
            state = ConversationState(id=new_id(), history=(), unsaved=True)
            self._conversations[state.id] = state
        else:
            state_or_none = self._conversations.get(id)
            if state_or_none is None:
                full_id = self.store.resolve_conversation_id(id)
                if full_id is None:
                    raise ConversationNotFound(id)
                state_or_none = self._conversations.get(full_id)
                if state_or_none is None:
                    # Read once per engine: later turns keep the settings in memory.
                    settings = self.store.conversation_settings(full_id)
                    backend_, model_, system_ = settings or (None, None, None)
                    state_or_none = self._conversations.setdefault(
                        full_id,
                        ConversationState(
                            id=full_id, backend=backend_, model=model_, system=system_
                        ),
                    )
            state = state_or_none
        return Conversation(self, state, backend=backend, model=model, system=system)

    def latest_conversation(self) -> Conversation | None:
        """The most recently updated stored conversation, if there is one."""
        latest = self.store.latest_conversation_id()
        return None if latest is None else self.conversation(latest)

    @bridged
    async def conversations(self, *, limit: int | None = None) -> list[ConversationSummary]:
        """The stored conversations, most recently updated first.

        Args:
            limit: at most this many (the newest); None lists them all.

        Raises:
            ValueError: ``limit`` is less than 1.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        return await trio.to_thread.run_sync(lambda: self.store.list_conversations(limit=limit))

    async def search(self, text: str, *, limit: int = SEARCH_LIMIT) -> list[SearchHit]:
        """Stored messages whose content matches every word of ``text``, newest first.

        Read-only, and the same full-text search as ``chatcore history search``: words,
        not substrings, a word ending in ``*`` matches as a prefix, and punctuation or
        FTS5 syntax in ``text`` is taken literally.

        Raises:
            ValueError: ``limit`` is less than 1.
        """
        return await trio.to_thread.run_sync(lambda: self.store.search(text, limit=limit))

    async def list_conversations(self, *, limit: int | None = None) -> list[ConversationSummary]:
        """The same as ``conversations()``, under the name earlier code uses."""
        return await self.conversations(limit=limit)

    def status(self) -> EngineStatus:
        return EngineStatus(
            actors=self.supervisor.status(),
            plugins=self.plugins.get_plugin_status(),
            store=self._pipeline.writer.statistics(),
            turns_in_flight=len(self._in_flight),
            data_dir=str(self.config.resolved_data_dir),
            default_backend=self.config.default_backend,
        )

    def sync_status(self) -> SyncStatus | None:
        """Connectivity, outbox depth and sync times; None when replication is off."""
        return None if self.replicator is None else self.replicator.status()

    def sync_now(self) -> bool:
        """Push and pull now instead of at the next interval; False when replication is off."""
        if self.replicator is None:
            return False
        self.replicator.request_sync()
        return True

    # -- turns ------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closing:
            raise EngineClosed("the engine is closed; open a new one with open_engine()")

    def _check_backend(self, backend: str) -> None:
        if backend not in self.config.backends:
            raise UnknownBackend(backend, list(self.config.backends))

    def _check_plugins_loaded(self) -> None:
        # Fail closed: a misspelled safety filter must not switch itself off silently.
        failures = self.plugins.load_failures()
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise PluginLoadError(
                f"{failures[0]}{more}; no turn runs without it: fix the entry, "
                "pause the plugin, or set required = false"
            )

    async def _check_backend_loads(self, backend: str) -> None:
        # A backend that fails before it could start (its plugin can't be imported, a
        # mistake in its table) is a config mistake, not a failed turn: say where it
        # is, and store nothing.
        record = await self.plugins.ensure_backend(backend)
        lifecycle = record.lifecycle
        if (
            lifecycle.state is PluginState.ERROR
            and PluginState.INITIALIZING not in lifecycle.history
        ):
            if record.config_error:
                raise PluginLoadError(lifecycle.reason or f"backends.{backend}: invalid")
            where = f"{self.config.source}: " if self.config.source is not None else ""
            raise PluginLoadError(f"{where}backends.{backend}.plugin: {lifecycle.reason}")

    def _validate(self, text: str) -> None:
        if not isinstance(text, str):
            raise InvalidInput(f"a prompt must be text, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInput("empty prompt: type something to send")
        limit = self.config.max_message_chars
        if len(text) > limit:
            raise InvalidInput(
                f"prompt too long: {len(text):,} characters (max_message_chars is {limit:,})"
            )
        if "\x00" in text:
            raise InvalidInput("prompt contains NUL bytes; send text, not binary data")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = ord(text[exc.start])
            raise InvalidInput(
                f"prompt is not valid text: a lone surrogate (U+{bad:04X}) at character "
                f"{exc.start}; decode the input as UTF-8 first"
            ) from None

    def _new_turn(
        self,
        state: ConversationState,
        text: str,
        options: TurnOptions,
        chunks: trio.MemorySendChannel[Chunk] | None,
        client_id: str | None = None,
    ) -> Turn:
        self._ensure_open()
        self._validate(text)
        if client_id is not None:
            _check_client_id(client_id)
        self._check_backend(options.backend)
        self._check_plugins_loaded()
        return Turn(
            conversation=state, text=text, options=options, chunks=chunks, client_id=client_id
        )

    async def _submit(self, turn: Turn) -> None:
        self._ensure_open()
        # Ordering is fixed here, before the first checkpoint, so concurrent sends keep
        # submission order (and a stream that is never iterated holds nobody up).
        state = turn.conversation
        turn.previous = state.last_turn
        state.last_turn = turn
        turn.on_finished = self._forget
        self._in_flight.add(turn)
        try:
            if turn.client_id is not None and await self._answer_retry(turn):
                return
            await self._check_backend_loads(turn.options.backend)
            await self._pipeline.gateway.send_channel.send(turn)
        except BaseException as exc:
            # Never entered the pipeline: finish it so a turn queued behind it goes on.
            turn.finish(exc)
            raise

    async def _answer_retry(self, turn: Turn) -> bool:
        """Finish ``turn`` with the stored reply of its key, if that turn is stored.

        One indexed read, only for turns with a key. A turn of the same key still in
        flight in this engine is waited for first, so two sends of one key run once.
        """
        key = turn.client_id
        assert key is not None
        while (original := self._keyed.get(key)) is not None:
            await original.finished.wait()
        self._keyed[key] = turn
        reply = await trio.to_thread.run_sync(self.store.find_turn, key)
        if reply is None:
            return False
        state = turn.conversation
        if reply.conversation_id != state.id:
            self._adopt(state, turn, key, reply.conversation_id or "")
        if reply.status is MessageStatus.ERROR:
            reason = str(reply.metadata.get("error") or reply.content)
            turn.error = BackendError(reason, backend=reply.metadata.get("backend"))
        else:
            turn.reply = reply
            if turn.chunks is not None and reply.content:
                chunk = Chunk(text=reply.content, index=0, done=True, model=reply.model)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await turn.chunks.send(chunk)
        turn.persisted.set()  # stored long ago: nothing of this turn is to be written
        turn.finish()
        return True

    def _adopt(self, state: ConversationState, turn: Turn, key: str, stored_in: str) -> None:
        """A retried first turn names the conversation its key was stored in: a new,
        empty conversation becomes that one; any other is refused."""
        if not (state.unsaved and state.last_turn is turn and turn.previous is None):
            raise InvalidInput(
                f"client_id {key!r} belongs to a turn of another conversation ({stored_in}); "
                "a new turn needs a new client_id"
            )
        if stored_in in self._conversations:
            return  # already open here: the reply says where it is
        del self._conversations[state.id]
        settings = self.store.conversation_settings(stored_in)
        state.id, state.history, state.unsaved = stored_in, None, False
        state.backend, state.model, state.system = settings or (None, None, None)
        self._conversations[stored_in] = state

    def _forget(self, turn: Turn) -> None:
        self._in_flight.discard(turn)
        if turn.client_id is not None and self._keyed.get(turn.client_id) is turn:
            del self._keyed[turn.client_id]
        if turn.conversation.last_turn is turn:
            turn.conversation.last_turn = None

    async def _await(self, turn: Turn) -> Message:
        await turn.finished.wait()
        if turn.error is not None:
            raise turn.error
        assert turn.reply is not None
        return turn.reply.replace(
            conversation_id=turn.reply.conversation_id or turn.conversation.id
        )

    async def _close(self, grace_s: float) -> None:
        """Stop taking turns, end the ones in flight as ``partial``, stop the actors."""
        self._closing = True
        for turn in list(self._in_flight):
            if not turn.finished.is_set():
                turn.error = turn.error or EngineClosed(
                    "the engine closed mid-reply; what arrived so far is saved as partial"
                )
            turn.cancel()
        with trio.move_on_after(grace_s):
            for turn in list(self._in_flight):
                await turn.finished.wait()
        await self.supervisor.stop()
        # A keyed turn that never reached the gateway is left out: the caller gets
        # EngineClosed and retries with its key, which must not find a salvaged copy.
        stranded = sorted(
            (
                t
                for t in self._in_flight
                if not t.persisted.is_set() and (t.client_id is None or t.user_message is not None)
            ),
            key=lambda t: t.started_at,
        )
        if stranded:
            await self._pipeline.writer.write_direct([_salvage(t) for t in stranded])
        for turn in list(self._in_flight):
            turn.finish(EngineClosed("the engine closed before this turn finished"))
        self._in_flight.clear()
        await self._save_stats()
        await self.plugins.shutdown()

    async def _restore_stats(self) -> None:
        names = self.plugins.names

        def load() -> dict[str, Any]:
            return {name: self.store.kv_get(STATS_NAMESPACE, name) for name in names}

        self.plugins.restore_stats(await trio.to_thread.run_sync(load))

    async def _save_stats(self) -> None:
        snapshots = self.plugins.stats_snapshots()

        def save() -> None:
            for name, snapshot in snapshots.items():
                self.store.kv_set(STATS_NAMESPACE, name, snapshot)

        try:
            await trio.to_thread.run_sync(save)
        except StoreFull as exc:
            # Counters are not worth an error on the way out; every turn is stored.
            log.warning("plugin counters not saved: %s", exc)


CLIENT_ID_MAX_CHARS = 256


def _check_client_id(client_id: str) -> None:
    if (
        not isinstance(client_id, str)
        or not client_id.strip()
        or len(client_id) > CLIENT_ID_MAX_CHARS
        or "\x00" in client_id
    ):
        raise InvalidInput(
            f"client_id must be non-blank text of at most {CLIENT_ID_MAX_CHARS} characters "
            "without NUL bytes (a UUID per turn, say)"
        )


def _salvage(turn: Turn) -> TurnRecord:
    """What to store of a turn the pipeline could not finish: never lose the user's words."""
    if turn.user_message is None:
        turn.user_message = Message(role=Role.USER, content=turn.text)
    turn.user_message = turn.keyed(turn.user_message)
    reply = turn.reply = turn.keyed(
        turn.salvage_reply("interrupted: the engine shut down mid-reply")
    )
    return TurnRecord(
        conversation_id=turn.conversation.id,
        messages=(turn.user_message, reply),
        backend=turn.options.backend,
        model=turn.options.model,
        system=turn.options.system,
    )


@asynccontextmanager
async def open_engine(
    config: str | Path | Config | None = None, **overrides: Any
) -> AsyncIterator[Engine]:
    """Start an engine; leaving the block stops it cleanly. Works under Trio and asyncio.

    Under asyncio the engine runs as a Trio guest on the running loop; ``send``,
    ``stream``, ``messages`` and the other async methods are called as usual.

    Args:
        config: a config file, a ``Config``, or None for the usual lookup
            (``$CHATCORE_CONFIG``, the user config, the shipped default).
        **overrides: config keys to override, e.g. ``default_backend="echo"``,
            ``data_dir=...``; ``backend=`` is short for ``default_backend=``.

    Raises:
        ConfigError: the configuration is invalid (file, key and problem named).
        EngineStopped: an actor crashed faster than its restart intensity allows.
    """
    if sniffio.current_async_library() == "asyncio":
        from ._asyncio import open_guest_engine

        async with open_guest_engine(_open_trio_engine, config, overrides) as engine:
            yield engine
        return
    async with _open_trio_engine(config, **overrides) as engine:
        yield engine


@asynccontextmanager
async def _open_trio_engine(
    config: str | Path | Config | None = None, **overrides: Any
) -> AsyncIterator[Engine]:
    if "backend" in overrides:
        backend = overrides.pop("backend")
        if backend is not None:
            overrides["default_backend"] = backend
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(config, Config):
        cfg = config.with_overrides(**overrides) if overrides else config
    else:
        cfg = load_config(config, **overrides)
    runtime = cfg.runtime
    replicating = bool(cfg.replication.redis_url)
    # Without a Redis to send them to, outbox rows would only pile up: none are written.
    store = Store(cfg.db_path, outbox=replicating)
    replicator: Replicator | None = None
    try:
        hooks = HookRegistry()
        jobs = BackgroundJobs()
        manager = PluginManager(cfg, hooks, store=store, jobs=jobs)
        writer = StoreWriter(store, capacity=runtime.channel_capacity)
        if replicating:
            from .replication import Replicator

            replicator = Replicator(store, cfg.replication, hooks=hooks, share=manager.share)
        async with open_supervisor(
            max_restarts=runtime.max_restarts,
            within_s=runtime.restart_window_seconds,
            backoff_base_s=runtime.restart_backoff_seconds,
            backoff_max_s=runtime.restart_backoff_max_seconds,
        ) as supervisor:
            manager.supervisor = supervisor  # process-isolated plugins run their children here
            pipeline = Pipeline(
                manager,
                hooks,
                store,
                writer,
                default_system=cfg.system_prompt,
                capacity=runtime.channel_capacity,
                concurrency=runtime.stage_concurrency,
            )
            engine = Engine(
                cfg,
                store=store,
                plugins=manager,
                hooks=hooks,
                supervisor=supervisor,
                pipeline=pipeline,
                replicator=replicator,
            )
            try:
                await supervisor.start(jobs)
                await manager.initialize()
                await engine._restore_stats()
                if cfg.dev:
                    from ._plugins._watch import PluginWatcher

                    await supervisor.start(PluginWatcher(manager))
                await supervisor.start(writer)
                for stage in reversed(pipeline.stages):
                    await supervisor.start(stage)
                if replicator is not None:
                    # Started last, so it stops first: nothing is pushed mid-shutdown.
                    await supervisor.start(replicator)
                yield engine
            finally:
                with trio.CancelScope(shield=True):
                    await engine._close(runtime.shutdown_grace_seconds)
    finally:
        if replicator is not None:
            replicator.close()
        store.close()


def ask(
    text: str,
    *,
    backend: str | None = None,
    config: str | Path | Config | None = None,
    **overrides: Any,
) -> Message:
    """Send one message in a new conversation and return the reply (blocking).

    For scripts that are not async: ``print(chatcore.ask("hi", backend="echo").content)``.
    """

    async def main() -> Message:
        async with open_engine(config, backend=backend, **overrides) as engine:
            return await engine.conversation().send(text)

    return trio.run(main)
