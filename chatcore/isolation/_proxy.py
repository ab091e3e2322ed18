"""The stand-in the manager gets in place of a process-isolated plugin instance.

It subclasses the plugin's own base class and overrides exactly the methods the
plugin overrides (``process_reply``, ``@hook`` methods ...), so the manager wires
it into the same hook points, and hooks, circuit breaker, stats and timeout apply
as to any plugin; each call is forwarded to the plugin's child process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._plugins._base import (
    BaseFeatureExtension,
    BaseMessageProcessor,
    BaseMiddleware,
    BasePlugin,
    PluginType,
    hook_type_of,
    mark_hook,
)
from ..actors import RestartType
from ..errors import PluginError, PluginLoadError, PluginProcessError
from ..messages import Message
from ..result import PluginResult
from . import _process
from ._process import PluginProcess, PluginSupervisor

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .._plugins import CallNext, PluginConfig, PluginManager
    from ..messages import ChatContext
    from ._process import ProcessStatus

__all__ = ["process_plugin"]


class _ProcessProxy:
    """Mixed into a proxy class ahead of the plugin's base class (see ``process_plugin``)."""

    _plugin_class: type[BasePlugin]
    _spec: str
    _manager: PluginManager
    _supervisor: PluginSupervisor | None = None

    async def initialize(self, config: PluginConfig) -> None:
        await BasePlugin.initialize(self, config)  # type: ignore[arg-type]
        engine_supervisor = self._manager.supervisor
        if engine_supervisor is None:
            raise PluginLoadError(
                f'plugin {config.name!r}: isolation = "process" needs a running engine '
                "(open_engine), which supervises the plugin's process"
            )
        process = PluginProcess(
            config.name,
            self._spec,
            config,
            network_allowed="network" in self._plugin_class.metadata.permissions,
            search_dirs=self._manager.search_dirs,
        )
        # A reloaded plugin gets a fresh supervisor; the old one stays listed as stopped.
        taken = {actor.name for actor in engine_supervisor.status()}
        base, n = process.name, 2
        while process.name in taken:
            process.name = f"{base}#{n}"
            n += 1
        supervisor = PluginSupervisor(
            process,
            max_restarts=_process.PROCESS_MAX_RESTARTS,
            within_s=_process.PROCESS_RESTART_WINDOW_S,
        )
        # Temporary: a plugin whose supervisor gave up stays down; the engine goes on.
        await engine_supervisor.start(supervisor, restart=RestartType.TEMPORARY)
        self._supervisor = supervisor

    async def shutdown(self) -> None:
        if self._supervisor is not None:
            await self._supervisor.stop()

    async def health(self) -> Mapping[str, Any]:
        status = self.isolation_status()
        return {"ok": status is not None and status.pid is not None, "process": status}

    def isolation_status(self) -> ProcessStatus | None:
        """The child's pid, restarts, peak memory and network; None before it started."""
        return None if self._supervisor is None else self._supervisor.process.status()

    def _process(self) -> PluginProcess:
        if self._supervisor is None:
            raise PluginProcessError("the plugin process has not started")
        return self._supervisor.process

    async def _hook_call(self, method: str, *args: Any) -> Any:
        """A hook-shaped call: the plugin's own failure comes back as ``PluginResult.fail``."""
        try:
            return await self._process().call(method, args)
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
    reply = await self._process().call("handle", (context,), call_next=call_next)
    if not isinstance(reply, Message):
        raise TypeError(f"middleware returned {type(reply).__name__}, expected a Message")
    return reply


_FORWARDED: dict[type[BasePlugin], tuple[str, ...]] = {
    BaseMessageProcessor: ("process_message", "process_reply", "process_chunk"),
    BaseFeatureExtension: ("enrich",),
}


def process_plugin(cls: type[BasePlugin], spec: str, manager: PluginManager) -> BasePlugin:
    """A stand-in for an instance of ``cls`` whose calls run in a child process.

    Raises:
        PluginLoadError: ``cls`` is a backend (backends run inline).
    """
    if cls.plugin_type is PluginType.BACKEND_PROVIDER:
        raise PluginLoadError(
            f'plugin {spec!r}: isolation = "process" is for processors, features and '
            "middleware; a backend runs in the engine"
        )
    bases = (BaseMessageProcessor, BaseFeatureExtension, BaseMiddleware)
    base = next(b for b in bases if issubclass(cls, b))
    namespace: dict[str, Any] = {
        "metadata": cls.metadata,
        "settings_model": getattr(cls, "settings_model", None),
        "_plugin_class": cls,
        "_spec": spec,
        "_manager": manager,
        "__module__": __name__,
        "__doc__": f"{cls.__name__}, running in a child process.",
    }
    for method in _FORWARDED.get(base, ()):
        # Only what the plugin overrides: the manager wires in just those hook points.
        if getattr(cls, method) is not getattr(base, method):
            namespace[method] = _forward(method)
    if base is BaseMiddleware:
        namespace["handle"] = _handle
    for attr in dir(cls):
        hook_type = hook_type_of(getattr(cls, attr, None))
        if hook_type is not None:
            forward = _forward(f"hook:{attr}")
            mark_hook(forward, hook_type)
            namespace[attr] = forward
    proxy_class = type(f"Process{cls.__name__}", (_ProcessProxy, base), namespace)
    instance: BasePlugin = proxy_class()
    return instance
