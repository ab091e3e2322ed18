"""The manager's record of each plugin instance, and the status row it reports."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

from ..hooks import CircuitBreaker, HookRegistration, HookStats
from ._lifecycle import PluginLifecycle, PluginState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._base import BasePlugin, PluginConfig, PluginMetadata, PluginType

__all__ = ["LoadedPlugin", "PluginStatus"]


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
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["process"] = None if self.process is None else dict(self.process)
        return row


@dataclass(eq=False)
class LoadedPlugin:
    """The manager's record of one plugin (or backend) instance."""

    name: str
    spec: str
    plugin_config: PluginConfig
    lifecycle: PluginLifecycle
    expected_type: PluginType | None = None
    """What the configuration asks for: a backend for ``[backends.x]``; None for
    ``[[plugins]]`` entries, which may be any type but a backend."""
    plugin_type: PluginType | None = None
    instance: BasePlugin | None = None
    metadata: PluginMetadata | None = None
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    stats: HookStats = field(default_factory=HookStats)
    registrations: list[HookRegistration] = field(default_factory=list)
    registration: HookRegistration | None = None
    """The registration used for calls that aren't hooks (middleware, features)."""
    reload_error: str | None = None
    """Why the last reload failed while this version kept running."""
    config_key: str | None = None
    """Where the config file asks for it (``plugins[0]``); None when it was not asked for."""
    required: bool = False
    """Turns are refused while it failed to load (a ``[[plugins]]`` entry's ``required``)."""
    config_error: bool = False
    """It failed on a mistake in its config table; the reason names the file and the key."""

    @property
    def dependencies(self) -> tuple[str, ...]:
        return self.metadata.dependencies if self.metadata is not None else ()

    @property
    def permissions(self) -> tuple[str, ...]:
        return self.metadata.permissions if self.metadata is not None else ()

    @property
    def is_backend(self) -> bool:
        return self.expected_type is not None

    def status(self) -> PluginStatus:
        reason = self.lifecycle.reason if self.lifecycle.state is PluginState.ERROR else None
        meta = self.metadata
        kind = self.plugin_type or self.expected_type
        return PluginStatus(
            name=self.name,
            type=str(kind) if kind is not None else "unknown",
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
