"""Plugins: protocols, base classes, lifecycle, discovery and the manager.

A plugin is a class with a ``metadata`` attribute. Built-ins are found exactly
like third-party plugins: as entry points of the ``chatcore.plugins`` group
(chatcore's own ``pyproject.toml`` declares ``echo`` and the others), besides
``module:Class`` paths and ``*.py`` files. Every call into a plugin goes
through the hook registry, so each plugin has its own timeout, circuit breaker
and metrics, and a failing plugin never fails a turn.
"""

from __future__ import annotations

import abc
import dataclasses
import heapq
import importlib
import importlib.util
import inspect
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    NoReturn,
    Protocol,
    TypeVar,
    cast,
    runtime_checkable,
)

import trio

from .errors import (
    InvalidTransition,
    PluginError,
    PluginLoadError,
    UnknownBackend,
)
from .hooks import (
    CircuitBreaker,
    HookOutcome,
    HookRegistration,
    HookRegistry,
    HookStats,
    HookType,
)
from .messages import ChatContext, Chunk, Message, Role
from .plugin_scan import check_file, check_module
from .result import PluginResult

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .actors import Supervisor
    from .config import BackendConfig, Config, PluginEntry
    from .store import KVNamespace, Store

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendProvider",
    "BaseBackendProvider",
    "BaseFeatureExtension",
    "BaseMessageProcessor",
    "BaseMiddleware",
    "BasePlugin",
    "CallNext",
    "FeatureExtension",
    "MessageProcessor",
    "Middleware",
    "Pluggable",
    "PluginConfig",
    "PluginHost",
    "PluginLifecycle",
    "PluginManager",
    "PluginMetadata",
    "PluginState",
    "PluginStatus",
    "PluginType",
    "hook",
    "resolve_plugin_class",
    "topological_order",
]

ENTRY_POINT_GROUP = "chatcore.plugins"
KNOWN_PERMISSIONS = frozenset({"network", "filesystem", "store"})
"""What ``PluginMetadata.permissions`` may name; ``store`` gives ``host.database_path``."""

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PluginType(StrEnum):
    MIDDLEWARE = "middleware"
    MESSAGE_PROCESSOR = "processor"
    FEATURE_EXTENSION = "feature"
    BACKEND_PROVIDER = "backend"


class PluginState(StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    INITIALIZING = "initializing"
    ACTIVE = "active"
    PAUSED = "paused"
    UNLOADING = "unloading"
    ERROR = "error"


_S = PluginState
ALLOWED_TRANSITIONS: Mapping[PluginState, frozenset[PluginState]] = MappingProxyType(
    {
        _S.UNLOADED: frozenset({_S.LOADING}),
        _S.LOADING: frozenset({_S.LOADED, _S.ERROR}),
        _S.LOADED: frozenset({_S.INITIALIZING, _S.UNLOADING, _S.ERROR}),
        _S.INITIALIZING: frozenset({_S.ACTIVE, _S.ERROR}),
        _S.ACTIVE: frozenset({_S.PAUSED, _S.UNLOADING, _S.ERROR}),
        _S.PAUSED: frozenset({_S.ACTIVE, _S.UNLOADING, _S.ERROR}),
        _S.UNLOADING: frozenset({_S.UNLOADED, _S.ERROR}),
        _S.ERROR: frozenset({_S.INITIALIZING, _S.UNLOADING}),
    }
)


class PluginLifecycle:
    """The lifecycle state machine; any transition not in the table raises."""

    __slots__ = ("history", "name", "on_change", "reason", "state")

    def __init__(self, name: str, on_change: Callable[[], None] | None = None) -> None:
        self.name = name
        self.state = PluginState.UNLOADED
        self.reason: str | None = None
        self.history: list[PluginState] = [PluginState.UNLOADED]
        self.on_change = on_change

    def transition(self, to: PluginState, reason: str | None = None) -> None:
        if to not in ALLOWED_TRANSITIONS[self.state]:
            raise InvalidTransition(
                f"plugin {self.name!r}: cannot go from {self.state} to {to} "
                f"(allowed: {', '.join(sorted(ALLOWED_TRANSITIONS[self.state])) or 'none'})"
            )
        self.state = to
        self.reason = reason if to is PluginState.ERROR else None
        self.history.append(to)
        if self.on_change is not None:
            self.on_change()

    def fail(self, reason: str) -> None:
        """Enter ERROR from wherever the plugin is (ERROR itself included)."""
        if self.state is PluginState.ERROR:
            self.reason = reason
            return
        if PluginState.ERROR not in ALLOWED_TRANSITIONS[self.state]:
            # UNLOADED: put it through LOADING so the history stays a legal path.
            self.transition(PluginState.LOADING)
        self.transition(PluginState.ERROR, reason)


@dataclass(frozen=True, slots=True)
class PluginMetadata:
    name: str
    version: str = "0.0.0"
    plugin_type: PluginType = PluginType.MESSAGE_PROCESSOR
    author: str = ""
    description: str = ""
    dependencies: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugin_type", PluginType(self.plugin_type))
        for name in ("dependencies", "tags", "permissions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """How one plugin instance runs, built from its ``[[plugins]]`` or ``[backends.x]`` table."""

    name: str
    enabled: bool = True
    priority: int = 50
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max_retries: int = 0
    timeout_seconds: float | None = 5.0
    rate_limit: float | None = None
    isolation: str = "inline"
    max_memory_mb: int = 512
    max_cpu_seconds: float = 600.0
    trusted: bool = False
    fail_fast: bool = False
    circuit_failure_threshold: int = 5
    circuit_reset_seconds: float = 30.0


# --- protocols -------------------------------------------------------------------------------

CallNext = Callable[[ChatContext], Awaitable[Message]]


@runtime_checkable
class Pluggable(Protocol):
    metadata: ClassVar[PluginMetadata]

    async def initialize(self, config: PluginConfig) -> None: ...
    async def shutdown(self) -> None: ...
    async def health(self) -> Mapping[str, Any]: ...


@runtime_checkable
class Middleware(Pluggable, Protocol):
    async def handle(self, context: ChatContext, call_next: CallNext) -> Message: ...


@runtime_checkable
class MessageProcessor(Pluggable, Protocol):
    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]: ...


@runtime_checkable
class FeatureExtension(Pluggable, Protocol):
    async def enrich(self, context: ChatContext) -> PluginResult[ChatContext]: ...


@runtime_checkable
class BackendProvider(Pluggable, Protocol):
    def stream(self, context: ChatContext) -> AsyncIterator[Chunk]: ...
    async def chat(self, context: ChatContext) -> Message: ...
    async def list_models(self) -> list[str]: ...
    async def aclose(self) -> None: ...


# --- what the engine offers a plugin -----------------------------------------------------

BackgroundJob = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PluginHost:
    """What a running engine lends a plugin, set as ``plugin.host`` before ``initialize``.

    A plugin gets its own key-value namespace in the store (``kv``), a way to
    run slow work off the turn (``spawn``), and the configured backends
    (``backend``), e.g. to embed text or summarise. ``database_path`` is the
    engine's SQLite file, for features that keep their own tables in it; it is
    None unless the plugin's metadata declares the ``store`` permission.
    """

    name: str
    kv: KVNamespace
    data_dir: Path
    database_path: Path | None
    backend: Callable[[str], Awaitable[BaseBackendProvider]]
    """Load (if needed) and return the backend configured under that name."""
    spawn: Callable[[BackgroundJob], bool]
    """Run a job in the background; False when the queue is full (try again later)."""
    plugin_status: Callable[[], Mapping[str, PluginStatus]] = lambda: MappingProxyType({})
    """Read-only status and call statistics of every plugin and backend (for metrics)."""


class BackgroundJobs:
    """The actor that runs plugins' background jobs (summaries, indexing) in its nursery.

    A job that raises is logged and dropped; it never takes the engine down.
    """

    name = "plugin-jobs"

    def __init__(self, capacity: int = 64) -> None:
        self._send, self._receive = trio.open_memory_channel[BackgroundJob](capacity)
        self.running = 0
        self.failed = 0
        self.last_error: str | None = None

    def submit(self, job: BackgroundJob) -> bool:
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            return False
        return True

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for job in self._receive:
                nursery.start_soon(self._guarded, job)

    async def _guarded(self, job: BackgroundJob) -> None:
        self.running += 1
        try:
            await job()
        except Exception as exc:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.warning("background job %r failed: %s", job, self.last_error)
        finally:
            self.running -= 1


# --- base classes ----------------------------------------------------------------------------

_HOOK_ATTR = "__chatcore_hook__"
_HookMethod = Callable[[Any, ChatContext], Awaitable[Any]]


def hook(hook_type: HookType) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a plugin method as a handler of ``hook_type``.

    The method is called as ``await method(payload, context)`` and may return a
    ``PluginResult`` (to change the payload or short-circuit) or ``None``.
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _HOOK_ATTR, HookType(hook_type))
        return fn

    return mark


class BasePlugin(abc.ABC):
    """Template for plugins: subclasses set ``metadata`` and override ``_do_*`` hooks.

    After ``initialize`` the plugin's own settings (the ``config`` table of its
    entry) are in ``self.config`` and its instance name in ``self.name``.
    """

    metadata: ClassVar[PluginMetadata]
    settings_model: ClassVar[type[BaseModel] | None] = None
    """A pydantic model of the plugin's ``config`` table; when set, the manager
    validates the table at load (a bad value is a ``ConfigError`` naming the file
    and key) and ``initialize`` puts the validated model in ``self.settings``."""
    config: Mapping[str, Any]
    settings: Any
    plugin_config: PluginConfig
    name: str
    host: PluginHost | None = None
    """Set by the engine's plugin manager; None when a plugin runs outside an engine."""

    def __init__(self) -> None:
        self.config = MappingProxyType({})
        self.name = getattr(type(self), "metadata", PluginMetadata(type(self).__name__)).name

    async def initialize(self, config: PluginConfig) -> None:
        self.plugin_config = config
        self.config = MappingProxyType(dict(config.config))
        self.name = config.name
        if self.settings_model is not None:
            self.settings = self.settings_model.model_validate(dict(config.config))
        await self._do_initialize()

    async def shutdown(self) -> None:
        await self._do_shutdown()

    async def health(self) -> Mapping[str, Any]:
        return {"ok": True}

    # Optional template steps, deliberately empty rather than abstract.
    async def _do_initialize(self) -> None:  # noqa: B027
        """Override to set up resources; ``self.config`` is available here."""

    async def _do_shutdown(self) -> None:  # noqa: B027
        """Override to release resources."""

    def extra_hooks(self) -> list[tuple[HookType, Callable[[Any, ChatContext], Awaitable[Any]]]]:
        """Methods decorated with ``@hook``, bound to this instance."""
        found = []
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            hook_type = getattr(fn, _HOOK_ATTR, None)
            if hook_type is not None:
                found.append((hook_type, getattr(self, attr)))
        return found


class BaseMessageProcessor(BasePlugin):
    """A processor sees the user's message before the backend, and optionally the reply.

    Override ``process_reply`` (and ``process_chunk`` for streamed pieces) to
    see the assistant's reply before the user does; they are only wired in
    when overridden, so a processor that doesn't need them costs nothing.
    """

    @abc.abstractmethod
    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        """Subclasses implement this."""

    async def process_reply(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        return PluginResult.ok(message)

    async def process_chunk(self, chunk: Chunk, context: ChatContext) -> PluginResult[Chunk]:
        return PluginResult.ok(chunk)


class BaseMiddleware(BasePlugin):
    """Onion middleware: do work, ``await call_next(context)``, do more work, return the reply."""

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        return await call_next(context)


class BaseFeatureExtension(BasePlugin):
    """Enriches the context sent to the backend (history, retrieved passages, ...)."""

    @abc.abstractmethod
    async def enrich(self, context: ChatContext) -> PluginResult[ChatContext]:
        """Subclasses implement this."""


class BaseBackendProvider(BasePlugin):
    """A backend streams the reply as ``Chunk``s; ``chat`` collects a stream into a ``Message``."""

    @abc.abstractmethod
    def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:
        """Subclasses implement this."""

    async def chat(self, context: ChatContext) -> Message:
        parts: list[str] = []
        tokens_in = tokens_out = None
        model = context.model
        async for chunk in self.stream(context):
            parts.append(chunk.text)
            if chunk.usage is not None:
                tokens_in, tokens_out = chunk.usage.tokens_in, chunk.usage.tokens_out
            model = chunk.model or model
        return Message(
            role=Role.ASSISTANT,
            content="".join(parts),
            model=model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )

    async def list_models(self) -> list[str]:
        model = self.config.get("model")
        return [str(model)] if model else []

    async def aclose(self) -> None:
        """Release connections; called at shutdown."""

    async def shutdown(self) -> None:
        await self.aclose()
        await super().shutdown()


# --- discovery -------------------------------------------------------------------------------


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _is_plugin_class(obj: object) -> bool:
    return (
        inspect.isclass(obj)
        and isinstance(getattr(obj, "metadata", None), PluginMetadata)
        and obj.__module__ not in (__name__,)
    )


def _check_plugin_class(obj: object, spec: str) -> type[BasePlugin]:
    if not _is_plugin_class(obj):
        raise PluginLoadError(
            f"plugin {spec!r}: {obj!r} is not a plugin class "
            "(a class with a `metadata = PluginMetadata(...)` attribute)"
        )
    return obj  # type: ignore[return-value]


def load_plugin_file(path: Path, *, trusted: bool = False) -> list[type[BasePlugin]]:
    """Scan, then import a ``*.py`` plugin file and return the plugin classes it defines.

    The source is compiled afresh on every call (no ``__pycache__``): a reload
    right after an edit must never run stale bytecode. A failed import leaves
    the previous version of the module in place.

    Raises:
        PluginRefused: the source scan found denied imports or calls (not ``trusted``).
        PluginLoadError: the file is missing or failed to import.
    """
    check_file(path, trusted=trusted)
    module_name = f"chatcore_plugin_{path.stem}_{abs(hash(str(path.resolve()))):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"plugin file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except Exception as exc:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise PluginLoadError(f"plugin file {str(path)!r} failed to import: {exc!r}") from exc
    return [
        obj
        for obj in vars(module).values()
        if _is_plugin_class(obj) and obj.__module__ == module_name
    ]


def resolve_plugin_class(
    spec: str, *, search_dirs: Sequence[Path] = (), trusted: bool = False
) -> type[BasePlugin]:
    """Find a plugin class by ``module:Class``, a ``.py`` path or an entry-point name.

    The source is scanned before it is imported (``chatcore.plugin_scan``);
    ``trusted`` skips the scan.

    Raises:
        PluginRefused: the scan found denied imports or calls.
        PluginLoadError: with what was tried and how to fix the name.
    """
    file_part, sep, class_name = spec.rpartition(":")
    if sep and file_part.endswith(".py"):
        file_classes = [
            c
            for c in load_plugin_file(Path(file_part), trusted=trusted)
            if c.__name__ == class_name
        ]
        if not file_classes:
            raise PluginLoadError(
                f"plugin {spec!r}: {file_part!r} defines no plugin {class_name!r}"
            )
        return file_classes[0]
    if ":" in spec and not spec.endswith(".py"):
        module_name, _, attr = spec.partition(":")
        check_module(module_name, trusted=trusted)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginLoadError(f"plugin {spec!r}: cannot import {module_name!r}: {exc}") from exc
        obj: object = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise PluginLoadError(
                    f"plugin {spec!r}: module {module_name!r} has no attribute {attr!r}"
                ) from None
        return _check_plugin_class(obj, spec)
    if spec.endswith(".py"):
        candidates = [Path(spec)] + [d / spec for d in search_dirs]
        for path in candidates:
            if path.is_file():
                classes = load_plugin_file(path, trusted=trusted)
                if len(classes) != 1:
                    raise PluginLoadError(
                        f"plugin file {str(path)!r} defines {len(classes)} plugin classes; "
                        "name one as 'path.py:Class' or keep one per file"
                    )
                return classes[0]
        raise PluginLoadError(f"plugin file {spec!r} not found")
    eps = _entry_points()
    if spec in eps:
        check_module(eps[spec].module, trusted=trusted)
        try:
            loaded = eps[spec].load()
        except Exception as exc:
            raise PluginLoadError(f"plugin {spec!r} failed to import: {exc!r}") from exc
        return _check_plugin_class(loaded, spec)
    for directory in search_dirs:
        path = directory / f"{spec}.py"
        if path.is_file():
            return resolve_plugin_class(str(path), trusted=trusted)
    known = ", ".join(sorted(eps)) or "none"
    raise PluginLoadError(
        f"plugin {spec!r} not found: not an installed plugin name (installed: {known}), "
        "nor a file in the plugin directories; use 'module:Class' or a path to a .py file"
    )


def topological_order(
    nodes: Sequence[str], dependencies: Mapping[str, Iterable[str]]
) -> tuple[list[str], dict[str, str]]:
    """Order ``nodes`` so every node comes after what it depends on.

    Ties keep the order of ``nodes``. Returns ``(order, errors)``: nodes on a
    dependency cycle, with a missing dependency, or depending on such a node
    are left out of ``order`` and get a reason in ``errors``.
    """
    position = {name: i for i, name in enumerate(nodes)}
    deps = {name: list(dict.fromkeys(dependencies.get(name, ()))) for name in nodes}
    errors: dict[str, str] = {}
    for name in nodes:
        missing = [d for d in deps[name] if d not in position]
        if missing:
            errors[name] = "missing dependency: " + ", ".join(repr(m) for m in missing)

    for component in _cycles(nodes, deps, position):
        members = set(component)
        for name in sorted(component, key=position.__getitem__):
            cycle = _shortest_cycle(name, deps, members)
            # Start where the config starts, so one cycle reads the same for each member.
            first = cycle.index(min(cycle, key=position.__getitem__))
            cycle = cycle[first:] + cycle[:first]
            text = " -> ".join([*cycle, cycle[0]])
            errors.setdefault(name, f"dependency cycle: {text}")

    dependents: dict[str, list[str]] = {name: [] for name in nodes}
    indegree = {name: 0 for name in nodes}
    for name in nodes:
        for dep in deps[name]:
            if dep in position:
                dependents[dep].append(name)
                indegree[name] += 1
    ready = [(position[n], n) for n in nodes if indegree[n] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        if name in errors:
            continue
        order.append(name)
        for nxt in dependents[name]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (position[nxt], nxt))
    # Whatever is left depends, directly or not, on a failed node: name the first one.
    placed = set(order)
    for name in nodes:
        if name not in placed and name not in errors:
            errors[name] = _blocked_reason(name, deps, errors, placed)
    return order, errors


def _blocked_reason(
    name: str, deps: Mapping[str, list[str]], errors: Mapping[str, str], placed: set[str]
) -> str:
    seen = {name}
    stack = list(deps[name])
    while stack:
        dep = stack.pop(0)
        if dep in errors:
            return f"depends on {dep!r}, which failed ({errors[dep]})"
        if dep not in seen and dep not in placed and dep in deps:
            seen.add(dep)
            stack.extend(deps[dep])
    return "unresolvable dependencies"


def _cycles(
    nodes: Sequence[str], deps: Mapping[str, list[str]], position: Mapping[str, int]
) -> list[list[str]]:
    """Strongly connected components that contain a cycle (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:
        nonlocal counter
        # Iterative DFS: plugin graphs are small, but recursion limits are not ours to spend.
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = [d for d in deps[node] if d in position]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in deps[node]:
                    found.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])

    for name in nodes:
        if name not in index:
            visit(name)
    return found


def _shortest_cycle(start: str, deps: Mapping[str, list[str]], members: set[str]) -> list[str]:
    """The shortest dependency cycle through ``start`` inside its component (BFS)."""
    parent: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for dep in deps[node]:
                if dep == start:
                    path = [node]
                    while (up := parent[path[-1]]) is not None:
                        path.append(up)
                    return path[::-1]
                if dep in members and dep not in parent:
                    parent[dep] = node
                    following.append(dep)
        frontier = following
    return [start]


# --- status ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PluginStatus:
    """One row of ``chatcore plugins``: what a plugin is and how its calls went."""

    name: str
    type: str
    state: str
    priority: int
    calls: int
    failures: int
    timeouts: int
    circuit: str
    last_error: str | None
    p50_ms: float | None
    p95_ms: float | None
    plugin: str = ""
    version: str = ""
    description: str = ""
    process: Mapping[str, Any] | None = None
    """The child process of an ``isolation = "process"`` plugin (pid, restarts,
    peak_memory_mb, network ...); None for plugins running in the engine."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "state": self.state,
            "priority": self.priority,
            "calls": self.calls,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "circuit": self.circuit,
            "last_error": self.last_error,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "plugin": self.plugin,
            "version": self.version,
            "description": self.description,
            "process": None if self.process is None else dict(self.process),
        }


@dataclass(eq=False)
class LoadedPlugin:
    """The manager's record of one plugin instance."""

    name: str
    spec: str
    plugin_config: PluginConfig
    lifecycle: PluginLifecycle
    plugin_type: PluginType | None = None
    instance: BasePlugin | None = None
    metadata: PluginMetadata | None = None
    dependencies: tuple[str, ...] = ()
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    stats: HookStats = field(default_factory=HookStats)
    registrations: list[HookRegistration] = field(default_factory=list)
    registration: HookRegistration | None = None
    """The registration used for calls that aren't hooks (middleware, features, backends)."""
    reload_error: str | None = None
    """Why the last reload failed while this version kept running."""

    def status(self) -> PluginStatus:
        reason = self.lifecycle.reason if self.lifecycle.state is PluginState.ERROR else None
        meta = self.metadata
        return PluginStatus(
            name=self.name,
            type=str(self.plugin_type or (meta.plugin_type if meta else "unknown")),
            state=str(self.lifecycle.state),
            priority=self.plugin_config.priority,
            calls=self.stats.calls,
            failures=self.stats.failures,
            timeouts=self.stats.timeouts,
            circuit=str(self.breaker.state),
            last_error=reason or self.reload_error or self.stats.last_error,
            p50_ms=_round(self.stats.percentile(50)),
            p95_ms=_round(self.stats.percentile(95)),
            plugin=self.spec,
            version=meta.version if meta else "",
            description=meta.description if meta else "",
            process=_process_status(self.instance),
        )


def _process_status(instance: BasePlugin | None) -> Mapping[str, Any] | None:
    status = getattr(instance, "isolation_status", None)
    found = status() if callable(status) else None
    return None if found is None else cast("Mapping[str, Any]", found.as_dict())


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- the manager -----------------------------------------------------------------------------

_STAGE_OF_TYPE = {
    PluginType.MIDDLEWARE: "middleware",
    PluginType.MESSAGE_PROCESSOR: "processor",
    PluginType.FEATURE_EXTENSION: "feature",
    PluginType.BACKEND_PROVIDER: "backend",
}


class PluginManager:
    """Loads, orders, runs and reports on every plugin and backend of an engine."""

    def __init__(
        self,
        config: Config,
        hooks: HookRegistry | None = None,
        *,
        store: Store | None = None,
        jobs: BackgroundJobs | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks or HookRegistry()
        self.store = store
        """Where plugins' key-value namespaces live; without it plugins get no ``host``."""
        self.jobs = jobs
        self.supervisor: Supervisor | None = None
        """Set by the engine: where process-isolated plugins' child actors run."""
        self._plugins: dict[str, LoadedPlugin] = {}
        self._backends: dict[str, LoadedPlugin] = {}
        self._started: list[LoadedPlugin] = []
        self._backend_locks: dict[str, trio.Lock] = {}
        self._reload_lock = trio.Lock()
        self._active: dict[PluginType, list[LoadedPlugin]] = {}
        """Plugins in the order they became active; shutdown goes in reverse."""
        self._search_dirs = [self._resolve_dir(d) for d in config.plugin_dirs]

    def _resolve_dir(self, directory: Path) -> Path:
        if directory.is_absolute() or self.config.source is None:
            return directory.expanduser()
        return (self.config.source.parent / directory).expanduser()

    # -- lifecycle of the whole set --

    async def initialize(self) -> None:
        """Load the default backend and its fallbacks, then the plugins in dependency order.

        Other configured backends load on first use (``ensure_backend``): their
        client libraries take hundreds of milliseconds to import, and a one-shot
        ``chatcore ask`` should not pay for backends it doesn't talk to.
        """
        eager = {self.config.default_backend, *self.config.router.fallbacks}
        for backend_name, backend_config in self.config.backends.items():
            self._backends[backend_name] = self._backend_record(backend_name, backend_config)
            if backend_name in eager:
                await self.ensure_backend(backend_name)
        records: list[LoadedPlugin] = []
        for entry in self.config.plugins:
            records.append(self._record_for_entry(entry))
        # Files dropped into a plugin directory load by themselves, with default settings;
        # a [[plugins]] entry for the same plugin takes precedence.
        for directory in self._search_dirs:
            if directory.is_dir():
                taken = {r.name for r in records}
                records.extend(self._directory_records(directory, skip=taken))
        await self._initialize_in_order(records)

    def _record_for_entry(self, entry: PluginEntry) -> LoadedPlugin:
        record = self._new_record(entry.instance_name, entry.plugin, _config_from_entry(entry))
        if not entry.enabled:
            return record
        self._import(record)
        model = getattr(record.instance, "settings_model", None)
        if model is not None:
            # A mistake in a plugin's own table is a config error like any other:
            # it names the file and the key, and the engine does not start.
            from .config import validate_settings

            index = self.config.plugins.index(entry)
            validate_settings(
                model, entry.config, path=self.config.source, key=f"plugins[{index}].config"
            )
        if entry.name is None and record.metadata is not None:
            # Unnamed entries are known by the plugin's own name ("shout"), not the spec.
            record.name = record.lifecycle.name = record.metadata.name
            record.plugin_config = dataclasses.replace(
                record.plugin_config, name=record.metadata.name
            )
        return record

    async def shutdown(self) -> None:
        """Shut every plugin down, dependents before what they depend on."""
        for record in reversed(self._started):
            await self._unload(record)
        for record in list(self._plugins.values()):
            await self._unload(record)
        for record in list(self._backends.values()):
            await self._unload(record)

    # -- the seed surface --

    async def load_plugin(
        self, entry: PluginEntry | str, *, name: str | None = None, **settings: Any
    ) -> PluginStatus:
        """Load and initialise one plugin now (a ``[[plugins]]`` entry or a spec string).

        Raises:
            PluginLoadError: if it cannot be found, imported, or initialised, or its
                dependencies aren't active. The plugin stays listed in ERROR.
        """
        if isinstance(entry, str):
            from .config import PluginEntry

            entry = PluginEntry(plugin=entry, name=name, **settings)
        record = self._record_for_entry(entry)
        instance_name = record.name
        if instance_name in self._plugins and self._plugins[instance_name].lifecycle.state not in (
            PluginState.UNLOADED,
            PluginState.ERROR,
        ):
            raise PluginLoadError(f"plugin {instance_name!r} is already loaded")
        await self._initialize_in_order([record])
        if record.lifecycle.state is PluginState.ERROR:
            raise PluginLoadError(f"plugin {instance_name!r}: {record.lifecycle.reason}")
        return record.status()

    async def unload_plugin(self, name: str) -> None:
        record = self._record(name)
        dependents = [
            r.name
            for r in self._plugins.values()
            if name in r.dependencies
            and r.lifecycle.state in (PluginState.ACTIVE, PluginState.PAUSED)
        ]
        if dependents:
            raise PluginError(
                f"plugin {name!r} is needed by {', '.join(map(repr, dependents))}; "
                "unload those first"
            )
        await self._unload(record)
        self._plugins.pop(name, None)
        self._plugins_changed()

    async def load_plugins_from_directory(self, directory: str | Path) -> list[PluginStatus]:
        """Load every plugin class found in ``directory/*.py`` (in dependency order)."""
        path = Path(directory)
        if not path.is_dir():
            raise PluginLoadError(f"plugin directory {str(path)!r} does not exist")
        records = self._directory_records(path, skip=set())
        await self._initialize_in_order(records)
        return [r.status() for r in records]

    def _directory_records(self, path: Path, *, skip: set[str]) -> list[LoadedPlugin]:
        records = []
        for file in sorted(path.glob("*.py")):
            if file.name.startswith("_"):
                continue
            try:
                classes = load_plugin_file(file)
            except PluginLoadError as exc:
                record = self._new_record(file.stem, str(file), PluginConfig(name=file.stem))
                record.lifecycle.fail(str(exc))
                records.append(record)
                continue
            for cls in classes:
                name = cls.metadata.name
                if name in skip:
                    continue
                record = self._new_record(name, f"{file}:{cls.__name__}", PluginConfig(name=name))
                self._adopt_class(record, cls)
                records.append(record)
        return records

    def get_backend_provider(self, name: str | None = None) -> BaseBackendProvider:
        """The active backend instance called ``name`` (default: the configured default).

        Raises:
            UnknownBackend: no backend of that name is configured.
            PluginError: it is configured but not active (the reason is included).
        """
        key = name or self.config.default_backend
        record = self._backends.get(key)
        if record is None:
            raise UnknownBackend(key, list(self._backends))
        if record.lifecycle.state is not PluginState.ACTIVE or record.instance is None:
            reason = record.lifecycle.reason or str(record.lifecycle.state)
            raise PluginError(f"backend {key!r} is not available: {reason}")
        return record.instance  # type: ignore[return-value]

    def backend_record(self, name: str) -> LoadedPlugin:
        try:
            return self._backends[name]
        except KeyError:
            raise UnknownBackend(name, list(self._backends)) from None

    async def ensure_backend(self, name: str) -> LoadedPlugin:
        """The backend's record, importing and initialising it first if it isn't yet.

        Raises:
            UnknownBackend: no backend of that name is configured.
        """
        record = self.backend_record(name)
        if record.lifecycle.state is PluginState.UNLOADED:
            lock = self._backend_locks.setdefault(name, trio.Lock())
            async with lock:
                if record.lifecycle.state is PluginState.UNLOADED:
                    await self._activate_backend(record, self.config.backends[name])
        return record

    async def load_all_backends(self) -> None:
        """Load every configured backend now (for status and checks)."""
        for name in list(self._backends):
            await self.ensure_backend(name)

    async def execute_message_processors(
        self, message: Message, context: ChatContext
    ) -> HookOutcome[Message]:
        """Run the active processors over a user message (BEFORE_MESSAGE), in priority order."""
        return await self.hooks.run(HookType.BEFORE_MESSAGE, message, context)

    def get_plugin(self, name: str) -> BasePlugin:
        """The running instance of plugin ``name``, to call what it offers beyond its hooks.

        Raises:
            PluginError: no plugin of that name is loaded and active (the reason says why).
        """
        record = self._plugins.get(name)
        if record is None or record.instance is None:
            active = sorted(n for n, r in self._plugins.items() if _is_live(r))
            raise PluginError(
                f"no plugin named {name!r} is loaded (active: {', '.join(active) or 'none'}); "
                f'add a [[plugins]] entry with plugin = "{name}" to the config'
            )
        if record.lifecycle.state is not PluginState.ACTIVE:
            why = f": {record.lifecycle.reason}" if record.lifecycle.reason else ""
            raise PluginError(f"plugin {name!r} is {record.lifecycle.state}{why}")
        return record.instance

    def get_plugin_status(self) -> dict[str, PluginStatus]:
        """Every plugin and backend, keyed by name (backends first)."""
        status = {name: r.status() for name, r in self._backends.items()}
        status.update((name, r.status()) for name, r in self._plugins.items())
        return status

    def get_metrics(self) -> list[Any]:
        return self.hooks.metrics()

    async def pause(self, name: str) -> None:
        record = self._record(name)
        record.lifecycle.transition(PluginState.PAUSED)
        self.hooks.set_enabled(name, False)

    async def resume(self, name: str) -> None:
        record = self._record(name)
        record.lifecycle.transition(PluginState.ACTIVE)
        self.hooks.set_enabled(name, True)

    async def reload(self, name: str) -> PluginStatus:
        """Re-import a plugin from its file or module and swap the new version in.

        The new version is scanned, imported and initialised while the old one
        keeps serving; then, in one step with no checkpoint, its hooks replace
        the old ones and the old instance is shut down. A pipeline step that
        already called the old version finishes with it; the next step uses the
        new one. Counters carry over; the circuit starts closed.

        Raises:
            PluginLoadError: the new version failed (scan, import, initialise or a
                dependency). A plugin that was running keeps running its previous
                version, and its status' ``last_error`` says why.
        """
        async with self._reload_lock:
            record = self._record(name)
            if self._backends.get(name) is record:
                return await self._reload_backend(name, record)
            fresh = self._new_record(name, record.spec, record.plugin_config)
            fresh.stats, fresh.breaker = record.stats, record.breaker
            await self._prepare_reload(fresh)
            if fresh.lifecycle.state is not PluginState.INITIALIZING:
                self._reload_failed(record, fresh)
            was = record.lifecycle.state
            # The swap: nothing below awaits until the new version is the one listed,
            # so no turn ever sees both versions' hooks, or neither.
            self.hooks.unregister(name)
            record.registrations.clear()
            self._register_hooks(fresh)
            fresh.lifecycle.transition(PluginState.ACTIVE)
            if was is PluginState.PAUSED:
                fresh.lifecycle.transition(PluginState.PAUSED)
                self.hooks.set_enabled(name, False)
            self._plugins[name] = fresh
            if record in self._started:
                self._started[self._started.index(record)] = fresh
            else:
                self._started.append(fresh)
            self._plugins_changed()
            fresh.breaker.reset()
            await self._retire(record, was)
            await self.hooks.run(HookType.ON_PLUGIN_LOAD, fresh.status(), _NO_CONTEXT)
            return fresh.status()

    async def _prepare_reload(self, fresh: LoadedPlugin) -> None:
        """Import and initialise a new version; it ends INITIALIZING when all went well."""
        fresh.lifecycle.transition(PluginState.LOADING)
        try:
            cls = self._reimport(fresh.spec, trusted=fresh.plugin_config.trusted)
        except PluginLoadError as exc:
            fresh.lifecycle.transition(PluginState.ERROR, str(exc))
            return
        self._adopt_class(fresh, cls)
        if fresh.lifecycle.state is not PluginState.LOADED:
            return
        aliases = self._aliases()
        for dep in fresh.dependencies:
            target = self._plugins.get(aliases.get(dep, dep))
            if target is None or target.lifecycle.state is not PluginState.ACTIVE:
                state = "missing" if target is None else str(target.lifecycle.state)
                fresh.lifecycle.transition(
                    PluginState.ERROR, f"depends on {dep!r}, which is {state}"
                )
                return
        await self._initialize_instance(fresh)

    def _reimport(self, spec: str, *, trusted: bool) -> type[BasePlugin]:
        """The plugin class of ``spec``, from the source as it is now on disk."""
        file_part, sep, _ = spec.rpartition(":")
        module_name: str | None = None
        if not spec.endswith(".py") and not (sep and file_part.endswith(".py")):
            if ":" in spec:
                module_name = spec.partition(":")[0]
            else:
                entry = _entry_points().get(spec)
                module_name = entry.module if entry is not None else None
        if module_name is not None and module_name in sys.modules:
            check_module(module_name, trusted=trusted)
            _reexecute_module(module_name)
        # Files are compiled afresh by load_plugin_file on every call.
        return resolve_plugin_class(spec, search_dirs=self._search_dirs, trusted=trusted)

    def _reload_failed(self, record: LoadedPlugin, fresh: LoadedPlugin) -> NoReturn:
        reason = fresh.lifecycle.reason or str(fresh.lifecycle.state)
        if record.lifecycle.state in (PluginState.ACTIVE, PluginState.PAUSED):
            record.reload_error = f"reload failed, the previous version keeps running: {reason}"
            logger.warning("plugin %r: %s", record.name, record.reload_error)
            raise PluginLoadError(f"plugin {record.name!r}: {record.reload_error}")
        # Nothing was running to fall back on: the failed attempt is what status shows.
        self._plugins[record.name] = fresh
        self._plugins_changed()
        raise PluginLoadError(f"plugin {record.name!r}: reload failed: {reason}")

    async def _retire(self, record: LoadedPlugin, was: PluginState) -> None:
        """Shut down a version that a reload replaced (its hooks are already gone)."""
        if record in self._started:
            self._started.remove(record)
        if was not in (PluginState.ACTIVE, PluginState.PAUSED, PluginState.LOADED):
            return
        record.lifecycle.transition(PluginState.UNLOADING)
        try:
            if record.instance is not None and was is not PluginState.LOADED:
                await record.instance.shutdown()
        except Exception as exc:
            # The new version is already serving: a failed goodbye is only logged.
            logger.warning("plugin %r: old version's shutdown failed: %r", record.name, exc)
        record.lifecycle.transition(PluginState.UNLOADED)
        await self.hooks.run(HookType.ON_PLUGIN_UNLOAD, record.status(), _NO_CONTEXT)

    async def _reload_backend(self, name: str, record: LoadedPlugin) -> PluginStatus:
        spec = record.spec
        module_name = spec.partition(":")[0]
        await self._unload(record)
        if ":" in spec and not spec.endswith(".py") and module_name in sys.modules:
            try:
                importlib.reload(sys.modules[module_name])
            except Exception as exc:
                fresh = self._new_record(name, spec, record.plugin_config)
                fresh.lifecycle.fail(f"reload failed: {type(exc).__name__}: {exc}")
                self._backends[name] = fresh
                return fresh.status()
        fresh = self._backend_record(name, self.config.backends[name])
        fresh.stats, fresh.breaker = record.stats, record.breaker
        self._backends[name] = fresh
        await self.ensure_backend(name)
        return fresh.status()

    def reset_circuit(self, name: str) -> None:
        self._record(name).breaker.reset()

    def stats_snapshots(self) -> dict[str, dict[str, Any]]:
        """Counters and circuit state of every plugin and backend, JSON-able.

        The engine stores these when it closes and hands them back to
        ``restore_stats`` when it opens, so a one-shot CLI run still sees a
        circuit that earlier runs opened.
        """
        now = time.time()
        return {
            record.name: {
                "saved_at": now,
                "stats": record.stats.snapshot(),
                "circuit": record.breaker.snapshot(),
            }
            for record in [*self._backends.values(), *self._plugins.values()]
        }

    def restore_stats(self, snapshots: Mapping[str, Any]) -> None:
        now = time.time()
        for name, saved in snapshots.items():
            record = self._plugins.get(name) or self._backends.get(name)
            if record is None or not isinstance(saved, Mapping):
                continue
            try:
                record.stats.restore(saved["stats"])
                record.breaker.restore(saved["circuit"], elapsed_s=now - float(saved["saved_at"]))
            except (KeyError, TypeError, ValueError):
                # A snapshot from another version is not worth failing a start over.
                record.stats.restore({})
                record.breaker.reset()

    @property
    def names(self) -> list[str]:
        return [*self._backends, *self._plugins]

    # -- views used by the pipeline --

    def active(self, plugin_type: PluginType) -> list[LoadedPlugin]:
        """Active plugins of one type, in priority order (ties keep config order).

        Cached between lifecycle changes: every turn asks, plugins rarely change.
        """
        cached = self._active.get(plugin_type)
        if cached is None:
            found = [
                r
                for r in self._plugins.values()
                if r.plugin_type is plugin_type and r.lifecycle.state is PluginState.ACTIVE
            ]
            cached = self._active[plugin_type] = sorted(
                found, key=lambda r: r.plugin_config.priority
            )
        return cached

    def _plugins_changed(self) -> None:
        self._active.clear()

    @property
    def backend_names(self) -> list[str]:
        return list(self._backends)

    # -- internals --

    def _record(self, name: str) -> LoadedPlugin:
        record = self._plugins.get(name) or self._backends.get(name)
        if record is None:
            known = ", ".join(sorted([*self._plugins, *self._backends])) or "none"
            raise PluginError(f"no plugin named {name!r} (loaded: {known})")
        return record

    def _new_record(self, name: str, spec: str, plugin_config: PluginConfig) -> LoadedPlugin:
        record = LoadedPlugin(
            name=name,
            spec=spec,
            plugin_config=plugin_config,
            lifecycle=PluginLifecycle(name, on_change=self._plugins_changed),
            breaker=CircuitBreaker(
                plugin_config.circuit_failure_threshold, plugin_config.circuit_reset_seconds
            ),
        )
        return record

    def _import(self, record: LoadedPlugin) -> None:
        record.lifecycle.transition(PluginState.LOADING)
        try:
            cls = resolve_plugin_class(
                record.spec, search_dirs=self._search_dirs, trusted=record.plugin_config.trusted
            )
        except PluginLoadError as exc:
            record.lifecycle.transition(PluginState.ERROR, str(exc))
            return
        self._adopt_class(record, cls)

    def _adopt_class(self, record: LoadedPlugin, cls: type[BasePlugin]) -> None:
        if record.lifecycle.state is PluginState.UNLOADED:
            record.lifecycle.transition(PluginState.LOADING)
        record.metadata = cls.metadata
        record.plugin_type = cls.metadata.plugin_type
        record.dependencies = cls.metadata.dependencies
        unknown = [p for p in cls.metadata.permissions if p not in KNOWN_PERMISSIONS]
        if unknown:
            record.lifecycle.transition(
                PluginState.ERROR,
                f"plugin class {cls.__name__} declares unknown permission {unknown[0]!r} "
                f"(known: {', '.join(sorted(KNOWN_PERMISSIONS))})",
            )
            return
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            record.lifecycle.transition(
                PluginState.ERROR,
                f"plugin class {cls.__name__} does not implement {', '.join(missing)}",
            )
            return
        try:
            if record.plugin_config.isolation == "process":
                from .isolation import process_plugin  # a stand-in that calls a child process

                instance = process_plugin(cls, record.spec, self)
            else:
                instance = cls()
        except Exception as exc:
            record.lifecycle.transition(PluginState.ERROR, f"constructor failed: {exc!r}")
            return
        record.instance = instance
        record.lifecycle.transition(PluginState.LOADED)

    async def _initialize_in_order(self, records: list[LoadedPlugin]) -> None:
        for record in records:
            self._add_record(record)
        loadable = [r for r in records if r.lifecycle.state is PluginState.LOADED]
        batch = {r.name for r in loadable}
        # A dependency may name an instance or a plugin's metadata name; a plugin that
        # is already active outside this batch satisfies it.
        aliases = self._aliases()
        deps: dict[str, list[str]] = {}
        blocked: dict[str, str] = {}
        for r in loadable:
            deps[r.name] = []
            for dep in r.dependencies:
                target = aliases.get(dep)
                if target is None or target in batch:
                    deps[r.name].append(target or dep)
                elif self._plugins[target].lifecycle.state is not PluginState.ACTIVE:
                    other = self._plugins[target].lifecycle
                    why = f": {other.reason}" if other.reason else ""
                    blocked.setdefault(r.name, f"depends on {dep!r}, which is {other.state}{why}")
        order, errors = topological_order([r.name for r in loadable], deps)
        by_name = {r.name: r for r in loadable}
        for name, reason in {**errors, **blocked}.items():
            if by_name[name].lifecycle.state is not PluginState.ERROR:
                by_name[name].lifecycle.transition(PluginState.ERROR, reason)
        for name in order:
            record = by_name[name]
            if record.lifecycle.state is PluginState.ERROR:
                continue
            failed = [d for d in deps[name] if by_name[d].lifecycle.state is not PluginState.ACTIVE]
            if failed:
                failed_reason = by_name[failed[0]].lifecycle.reason
                record.lifecycle.transition(
                    PluginState.ERROR, f"depends on {failed[0]!r}, which failed ({failed_reason})"
                )
                continue
            await self._activate(record)

    def _add_record(self, record: LoadedPlugin) -> None:
        """List a record under its name, unless a live plugin already has that name."""
        existing = self._plugins.get(record.name)
        if existing is None or existing is record or not _is_live(existing):
            self._plugins[record.name] = record
            self._plugins_changed()
            return
        record.lifecycle.fail(
            f"a plugin named {record.name!r} is already loaded; "
            "give this one a distinct `name` in its [[plugins]] entry"
        )
        n = 2
        while f"{record.name}#{n}" in self._plugins:
            n += 1
        self._plugins[f"{record.name}#{n}"] = record

    def _aliases(self) -> dict[str, str]:
        aliases: dict[str, str] = {}
        for record in self._plugins.values():
            if record.metadata is not None:
                aliases.setdefault(record.metadata.name, record.name)
        for record in self._plugins.values():
            aliases[record.name] = record.name
        return aliases

    def _host_for(self, name: str, permissions: Iterable[str] = ()) -> PluginHost | None:
        if self.store is None:
            return None
        jobs = self.jobs
        return PluginHost(
            name=name,
            kv=self.store.kv(name),
            data_dir=self.config.resolved_data_dir,
            # The store beyond the plugin's own kv namespace is a declared permission.
            database_path=self.store.path if "store" in permissions else None,
            backend=self._backend_instance,
            spawn=jobs.submit if jobs is not None else _no_background,
            plugin_status=self.get_plugin_status,
        )

    async def _backend_instance(self, name: str) -> BaseBackendProvider:
        record = await self.ensure_backend(name)
        if record.lifecycle.state is not PluginState.ACTIVE or record.instance is None:
            why = f": {record.lifecycle.reason}" if record.lifecycle.reason else ""
            raise PluginError(f"backend {name!r} is {record.lifecycle.state}{why}")
        return cast("BaseBackendProvider", record.instance)

    async def _initialize_instance(self, record: LoadedPlugin) -> bool:
        """Lend the loaded instance its host and initialize it; False (and ERROR) if that failed."""
        assert record.instance is not None
        record.instance.host = self._host_for(record.name, _permissions(record))
        record.lifecycle.transition(PluginState.INITIALIZING)
        try:
            await record.instance.initialize(record.plugin_config)
        except Exception as exc:
            record.lifecycle.transition(PluginState.ERROR, f"initialize failed: {exc!r}")
            return False
        return True

    async def _activate(self, record: LoadedPlugin) -> None:
        if not await self._initialize_instance(record):
            return
        self._register_hooks(record)
        record.lifecycle.transition(PluginState.ACTIVE)
        self._started.append(record)
        await self.hooks.run(HookType.ON_PLUGIN_LOAD, record.status(), _NO_CONTEXT)

    def _register_hooks(self, record: LoadedPlugin) -> None:
        instance = record.instance
        assert instance is not None
        pc = record.plugin_config

        def add(
            hook_type: HookType, callback: Callable[[Any, ChatContext], Awaitable[Any]]
        ) -> None:
            registration = HookRegistration(
                name=record.name,
                hook_type=hook_type,
                callback=callback,
                priority=pc.priority,
                timeout_s=pc.timeout_seconds,
                enabled=pc.enabled,
                fail_fast=pc.fail_fast,
                breaker=record.breaker,
                stats=record.stats,
            )
            record.registrations.append(registration)
            self.hooks.register(registration)

        if isinstance(instance, BaseMessageProcessor):
            add(HookType.BEFORE_MESSAGE, instance.process_message)
            cls = type(instance)
            if cls.process_reply is not BaseMessageProcessor.process_reply:
                add(HookType.AFTER_MESSAGE, instance.process_reply)
            if cls.process_chunk is not BaseMessageProcessor.process_chunk:
                add(HookType.ON_STREAM_CHUNK, instance.process_chunk)
        for hook_type, callback in instance.extra_hooks():
            add(hook_type, callback)
        # Calls that aren't hook-shaped (middleware, features, backends) still go
        # through a registration so they share the breaker, stats and timeout.
        # A middleware's call includes everything downstream of it, so its timeout
        # would cut the whole turn: middleware is isolated from errors, not timed.
        is_middleware = record.plugin_type is PluginType.MIDDLEWARE
        record.registration = HookRegistration(
            name=record.name,
            hook_type=HookType.BEFORE_MODEL_LOAD,
            callback=_never_called,
            priority=pc.priority,
            timeout_s=None if is_middleware else pc.timeout_seconds,
            enabled=pc.enabled,
            fail_fast=pc.fail_fast,
            breaker=record.breaker,
            stats=record.stats,
        )

    async def _unload(self, record: LoadedPlugin) -> None:
        state = record.lifecycle.state
        if state in (PluginState.UNLOADED, PluginState.LOADING, PluginState.INITIALIZING):
            return
        if state is PluginState.ERROR and record.instance is None:
            return
        self.hooks.unregister(record.name)
        record.registrations.clear()
        if record in self._started:
            self._started.remove(record)
        record.lifecycle.transition(PluginState.UNLOADING)
        try:
            if record.instance is not None and state is not PluginState.LOADED:
                await record.instance.shutdown()
        except Exception as exc:
            record.lifecycle.transition(PluginState.ERROR, f"shutdown failed: {exc!r}")
            return
        record.lifecycle.transition(PluginState.UNLOADED)
        await self.hooks.run(HookType.ON_PLUGIN_UNLOAD, record.status(), _NO_CONTEXT)

    def _backend_record(self, name: str, backend: BackendConfig) -> LoadedPlugin:
        settings = {"model": backend.model, **backend.options}
        settings["timeout_seconds"] = backend.timeout_seconds
        if backend.temperature is not None:
            settings["temperature"] = backend.temperature
        if backend.max_tokens is not None:
            settings["max_tokens"] = backend.max_tokens
        plugin_config = PluginConfig(
            name=name,
            config=MappingProxyType(settings),
            # A reply may stream for minutes; backends time their own requests.
            timeout_seconds=None,
            circuit_failure_threshold=backend.circuit_failure_threshold,
            circuit_reset_seconds=backend.circuit_reset_seconds,
        )
        record = self._new_record(name, backend.plugin, plugin_config)
        # Known before its class is imported (backends load on first use).
        record.plugin_type = PluginType.BACKEND_PROVIDER
        return record

    async def _activate_backend(self, record: LoadedPlugin, backend: BackendConfig) -> None:
        self._import(record)
        if record.lifecycle.state is PluginState.ERROR:
            return
        if record.metadata is not None and record.metadata.plugin_type is not (
            PluginType.BACKEND_PROVIDER
        ):
            record.lifecycle.transition(
                PluginState.ERROR,
                f"backends.{record.name}.plugin: {backend.plugin!r} is a "
                f"{record.metadata.plugin_type} "
                "plugin, not a backend",
            )
            return
        assert record.instance is not None
        record.lifecycle.transition(PluginState.INITIALIZING)
        try:
            await record.instance.initialize(record.plugin_config)
        except Exception as exc:
            record.lifecycle.transition(PluginState.ERROR, f"initialize failed: {exc!r}")
            return
        self._register_hooks(record)
        record.lifecycle.transition(PluginState.ACTIVE)


def _no_background(job: BackgroundJob) -> bool:
    return False


def _reexecute_module(module_name: str) -> None:
    """Run a module's current source in a new module object; keep the old one on failure.

    Compiling the source directly (not through ``__pycache__``) means an edit made
    within the same second as the last import is never hidden by stale bytecode.
    A package re-runs its ``__init__`` only; its submodules stay as imported.
    """
    old = sys.modules[module_name]
    spec = old.__spec__
    origin = spec.origin if spec is not None else None
    if spec is None or not spec.has_location or not origin or not origin.endswith(".py"):
        try:
            importlib.reload(old)
        except Exception as exc:
            raise PluginLoadError(f"module {module_name!r} failed to reload: {exc!r}") from exc
        return
    new = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = new
    try:
        code = compile(Path(origin).read_bytes(), origin, "exec", dont_inherit=True)
        exec(code, new.__dict__)
    except Exception as exc:
        sys.modules[module_name] = old
        raise PluginLoadError(f"module {module_name!r} failed to import: {exc!r}") from exc
    parent, _, child = module_name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, new)


def _permissions(record: LoadedPlugin) -> tuple[str, ...]:
    return record.metadata.permissions if record.metadata is not None else ()


async def _never_called(payload: Any, context: ChatContext) -> None:
    raise AssertionError("placeholder registrations are only used through HookRegistry.guarded")


_NO_CONTEXT = ChatContext(conversation_id="")


def _is_live(record: LoadedPlugin) -> bool:
    return record.lifecycle.state not in (PluginState.UNLOADED, PluginState.ERROR)


def _config_from_entry(entry: PluginEntry) -> PluginConfig:
    return PluginConfig(
        name=entry.instance_name,
        enabled=entry.enabled,
        priority=entry.priority,
        config=MappingProxyType(dict(entry.config)),
        timeout_seconds=entry.timeout_seconds,
        fail_fast=entry.fail_fast,
        isolation=entry.isolation,
        max_memory_mb=entry.max_memory_mb,
        max_cpu_seconds=entry.max_cpu_seconds,
        trusted=entry.trusted,
        circuit_failure_threshold=entry.circuit_failure_threshold,
        circuit_reset_seconds=entry.circuit_reset_seconds,
    )
