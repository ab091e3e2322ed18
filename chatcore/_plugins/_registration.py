"""Which hook points a plugin instance is wired into, and under which registration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hooks import HookRegistration, HookType
from ._base import BaseMessageProcessor, PluginType, hook_type_of, marked_hooks

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..messages import ChatContext
    from ._records import LoadedPlugin

__all__ = ["register_hooks", "unimplemented"]

_PROCESSOR_HOOKS = (
    ("process_message", HookType.BEFORE_MESSAGE),
    ("process_reply", HookType.AFTER_MESSAGE),
    ("process_chunk", HookType.ON_STREAM_CHUNK),
)


def _overridden(cls: type, method: str) -> bool:
    return getattr(cls, method) is not getattr(BaseMessageProcessor, method)


def unimplemented(cls: type) -> list[str]:
    """What a processor class must still implement: it overrides no hook at all."""
    if not issubclass(cls, BaseMessageProcessor):
        return []
    if any(_overridden(cls, method) for method, _ in _PROCESSOR_HOOKS):
        return []
    if any(hook_type_of(getattr(cls, attr, None)) is not None for attr in dir(cls)):
        return []
    return ["process_message"]


def register_hooks(record: LoadedPlugin) -> list[HookRegistration]:
    """The registrations of a loaded instance, sharing its breaker and stats.

    A processor's ``process_*`` methods are wired in only when its class overrides
    them, so a processor that doesn't need one costs nothing there. Calls that
    aren't hook-shaped (middleware, features) get ``record.registration``, which is
    never registered but lends them the same breaker, stats and timeout.
    """
    instance = record.instance
    assert instance is not None
    pc = record.plugin_config

    def registration(
        hook_type: HookType, callback: Callable[[Any, ChatContext], Any], *, timed: bool = True
    ) -> HookRegistration:
        return HookRegistration(
            name=record.name,
            hook_type=hook_type,
            callback=callback,
            priority=pc.priority,
            timeout_s=pc.timeout_seconds if timed else None,
            enabled=pc.enabled,
            fail_fast=pc.fail_fast,
            breaker=record.breaker,
            stats=record.stats,
        )

    found: list[HookRegistration] = []
    if isinstance(instance, BaseMessageProcessor):
        cls = type(instance)
        for method, hook_type in _PROCESSOR_HOOKS:
            if _overridden(cls, method):
                found.append(registration(hook_type, getattr(instance, method)))
    for hook_type, callback in marked_hooks(instance):
        found.append(registration(hook_type, callback))
    # A middleware's call includes everything downstream of it, so its timeout
    # would cut the whole turn: middleware is isolated from errors, not timed.
    record.registration = registration(
        HookType.BEFORE_MODEL_LOAD,
        _never_called,
        timed=record.plugin_type is not PluginType.MIDDLEWARE,
    )
    return found


async def _never_called(payload: Any, context: ChatContext) -> None:
    raise AssertionError("a stage's registration is only used through HookRegistry.guarded")
