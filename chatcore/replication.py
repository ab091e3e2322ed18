"""Replication to Redis: the replicator actor, the Redis layout and its idempotent apply.

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

Layout (``P`` is ``[replication] key_prefix``; ``{conv:ID}`` is a hash tag, so every key
of one conversation lives in one Redis Cluster slot):

- ``P:{conv:ID}:meta`` hash: the conversation's last-writer-wins fields (``title``,
  ``created_at``, ``backend``, ``model``, ``system``, ``metadata`` as JSON), the stamp
  that wrote them (``hlc``, ``device``), and ``deleted_hlc``/``deleted_at`` once deleted;
- ``P:{conv:ID}:msgs`` hash: message id → message JSON;
- ``P:{conv:ID}:mhlc`` hash: message id → the stamp of the stored version;
- ``P:{conv:ID}:applied`` set: ids of the changes applied already (the dedupe marker);
- ``P:changes`` stream: one entry (fields ``device``, ``change``) per change that
  altered Redis, read by the other devices.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import trio

from .errors import ChatcoreError
from .hooks import HookType
from .messages import ChatContext, utcnow
from .store import Change, ChangeKind, StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    import redis

    from .config import Config, ReplicationConfig
    from .hooks import HookRegistry
    from .store import Store

__all__ = [
    "HEARTBEAT_SECONDS",
    "PUSH_POLL_SECONDS",
    "ConnectivityChange",
    "ConnectivityState",
    "ReplicationError",
    "ReplicationOff",
    "ReplicationUnavailable",
    "Replicator",
    "SyncStatus",
    "describe_target",
    "open_redis",
    "redact_change",
    "sync_pull",
    "sync_push",
    "sync_status",
]

log = logging.getLogger(__name__)

PUSH_POLL_SECONDS = 0.2
"""While online, how often the replicator looks for new outbox rows.

Polling keeps the store untouched by replication (the store writer knows nothing of
the replicator); one indexed ``LIMIT 1`` read five times a second costs nothing."""
HEARTBEAT_SECONDS = 1.0
"""While online and idle, how often a PING checks that Redis is still there."""

SYNC_LAST_PUSH = "replication.last_push"
SYNC_LAST_PULL = "replication.last_pull"
_CURSOR_KEY = "replication.cursor"

_NO_CONTEXT = ChatContext(conversation_id="")

# Applies a whole batch of changes in one call. Per change: dedupe by its id, then
# last-writer-wins, and a stream entry only when the change is new AND altered Redis.
# Stamps are fixed-width text ending in the device id, so comparing them as strings is
# comparing (time, counter, device).
#
# KEYS[1]: the change stream. ARGV[1]: the key prefix, then one argument per change: its
# JSON as the outbox stores it (data last, so a message's JSON is the text between
# '"data":' and the final brace, stored as is: no decode/encode round trip can alter
# it). A CONVERSATION change is followed by its metadata as JSON text.
#
# Every change is checked before anything is written: a malformed one makes the script
# return {'bad', n, reason} (n counts changes from 1) with Redis untouched. Otherwise it
# returns {'ok', altered, duplicates}. The conversation keys are built here, not passed
# in KEYS: that is what a single Redis allows, and what a Cluster would refuse.
_APPLY_LUA = """
local prefix = ARGV[1]
local stamp_pattern = '^' .. string.rep('%d', 13) .. '%.' .. string.rep('%d', 5) .. '%..+$'
local function text_or_empty(value)
  if type(value) == 'string' then return value end
  return ''
end
local changes = {}
local i = 2
local n = 0
while i <= #ARGV do
  local raw = ARGV[i]
  n = n + 1
  local ok, c = pcall(cjson.decode, raw)
  if not ok or type(c) ~= 'table' then
    return {'bad', n, 'not a JSON object'}
  end
  local kind, cid, stamp, device, data = c.kind, c.conversation_id, c.hlc, c.device_id, c.data
  if type(cid) ~= 'string' or cid == '' then
    return {'bad', n, 'conversation_id: expected non-empty text'}
  end
  if type(stamp) ~= 'string' or not string.find(stamp, stamp_pattern) then
    return {'bad', n, 'hlc: expected <13 digits>.<5 digits>.<device id>'}
  end
  if type(device) ~= 'string' or device == '' then
    return {'bad', n, 'device_id: expected non-empty text'}
  end
  if type(data) ~= 'table' then
    return {'bad', n, 'data: expected an object'}
  end
  local change = {kind = kind, cid = cid, stamp = stamp, device = device, raw = raw}
  if kind == 'message' then
    if type(data.id) ~= 'string' or data.id == '' then
      return {'bad', n, 'data.id: expected non-empty text'}
    end
    local at = string.find(raw, '"data":', 1, true)
    if not at or string.sub(raw, -2) ~= '}}' then
      return {'bad', n, 'data: expected as the last field'}
    end
    change.id = 'msg:' .. data.id .. ':' .. stamp
    change.mid = data.id
    change.body = string.sub(raw, at + 7, -2)
  elseif kind == 'conversation' then
    i = i + 1
    if ARGV[i] == nil then
      return {'bad', n, 'no metadata argument after a conversation change'}
    end
    change.id = 'conversation:' .. cid .. ':' .. stamp
    change.fields = {
      'title', text_or_empty(data.title), 'created_at', text_or_empty(data.created_at),
      'backend', text_or_empty(data.backend), 'model', text_or_empty(data.model),
      'system', text_or_empty(data.system), 'metadata', ARGV[i],
    }
  elseif kind == 'tombstone' then
    if type(data.deleted_at) ~= 'string' then
      return {'bad', n, 'data.deleted_at: expected text'}
    end
    change.id = 'tombstone:' .. cid .. ':' .. stamp
    change.deleted_at = data.deleted_at
  else
    return {'bad', n, 'kind: expected message, conversation or tombstone'}
  end
  changes[n] = change
  i = i + 1
end
local stream = KEYS[1]
local tombstoned = {}
local altered_count, duplicates = 0, 0
for _, c in ipairs(changes) do
  local base = prefix .. ':{conv:' .. c.cid .. '}:'
  if redis.call('SADD', base .. 'applied', c.id) == 0 then
    duplicates = duplicates + 1
  else
    local tomb = tombstoned[c.cid]
    if tomb == nil then
      tomb = redis.call('HEXISTS', base .. 'meta', 'deleted_hlc') == 1
      tombstoned[c.cid] = tomb
    end
    local altered = false
    if tomb then
      altered = false
    elseif c.kind == 'message' then
      local current = redis.call('HGET', base .. 'mhlc', c.mid)
      if (not current) or c.stamp > current then
        redis.call('HSET', base .. 'msgs', c.mid, c.body)
        redis.call('HSET', base .. 'mhlc', c.mid, c.stamp)
        altered = true
      end
    elseif c.kind == 'conversation' then
      local current = redis.call('HGET', base .. 'meta', 'hlc')
      if (not current) or c.stamp > current then
        redis.call('HSET', base .. 'meta', 'hlc', c.stamp, 'device', c.device, unpack(c.fields))
        altered = true
      end
    else
      redis.call('DEL', base .. 'msgs', base .. 'mhlc')
      redis.call('HSET', base .. 'meta', 'deleted_hlc', c.stamp, 'deleted_at', c.deleted_at)
      tombstoned[c.cid] = true
      altered = true
    end
    if altered then
      redis.call('XADD', stream, '*', 'device', c.device, 'change', c.raw)
      altered_count = altered_count + 1
    end
  end
end
return {'ok', altered_count, duplicates}
"""

_MESSAGE_HEAD = '{"kind":"message",'
"""How every MESSAGE change the store writes begins (``_change_json``: fixed key order)."""


# --------------------------------------------------------------------------- values


class ConnectivityState(StrEnum):
    """How the replicator stands with Redis."""

    OFFLINE = "offline"
    """Redis can't be reached (refused, timed out, TLS failed)."""
    CONNECTING = "connecting"
    """A connection attempt is under way."""
    ONLINE = "online"
    """Redis answers and accepts writes."""
    DEGRADED = "degraded"
    """Redis answers but refuses the work (out of memory, read-only, loading, auth)."""


@dataclass(frozen=True, slots=True)
class ConnectivityChange:
    """The payload of ``ON_CONNECTIVITY_CHANGE``."""

    previous: ConnectivityState
    state: ConnectivityState
    error: str | None
    target: str
    """Where Redis is, without any password (``redis://host:port``)."""


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """Replication at a glance; ``last_push``/``last_pull`` are ISO 8601 UTC or None."""

    state: str
    pending: int
    last_error: str | None
    device_id: str
    last_push: str | None
    last_pull: str | None

    def as_dict(self) -> dict[str, Any]:
        """Exactly ``{"state","pending","last_error","device_id","last_push","last_pull"}``."""
        return {
            "state": self.state,
            "pending": self.pending,
            "last_error": self.last_error,
            "device_id": self.device_id,
            "last_push": self.last_push,
            "last_pull": self.last_pull,
        }


class ReplicationError(ChatcoreError):
    """Base of replication problems."""


class ReplicationOff(ReplicationError):
    """A sync was asked for but ``[replication] redis_url`` is empty."""

    exit_code = 2

    def __init__(self) -> None:
        super().__init__(
            "replication is off: [replication] redis_url is empty, so history stays on "
            "this machine; set it (e.g. redis://localhost:6379/0) to sync"
        )


class ReplicationUnavailable(ReplicationError):
    """Redis can't be used now: unreachable (``offline``) or refusing work (``degraded``)."""

    def __init__(self, target: str, reason: str, state: ConnectivityState) -> None:
        self.target = target
        self.reason = reason
        self.state = state
        if state is ConnectivityState.OFFLINE:
            text = f"Redis at {target} is unreachable: {reason}; check [replication] redis_url"
        else:
            text = f"Redis at {target} refused the work: {reason}"
        super().__init__(text)


# --------------------------------------------------------------------------- helpers


def describe_target(url: str) -> str:
    """``scheme://host:port`` (or ``unix://path``) of a Redis URL: never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def _database(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path if parts.scheme != "unix" else ""
    db = path.strip("/") or "0"
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if name == "db" and value:
            db = value
    return db


def _secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _pii_of(metadata: Any) -> dict[str, str]:
    pii = metadata.get("pii") if isinstance(metadata, Mapping) else None
    if not isinstance(pii, Mapping):
        return {}
    return {str(p): str(o) for p, o in pii.items() if o}


def _redact_text(text: str, pii: Mapping[str, str]) -> str:
    """Replace each original by its placeholder, longest first, in one pass.

    One pass: a placeholder put in is never searched again, so an original that
    happens to occur inside a placeholder ("EMAIL" in "<EMAIL_1>") can't mangle it.
    """
    if not pii or not text:
        return text
    by_original = {original: placeholder for placeholder, original in pii.items()}
    ordered = sorted(by_original, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(original) for original in ordered))
    return pattern.sub(lambda match: by_original[match.group()], text)


def redact_change(change: Change, pii: Mapping[str, str] | None = None) -> Change:
    """The change as it may leave this machine: redacted PII stays redacted.

    A message whose metadata has ``"pii"`` (``{placeholder: original}``) is sent with
    each original replaced by its placeholder in its content, and without the
    ``"pii"`` key. A conversation change has its title and system prompt redacted
    with ``pii`` (the mappings of its messages: the title is made from the first
    user message, which keeps what the user typed).
    """
    if change.kind is ChangeKind.CONVERSATION:
        if not pii:
            return change
        data = dict(change.data)
        for name in ("title", "system"):
            if isinstance(data.get(name), str):
                data[name] = _redact_text(data[name], pii)
        return dataclasses.replace(change, data=data)
    if change.kind is not ChangeKind.MESSAGE:
        return change
    metadata = change.data.get("metadata")
    if not isinstance(metadata, Mapping) or "pii" not in metadata:
        return change
    content = _redact_text(str(change.data.get("content") or ""), _pii_of(metadata))
    kept = {k: v for k, v in metadata.items() if k != "pii"}
    return dataclasses.replace(change, data={**change.data, "content": content, "metadata": kept})


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain)


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot send a {type(value).__name__} to Redis: {value!r}")


def open_redis(settings: ReplicationConfig) -> redis.Redis:
    """A client for ``settings.redis_url`` with the configured timeouts and no retries.

    Retries and backoff are the replicator's (with its connectivity state); the
    client's own would hide an outage behind seconds of silent waiting.

    Raises:
        ReplicationError: the URL can't be used (the password is never shown).
    """
    import redis as redis_lib
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        return redis_lib.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.connect_timeout_seconds,
            socket_timeout=settings.command_timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            health_check_interval=0,
        )
    except (ValueError, TypeError) as exc:
        reason = _scrub(str(exc), _secrets(settings.redis_url))
        target = describe_target(settings.redis_url)
        raise ReplicationError(f"[replication] redis_url {target} is invalid: {reason}") from None


# --------------------------------------------------------------------------- batches


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


# --------------------------------------------------------------------------- replicator


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
        rng: random.Random | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        if not settings.redis_url:
            raise ReplicationOff()
        self._store = store
        self._settings = settings
        self._hooks = hooks
        self._rng = rng if rng is not None else random.Random()
        self._client = client if client is not None else open_redis(settings)
        self._script = self._client.register_script(_APPLY_LUA)
        self.target = describe_target(settings.redis_url)
        self._secrets = _secrets(settings.redis_url)
        prefix = settings.key_prefix
        self._prefix = prefix
        self._stream = f"{prefix}:changes"
        # The cursor belongs to one stream on one server: another URL starts afresh.
        self._cursor_key = f"{_CURSOR_KEY}:{self.target}/{_database(settings.redis_url)}/{prefix}"
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
            current: _Batch | None = await self._local(self._prepare_batch, 0, size)
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
                                step.run,
                                "next",
                                self._local,
                                self._prepare_batch,
                                current.last,
                                size,
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
        state, reason = self._classify(exc)
        await self._set_state(state, reason)
        return ReplicationUnavailable(self.target, reason, state)

    def _classify(self, exc: BaseException) -> tuple[ConnectivityState, str]:
        from redis import exceptions as rx

        text = _scrub(str(exc) or type(exc).__name__, self._secrets)
        degraded = (rx.AuthenticationError, rx.BusyLoadingError, rx.ResponseError)
        if isinstance(exc, degraded) or not isinstance(
            exc, rx.ConnectionError | rx.TimeoutError | OSError
        ):
            # redis-py drops the error code (OOM, READONLY...); its class name keeps it.
            return ConnectivityState.DEGRADED, f"{type(exc).__name__}: {text}"
        # A plain Redis never answers a TLS hello: it waits, so that shows as a timeout.
        tls_trouble = "SSL" in text or "TLS" in text or isinstance(exc, rx.TimeoutError)
        if self.target.startswith("rediss://") and tls_trouble:
            text = f"TLS handshake failed ({text}); is the server speaking TLS on that port?"
        return ConnectivityState.OFFLINE, text

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

    def _prepare_batch(self, after: int, limit: int) -> _Batch | None:
        """Read the next outbox rows after ``after`` and make them the script's arguments.

        A MESSAGE row is passed on as the stored text: Redis needs it as text, and the
        script takes what it needs from it. Only a row that mentions ``"pii"`` is parsed
        here, to be redacted. Other kinds (one per conversation or deletion, rare) are
        parsed and checked; a CONVERSATION change is redacted with its conversation's
        PII mappings and followed by its metadata JSON.
        """
        rows = self._store.outbox_rows(limit, after=after)
        if not rows:
            return None
        args = [self._prefix]
        ids: list[int] = []
        conversations: list[tuple[int, Change]] = []
        for row_id, text in rows:
            ids.append(row_id)
            if text.startswith(_MESSAGE_HEAD) and '"pii"' not in text:
                args.append(text)
                continue
            change = redact_change(self._parse_row(row_id, text))
            if change.kind is ChangeKind.CONVERSATION:
                conversations.append((len(args), change))
                args += ("", "")
            else:
                args.append(change.to_json())
        if conversations:
            pii = self._conversation_pii({c.conversation_id for _, c in conversations})
            for index, change in conversations:
                change = redact_change(change, pii.get(change.conversation_id))
                args[index] = change.to_json()
                args[index + 1] = _json(change.data.get("metadata") or {})
        return _Batch(ids, args, full=len(rows) == limit)

    def _parse_row(self, row_id: int, text: str) -> Change:
        try:
            return Change.from_json(text)
        except StoreError as exc:
            raise StoreError(f"{self._store.path}: outbox row {row_id}: {exc}") from None

    def _conversation_pii(self, conversation_ids: set[str]) -> dict[str, dict[str, str]]:
        """Every ``pii`` mapping of these conversations' messages (read from the local store)."""
        found: dict[str, dict[str, str]] = {}
        for cid, text in self._store.pii_mappings(sorted(conversation_ids)):
            found.setdefault(cid, {}).update(_pii_of({"pii": json.loads(text)}))
        return found

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


# --------------------------------------------------------------------------- CLI helpers


def _open(config: Config) -> tuple[Store, Replicator]:
    from .store import Store

    if not config.replication.redis_url:
        raise ReplicationOff()
    store = Store(config.db_path, outbox=True)
    try:
        return store, Replicator(store, config.replication)
    except BaseException:
        store.close()
        raise


async def _run(config: Config, action: str) -> Any:
    store, replicator = _open(config)
    try:
        if action == "push":
            return await replicator.push_once()
        if action == "pull":
            return await replicator.pull_once()
        return await replicator.probe()
    finally:
        replicator.close()
        store.close()


def sync_push(config: Config) -> int:
    """``chatcore sync push``: drain the outbox once; the number of changes sent.

    Raises:
        ReplicationOff: no ``redis_url``.
        ReplicationUnavailable: Redis is unreachable or refusing writes.
    """
    count: int = trio.run(_run, config, "push")
    return count


def sync_pull(config: Config) -> int:
    """``chatcore sync pull``: merge other devices' changes; how many altered this store."""
    count: int = trio.run(_run, config, "pull")
    return count


def sync_status(config: Config) -> SyncStatus:
    """``chatcore sync status``: the state from one PING, plus the outbox and sync times.

    With replication off, the state is ``"off"``.
    """
    if not config.replication.redis_url:
        from .store import Store

        with Store(config.db_path) as store:
            return SyncStatus(
                state="off",
                pending=store.outbox_depth(),
                last_error=None,
                device_id=store.device_id,
                last_push=store.sync_get(SYNC_LAST_PUSH),
                last_pull=store.sync_get(SYNC_LAST_PULL),
            )
    status: SyncStatus = trio.run(_run, config, "status")
    return status
