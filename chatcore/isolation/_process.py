"""Process isolation, the parent side: one plugin's child process and its supervisor.

Each call goes to the child (``chatcore.isolation._child``) as one JSON line over
its stdin and comes back as one line on its stdout. The child runs under an
address-space and a CPU-time limit, and without network unless the plugin's
metadata asks for it.

A ``PluginProcess`` actor runs one child per ``run``: a child that crashes, is
killed after a call timed out, or runs out of memory fails the calls in flight and
raises. Its ``PluginSupervisor`` (an OTP supervisor that is itself a child of the
engine's supervisor) restarts it after a jittered exponential backoff, with an
intensity of its own: one bad plugin never counts against the engine's restarts,
and a plugin that keeps crashing is given up on (its calls then fail with why)
while the engine goes on. While the child is down, calls fail at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..actors import RestartType, open_supervisor
from ..errors import EngineStopped, PluginError, PluginLoadError, PluginProcessError
from ._child import EXIT_INIT_FAILED, EXIT_OUT_OF_MEMORY
from ._wire import encode_request, from_wire, plain, to_wire, wire_json

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._plugins import CallNext, PluginConfig

__all__ = [
    "MAX_LINE_BYTES",
    "PROCESS_MAX_RESTARTS",
    "PROCESS_RESTART_WINDOW_S",
    "PluginProcess",
    "PluginSupervisor",
    "ProcessStatus",
]

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest line a child may send; a longer one kills it (the engine's memory is not its to use)."""
STARTUP_TIMEOUT_S = 30.0
"""How long a child may take to import and initialise its plugin."""
SHUTDOWN_GRACE_S = 2.0
"""How long a child may take to shut its plugin down before it is killed."""
PROCESS_MAX_RESTARTS = 10
PROCESS_RESTART_WINDOW_S = 60.0
"""A plugin's child restarted more than ``PROCESS_MAX_RESTARTS`` times within this
many seconds is given up on (OTP intensity, counted per plugin)."""
RESTART_BACKOFF_S = 0.05
"""Upper bound of the first delay before restarting a dead child; doubles per restart."""
RESTART_BACKOFF_MAX_S = 5.0
PEAK_SAMPLE_INTERVAL_S = 0.5
TIMEOUT_SLACK_S = 0.005
"""A call cancelled within this of its deadline counts as having timed out."""
STDERR_TAIL_LINES = 20

_NEWLINE = b"\n"


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """The child process of one isolated plugin, for ``chatcore plugins --json``."""

    pid: int | None
    """None while the child is down."""
    state: str
    """``starting``, ``running``, ``restarting``, ``stopped`` or ``failed`` (given up)."""
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
    """The actor that runs one plugin's child process and carries its calls.

    Each ``run`` is one child's life: it reports started once the plugin in the
    child has initialised, and raises when the child dies, so that the plugin's
    own supervisor (``PluginSupervisor``) restarts it with backoff, OTP-style.
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
        self._runs = 0
        self._network = "allowed" if network_allowed else "unknown"
        self._peak_mb: float | None = None
        self._peak_sampled_at = -math.inf
        self._last_exit: str | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._stopping = False

    # -- status --

    def status(self) -> ProcessStatus:
        child = self._child
        if child is not None:
            self._sample_peak(child)
        return ProcessStatus(
            pid=child.process.pid if child is not None else None,
            state=self._state,
            restarts=max(0, self._runs - 1),
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

    # -- the actor: one child process per run; the plugin's supervisor restarts it --

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start a child, serve its calls until it exits; a crash raises for a restart.

        Raises:
            PluginLoadError: the very first child failed to start (the plugin loads
                in ERROR with the child's reason).
            PluginProcessError: the child died, was killed or could not be restarted;
                the plugin's supervisor restarts it after a backoff.
        """
        first = self._runs == 0
        self._runs += 1
        child: _Child | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    child = await self._spawn(nursery)
                except PluginProcessError as exc:
                    if first:
                        raise PluginLoadError(
                            f"plugin {self.plugin_name!r} failed to start in its process: {exc}"
                        ) from None
                    self._state = "restarting"
                    self._last_exit = f"could not be restarted: {exc}"
                    raise
                self._child = child
                self._state = "running"
                task_status.started()
                nursery.start_soon(self._read_answers, child)
                await child.process.wait()
                # Whatever the child still had to say (stderr) may go unread.
                nursery.cancel_scope.cancel()
        except BaseException:
            self._child = None
            if child is not None and child.process.returncode is None:
                # Cancelled (the engine is stopping): the child goes too.
                with trio.CancelScope(shield=True):
                    await self._shut_down(child)
            if self._state != "restarting":
                self._state = "stopped"
            self._fail_pending("the plugin process stopped")
            raise
        self._child = None
        reason = self._exit_reason(child)
        self._last_exit = reason
        self._fail_pending(f"the plugin process {reason}")
        if self._stopping:
            self._state = "stopped"
            return
        self._state = "restarting"
        logger.warning("plugin %r: its process %s; restarting", self.plugin_name, reason)
        raise PluginProcessError(f"the plugin process {reason}")

    def gave_up(self, reason: str) -> None:
        """The plugin's supervisor stopped restarting the child: calls now fail with why."""
        self._state = "failed"
        self._last_exit = reason
        self._fail_pending(f"the plugin process {reason}")

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
                "config": plain(pc.config),
                "timeout_seconds": pc.timeout_seconds,
                "isolation": pc.isolation,
                "max_memory_mb": pc.max_memory_mb,
                "max_cpu_seconds": pc.max_cpu_seconds,
                "trusted": pc.trusted,
            },
        }
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "chatcore.isolation._child"],
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
        if code == EXIT_OUT_OF_MEMORY:
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

    async def shut_down(self) -> None:
        """Ask the running child to shut its plugin down; ``run`` then returns normally."""
        self._stopping = True
        child = self._child
        if child is not None:
            await self._shut_down(child)

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
    if code == EXIT_INIT_FAILED:
        return "the plugin failed to initialise"
    return f"exit code {code}"


class PluginSupervisor:
    """The supervisor of one plugin's child process, as an actor of the engine's supervisor.

    It restarts its ``PluginProcess`` (``transient``: after a crash, not after a
    normal stop) with its own intensity and backoff. When the child crashes more
    often than that allows, it gives up: the plugin's calls fail with the reason,
    and the engine's other actors are untouched.
    """

    def __init__(
        self,
        process: PluginProcess,
        *,
        max_restarts: int = PROCESS_MAX_RESTARTS,
        within_s: float = PROCESS_RESTART_WINDOW_S,
    ) -> None:
        self.process = process
        self.name = process.name
        self._max_restarts = max_restarts
        self._within_s = within_s
        self._stop = trio.Event()
        self._done = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_supervisor(
                max_restarts=self._max_restarts,
                within_s=self._within_s,
                backoff_base_s=RESTART_BACKOFF_S,
                backoff_max_s=RESTART_BACKOFF_MAX_S,
            ) as supervisor:
                await supervisor.start(self.process, restart=RestartType.TRANSIENT)
                task_status.started()
                await self._stop.wait()
        except EngineStopped as exc:
            self.process.gave_up(f"was given up on: {exc}")
            raise
        finally:
            self._done.set()

    async def stop(self) -> None:
        """Shut the child down and end the supervision (for unload and reload)."""
        if self._done.is_set():
            return
        await self.process.shut_down()
        self._stop.set()
        await self._done.wait()
