"""The child side of a process-isolated plugin (``python -m chatcore.isolation._child``).

The parent (``chatcore.isolation._process``) writes one init line on stdin. Before importing
the plugin the child denies itself the network (unless the plugin has the
``network`` permission) and sets its resource limits; then it initialises the plugin
and answers calls, one JSON object per line::

    → {"id": 7, "method": "process_message", "args": [...]}
    ← {"id": 7, "ok": true, "result": ...}   or   {"id": 7, "ok": false, "error": "..."}

A middleware's ``call_next`` goes the other way: the child sends
``{"id": 7, "call_next": <context>}`` and the parent answers with
``{"id": 7, "method": "$resume", "ok": ..., "result"|"error": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

EXIT_INIT_FAILED = 3
"""The plugin could not be imported or initialised (the reason was sent as the hello)."""
EXIT_OUT_OF_MEMORY = 4
"""A call raised MemoryError: the child answered it, then left to be restarted clean."""

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000


def deny_network() -> str:
    """Move this process into a fresh network namespace; say how that went.

    A new namespace has only a loopback interface, and it is down: nothing, not
    even 127.0.0.1, is reachable. It needs CAP_SYS_ADMIN, or unprivileged user
    namespaces (then a user namespace is created too). Must run single-threaded.
    """
    if not sys.platform.startswith("linux"):
        return f"not denied: network namespaces need Linux (this is {sys.platform})"
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        unshare = libc.unshare
    except (OSError, AttributeError) as exc:
        return f"not denied: unshare() is not available ({exc})"
    if unshare(_CLONE_NEWNET) == 0:
        return "denied"
    first = os.strerror(ctypes.get_errno())
    if unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        return "denied"
    second = os.strerror(ctypes.get_errno())
    return (
        f"not denied: unshare(CLONE_NEWNET) failed ({first}), "
        f"and with a new user namespace too ({second})"
    )


def set_limits(max_memory_mb: int | None, max_cpu_seconds: float | None) -> None:
    """Cap the address space and CPU time of this process (and whatever it starts)."""
    import math
    import resource

    if max_memory_mb:
        size = int(max_memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if max_cpu_seconds:
        # SIGXCPU at the soft limit ends the process; the hard limit is the backstop.
        soft = max(1, math.ceil(max_cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))


def _read_line(fd: int) -> bytes:
    """One line from ``fd`` with plain blocking reads (before Trio is imported)."""
    parts: list[bytes] = []
    while True:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return b"".join(parts)
        parts.append(byte)


def _encode(obj: Any) -> bytes:
    from ._wire import wire_json

    return wire_json(obj)


def main() -> None:
    # The protocol gets private copies of the pipes; the plugin's own print() and
    # input() go to stderr and /dev/null, so they can't corrupt the conversation.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    init = json.loads(_read_line(proto_in) or b"{}")
    network = "allowed" if init.get("network_allowed") else deny_network()
    set_limits(init.get("max_memory_mb"), init.get("max_cpu_seconds"))
    sys.path[:] = list(dict.fromkeys([*init.get("sys_path", []), *sys.path]))

    import trio

    try:
        trio.run(_serve, init, network, proto_in, proto_out)
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)


async def _serve(init: dict[str, Any], network: str, proto_in: int, proto_out: int) -> None:
    from pathlib import Path
    from types import MappingProxyType

    import trio

    from .._plugins import PluginConfig, resolve_plugin_class
    from ..errors import PluginError, describe_error
    from ._wire import CHILD_METHODS, encode_answer, from_wire, to_wire

    writer = trio.lowlevel.FdStream(proto_out)
    reader = trio.lowlevel.FdStream(proto_in)
    write_lock = trio.StrictFIFOLock()

    async def write(data: bytes) -> None:
        async with write_lock:
            # Straight to the pipe when it has room (nearly always): Trio's stream
            # would add a checkpoint and, on a full pipe, the wait we fall back to.
            try:
                sent = os.write(proto_out, data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                await writer.send_all(data[sent:])

    async def send(obj: dict[str, Any]) -> None:
        await write(_encode(obj))

    try:
        settings = dict(init.get("plugin_config", {}))
        cls = resolve_plugin_class(
            init["spec"],
            search_dirs=[Path(d) for d in init.get("search_dirs", [])],
            trusted=bool(settings.get("trusted")),
        )
        plugin: Any = cls()
        settings["config"] = MappingProxyType(dict(settings.get("config") or {}))
        await plugin.initialize(PluginConfig(**settings))
    except Exception as exc:
        await send({"id": 0, "ok": False, "error": describe_error(exc)})
        os._exit(EXIT_INIT_FAILED)
    await send({"id": 0, "ok": True, "result": {"pid": os.getpid(), "network": network}})

    resumes: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
    out_of_memory = False

    async def call_next_for(call_id: int) -> Any:
        async def call_next(context: Any) -> Any:
            event, box = trio.Event(), list[dict[str, Any]]()
            resumes[call_id] = (event, box)
            await send({"id": call_id, "call_next": to_wire(context)})
            await event.wait()
            answer = box[0]
            if not answer.get("ok"):
                raise PluginError(str(answer.get("error")))
            return from_wire(answer.get("result"))

        return call_next

    async def handle(request: dict[str, Any]) -> None:
        nonlocal out_of_memory
        call_id, method = request.get("id"), str(request.get("method", ""))
        try:
            args = [from_wire(a) for a in request.get("args", [])]
            if method == "handle":
                args.append(await call_next_for(int(call_id or 0)))
            if method.startswith("hook:"):
                fn = getattr(plugin, method[5:])
            elif method in CHILD_METHODS:
                fn = getattr(plugin, method)
            else:
                raise ValueError(f"unknown method {method!r}")
            # A hook's value, None or PluginResult: the engine's hook executor checks which.
            result = await fn(*args)
            line = encode_answer(call_id, result)
        except MemoryError:
            out_of_memory = True
            line = _encode({"id": call_id, "ok": False, "error": "MemoryError: out of memory"})
        except Exception as exc:
            line = _encode({"id": call_id, "ok": False, "error": describe_error(exc)})
        try:
            await write(line)
        except MemoryError:
            out_of_memory = True
        if out_of_memory:
            # The plugin hit its limit: a process that ran out once is not trusted with
            # the next call; the parent restarts a clean one.
            os._exit(EXIT_OUT_OF_MEMORY)

    async with trio.open_nursery() as nursery:
        buffer = bytearray()
        while True:
            data = await reader.receive_some(65536)
            if not data:
                break
            buffer += data
            while (end := buffer.find(b"\n")) >= 0:
                request = json.loads(buffer[:end])
                del buffer[: end + 1]
                method = request.get("method")
                if method == "$resume":
                    waiting = resumes.pop(int(request.get("id", -1)), None)
                    if waiting is not None:
                        waiting[1].append(request)
                        waiting[0].set()
                elif method == "shutdown":
                    nursery.cancel_scope.cancel()
                    break
                else:
                    nursery.start_soon(handle, request)
            if nursery.cancel_scope.cancel_called:
                break
    with trio.move_on_after(float(init.get("shutdown_seconds", 2.0))):
        await plugin.shutdown()


if __name__ == "__main__":
    main()
