"""The one path every plugin and backend takes: import, adopt, activate, unload.

A record is imported (``load``: resolved, or for a reload re-run from disk),
checked against what the configuration asked for and constructed (``adopt``),
activated (``activate``: the host is lent, ``initialize`` runs, the hooks are
registered, ``ON_PLUGIN_LOAD`` fires) and, at the end, unloaded or, replaced by a
reload, retired. The manager decides what to load when; this module how.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import ConfigError, PluginLoadError
from ..hooks import CircuitBreaker, HookType
from ..messages import ChatContext
from ._base import KNOWN_PERMISSIONS, PluginConfig, PluginType, plugin_type_problem
from ._discovery import reimport_plugin_class, resolve_plugin_class
from ._lifecycle import PluginLifecycle, PluginState
from ._records import LoadedPlugin
from ._registration import register_hooks, unimplemented

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import BackendConfig
    from ..hooks import HookRegistry
    from ._base import BasePlugin
    from ._manager import PluginManager

__all__ = ["PluginLoader"]

logger = logging.getLogger(__name__)

_NO_CONTEXT = ChatContext(conversation_id="")
RUNNING = (PluginState.ACTIVE, PluginState.PAUSED)


class PluginLoader:
    """Takes records through their lifecycle for a manager (which owns the tables)."""

    def __init__(
        self, manager: PluginManager, hooks: HookRegistry, on_change: Callable[[], None]
    ) -> None:
        self._manager = manager
        self.hooks = hooks
        self._on_change = on_change
        self.started: list[LoadedPlugin] = []
        """Records in the order they became active; shutdown goes in reverse."""

    def new_record(
        self,
        name: str,
        spec: str,
        plugin_config: PluginConfig,
        *,
        expected_type: PluginType | None = None,
    ) -> LoadedPlugin:
        return LoadedPlugin(
            name=name,
            spec=spec,
            plugin_config=plugin_config,
            lifecycle=PluginLifecycle(name, on_change=self._on_change),
            expected_type=expected_type,
            breaker=CircuitBreaker(
                plugin_config.circuit_failure_threshold, plugin_config.circuit_reset_seconds
            ),
        )

    def backend_record(self, name: str, backend: BackendConfig) -> LoadedPlugin:
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
        return self.new_record(
            name, backend.plugin, plugin_config, expected_type=PluginType.BACKEND_PROVIDER
        )

    def load(self, record: LoadedPlugin, *, from_disk: bool = False) -> bool:
        """Import and adopt a record's class; whether it ended LOADED (else ERROR).

        ``from_disk`` re-runs the source as it is now (for a reload) even when the
        module is imported already.
        """
        record.lifecycle.transition(PluginState.LOADING)
        find = reimport_plugin_class if from_disk else resolve_plugin_class
        try:
            cls = find(
                record.spec,
                search_dirs=self._manager.search_dirs,
                trusted=record.plugin_config.trusted,
            )
        except PluginLoadError as exc:
            record.lifecycle.transition(PluginState.ERROR, str(exc))
            return False
        return self.adopt(record, cls)

    def adopt(self, record: LoadedPlugin, cls: type[BasePlugin]) -> bool:
        """Check a LOADING record's class and make its instance; whether it ended LOADED."""
        record.metadata = cls.metadata
        problem = plugin_type_problem(cls) or self.misplaced(record, cls)
        if problem is None:
            record.plugin_type = cls.plugin_type
            unknown = [p for p in cls.metadata.permissions if p not in KNOWN_PERMISSIONS]
            missing = sorted(getattr(cls, "__abstractmethods__", ())) or unimplemented(cls)
            if unknown:
                problem = (
                    f"plugin class {cls.__name__} declares unknown permission {unknown[0]!r} "
                    f"(known: {', '.join(sorted(KNOWN_PERMISSIONS))})"
                )
            elif missing:
                problem = f"plugin class {cls.__name__} does not implement {', '.join(missing)}"
        if problem is not None:
            record.lifecycle.transition(PluginState.ERROR, problem)
            return False
        if not self._backend_settings_ok(record, cls):
            return False
        try:
            if record.plugin_config.isolation == "process":
                from ..isolation import process_plugin  # a stand-in that calls a child process

                instance = process_plugin(cls, record.spec, self._manager)
            else:
                instance = cls()
        except Exception as exc:
            record.lifecycle.transition(PluginState.ERROR, f"constructor failed: {exc!r}")
            return False
        record.instance = instance
        record.lifecycle.transition(PluginState.LOADED)
        return True

    def _backend_settings_ok(self, record: LoadedPlugin, cls: type[BasePlugin]) -> bool:
        """Check ``[backends.NAME]`` against the class's settings model; ERROR if it's wrong.

        Here, on the one path a backend takes at first load and at reload. A mistake
        is a config error naming the file and the key, like one in a plugin's table;
        the backend is put in ERROR rather than raising, as any backend that cannot
        load, because it may be loaded lazily in the middle of a turn.
        """
        model = getattr(cls, "settings_model", None)
        config = self._manager.config
        if model is None or not record.is_backend or record.name not in config.backends:
            return True
        from .._config_load import validate_backend_settings

        try:
            validate_backend_settings(model, config, record.name)
        except ConfigError as exc:
            record.lifecycle.transition(PluginState.ERROR, str(exc))
            record.config_error = True
            return False
        return True

    def misplaced(self, record: LoadedPlugin, cls: type[BasePlugin]) -> str | None:
        """A backend configured as a plugin, or a plugin configured as a backend."""
        is_backend = cls.plugin_type is PluginType.BACKEND_PROVIDER
        if record.is_backend and not is_backend:
            return (
                f"backends.{record.name}.plugin: {record.spec!r} is a {cls.plugin_type} "
                "plugin, not a backend"
            )
        if not record.is_backend and is_backend:
            return (
                f"plugin {record.spec!r} is a backend: configure it as "
                f'[backends.{record.name}] with plugin = "{record.spec}"'
            )
        return None

    async def initialize(self, record: LoadedPlugin) -> bool:
        """Lend the loaded instance its host and initialize it; False (and ERROR) if that failed."""
        assert record.instance is not None
        record.instance.host = self._manager.host_for(record)
        record.lifecycle.transition(PluginState.INITIALIZING)
        try:
            await record.instance.initialize(record.plugin_config)
        except Exception as exc:
            record.lifecycle.transition(PluginState.ERROR, f"initialize failed: {exc!r}")
            return False
        return True

    async def activate(self, record: LoadedPlugin) -> None:
        """The one way a loaded plugin or backend becomes active."""
        if not await self.initialize(record):
            return
        self.register_hooks(record)
        record.lifecycle.transition(PluginState.ACTIVE)
        self.started.append(record)
        await self.hooks.run(HookType.ON_PLUGIN_LOAD, record.status(), _NO_CONTEXT)

    def register_hooks(self, record: LoadedPlugin) -> None:
        registrations = register_hooks(record)
        for registration in registrations:
            self.hooks.register(registration)
        record.registrations.extend(registrations)

    async def unload(self, record: LoadedPlugin) -> None:
        state = record.lifecycle.state
        if state in (PluginState.UNLOADED, PluginState.LOADING, PluginState.INITIALIZING):
            return
        if state is PluginState.ERROR and record.instance is None:
            return
        self.hooks.unregister(record.name)
        record.registrations.clear()
        if record in self.started:
            self.started.remove(record)
        record.lifecycle.transition(PluginState.UNLOADING)
        try:
            if record.instance is not None and state is not PluginState.LOADED:
                await record.instance.shutdown()
        except Exception as exc:
            record.lifecycle.transition(PluginState.ERROR, f"shutdown failed: {exc!r}")
            return
        record.lifecycle.transition(PluginState.UNLOADED)
        await self.hooks.run(HookType.ON_PLUGIN_UNLOAD, record.status(), _NO_CONTEXT)

    async def retire(self, record: LoadedPlugin, was: PluginState) -> None:
        """Shut down a version that a reload replaced (its hooks are already gone)."""
        if record in self.started:
            self.started.remove(record)
        if was not in (*RUNNING, PluginState.LOADED):
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
