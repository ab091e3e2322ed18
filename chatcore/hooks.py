"""Hooks: how every pipeline stage runs plugin code.

A plugin registers callbacks for hook points (``HookType``). ``HookRegistry.run``
calls them in priority order under a timeout and a per-registration circuit
breaker, threads the value from one to the next, stops early on a short-circuit
reply, and isolates failures: a failing hook is counted, reported to the
``ON_ERROR`` hooks and skipped over, unless it was registered ``fail_fast``.

This is on the hot path of every turn, so the loop avoids per-call allocations
beyond the coroutine and the cancel scope it cannot do without.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from .errors import HookFailed, describe_error
from .messages import ChatContext
from .result import PluginResult

if TYPE_CHECKING:
    from .messages import Message

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_HOOK_TIMEOUT_S",
    "DEFAULT_RESET_TIMEOUT_S",
    "DURATION_WINDOW",
    "CircuitBreaker",
    "CircuitState",
    "HookCallback",
    "HookFailure",
    "HookMetrics",
    "HookOutcome",
    "HookPriority",
    "HookRegistration",
    "HookRegistry",
    "HookStats",
    "HookType",
]

T = TypeVar("T")

DURATION_WINDOW = 1024
"""How many recent call durations each ``HookStats`` keeps for percentiles."""
DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_RESET_TIMEOUT_S = 30.0
DEFAULT_HOOK_TIMEOUT_S = 5.0


class HookType(StrEnum):
    ON_REQUEST_START = "on_request_start"
    BEFORE_MESSAGE = "before_message"
    BEFORE_MODEL_LOAD = "before_model_load"
    ON_STREAM_CHUNK = "on_stream_chunk"
    AFTER_MESSAGE = "after_message"
    ON_REQUEST_COMPLETE = "on_request_complete"
    ON_ERROR = "on_error"
    ON_PLUGIN_LOAD = "on_plugin_load"
    ON_PLUGIN_UNLOAD = "on_plugin_unload"
    ON_CONNECTIVITY_CHANGE = "on_connectivity_change"
    BEFORE_SHARE = "before_share"
    """A ``SharedRecord`` (text about to leave the local store) may be changed."""


class HookPriority(IntEnum):
    HIGHEST = 0
    HIGH = 25
    NORMAL = 50
    LOW = 75
    LOWEST = 100


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN


def _default_clock() -> float:
    # Decided per call so one breaker works both inside Trio (where tests swap in
    # MockClock) and outside any run (CLI status, plain scripts).
    try:
        return trio.current_time()
    except RuntimeError:
        return time.monotonic()


class CircuitBreaker:
    """``closed → open`` after N consecutive failures; one trial call after a reset timeout.

    Args:
        failure_threshold: consecutive failures that open the circuit.
        reset_timeout_s: how long an open circuit refuses calls before one trial.
        clock: seconds as a float; defaults to Trio's clock inside a Trio run and
            ``time.monotonic`` outside one.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_opened_at",
        "_state",
        "failure_threshold",
        "reset_timeout_s",
    )

    def __init__(
        self,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout_s: float = DEFAULT_RESET_TIMEOUT_S,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if reset_timeout_s < 0:
            raise ValueError(f"reset_timeout_s must not be negative, got {reset_timeout_s}")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock if clock is not None else _default_clock
        # Internally HALF_OPEN always means "the one trial call is in flight";
        # an OPEN circuit whose timeout has elapsed only *reports* HALF_OPEN.
        self._state = _CLOSED
        self._failures = 0
        self._opened_at = 0.0

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value!r}, failures={self._failures}, "
            f"threshold={self.failure_threshold}, reset_timeout_s={self.reset_timeout_s})"
        )

    @property
    def state(self) -> CircuitState:
        if self._state is _OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            return _HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a call may go ahead now; admits exactly one trial after the reset timeout."""
        state = self._state
        if state is _CLOSED:
            return True
        if state is _OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._state = _HALF_OPEN
            return True
        return False

    def record_success(self) -> None:
        self._state = _CLOSED
        self._failures = 0

    def record_failure(self) -> None:
        self._failures += 1
        state = self._state
        if state is _HALF_OPEN or (state is _CLOSED and self._failures >= self.failure_threshold):
            self._state = _OPEN
            self._opened_at = self._clock()
        # A late failure of a call admitted before the circuit opened leaves the
        # timer alone: it says nothing new about the plugin's health since then.

    def release(self) -> None:
        """Give back an admitted trial that ended with no verdict on the plugin's health.

        A cancelled call, or a backend's answer that the request was wrong (a client
        error), says nothing about whether the plugin works. The circuit returns to
        OPEN with its old timer, so the next ``allow()`` may start a new trial at once
        instead of the breaker waiting forever for a verdict.
        """
        if self._state is _HALF_OPEN:
            self._state = _OPEN

    def reset(self) -> None:
        self._state = _CLOSED
        self._failures = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state, so a circuit can outlive one process (see ``restore``)."""
        state = _OPEN if self._state is _HALF_OPEN else self._state
        open_for = self._clock() - self._opened_at if state is _OPEN else 0.0
        return {"state": state.value, "failures": self._failures, "open_for_s": open_for}

    def restore(self, snapshot: Mapping[str, Any], *, elapsed_s: float = 0.0) -> None:
        """Take back a ``snapshot``; ``elapsed_s`` is the time that passed since it was taken."""
        self._state = CircuitState(snapshot.get("state", "closed"))
        self._failures = int(snapshot.get("failures", 0))
        open_for = float(snapshot.get("open_for_s", 0.0)) + max(0.0, elapsed_s)
        self._opened_at = self._clock() - open_for


@dataclass(slots=True, eq=False)
class HookStats:
    """Mutable counters of one plugin's hook calls; several registrations may share one."""

    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    short_circuits: int = 0
    skipped: int = 0
    """Calls refused because the circuit was open."""
    last_error: str | None = None
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=DURATION_WINDOW))
    """Milliseconds of the most recent ``DURATION_WINDOW`` calls."""

    def record(
        self, duration_ms: float, error: str | None = None, *, timed_out: bool = False
    ) -> None:
        """Count one finished call; ``error`` marks it failed."""
        self.calls += 1
        self.durations.append(duration_ms)
        if error is not None:
            self.failures += 1
            self.last_error = error
            if timed_out:
                self.timeouts += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "short_circuits": self.short_circuits,
            "skipped": self.skipped,
            "last_error": self.last_error,
            "durations": list(self.durations),
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        for name in ("calls", "failures", "timeouts", "short_circuits", "skipped"):
            setattr(self, name, int(snapshot.get(name, 0)))
        self.last_error = snapshot.get("last_error")
        self.durations.clear()
        self.durations.extend(float(d) for d in snapshot.get("durations", ()))

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (``q`` in 0..100) of the recent durations; None if none.

        Raises:
            ValueError: ``q`` is outside 0..100.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, got {q}")
        if not self.durations:
            return None
        ordered = sorted(self.durations)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]


HookCallback = Callable[[Any, ChatContext], Awaitable[Any]]
"""``async def hook(value, context)`` returning the new value, None ("seen, unchanged")
or a ``PluginResult``."""


@dataclass(slots=True, eq=False)
class HookRegistration:
    """One plugin callback at one hook point, with its own breaker and stats.

    ``priority`` is read when the registration is registered; change it by
    registering again.
    """

    name: str
    hook_type: HookType
    callback: HookCallback
    priority: int = HookPriority.NORMAL
    timeout_s: float | None = DEFAULT_HOOK_TIMEOUT_S
    """None means no timeout."""
    enabled: bool = True
    fail_fast: bool = False
    """A failure raises ``HookFailed`` (the turn fails) instead of being skipped over."""
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    stats: HookStats = field(default_factory=HookStats)

    def __post_init__(self) -> None:
        self.hook_type = HookType(self.hook_type)
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(
                f"hook {self.name!r}: timeout_s must be positive or None, got {self.timeout_s}"
            )


@dataclass(frozen=True, slots=True)
class HookMetrics:
    """A snapshot of one registration's counters, for status output and the TUI."""

    name: str
    hook_type: str
    priority: int
    enabled: bool
    calls: int
    failures: int
    timeouts: int
    short_circuits: int
    skipped: int
    p50_ms: float | None
    p95_ms: float | None
    circuit: str
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class HookFailure:
    """What the ``ON_ERROR`` hooks receive when a hook fails or times out."""

    name: str
    hook_type: HookType
    error: str
    timed_out: bool


@dataclass(frozen=True, slots=True)
class HookOutcome(Generic[T]):
    """The result of running one hook point."""

    value: T
    """The payload after every hook that changed it."""
    reply: Message | None = None
    """Set when a hook short-circuited the turn."""
    short_circuited_by: str | None = None
    failures: tuple[HookFailure, ...] = ()


async def _call_thunk(call: Callable[[], Awaitable[Any]], _unused: Any) -> Any:
    return await call()


class HookRegistry:
    """The registrations of every hook point, and the executor that runs them."""

    def __init__(self) -> None:
        self._all: list[HookRegistration] = []
        # Rebuilt on every change and never mutated, so a run that is iterating
        # one keeps a consistent view while a hook (un)registers concurrently.
        self._by_type: dict[HookType, tuple[HookRegistration, ...]] = {}

    def _rebuild(self) -> None:
        by_type: dict[HookType, list[HookRegistration]] = {}
        for reg in self._all:
            by_type.setdefault(reg.hook_type, []).append(reg)
        # sorted() is stable, so ties keep registration order.
        self._by_type = {
            hook_type: tuple(sorted(regs, key=_priority)) for hook_type, regs in by_type.items()
        }

    def register(self, registration: HookRegistration) -> Callable[[], None]:
        """Add ``registration``; return a function that removes exactly this one (idempotent).

        Raises:
            ValueError: this registration object is already registered.
        """
        if any(reg is registration for reg in self._all):
            raise ValueError(
                f"hook {registration.name!r} ({registration.hook_type}) is already registered"
            )
        self._all.append(registration)
        self._rebuild()

        def unregister() -> None:
            for index, reg in enumerate(self._all):
                if reg is registration:
                    del self._all[index]
                    self._rebuild()
                    return

        return unregister

    def unregister(self, name: str) -> None:
        """Remove every registration of plugin ``name`` (no-op if it has none)."""
        kept = [reg for reg in self._all if reg.name != name]
        if len(kept) != len(self._all):
            self._all = kept
            self._rebuild()

    def registrations(self, hook_type: HookType | None = None) -> list[HookRegistration]:
        """Registrations in run order: priority, then registration order."""
        if hook_type is None:
            return sorted(self._all, key=_priority)
        return list(self._by_type.get(hook_type, ()))

    def has(self, hook_type: HookType) -> bool:
        """Whether anything is registered for ``hook_type`` (enabled or not)."""
        return hook_type in self._by_type

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable every registration of plugin ``name`` (no-op if it has none)."""
        for reg in self._all:
            if reg.name == name:
                reg.enabled = enabled

    async def run(self, hook_type: HookType, value: T, context: ChatContext) -> HookOutcome[T]:
        """Run the hooks of ``hook_type`` on ``value`` in priority order.

        Returns:
            The final value, the short-circuit reply if any, and the failures
            that were skipped over.

        Raises:
            HookFailed: a hook registered with ``fail_fast`` failed.
        """
        regs = self._by_type.get(hook_type)
        if regs is None:
            return HookOutcome(value)
        failures: list[HookFailure] = []
        for reg in regs:
            if not reg.enabled:
                continue
            if not reg.breaker.allow():
                reg.stats.skipped += 1
                continue
            result = await self._guard(
                reg, reg.callback, value, context, context, failures, type(value)
            )
            if result is None or not result.success:
                continue
            if result.data is not None:
                value = result.data
            if result.reply is not None:
                return HookOutcome(value, result.reply, reg.name, tuple(failures))
        return HookOutcome(value, failures=tuple(failures))

    async def guarded(
        self,
        registration: HookRegistration,
        call: Callable[[], Awaitable[Any]],
        *,
        context: ChatContext | None = None,
        expected: type | None = None,
    ) -> PluginResult[Any] | None:
        """Make one call under ``registration``'s breaker, timeout, stats and error isolation.

        For stages that call plugins in shapes other than ``run`` (middleware,
        features). An exception or timeout comes back as ``PluginResult.fail``.

        Args:
            registration: whose breaker, timeout and stats apply.
            call: makes the plugin call.
            context: when given, a failure fires the ``ON_ERROR`` hooks with it.
            expected: the type a plain (not ``PluginResult``) return value must have.

        Returns:
            The call's result, a failed result, or None when the registration is
            disabled or its circuit is open (or the call itself returned None).

        Raises:
            HookFailed: the call failed and the registration is ``fail_fast``.
        """
        if not registration.enabled:
            return None
        if not registration.breaker.allow():
            registration.stats.skipped += 1
            return None
        result: PluginResult[Any] | None = await self._guard(
            registration, _call_thunk, call, None, context, None, expected
        )
        return result

    async def _guard(
        self,
        reg: HookRegistration,
        fn: Callable[[Any, Any], Awaitable[Any]],
        arg1: Any,
        arg2: Any,
        context: ChatContext | None,
        sink: list[HookFailure] | None,
        expected: type | None,
    ) -> Any:
        """Run ``fn(arg1, arg2)`` for an admitted call and settle its breaker and stats.

        The two-argument shape lets ``run`` call the callback directly instead of
        building a closure per hook. A plain return value of the ``expected`` type
        comes back as ``PluginResult.ok(value)``; one of another type is a failure.
        """
        error: str | None = None
        cause: BaseException | None = None
        timed_out = False
        result: Any = None
        timeout_s = reg.timeout_s
        start = time.perf_counter()
        try:
            if timeout_s is None:
                result = await fn(arg1, arg2)
            else:
                with trio.move_on_after(timeout_s) as scope:
                    result = await fn(arg1, arg2)
                if scope.cancelled_caught:
                    timed_out = True
                    error = f"TimeoutError: exceeded {timeout_s:g} s"
        except Exception as exc:
            cause = exc
            error = describe_error(exc)
        except BaseException:
            # Cancelled from outside (or KeyboardInterrupt): no verdict on the plugin.
            reg.stats.calls += 1
            reg.breaker.release()
            raise
        elapsed_ms = (time.perf_counter() - start) * 1000.0

        if error is None and result is not None:
            if isinstance(result, PluginResult):
                if not result.success:
                    error = result.error or "plugin failed"
            elif expected is None or isinstance(result, expected):
                result = PluginResult.ok(result)
            else:
                error = (
                    f"TypeError: hook returned {type(result).__name__}, expected "
                    f"{expected.__name__}, None or PluginResult"
                )
                result = None

        if error is None:
            reg.stats.record(elapsed_ms)
            reg.breaker.record_success()
            if result is not None and result.reply is not None:
                reg.stats.short_circuits += 1
            return result

        reg.stats.record(elapsed_ms, error, timed_out=timed_out)
        reg.breaker.record_failure()
        failure = HookFailure(reg.name, reg.hook_type, error, timed_out)
        if sink is not None:
            sink.append(failure)
        # An ON_ERROR hook's own failure is counted but not reported to ON_ERROR:
        # that way lies unbounded recursion.
        if context is not None and reg.hook_type is not HookType.ON_ERROR:
            await self.run(HookType.ON_ERROR, failure, context)
        if reg.fail_fast:
            raise HookFailed(f"hook {reg.name!r} ({reg.hook_type}) failed: {error}") from cause
        if result is None:
            result = PluginResult.fail(error)
        return result

    def metrics(self) -> list[HookMetrics]:
        """A snapshot per registration, in ``registrations()`` order."""
        out: list[HookMetrics] = []
        for reg in self.registrations():
            stats = reg.stats
            out.append(
                HookMetrics(
                    name=reg.name,
                    hook_type=str(reg.hook_type),
                    priority=int(reg.priority),
                    enabled=reg.enabled,
                    calls=stats.calls,
                    failures=stats.failures,
                    timeouts=stats.timeouts,
                    short_circuits=stats.short_circuits,
                    skipped=stats.skipped,
                    p50_ms=stats.percentile(50),
                    p95_ms=stats.percentile(95),
                    circuit=str(reg.breaker.state),
                    last_error=stats.last_error,
                )
            )
        return out


def _priority(reg: HookRegistration) -> int:
    return reg.priority
