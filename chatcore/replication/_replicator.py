"""The replicator actor: pushes the outbox to Redis, pulls other devices' changes.

The local SQLite file is the source of truth. Every local change has an outbox row
(written in the same transaction); the :class:`Replicator` pushes those rows to Redis
in batches, each applied by one script call, and deletes them only once Redis has
acknowledged them; it pulls the changes of other devices from a Redis stream into the
local store.

Redis is spoken to with the official synchronous client (``redis``) in a worker thread
(``trio.to_thread.run_sync``), one call per batch: ``redis.asyncio`` would need an
asyncio loop, and the engine runs on Trio. A batch of 500 changes is one blocking round
trip, so one thread hop per batch costs little; reading the next batch and deleting the
previous one run in their own threads meanwhile.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ..errors import ChatcoreError, ReplicationOff, ReplicationUnavailable, StoreError
from ..hooks import HookType
from ..messages import LOCAL_METADATA, ChatContext, utcnow
from ..store import Change, ChangeKind
from ..store._changes import MESSAGE_CHANGE_PREFIX, parse_outbox_row
from ..store._codec import to_json
from ._client import describe_target, open_redis, url_secrets
from ._connectivity import ConnectivityChange, ConnectivityState, SyncStatus, classify
from ._layout import APPLY_SCRIPT, cursor_key, stream_key
from ._sharing import SHARED_FIELDS, local_of, shared_record, with_shared, without_local

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    import redis

    from ..config import ReplicationConfig
    from ..hooks import HookRegistry
    from ..messages import SharedRecord
    from ..store import Store

log = logging.getLogger("chatcore.replication")

PUSH_POLL_SECONDS = 0.2
"""While online, how often the replicator looks for new outbox rows.

Polling keeps the store untouched by replication (the store writer knows nothing of
the replicator); one indexed ``LIMIT 1`` read five times a second costs nothing."""
HEARTBEAT_SECONDS = 1.0
"""While online and idle, how often a PING checks that Redis is still there."""

SYNC_LAST_PUSH = "replication.last_push"
SYNC_LAST_PULL = "replication.last_pull"

_NO_CONTEXT = ChatContext(conversation_id="")
_LOCAL_MARK = f'"{LOCAL_METADATA}"'
"""Only a message row whose text holds this can carry plugin-local metadata."""


@dataclass(slots=True)
class _Batch:
    """Outbox rows read for one script call: their ids and the script's arguments."""

    ids: list[int]
    args: list[str]
    full: bool
    """As many rows as asked for: more may follow."""

    @property
    def first(self) -> int:
        return self.ids[0]

    @property
    def last(self) -> int:
        return self.ids[-1]

    @property
    def count(self) -> int:
        return len(self.ids)


@dataclass(slots=True)
class _Draft:
    """A batch read from the outbox whose changes to share are still to be finished."""

    ids: list[int]
    args: list[str]
    to_share: list[tuple[int, Change, tuple[Mapping[str, Any], ...]]]
    """(index in ``args``, change without local data, local data of its messages)."""
    full: bool


class _Step:
    """Runs the calls of one pipelined step side by side and keeps their outcomes.

    An error is kept, not raised, so one call failing never cancels the others (a store
    write is never abandoned) and the caller decides what to report first.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.errors: dict[str, Exception] = {}

    async def run(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            self.values[name] = await fn(*args)
        except Exception as exc:  # kept for the caller to raise
            self.errors[name] = exc

    def raise_for(self, name: str) -> None:
        if name in self.errors:
            raise self.errors[name]


class Replicator:
    """The replication actor: keeps the connectivity state, pushes, pulls.

    Push is continuous while online (new outbox rows are noticed within
    ``PUSH_POLL_SECONDS``); pull runs every ``pull_interval_seconds`` and on
    :meth:`request_sync`. Between failed connection attempts it waits a random time
    between 0 and ``min(backoff_max, backoff_base * 2**attempt)`` (full jitter).

    Args:
        store: the local store (opened with ``outbox=True``).
        settings: ``[replication]``; ``redis_url`` must not be empty.
        hooks: where ``ON_CONNECTIVITY_CHANGE`` fires, if anywhere.
        share: the plugins' ``BEFORE_SHARE`` hooks (``PluginManager.share``): what a
            change's texts may leave the machine as; without it they leave as stored
            (plugin-local metadata never does).
        rng: jitter source (seed one in tests).
        client: a Redis client to use instead of one built from ``settings``.
    """

    name = "replicator"

    def __init__(
        self,
        store: Store,
        settings: ReplicationConfig,
        *,
        hooks: HookRegistry | None = None,
        share: Callable[[SharedRecord], Awaitable[SharedRecord]] | None = None,
        rng: random.Random | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        if not settings.redis_url:
            raise ReplicationOff()
        self._store = store
        self._settings = settings
        self._hooks = hooks
        self._share = share
        self._rng = rng if rng is not None else random.Random()
        self._client = client if client is not None else open_redis(settings)
        self._script = self._client.register_script(APPLY_SCRIPT)
        self.target = describe_target(settings.redis_url)
        self._secrets = url_secrets(settings.redis_url)
        prefix = settings.key_prefix
        self._prefix = prefix
        self._stream = stream_key(prefix)
        self._cursor_key = cursor_key(settings.redis_url, prefix)
        self._state = ConnectivityState.OFFLINE
        self._last_error: str | None = None
        self._last_push: str | None = None
        self._last_pull: str | None = None
        self._loaded_times = False
        self._lock = trio.Lock()
        self._redis_limiter = trio.CapacityLimiter(1)
        self._wake = trio.Event()
        self._sync_requested = False
        self._attempt = 0
        self._last_contact = float("-inf")

    # ---------------------------------------------------------------- public

    @property
    def state(self) -> ConnectivityState:
        return self._state

    def status(self) -> SyncStatus:
        """A snapshot; ``pending`` is read from the outbox now (a quick query)."""
        self._load_times()
        return SyncStatus(
            state=self._state.value,
            pending=self._store.outbox_depth(),
            last_error=self._last_error,
            device_id=self._store.device_id,
            last_push=self._last_push,
            last_pull=self._last_pull,
        )

    def request_sync(self) -> None:
        """ "Sync now": push and pull at once (and retry a connection without waiting)."""
        self._sync_requested = True
        self._wake.set()

    async def probe(self) -> SyncStatus:
        """PING Redis once, update the state from the answer, return the status."""
        try:
            await self._redis(self._ping_blocking)
        except ReplicationUnavailable:
            pass
        else:
            await self._set_state(ConnectivityState.ONLINE, None)
        return await trio.to_thread.run_sync(self.status)

    async def push_once(self) -> int:
        """Push what is pending now, batch by batch; return how many changes were sent.

        Each batch is one script call that Redis applies as a whole. While batch k is
        in flight, the rows of batch k-1 (which Redis acknowledged) are deleted and
        batch k+1 is read, so the store and Redis work at the same time. Rows are
        deleted from the outbox only once Redis has acknowledged them, so an error or a
        crash at any point sends them again later, and the apply script makes that
        second delivery change nothing.

        Raises:
            ReplicationUnavailable: Redis is unreachable or refused a batch; what it
                acknowledged before that is no longer pending.
            StoreError: an outbox row is not a well-formed change (named by its id).
        """
        async with self._lock:
            size = self._settings.batch_size
            sent = 0
            current: _Batch | None = await self._next_batch(0, size)
            if current is None:  # nothing to send: still say whether Redis is there
                await self._redis(self._ping_blocking)
            delivered: _Batch | None = None  # applied by Redis, rows not yet deleted
            deferred: Exception | None = None
            while current is not None or delivered is not None:
                step = _Step()
                async with trio.open_nursery() as nursery:
                    if current is not None:
                        nursery.start_soon(step.run, "send", self._redis, self._send, current)
                        if current.full:
                            nursery.start_soon(
                                step.run, "next", self._next_batch, current.last, size
                            )
                    if delivered is not None:
                        ack = self._store.outbox_ack_range
                        nursery.start_soon(
                            step.run, "ack", self._local, ack, delivered.first, delivered.last
                        )
                if delivered is not None:
                    step.raise_for("ack")
                    sent += delivered.count
                    delivered = None
                if current is not None:
                    step.raise_for("send")
                    delivered = current
                    current = step.values.get("next")
                    # A bad row in the next batch: delete what Redis took, then report it.
                    deferred = step.errors.get("next")
            if deferred is not None:
                raise deferred
            await self._succeeded()
            self._last_push = utcnow().isoformat()
            await self._local(self._store.sync_set, SYNC_LAST_PUSH, self._last_push)
            return sent

    async def pull_once(self) -> int:
        """Read the change stream from the saved cursor and merge other devices' changes.

        The cursor moves only after the changes before it are committed locally, so a
        crash re-reads them, and ``apply_changes`` makes that harmless.

        Returns:
            How many changes altered the local store.

        Raises:
            ReplicationUnavailable: Redis is unreachable or refused the read.
        """
        async with self._lock:
            cursor = await self._local(self._store.sync_get, self._cursor_key) or "0-0"
            own = self._store.device_id
            batch = self._settings.batch_size
            applied = 0
            while True:
                entries = await self._redis(self._read_blocking, cursor, batch)
                if not entries:
                    break
                changes = [c for c in (self._parse(i, f, own) for i, f in entries) if c]
                if changes:
                    applied += await self._local(self._store.apply_changes, changes)
                cursor = entries[-1][0]
                await self._local(self._store.sync_set, self._cursor_key, cursor)
                if len(entries) < batch:
                    break
            await self._succeeded()
            self._last_pull = utcnow().isoformat()
            await self._local(self._store.sync_set, SYNC_LAST_PULL, self._last_pull)
            return applied

    def close(self) -> None:
        """Drop the client's connections (a call abandoned in a thread just fails)."""
        self._client.close()

    # ---------------------------------------------------------------- the actor

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if self._attempt:
                ceiling = min(
                    self._settings.backoff_max_seconds,
                    self._settings.backoff_base_seconds * 2 ** (self._attempt - 1),
                )
                await self._wait(self._rng.uniform(0, ceiling))
            await self._set_state(ConnectivityState.CONNECTING, self._last_error)
            try:
                await self._redis(self._ping_blocking)
                await self._set_state(ConnectivityState.ONLINE, None)
                await self._serve()
            except ReplicationUnavailable:
                # Reset only by progress (a push or pull that worked), so a Redis that
                # answers PING but refuses every write still gets a growing backoff.
                self._attempt += 1
            except StoreError as exc:
                # A local problem (say, an unreadable outbox row) must not crash-loop the
                # actor and stop the engine with it: report it and retry with backoff.
                self._last_error = f"local store: {exc}"
                log.error("replication: %s", self._last_error)
                self._attempt += 1

    async def _serve(self) -> None:
        next_pull = trio.current_time()
        while True:
            now = trio.current_time()
            if self._sync_requested:
                self._sync_requested = False
                next_pull = now
            if await self._local(self._store.outbox_rows, 1):
                await self.push_once()
            if trio.current_time() >= next_pull:
                await self.pull_once()
                next_pull = trio.current_time() + self._settings.pull_interval_seconds
            elif trio.current_time() - self._last_contact >= HEARTBEAT_SECONDS:
                await self._redis(self._ping_blocking)
                self._last_contact = trio.current_time()
            await self._wait(min(PUSH_POLL_SECONDS, max(0.0, next_pull - trio.current_time())))

    async def _wait(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._wake.wait()
        if self._wake.is_set():
            self._wake = trio.Event()

    # ---------------------------------------------------------------- state

    async def _set_state(self, state: ConnectivityState, error: str | None) -> None:
        previous = self._state
        self._last_error = error if error is not None else self._last_error
        if state is ConnectivityState.ONLINE:
            self._last_contact = trio.current_time()
        if state is previous:
            return
        self._state = state
        if state is ConnectivityState.ONLINE:
            log.info("replication: online (%s)", self.target)
        elif state is not ConnectivityState.CONNECTING:
            log.warning("replication: %s (%s): %s", state.value, self.target, error)
        if self._hooks is None:
            return
        change = ConnectivityChange(previous, state, error, self.target)
        try:
            await self._hooks.run(HookType.ON_CONNECTIVITY_CHANGE, change, _NO_CONTEXT)
        except ChatcoreError as exc:  # a fail_fast hook: its failure can't stop replication
            log.warning("replication: an on_connectivity_change hook failed: %s", exc)

    async def _succeeded(self) -> None:
        self._attempt = 0
        await self._set_state(ConnectivityState.ONLINE, None)

    async def _unavailable(self, exc: BaseException) -> ReplicationUnavailable:
        state, reason = classify(exc, self.target, self._secrets)
        await self._set_state(state, reason)
        return ReplicationUnavailable(self.target, reason, state)

    def _load_times(self) -> None:
        if not self._loaded_times:
            self._loaded_times = True
            self._last_push = self._last_push or self._store.sync_get(SYNC_LAST_PUSH)
            self._last_pull = self._last_pull or self._store.sync_get(SYNC_LAST_PULL)

    # ---------------------------------------------------------------- threads

    async def _local(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Never abandoned: a store write must finish before the store may close.
        return await trio.to_thread.run_sync(fn, *args)

    async def _redis(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking Redis call in a thread; its errors become ReplicationUnavailable.

        Abandoned on cancel: a push whose answer is lost is simply sent again later.
        """
        from redis.exceptions import RedisError

        try:
            return await trio.to_thread.run_sync(
                fn, *args, abandon_on_cancel=True, limiter=self._redis_limiter
            )
        except (RedisError, OSError) as exc:
            raise await self._unavailable(exc) from None

    def _ping_blocking(self) -> None:
        self._client.ping()

    async def _next_batch(self, after: int, limit: int) -> _Batch | None:
        """The script's arguments for the next outbox rows after ``after``; None when none."""
        draft = await self._local(self._draft_batch, after, limit)
        if draft is None:
            return None
        for index, change, local in draft.to_share:
            if self._share is not None:
                change = with_shared(change, await self._share(shared_record(change, local)))
            draft.args[index] = change.to_json()
            if change.kind is ChangeKind.CONVERSATION:
                draft.args[index + 1] = to_json(change.data.get("metadata") or {})
        return _Batch(draft.ids, draft.args, full=draft.full)

    def _draft_batch(self, after: int, limit: int) -> _Draft | None:
        """Read the next outbox rows after ``after`` (blocking) and start their arguments.

        A MESSAGE row without plugin-local metadata is passed on as the stored text:
        Redis needs it as text, and the script takes what it needs from it. A row that
        mentions the local key is parsed, and the local data goes. Other kinds (one per
        conversation or deletion, rare) are parsed and checked. What the plugins must
        see before it leaves (``to_share``: messages that had local data, and every
        conversation, with the local data of its messages) is finished by
        ``_next_batch``; a CONVERSATION change is followed by its metadata JSON.
        """
        rows = self._store.outbox_rows(limit, after=after)
        if not rows:
            return None
        args = [self._prefix]
        ids: list[int] = []
        to_share: list[tuple[int, Change, tuple[Mapping[str, Any], ...]]] = []
        conversations: list[tuple[int, Change]] = []
        for row_id, text in rows:
            ids.append(row_id)
            if text.startswith(MESSAGE_CHANGE_PREFIX) and _LOCAL_MARK not in text:
                args.append(text)
                continue
            change = parse_outbox_row(self._store.path, row_id, text)
            if change.kind is ChangeKind.CONVERSATION:
                if any(name in change.data for name in SHARED_FIELDS[change.kind]):
                    conversations.append((len(args), change))
                    args += ("", "")
                else:  # say, a model change only: no text for the plugins to see
                    args += (text, to_json(change.data.get("metadata") or {}))
                continue
            local = local_of(change)
            change = without_local(change)
            if local:
                to_share.append((len(args), change, (local,)))
            args.append(change.to_json())
        if conversations:
            wanted = sorted({c.conversation_id for _, c in conversations})
            locals_by_conversation: dict[str, list[Mapping[str, Any]]] = {}
            for cid, kept in self._store.local_metadata(wanted):
                locals_by_conversation.setdefault(cid, []).append(kept)
            for index, change in conversations:
                sources = tuple(locals_by_conversation.get(change.conversation_id, ()))
                to_share.append((index, change, sources))
        return _Draft(ids, args, to_share, full=len(rows) == limit)

    def _send(self, batch: _Batch) -> None:
        """Apply ``batch`` in one script call; a malformed row is a StoreError naming it."""
        reply = self._script(keys=[self._stream], args=batch.args, client=self._client)
        if not isinstance(reply, list) or not reply:
            raise StoreError(f"replication: unexpected reply from the apply script: {reply!r:.200}")
        if reply[0] == "bad":
            row_id = batch.ids[int(reply[1]) - 1]
            raise StoreError(
                f"{self._store.path}: outbox row {row_id}: malformed change: {reply[2]}"
            )

    def _read_blocking(self, cursor: str, count: int) -> list[tuple[str, dict[str, str]]]:
        low = "-" if cursor == "0-0" else f"({cursor}"
        found = self._client.xrange(self._stream, min=low, max="+", count=count)
        # decode_responses=True: ids and fields are str (the stubs allow bytes too).
        return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in found or ()]

    def _parse(self, entry_id: str, fields: Mapping[str, str], own: str) -> Change | None:
        if fields.get("device") == own:
            return None
        try:
            change = Change.from_json(fields.get("change", ""))
        except StoreError as exc:
            # One bad entry must not block the stream for good: skip it, loudly.
            log.warning("replication: skipping stream entry %s: %s", entry_id, exc)
            return None
        return None if change.device_id == own else change
