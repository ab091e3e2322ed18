"""The plugin lifecycle: states and the transitions between them.

``UNLOADED → LOADING → LOADED → INITIALIZING → ACTIVE ⇄ PAUSED → UNLOADING → UNLOADED``,
and ``ERROR → INITIALIZING | UNLOADING``; any other transition raises
``InvalidTransition``, so a bug in the manager shows up as an error, not as a
plugin in a state nobody can explain.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import InvalidTransition

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["ALLOWED_TRANSITIONS", "PluginLifecycle", "PluginState"]


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
        _S.ERROR: frozenset({_S.INITIALIZING, _S.PAUSED, _S.UNLOADING}),
    }
)


class PluginLifecycle:
    """The lifecycle state machine of one plugin instance."""

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

    @property
    def live(self) -> bool:
        """Loaded and not failed: the name is taken by this instance."""
        return self.state not in (PluginState.UNLOADED, PluginState.ERROR)
