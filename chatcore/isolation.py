"""Process isolation: a plugin with ``isolation = "process"`` runs in a child process.

The manager gets a proxy in place of the plugin instance: same base class, same
methods, so hooks, circuit breaker, stats and timeout apply as to any plugin. Each
call goes to the child (``chatcore._plugin_child``) as one JSON line over its stdin
and comes back as one line on its stdout. The child runs under an address-space and
a CPU-time limit, and without network unless the plugin's metadata asks for it.

A ``PluginProcess`` actor per plugin, under the engine's supervisor, keeps the
child running: a child that crashes, is killed after a call timed out, or runs out
of memory fails the calls in flight and is restarted after an exponential backoff
of its own. Its restarts never count against the engine's restart intensity: one
bad plugin must not stop the engine. While the child is down, calls fail at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, fields
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .errors import PluginError, PluginLoadError
from .hooks import HookFailure, HookType
from .messages import ChatContext, Chunk, Message, Usage
from .plugins import (
    _HOOK_ATTR,
    BaseFeatureExtension,
    BaseMessageProcessor,
    BaseMiddleware,
    BasePlugin,
    PluginConfig,
    PluginStatus,
    PluginType,
)
from .result import PluginResult

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .plugins import CallNext, PluginManager

__all__ = [
    "CHILD_METHODS",
    "MAX_LINE_BYTES",
    "PluginProcess",
    "PluginProcessError",
    "ProcessStatus",
    "encode_answer",
    "encode_request",
    "from_wire",
    "process_plugin",
    "to_wire",
    "wire_json",
]

logger = logging.getLogger(__name__)

CHILD_METHODS = frozenset(
    {"process_message", "process_reply", "process_chunk", "enrich", "handle", "health"}
)
"""Methods the child will call on the plugin (besides ``hook:<method>`` for ``@hook``s)."""
MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest line a child may send; a longer one kills it (the engine's memory is not its to use)."""
STARTUP_TIMEOUT_S = 30.0
"""How long a child may take to import and initialise its plugin."""
SHUTDOWN_GRACE_S = 2.0
"""How long a child may take to shut its plugin down before it is killed."""
RESTART_BACKOFF_S = 0.05
"""First delay before restarting a dead child; doubles for each crash in a row."""
RESTART_BACKOFF_MAX_S = 5.0
STABLE_AFTER_S = 10.0
"""A child that stayed up this long has its crash streak (and backoff) reset."""
PEAK_SAMPLE_INTERVAL_S = 0.5
TIMEOUT_SLACK_S = 0.005
"""A call cancelled within this of its deadline counts as having timed out."""
STDERR_TAIL_LINES = 20

_EXIT_INIT_FAILED = 3
_EXIT_OUT_OF_MEMORY = 4
_NEWLINE = b"\n"


class PluginProcessError(PluginError):
    """A call to a process-isolated plugin failed because of its process (down, killed, garbled)."""


# --- the wire format -------------------------------------------------------------------------

_TAG = "$t"


def to_wire(value: Any) -> Any:
    """``value`` as JSON-able data; messages, contexts, chunks and results keep their type.

    Raises:
        TypeError: a value JSON cannot carry (name and type in the message).
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Message):
        return {
            _TAG: "message",
            "id": value.id,
            "role": value.role.value,
            "content": value.content,
            "created_at": value.created_at.isoformat(),
            "model": value.model,
            "tokens_in": value.tokens_in,
            "tokens_out": value.tokens_out,
            "status": value.status.value,
            "metadata": _plain(value.metadata),
        }
    if isinstance(value, ChatContext):
        return {
            _TAG: "context",
            "conversation_id": value.conversation_id,
            "messages": [to_wire(m) for m in value.messages],
            "backend": value.backend,
            "model": value.model,
            "temperature": value.temperature,
            "max_tokens": value.max_tokens,
            "stream": value.stream,
            "system": value.system,
            "metadata": _plain(value.metadata),
        }
    if isinstance(value, Chunk):
        usage = value.usage
        return {
            _TAG: "chunk",
            "text": value.text,
            "index": value.index,
            "done": value.done,
            "usage": None if usage is None else [usage.tokens_in, usage.tokens_out],
            "model": value.model,
        }
    if isinstance(value, PluginResult):
        return {
            _TAG: "result",
            "success": value.success,
            "data": to_wire(value.data),
            "error": value.error,
            "execution_time_ms": value.execution_time_ms,
            "metadata": _plain(value.metadata),
            "reply": to_wire(value.reply),
        }
    if isinstance(value, HookFailure):
        return {
            _TAG: "hook_failure",
            "name": value.name,
            "hook_type": value.hook_type.value,
            "error": value.error,
            "timed_out": value.timed_out,
        }
    if isinstance(value, PluginStatus):
        return {_TAG: "plugin_status", **_plain(value.as_dict())}
    return _plain(value)


def _plain(value: Any) -> Any:
    """Plain JSON data: mappings become objects, sequences lists, enums their values."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "items"):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(
        f"{type(value).__name__} cannot cross the process boundary "
        "(metadata must be JSON: text, numbers, booleans, lists and mappings)"
    )


def from_wire(data: Any) -> Any:
    """The inverse of ``to_wire``."""
    if not isinstance(data, dict | list):
        return data
    if isinstance(data, list):
        return [from_wire(v) for v in data]
    tag = data.get(_TAG)
    if tag is None:
        return {k: from_wire(v) for k, v in data.items()}
    if tag == "message":
        return _decode_message(data)
    if tag == "context":
        return ChatContext(
            conversation_id=data["conversation_id"],
            messages=tuple(from_wire(m) for m in data["messages"]),
            backend=data["backend"],
            model=data["model"],
            temperature=data["temperature"],
            max_tokens=data["max_tokens"],
            stream=data["stream"],
            system=data["system"],
            metadata=from_wire(data["metadata"]),
        )
    if tag == "chunk":
        usage = data["usage"]
        return Chunk(
            text=data["text"],
            index=data["index"],
            done=data["done"],
            usage=None if usage is None else Usage(usage[0], usage[1]),
            model=data["model"],
        )
    if tag == "result":
        return PluginResult(
            success=data["success"],
            data=from_wire(data["data"]),
            error=data["error"],
            execution_time_ms=data["execution_time_ms"],
            metadata=from_wire(data["metadata"]),
            reply=from_wire(data["reply"]),
        )
    if tag == "hook_failure":
        return HookFailure(
            name=data["name"],
            hook_type=HookType(data["hook_type"]),
            error=data["error"],
            timed_out=data["timed_out"],
        )
    if tag == "plugin_status":
        known = {f.name for f in fields(PluginStatus)}
        return PluginStatus(**{k: v for k, v in data.items() if k in known})
    raise ValueError(f"unknown wire type {tag!r}")


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def wire_json(obj: Any) -> bytes:
    """One protocol line: compact JSON and a newline."""
    return _dumps(obj).encode() + _NEWLINE


# Every turn sends the same history again, as the same (immutable) Message objects, so
# each side keeps the JSON of the messages it sent and the objects it decoded. Keyed by
# object identity, holding the object so its id can't be reused while cached.
_CACHE_LIMIT = 4096
_sent: dict[int, tuple[Message, str]] = {}
_received: dict[tuple[Any, ...], Message] = {}


def _message_json(message: Message) -> str:
    cached = _sent.get(id(message))
    if cached is not None and cached[0] is message:
        return cached[1]
    text = _dumps(to_wire(message))
    if len(_sent) >= _CACHE_LIMIT:
        _sent.clear()
    _sent[id(message)] = (message, text)
    return text


def _fragment(value: Any) -> str:
    """The JSON of ``to_wire(value)``, built from cached pieces where it can be."""
    if isinstance(value, Message):
        return _message_json(value)
    if isinstance(value, ChatContext):
        rest = to_wire(value.replace(messages=()))
        del rest["messages"]
        messages = ",".join([_message_json(m) for m in value.messages])
        return f'{{"messages":[{messages}],{_dumps(rest)[1:]}'
    if isinstance(value, PluginResult):
        head = {
            _TAG: "result",
            "success": value.success,
            "error": value.error,
            "execution_time_ms": value.execution_time_ms,
            "metadata": _plain(value.metadata),
        }
        data, reply = _fragment(value.data), _fragment(value.reply)
        return f'{{"data":{data},"reply":{reply},{_dumps(head)[1:]}'
    return _dumps(to_wire(value))


def encode_request(call_id: int, method: str, args: Sequence[Any]) -> bytes:
    """The line that calls ``method(*args)`` in the child."""
    encoded = ",".join([_fragment(a) for a in args])
    return f'{{"id":{call_id},"method":{_dumps(method)},"args":[{encoded}]}}\n'.encode()


def encode_answer(call_id: Any, result: Any) -> bytes:
    """The line that answers call ``call_id`` with ``result``."""
    return f'{{"id":{_dumps(call_id)},"ok":true,"result":{_fragment(result)}}}\n'.encode()


def _decode_message(data: dict[str, Any]) -> Message:
    metadata = data["metadata"]
    key = None
    if not metadata:
        key = (
            data["id"],
            data["content"],
            data["created_at"],
            data["role"],
            data["status"],
            data["model"],
            data["tokens_in"],
            data["tokens_out"],
        )
        cached = _received.get(key)
        if cached is not None:
            return cached
    message = Message(
        role=data["role"],
        content=data["content"],
        id=data["id"],
        created_at=datetime.fromisoformat(data["created_at"]),
        model=data["model"],
        tokens_in=data["tokens_in"],
        tokens_out=data["tokens_out"],
        status=data["status"],
        metadata=from_wire(metadata),
    )
    if key is not None:
        if len(_received) >= _CACHE_LIMIT:
            _received.clear()
        _received[key] = message
    return message


# --- status ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """The child process of one isolated plugin, for ``chatcore plugins --json``."""

    pid: int | None
    """None while the child is down."""
    state: str
    """``starting``, ``running``, ``restarting`` or ``stopped``."""
    restarts: int
    peak_memory_mb: float | None
    """Highest resident memory (VmHWM) seen of any of its children, in MiB."""
    network: str
    """``denied``, ``allowed`` (the plugin has the permission) or ``not denied: <why>``."""
    last_exit: str | None
    max_memory_mb: int
    max_cpu_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _peak_memory_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- the parent side -------------------------------------------------------------------------


class _Pending:
    """A call waiting for its answer (a middleware call may get several messages)."""

    __slots__ = ("event", "messages")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.messages: deque[dict[str, Any]] = deque()

    def put(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.event.set()

    async def get(self) -> dict[str, Any]:
        while not self.messages:
            await self.event.wait()
            if not self.messages:
                self.event = trio.Event()
        message = self.messages.popleft()
        if not self.messages:
            self.event = trio.Event()
        return message


class _Child:
    """One running child process and the pipe ends the parent talks to it through."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.buffer = bytearray()
        self.write_lock = trio.StrictFIFOLock()
        self.kill_reason: str | None = None
        self.started_at = trio.current_time()

    async def read_line(self) -> bytes | None:
        """The next line from the child, None at end of file.

        Raises:
            PluginProcessError: the line is longer than ``MAX_LINE_BYTES``.
        """
        buffer = self.buffer
        searched = 0
        while True:
            end = buffer.find(_NEWLINE, searched)
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                return line
            searched = len(buffer)
            if searched > MAX_LINE_BYTES:
                raise PluginProcessError(f"sent a line over {MAX_LINE_BYTES} bytes")
            data = await self.stdout.receive_some(65536)
            if not data:
                return None
            buffer += data

    async def send(self, data: bytes) -> None:
        async with self.write_lock:
            await self.stdin.send_all(data)

    def kill(self, reason: str) -> None:
        if self.kill_reason is None:
            self.kill_reason = reason
        if self.process.returncode is None:
            self.process.kill()


class PluginProcess:
    """The actor that keeps one plugin's child process running and carries its calls.

    ``run`` starts the first child and reports started once the plugin in it has
    initialised (or raises ``PluginLoadError`` with the child's reason); then it
    restarts the child whenever it dies, until ``stop``.
    """

    def __init__(
        self,
        name: str,
        spec: str,
        plugin_config: PluginConfig,
        *,
        network_allowed: bool,
        search_dirs: Sequence[Path] = (),
    ) -> None:
        self.name = f"plugin-process:{name}"
        self.plugin_name = name
        self.spec = spec
        self.plugin_config = plugin_config
        self.network_allowed = network_allowed
        self.search_dirs = [str(d) for d in search_dirs]
        self._child: _Child | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._state = "starting"
        self._restarts = 0
        self._network = "allowed" if network_allowed else "unknown"
        self._peak_mb: float | None = None
        self._peak_sampled_at = -math.inf
        self._last_exit: str | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._stopping = False
        self._done = trio.Event()
        self._scope = trio.CancelScope()
        self._rng = random.Random()

    # -- status --

    def status(self) -> ProcessStatus:
        child = self._child
        if child is not None:
            self._sample_peak(child)
        return ProcessStatus(
            pid=child.process.pid if child is not None else None,
            state=self._state,
            restarts=self._restarts,
            peak_memory_mb=self._peak_mb,
            network=self._network,
            last_exit=self._last_exit,
            max_memory_mb=self.plugin_config.max_memory_mb,
            max_cpu_seconds=self.plugin_config.max_cpu_seconds,
        )

    @property
    def running(self) -> bool:
        return self._child is not None

    def _sample_peak(self, child: _Child) -> None:
        self._peak_sampled_at = trio.current_time()
        peak = _peak_memory_mb(child.process.pid)
        if peak is not None and (self._peak_mb is None or peak > self._peak_mb):
            self._peak_mb = peak

    # -- the actor --

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                await self._supervise(task_status)
        finally:
            self._state = "stopped"
            child, self._child = self._child, None
            if child is not None:
                with trio.CancelScope(shield=True):
                    await self._shut_down(child)
            self._fail_pending("the plugin process stopped")
            self._done.set()

    async def _supervise(self, task_status: trio.TaskStatus[None]) -> None:
        streak = 0
        first = True
        while not self._stopping:
            failure: PluginProcessError | None = None
            child: _Child | None = None
            async with trio.open_nursery() as nursery:
                try:
                    child = await self._spawn(nursery)
                except PluginProcessError as exc:
                    failure = exc
                else:
                    self._child = child
                    self._state = "running"
                    if first:
                        first = False
                        task_status.started()
                    nursery.start_soon(self._read_answers, child)
                    await child.process.wait()
                    # Whatever the child still had to say (stderr) may go unread.
                    nursery.cancel_scope.cancel()
            if failure is not None or child is None:
                if first:
                    raise PluginLoadError(
                        f"plugin {self.plugin_name!r} failed to start in its process: {failure}"
                    )
                self._last_exit = f"could not be restarted: {failure}"
                streak += 1
                await self._back_off(streak)
                continue
            self._child = None
            reason = self._exit_reason(child)
            self._last_exit = reason
            self._fail_pending(f"the plugin process {reason}")
            if self._stopping:
                return
            logger.warning("plugin %r: its process %s; restarting", self.plugin_name, reason)
            if trio.current_time() - child.started_at >= STABLE_AFTER_S:
                streak = 0
            streak += 1
            await self._back_off(streak)

    async def _back_off(self, streak: int) -> None:
        self._state = "restarting"
        ceiling = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** (streak - 1))
        await trio.sleep(ceiling * self._rng.uniform(0.5, 1.0))
        self._restarts += 1

    async def _spawn(self, nursery: trio.Nursery) -> _Child:
        pc = self.plugin_config
        init = {
            "spec": self.spec,
            "search_dirs": self.search_dirs,
            "sys_path": [p for p in sys.path if p],
            "network_allowed": self.network_allowed,
            "max_memory_mb": pc.max_memory_mb,
            "max_cpu_seconds": pc.max_cpu_seconds,
            "shutdown_seconds": SHUTDOWN_GRACE_S / 2,
            "plugin_config": {
                "name": pc.name,
                "enabled": pc.enabled,
                "priority": pc.priority,
                "config": _plain(pc.config),
                "timeout_seconds": pc.timeout_seconds,
                "isolation": pc.isolation,
                "max_memory_mb": pc.max_memory_mb,
                "max_cpu_seconds": pc.max_cpu_seconds,
                "trusted": pc.trusted,
            },
        }
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "chatcore._plugin_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        child = _Child(process)
        drained = trio.Event()
        nursery.start_soon(self._drain_stderr, process, drained)
        hello: dict[str, Any] | None = None
        problem = ""
        with trio.move_on_after(STARTUP_TIMEOUT_S) as startup:
            try:
                await child.send(wire_json(init))
                line = await child.read_line()
                hello = json.loads(line) if line else None
            except (trio.BrokenResourceError, PluginProcessError, ValueError) as exc:
                problem = f"broke the protocol at start ({exc!r})"
        if startup.cancelled_caught:
            problem = f"took longer than {STARTUP_TIMEOUT_S:g} s to start"
        if isinstance(hello, dict) and hello.get("ok"):
            result = hello.get("result") or {}
            self._network = str(result.get("network", self._network))
            return child
        child.kill("did not start")
        with trio.CancelScope(shield=True):
            await process.wait()
            with trio.move_on_after(1.0):
                await drained.wait()
        if isinstance(hello, dict):
            raise PluginProcessError(str(hello.get("error")))
        tail = " | ".join(self._stderr_tail) or "nothing"
        problem = problem or f"exited ({_describe_returncode(process.returncode)}) before its hello"
        raise PluginProcessError(f"its process {problem}; stderr said: {tail}")

    async def _drain_stderr(self, process: trio.Process, drained: trio.Event) -> None:
        """Keep the child's stderr flowing (a full pipe would block it) and its tail for errors."""
        assert process.stderr is not None
        pending = b""
        while True:
            try:
                data = await process.stderr.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                drained.set()
                return
            lines = (pending + data).split(b"\n")
            pending = lines.pop()[-4096:]
            for raw in lines:
                text = raw.decode(errors="replace").rstrip()[:500]
                if text:
                    self._stderr_tail.append(text)
                    logger.debug("plugin %r stderr: %s", self.plugin_name, text)

    async def _read_answers(self, child: _Child) -> None:
        try:
            while True:
                line = await child.read_line()
                if line is None:
                    return
                try:
                    answer = json.loads(line)
                    pending = self._pending.get(answer["id"])
                except (ValueError, KeyError, TypeError):
                    child.kill("sent a line that is not a protocol message")
                    return
                if pending is not None:
                    pending.put(answer)
        except PluginProcessError as exc:
            child.kill(str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.put({"ok": False, "error": reason, "$down": True})

    def _exit_reason(self, child: _Child) -> str:
        code = child.process.returncode
        if child.kill_reason is not None:
            return f"was killed: {child.kill_reason}"
        if code == _EXIT_OUT_OF_MEMORY:
            return f"ran out of memory (max_memory_mb = {self.plugin_config.max_memory_mb})"
        if code == -signal.SIGXCPU:
            limit = self.plugin_config.max_cpu_seconds
            return f"used up its CPU time (max_cpu_seconds = {limit:g})"
        return f"exited ({_describe_returncode(code)})"

    async def _shut_down(self, child: _Child) -> None:
        """Ask the child to shut its plugin down; kill it if it takes too long."""
        if child.process.returncode is None:
            with trio.move_on_after(SHUTDOWN_GRACE_S):
                try:
                    await child.send(wire_json({"id": -1, "method": "shutdown"}))
                    await child.stdin.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                await child.process.wait()
        child.kill("did not shut down in time")
        await child.process.wait()

    async def stop(self) -> None:
        """Shut the child down and end the actor (for unload and reload)."""
        self._stopping = True
        child = self._child
        if child is not None:
            await self._shut_down(child)
        self._scope.cancel()
        await self._done.wait()

    # -- calls --

    async def call(
        self,
        method: str,
        args: Sequence[Any],
        *,
        call_next: CallNext | None = None,
    ) -> Any:
        """Call ``method`` on the plugin in the child and return its decoded result.

        Raises:
            PluginProcessError: the child is down, died during the call, or was
                killed because the call outlived the plugin's timeout.
            PluginError: the plugin raised (its error text is the message).
        """
        child = self._child
        if child is None:
            why = f" (it {self._last_exit})" if self._last_exit else ""
            raise PluginProcessError(f"the plugin process is {self._state}{why}")
        call_id = self._next_id
        self._next_id += 1
        pending = _Pending()
        self._pending[call_id] = pending
        timeout = self.plugin_config.timeout_seconds
        try:
            request = encode_request(call_id, method, args)
            try:
                await child.send(request)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise PluginProcessError("the plugin process closed its input") from None
            while True:
                answer = await self._wait(child, pending, timeout)
                context = answer.get("call_next")
                if context is None:
                    break
                # A middleware passing the turn on: run the rest of the pipeline here.
                resume: dict[str, Any] = {"id": call_id, "method": "$resume"}
                if call_next is None:
                    resume.update(ok=False, error="call_next is only available to middleware")
                else:
                    try:
                        reply = await call_next(from_wire(context))
                    except Exception as exc:
                        resume.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                    else:
                        resume.update(ok=True, result=to_wire(reply))
                try:
                    await child.send(wire_json(resume))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise PluginProcessError("the plugin process closed its input") from None
        finally:
            self._pending.pop(call_id, None)
        if not answer.get("ok"):
            error = str(answer.get("error") or "the plugin failed")
            if answer.get("$down"):
                raise PluginProcessError(error)
            self._maybe_sample(child, force=True)
            raise PluginError(error)
        self._maybe_sample(child, force=False)
        return from_wire(answer.get("result"))

    async def _wait(
        self, child: _Child, pending: _Pending, timeout: float | None
    ) -> dict[str, Any]:
        """The next answer to a call; a call that outlives its timeout kills the child."""
        if timeout is None:
            return await pending.get()
        deadline = trio.current_time() + timeout
        try:
            with trio.move_on_at(deadline):
                return await pending.get()
        except trio.Cancelled:
            # Cancelled from outside: the hook's own timeout fires on (almost) the same
            # deadline, and a hung call must not keep its child busy forever.
            if trio.current_time() >= deadline - TIMEOUT_SLACK_S:
                self._kill_for_timeout(child, timeout)
            raise
        self._kill_for_timeout(child, timeout)
        raise PluginProcessError(f"TimeoutError: exceeded {timeout:g} s; its process was killed")

    def _kill_for_timeout(self, child: _Child, timeout: float) -> None:
        self._sample_peak(child)
        child.kill(f"a call exceeded its {timeout:g} s timeout")

    def _maybe_sample(self, child: _Child, *, force: bool) -> None:
        if force or trio.current_time() - self._peak_sampled_at >= PEAK_SAMPLE_INTERVAL_S:
            self._sample_peak(child)


def _describe_returncode(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    if code == _EXIT_INIT_FAILED:
        return "the plugin failed to initialise"
    return f"exit code {code}"


# --- the proxy that stands in for the plugin ---------------------------------------------


class _ProcessProxy:
    """Mixed into a proxy class ahead of the plugin's base class (see ``process_plugin``)."""

    _plugin_class: type[BasePlugin]
    _spec: str
    _manager: PluginManager
    _process: PluginProcess | None = None

    async def initialize(self, config: PluginConfig) -> None:
        await BasePlugin.initialize(self, config)  # type: ignore[arg-type]
        supervisor = self._manager.supervisor
        if supervisor is None:
            raise PluginLoadError(
                f'plugin {config.name!r}: isolation = "process" needs a running engine '
                "(open_engine), which supervises the plugin's process"
            )
        from .actors import RestartType

        process = PluginProcess(
            config.name,
            self._spec,
            config,
            network_allowed="network" in self._plugin_class.metadata.permissions,
            search_dirs=self._manager._search_dirs,
        )
        # A reloaded plugin gets a fresh actor; the old one stays listed as stopped.
        taken = {actor.name for actor in supervisor.status()}
        base, n = process.name, 2
        while process.name in taken:
            process.name = f"{base}#{n}"
            n += 1
        await supervisor.start(process, restart=RestartType.TRANSIENT)
        self._process = process

    async def shutdown(self) -> None:
        if self._process is not None:
            await self._process.stop()

    async def health(self) -> Mapping[str, Any]:
        status = self.isolation_status()
        return {"ok": status is not None and status.pid is not None, "process": status}

    def isolation_status(self) -> ProcessStatus | None:
        """The child's pid, restarts, peak memory and network; None before it started."""
        return None if self._process is None else self._process.status()

    async def _call(self, method: str, *args: Any) -> Any:
        process = self._process
        if process is None:
            raise PluginProcessError("the plugin process has not started")
        return await process.call(method, args)

    async def _hook_call(self, method: str, *args: Any) -> Any:
        """A hook-shaped call: the plugin's own failure comes back as ``PluginResult.fail``."""
        try:
            return await self._call(method, *args)
        except PluginProcessError:
            raise
        except PluginError as exc:
            return PluginResult.fail(str(exc))


def _forward(method: str) -> Callable[..., Any]:
    async def forward(self: _ProcessProxy, *args: Any) -> Any:
        return await self._hook_call(method, *args)

    forward.__name__ = method
    return forward


async def _handle(self: _ProcessProxy, context: ChatContext, call_next: CallNext) -> Message:
    process = self._process
    if process is None:
        raise PluginProcessError("the plugin process has not started")
    reply = await process.call("handle", (context,), call_next=call_next)
    if not isinstance(reply, Message):
        raise TypeError(f"middleware returned {type(reply).__name__}, expected a Message")
    return reply


_BASES: dict[PluginType, type[BasePlugin]] = {
    PluginType.MESSAGE_PROCESSOR: BaseMessageProcessor,
    PluginType.FEATURE_EXTENSION: BaseFeatureExtension,
    PluginType.MIDDLEWARE: BaseMiddleware,
}


def process_plugin(cls: type[BasePlugin], spec: str, manager: PluginManager) -> BasePlugin:
    """A stand-in for an instance of ``cls`` whose calls run in a child process.

    The stand-in subclasses the same base class and overrides exactly the methods
    ``cls`` overrides (``process_reply``, ``@hook`` methods ...), so the manager
    wires it into the same hook points.

    Raises:
        PluginLoadError: ``cls`` is a backend (backends run inline).
    """
    plugin_type = cls.metadata.plugin_type
    if plugin_type is PluginType.BACKEND_PROVIDER:
        raise PluginLoadError(
            f'plugin {spec!r}: isolation = "process" is for processors, features and '
            "middleware; a backend runs in the engine"
        )
    base = next((b for b in _BASES.values() if issubclass(cls, b)), None)
    base = base or _BASES.get(plugin_type, BasePlugin)
    namespace: dict[str, Any] = {
        "metadata": cls.metadata,
        "settings_model": getattr(cls, "settings_model", None),
        "_plugin_class": cls,
        "_spec": spec,
        "_manager": manager,
        "__module__": __name__,
        "__doc__": f"{cls.__name__}, running in a child process.",
    }
    if base is BaseMessageProcessor:
        namespace["process_message"] = _forward("process_message")
        for optional in ("process_reply", "process_chunk"):
            if getattr(cls, optional) is not getattr(BaseMessageProcessor, optional):
                namespace[optional] = _forward(optional)
    elif base is BaseFeatureExtension:
        namespace["enrich"] = _forward("enrich")
    elif base is BaseMiddleware:
        namespace["handle"] = _handle
    for attr in dir(cls):
        hook_type = getattr(getattr(cls, attr, None), _HOOK_ATTR, None)
        if hook_type is not None:
            forward = _forward(f"hook:{attr}")
            setattr(forward, _HOOK_ATTR, hook_type)
            namespace[attr] = forward
    proxy_class = type(f"Process{cls.__name__}", (_ProcessProxy, base), namespace)
    instance: BasePlugin = proxy_class()
    return instance
