"""``PluginResult``: the value that crosses a plugin boundary.

A plugin returns ``PluginResult.ok(value)`` or ``PluginResult.fail(error)``;
the hook executor turns a plugin's exception into ``fail`` so one bad plugin
never takes a turn down. ``short_circuit`` answers the turn without the
backend (a content filter's refusal, a cache hit).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import describe_error

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .messages import Message

__all__ = ["PluginResult"]

T = TypeVar("T")
U = TypeVar("U")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PluginResult(Generic[T]):
    success: bool
    data: T | None = None
    error: str | None = None
    execution_time_ms: float = 0.0
    metadata: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    reply: Message | None = None
    """Set by ``short_circuit``: the turn is answered with this, the backend is skipped."""

    @classmethod
    def ok(cls, data: T, **metadata: Any) -> PluginResult[T]:
        return cls(True, data, metadata=MappingProxyType(metadata) if metadata else _EMPTY)

    @classmethod
    def fail(cls, error: str | BaseException, **metadata: Any) -> PluginResult[T]:
        text = describe_error(error) if isinstance(error, BaseException) else error
        return cls(False, None, text, metadata=MappingProxyType(metadata) if metadata else _EMPTY)

    @classmethod
    def short_circuit(
        cls, reply: Message | str, data: T | None = None, **metadata: Any
    ) -> PluginResult[T]:
        """Answer the turn with ``reply``; later stages and the backend are skipped."""
        from .messages import Message

        message = reply if isinstance(reply, Message) else Message.assistant(reply)
        return cls(
            True,
            data,
            metadata=MappingProxyType(metadata) if metadata else _EMPTY,
            reply=message,
        )

    @property
    def is_short_circuit(self) -> bool:
        return self.reply is not None

    def map(self, fn: Callable[[T], U]) -> PluginResult[U]:
        """Apply ``fn`` to the data of a success; a failure passes through."""
        if not self.success:
            return dataclasses.replace(self, data=None)  # type: ignore[return-value]
        return dataclasses.replace(self, data=fn(self.data))  # type: ignore[arg-type,return-value]

    def flat_map(self, fn: Callable[[T], PluginResult[U]]) -> PluginResult[U]:
        """Chain a step that may itself fail; timings add up."""
        if not self.success:
            return dataclasses.replace(self, data=None)  # type: ignore[return-value]
        nxt = fn(self.data)  # type: ignore[arg-type]
        return dataclasses.replace(
            nxt,
            execution_time_ms=self.execution_time_ms + nxt.execution_time_ms,
            metadata={**self.metadata, **nxt.metadata},
        )

    def unwrap(self) -> T:
        """Return the data of a success, or raise ``ValueError`` with the error."""
        if not self.success:
            raise ValueError(self.error or "plugin failed")
        return self.data  # type: ignore[return-value]
