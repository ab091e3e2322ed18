"""The plugin manager: loads, orders, runs, reloads and reports on every plugin and backend.

Plugins and backends share one path (``PluginLoader``: import, adopt, activate,
unload) and one reload, which prepares a new version beside the old and swaps it in.
The manager owns the tables of records and decides what loads when. Every call
into a plugin goes through the hook registry, so each plugin has its own timeout,
circuit breaker and metrics, and a failing plugin never fails a turn.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn, cast

import trio

from ..errors import PluginError, PluginLoadError, UnknownBackend
from ..hooks import HookRegistry, HookType
from ..messages import ChatContext
from ._base import PluginConfig, PluginType
from ._discovery import load_plugin_file
from ._host import PluginHost, refuse_background_job
from ._lifecycle import PluginState
from ._loader import RUNNING, PluginLoader
from ._ordering import topological_order

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..actors import Supervisor
    from ..config import Config, PluginEntry
    from ..hooks import HookMetrics, HookOutcome
    from ..messages import Message, SharedRecord
    from ..store import Store
    from ._base import BaseBackendProvider, BasePlugin
    from ._host import BackgroundJobs
    from ._records import LoadedPlugin, PluginStatus

__all__ = ["PluginManager"]

logger = logging.getLogger(__name__)

_NO_CONTEXT = ChatContext(conversation_id="")


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
        """Set by the engine: where process-isolated plugins' child supervisors run."""
        self._plugins: dict[str, LoadedPlugin] = {}
        self._backends: dict[str, LoadedPlugin] = {}
        self._backend_locks: dict[str, trio.Lock] = {}
        self._reload_lock = trio.Lock()
        self._active: dict[PluginType, list[LoadedPlugin]] = {}
        self._loader = PluginLoader(self, self.hooks, self._plugins_changed)
        self.search_dirs: list[Path] = [self._resolve_dir(d) for d in config.plugin_dirs]
        """The configured plugin directories, resolved against the config file's folder."""

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
            self._backends[backend_name] = self._loader.backend_record(backend_name, backend_config)
            if backend_name in eager:
                await self.ensure_backend(backend_name)
        records = [self._record_for_entry(entry) for entry in self.config.plugins]
        # Files dropped into a plugin directory load by themselves, with default settings;
        # a [[plugins]] entry for the same plugin takes precedence.
        for directory in self.search_dirs:
            if directory.is_dir():
                taken = {r.name for r in records}
                records.extend(self._directory_records(directory, skip=taken))
        await self._initialize_in_order(records)

    def _record_for_entry(self, entry: PluginEntry) -> LoadedPlugin:
        record = self._loader.new_record(
            entry.instance_name, entry.plugin, _config_from_entry(entry)
        )
        if entry in self.config.plugins:
            record.config_key = f"plugins[{self.config.plugins.index(entry)}]"
            record.required = entry.required
        if not entry.enabled:
            return record
        self._loader.load(record)
        model = getattr(record.instance, "settings_model", None)
        if model is not None:
            # A mistake in a plugin's own table is a config error like any other:
            # it names the file and the key, and the engine does not start.
            from ..config import validate_settings

            if entry in self.config.plugins:
                index = self.config.plugins.index(entry)
                key = f"plugins[{index}].config"
                where = self.config.file_for(("plugins", index))  # of layered files, its own
            else:  # loaded by load_plugin(), not from the file
                key, where = f"{entry.instance_name}.config", None
            validate_settings(model, entry.config, path=where, key=key)
        if entry.name is None and record.metadata is not None:
            # Unnamed entries are known by the plugin's own name ("shout"), not the spec.
            record.name = record.lifecycle.name = record.metadata.name
            record.plugin_config = dataclasses.replace(
                record.plugin_config, name=record.metadata.name
            )
        return record

    async def shutdown(self) -> None:
        """Shut every plugin down, dependents before what they depend on."""
        for record in reversed(self._loader.started):
            await self._loader.unload(record)
        for record in [*self._plugins.values(), *self._backends.values()]:
            await self._loader.unload(record)

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
            from ..config import PluginEntry

            entry = PluginEntry(plugin=entry, name=name, **settings)
        record = self._record_for_entry(entry)
        existing = self._plugins.get(record.name)
        if existing is not None and existing.lifecycle.live:
            raise PluginLoadError(f"plugin {record.name!r} is already loaded")
        await self._initialize_in_order([record])
        if record.lifecycle.state is PluginState.ERROR:
            raise PluginLoadError(f"plugin {record.name!r}: {record.lifecycle.reason}")
        return record.status()

    async def unload_plugin(self, name: str) -> None:
        record = self._record(name)
        dependents = [
            r.name
            for r in self._plugins.values()
            if name in r.dependencies and r.lifecycle.state in RUNNING
        ]
        if dependents:
            raise PluginError(
                f"plugin {name!r} is needed by {', '.join(map(repr, dependents))}; "
                "unload those first"
            )
        await self._loader.unload(record)
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
                record = self._loader.new_record(file.stem, str(file), PluginConfig(name=file.stem))
                record.lifecycle.fail(str(exc))
                records.append(record)
                continue
            for cls in classes:
                name = cls.metadata.name
                if name in skip:
                    continue
                record = self._loader.new_record(
                    name, f"{file}:{cls.__name__}", PluginConfig(name=name)
                )
                record.lifecycle.transition(PluginState.LOADING)
                self._loader.adopt(record, cls)
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
        return cast("BaseBackendProvider", record.instance)

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
            async with self._backend_locks.setdefault(name, trio.Lock()):
                if record.lifecycle.state is PluginState.UNLOADED and self._loader.load(record):
                    await self._loader.activate(record)
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
            active = sorted(n for n, r in self._plugins.items() if r.lifecycle.live)
            raise PluginError(
                f"no plugin named {name!r} is loaded (active: {', '.join(active) or 'none'}); "
                f'add a [[plugins]] entry with plugin = "{name}" to the config'
            )
        if record.lifecycle.state is not PluginState.ACTIVE:
            why = f": {record.lifecycle.reason}" if record.lifecycle.reason else ""
            raise PluginError(f"plugin {name!r} is {record.lifecycle.state}{why}")
        return record.instance

    async def share(self, record: SharedRecord) -> SharedRecord:
        """``record`` as it may leave the machine: after every ``BEFORE_SHARE`` hook."""
        if not self.hooks.has(HookType.BEFORE_SHARE):
            return record
        context = ChatContext(conversation_id=record.conversation_id)
        outcome = await self.hooks.run(HookType.BEFORE_SHARE, record, context)
        return outcome.value

    def get_plugin_status(self) -> dict[str, PluginStatus]:
        """Every plugin and backend, keyed by name (backends first)."""
        status = {name: r.status() for name, r in self._backends.items()}
        status.update((name, r.status()) for name, r in self._plugins.items())
        return status

    def get_metrics(self) -> list[HookMetrics]:
        """A snapshot of every hook registration's counters, in run order."""
        return self.hooks.metrics()

    def load_failures(self) -> list[str]:
        """Why turns are refused: each required plugin of the config that failed to load.

        One line each, in the config-error style (file, key, reason). A plugin paused
        on purpose, one whose entry says ``required = false``, and one found in a
        plugin directory without an entry do not stop turns.
        """
        where = f"{self.config.source}: " if self.config.source is not None else ""
        return [
            f"{where}{record.config_key}.plugin: {record.lifecycle.reason}"
            for record in self._plugins.values()
            if record.required
            and record.config_key is not None
            and record.lifecycle.state is PluginState.ERROR
        ]

    async def pause(self, name: str) -> None:
        """Stop calling a plugin; a plugin that failed to load is set aside on purpose."""
        record = self._record(name)
        record.lifecycle.transition(PluginState.PAUSED)
        self.hooks.set_enabled(name, False)

    async def resume(self, name: str) -> None:
        record = self._record(name)
        if PluginState.ACTIVE not in record.lifecycle.history:
            raise PluginError(
                f"plugin {name!r} never loaded, so it cannot resume: fix its entry and reload it"
            )
        record.lifecycle.transition(PluginState.ACTIVE)
        self.hooks.set_enabled(name, True)

    async def reload(self, name: str) -> PluginStatus:
        """Re-import a plugin or backend from its source and swap the new version in.

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
            table = self._backends if record.is_backend else self._plugins
            fresh = self._loader.new_record(
                name, record.spec, record.plugin_config, expected_type=record.expected_type
            )
            fresh.stats, fresh.breaker = record.stats, record.breaker
            await self._prepare_reload(fresh)
            if fresh.lifecycle.state is not PluginState.INITIALIZING:
                self._reload_failed(table, record, fresh)
            was = record.lifecycle.state
            # The swap: nothing below awaits until the new version is the one listed,
            # so no turn ever sees both versions' hooks, or neither.
            self.hooks.unregister(name)
            record.registrations.clear()
            self._loader.register_hooks(fresh)
            fresh.lifecycle.transition(PluginState.ACTIVE)
            if was is PluginState.PAUSED:
                fresh.lifecycle.transition(PluginState.PAUSED)
                self.hooks.set_enabled(name, False)
            table[name] = fresh
            if record in self._loader.started:
                self._loader.started[self._loader.started.index(record)] = fresh
            else:
                self._loader.started.append(fresh)
            self._plugins_changed()
            fresh.breaker.reset()
            await self._loader.retire(record, was)
            await self.hooks.run(HookType.ON_PLUGIN_LOAD, fresh.status(), _NO_CONTEXT)
            return fresh.status()

    async def _prepare_reload(self, fresh: LoadedPlugin) -> None:
        """Import and initialise a new version; it ends INITIALIZING when all went well."""
        if not self._loader.load(fresh, from_disk=True):
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
        await self._loader.initialize(fresh)

    def _reload_failed(
        self, table: dict[str, LoadedPlugin], record: LoadedPlugin, fresh: LoadedPlugin
    ) -> NoReturn:
        reason = fresh.lifecycle.reason or str(fresh.lifecycle.state)
        if record.lifecycle.state in RUNNING:
            record.reload_error = f"reload failed, the previous version keeps running: {reason}"
            logger.warning("plugin %r: %s", record.name, record.reload_error)
            raise PluginLoadError(f"plugin {record.name!r}: {record.reload_error}")
        # Nothing was running to fall back on: the failed attempt is what status shows.
        table[record.name] = fresh
        self._plugins_changed()
        raise PluginLoadError(f"plugin {record.name!r}: reload failed: {reason}")

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
            if record is None or not isinstance(saved, dict):
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

    @property
    def backend_names(self) -> list[str]:
        return list(self._backends)

    def record(self, name: str) -> LoadedPlugin:
        """The manager's record of plugin or backend ``name``.

        Raises:
            PluginError: nothing of that name is configured or loaded.
        """
        return self._record(name)

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

    # -- one path for plugins and backends: import, adopt, activate, unload --

    def _record(self, name: str) -> LoadedPlugin:
        record = self._plugins.get(name) or self._backends.get(name)
        if record is None:
            known = ", ".join(sorted([*self._plugins, *self._backends])) or "none"
            raise PluginError(f"no plugin named {name!r} (loaded: {known})")
        return record

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
            await self._loader.activate(record)

    def _add_record(self, record: LoadedPlugin) -> None:
        """List a record under its name, unless a live plugin already has that name."""
        existing = self._plugins.get(record.name)
        if existing is None or existing is record or not existing.lifecycle.live:
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

    def host_for(self, record: LoadedPlugin) -> PluginHost | None:
        """What the engine lends ``record``'s instance; None without a store."""
        if self.store is None:
            return None
        jobs = self.jobs
        return PluginHost(
            name=record.name,
            kv=self.store.kv(record.name),
            data_dir=self.config.resolved_data_dir,
            # The store beyond the plugin's own kv namespace is a declared permission.
            database_path=self.store.path if "store" in record.permissions else None,
            backend=self._backend_instance,
            spawn=jobs.submit if jobs is not None else refuse_background_job,
            share=self.share,
            plugin_status=self.get_plugin_status,
        )

    async def _backend_instance(self, name: str) -> BaseBackendProvider:
        record = await self.ensure_backend(name)
        if record.lifecycle.state is not PluginState.ACTIVE or record.instance is None:
            why = f": {record.lifecycle.reason}" if record.lifecycle.reason else ""
            raise PluginError(f"backend {name!r} is {record.lifecycle.state}{why}")
        return cast("BaseBackendProvider", record.instance)


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
