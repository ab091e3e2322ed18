"""Tests for the hook registry and the circuit breaker."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.errors import HookFailed
from chatcore.hooks import (
    DURATION_WINDOW,
    CircuitBreaker,
    CircuitState,
    HookFailure,
    HookMetrics,
    HookPriority,
    HookRegistration,
    HookRegistry,
    HookStats,
    HookType,
    _default_clock,
)
from chatcore.messages import ChatContext, Message
from chatcore.result import PluginResult

CTX = ChatContext(conversation_id="conv-1")
BM = HookType.BEFORE_MESSAGE


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recorder(tag: str, log: list[str]) -> Any:
    async def hook(value: Any, context: ChatContext) -> PluginResult[Any] | None:
        log.append(tag)
        return None

    return hook


def raiser(exc: Exception, log: list[str] | None = None) -> Any:
    async def hook(value: Any, context: ChatContext) -> PluginResult[Any] | None:
        if log is not None:
            log.append("raised")
        raise exc

    return hook


# --- circuit breaker ------------------------------------------------------------------------


async def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.consecutive_failures == 3
    assert not breaker.allow()


async def test_breaker_success_resets_failure_count() -> None:
    breaker = CircuitBreaker(2, 10.0, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.consecutive_failures == 1
    assert breaker.state is CircuitState.CLOSED


async def test_open_breaker_refuses_until_reset_timeout_then_admits_one_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.record_failure()
    clock.now += 9.999
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    clock.now += 0.001
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()
    clock.now += 1000
    assert not breaker.allow(), "a trial in flight blocks every other call"


async def test_trial_success_closes_the_circuit() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 5.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.allow()
    assert breaker.allow()


async def test_breaker_snapshot_restores_in_another_breaker_with_elapsed_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.record_failure()
    clock.now += 4
    snapshot = breaker.snapshot()
    assert snapshot == {"state": "open", "failures": 1, "open_for_s": 4}

    later = CircuitBreaker(1, 10.0, clock=FakeClock())
    later.restore(snapshot, elapsed_s=5)  # 9 s open in all: still refusing
    assert later.state is CircuitState.OPEN
    assert not later.allow()
    after_reset = CircuitBreaker(1, 10.0, clock=FakeClock())
    after_reset.restore(snapshot, elapsed_s=6)  # 10 s: one trial
    assert after_reset.state is CircuitState.HALF_OPEN
    assert after_reset.allow()
    assert not after_reset.allow()


async def test_stats_snapshot_round_trips() -> None:
    stats = HookStats()
    stats.record(2.0)
    stats.record(4.0, "ValueError: x", timed_out=True)
    restored = HookStats()
    restored.restore(stats.snapshot())
    assert restored.snapshot() == stats.snapshot()
    assert (restored.calls, restored.failures, restored.timeouts) == (2, 1, 1)
    assert restored.percentile(50) == 2.0


async def test_trial_failure_reopens_and_restarts_the_timer() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.record_failure()
    clock.now += 25  # well past the first timeout
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.consecutive_failures == 2
    clock.now += 9.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()


async def test_reset_closes_an_open_circuit() -> None:
    breaker = CircuitBreaker(1, 10.0, clock=FakeClock())
    breaker.record_failure()
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.allow()


async def test_release_returns_an_unfinished_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.release()
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


async def test_breaker_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="failure_threshold must be at least 1, got 0"):
        CircuitBreaker(0)
    with pytest.raises(ValueError, match="reset_timeout_s must not be negative, got -1"):
        CircuitBreaker(1, -1)


async def test_default_clock_follows_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        breaker = CircuitBreaker(1, 30.0)
        breaker.record_failure()
        await trio.sleep(29)
        assert not breaker.allow()
        await trio.sleep(1)
        assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.allow()


async def test_default_clock_outside_a_trio_run_is_monotonic() -> None:
    def outside() -> tuple[float, float, float]:
        before = time.monotonic()
        value = _default_clock()
        return before, value, time.monotonic()

    before, value, after = await trio.to_thread.run_sync(outside)
    assert before <= value <= after


# Weighted towards failures and admissions so that runs reach the open and half-open
# states often; time steps straddle the reset timeouts below.
_ACTIONS = ["failure"] * 3 + ["allow"] * 3 + ["success", "reset", "release"]
EVENT = st.sampled_from([*_ACTIONS, 1.0, 4.0, 5.0, 11.0])


@settings(max_examples=300, deadline=None)
@given(
    threshold=st.integers(min_value=1, max_value=3),
    reset_timeout=st.sampled_from([0.0, 5.0, 10.0]),
    events=st.lists(EVENT, max_size=60),
)
async def test_breaker_invariants_hold_for_any_event_sequence(
    threshold: int, reset_timeout: float, events: list[str | float]
) -> None:
    """State follows the failure count; a non-closed breaker admits one trial at a time."""
    clock = FakeClock()
    breaker = CircuitBreaker(threshold, reset_timeout, clock=clock)
    failures = 0  # recorded failures since the last success or reset
    opened_at: float | None = None  # when the circuit last (re)opened
    trial = False  # a trial was admitted and not yet recorded
    admitted_since_record = 0
    for event in events:
        was_closed = failures < threshold
        if isinstance(event, float):
            clock.now += event
        elif event == "success" or event == "reset":
            getattr(breaker, "record_success" if event == "success" else "reset")()
            failures, opened_at, trial, admitted_since_record = 0, None, False, 0
        elif event == "failure":
            breaker.record_failure()
            failures += 1
            if trial or (was_closed and failures >= threshold):
                opened_at = clock.now
            trial, admitted_since_record = False, 0
        elif event == "release":
            breaker.release()
            trial, admitted_since_record = False, 0
        else:
            admitted = breaker.allow()
            if was_closed:
                assert admitted
            else:
                assert opened_at is not None
                due = not trial and clock.now - opened_at >= reset_timeout
                assert admitted == due
                admitted_since_record += admitted
                assert admitted_since_record <= 1
                trial = trial or admitted

        assert breaker.consecutive_failures == failures
        closed = failures < threshold
        assert (breaker.state is CircuitState.CLOSED) == closed
        if not closed:
            assert opened_at is not None
            still_open = not trial and clock.now - opened_at < reset_timeout
            assert (breaker.state is CircuitState.OPEN) == still_open


# --- registry -----------------------------------------------------------------------------


async def test_hooks_run_in_priority_order_with_ties_in_registration_order() -> None:
    registry = HookRegistry()
    log: list[str] = []
    for tag, priority in [("a", 50), ("b", 0), ("c", 50), ("d", 100), ("e", HookPriority.HIGH)]:
        registry.register(HookRegistration(tag, BM, recorder(tag, log), priority=priority))
    registry.register(HookRegistration("other", HookType.AFTER_MESSAGE, recorder("x", log)))
    await registry.run(BM, "v", CTX)
    assert log == ["b", "e", "a", "c", "d"]
    assert [r.name for r in registry.registrations(BM)] == ["b", "e", "a", "c", "d"]
    assert [r.name for r in registry.registrations()] == ["b", "e", "a", "c", "other", "d"]


async def test_value_threads_through_hooks_and_observers_leave_it_alone() -> None:
    registry = HookRegistry()
    log: list[str] = []

    def suffix(s: str) -> Any:
        async def hook(value: str, context: ChatContext) -> PluginResult[str]:
            return PluginResult.ok(value + s)

        return hook

    async def ok_none(value: str, context: ChatContext) -> PluginResult[None]:
        return PluginResult.ok(None)

    registry.register(HookRegistration("one", BM, suffix("1"), priority=10))
    registry.register(HookRegistration("watch", BM, recorder("watch", log), priority=20))
    registry.register(HookRegistration("empty", BM, ok_none, priority=30))
    registry.register(HookRegistration("two", BM, suffix("2"), priority=40))
    outcome = await registry.run(BM, "x", CTX)
    assert outcome.value == "x12"
    assert outcome.reply is None
    assert outcome.short_circuited_by is None
    assert outcome.failures == ()
    assert log == ["watch"]


async def test_short_circuit_stops_later_hooks() -> None:
    registry = HookRegistry()
    log: list[str] = []

    async def block(value: str, context: ChatContext) -> PluginResult[str]:
        return PluginResult.short_circuit("I can't help with that.", data="[blocked]")

    registry.register(HookRegistration("first", BM, recorder("first", log), priority=0))
    registry.register(HookRegistration("filter", BM, block, priority=10))
    registry.register(HookRegistration("last", BM, recorder("last", log), priority=20))
    outcome = await registry.run(BM, "bad words", CTX)
    assert log == ["first"]
    assert outcome.short_circuited_by == "filter"
    assert outcome.reply is not None
    assert outcome.reply.content == "I can't help with that."
    assert outcome.value == "[blocked]"
    stats = registry.registrations(BM)[1].stats
    assert (stats.short_circuits, stats.calls, stats.failures) == (1, 1, 0)


async def test_exception_is_isolated_counted_and_reported() -> None:
    registry = HookRegistry()
    log: list[str] = []
    bad = HookRegistration("bad", BM, raiser(ValueError("boom")), priority=0)
    registry.register(bad)
    registry.register(HookRegistration("good", BM, recorder("good", log), priority=10))
    outcome = await registry.run(BM, "v", CTX)
    assert log == ["good"]
    assert outcome.value == "v"
    assert outcome.failures == (HookFailure("bad", BM, "ValueError: boom", timed_out=False),)
    assert (bad.stats.calls, bad.stats.failures, bad.stats.timeouts) == (1, 1, 0)
    assert bad.stats.last_error == "ValueError: boom"
    assert bad.breaker.consecutive_failures == 1
    assert len(bad.stats.durations) == 1


async def test_failed_plugin_result_is_counted_as_a_failure() -> None:
    registry = HookRegistry()

    async def refuse(value: str, context: ChatContext) -> PluginResult[str]:
        return PluginResult.fail("quota exhausted")

    reg = HookRegistration("quota", BM, refuse)
    registry.register(reg)
    outcome = await registry.run(BM, "v", CTX)
    assert outcome.value == "v"
    assert [f.error for f in outcome.failures] == ["quota exhausted"]
    assert (reg.stats.calls, reg.stats.failures) == (1, 1)
    assert reg.stats.last_error == "quota exhausted"


async def test_a_hook_returning_something_else_is_a_failure() -> None:
    registry = HookRegistry()

    async def sloppy(value: str, context: ChatContext) -> Any:
        return 42

    reg = HookRegistration("sloppy", BM, sloppy)
    registry.register(reg)
    outcome = await registry.run(BM, "v", CTX)
    assert outcome.value == "v"
    assert (
        reg.stats.last_error == "TypeError: hook returned int, expected str, None or PluginResult"
    )


async def test_a_hook_may_return_the_new_value_itself() -> None:
    registry = HookRegistry()

    async def shout(value: str, context: ChatContext) -> str:
        return value.upper()

    async def unchanged(value: str, context: ChatContext) -> None:
        return None

    async def wrapped(value: str, context: ChatContext) -> PluginResult[str]:
        return PluginResult.ok(value + "!")

    for name, callback in (("shout", shout), ("unchanged", unchanged), ("wrapped", wrapped)):
        registry.register(HookRegistration(name, BM, callback))
    outcome = await registry.run(BM, "v", CTX)
    assert outcome.value == "V!"
    assert outcome.failures == ()
    assert [m.calls for m in registry.metrics()] == [1, 1, 1]


async def test_timeout_cuts_the_hook_off_and_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = HookRegistry()
    log: list[str] = []

    async def slow(value: str, context: ChatContext) -> PluginResult[str]:
        await trio.sleep(60)
        return PluginResult.ok("too late")

    reg = HookRegistration("slow", BM, slow, priority=0, timeout_s=1)
    registry.register(reg)
    registry.register(HookRegistration("next", BM, recorder("next", log), priority=1))
    with trio.fail_after(120):
        start = trio.current_time()
        outcome = await registry.run(BM, "v", CTX)
        assert trio.current_time() - start == pytest.approx(1.0)
    assert outcome.value == "v"
    assert log == ["next"]
    assert outcome.failures == (HookFailure("slow", BM, "TimeoutError: exceeded 1 s", True),)
    assert (reg.stats.calls, reg.stats.failures, reg.stats.timeouts) == (1, 1, 1)
    assert reg.stats.last_error == "TimeoutError: exceeded 1 s"


async def test_no_timeout_when_timeout_is_none(autojump_clock: trio.testing.MockClock) -> None:
    registry = HookRegistry()

    async def slow(value: str, context: ChatContext) -> PluginResult[str]:
        await trio.sleep(600)
        return PluginResult.ok("done")

    registry.register(HookRegistration("slow", BM, slow, timeout_s=None))
    with trio.fail_after(1000):
        outcome = await registry.run(BM, "v", CTX)
    assert outcome.value == "done"


async def test_registration_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match=r"hook 'x': timeout_s must be positive or None, got 0"):
        HookRegistration("x", BM, recorder("x", []), timeout_s=0)


class Flaky:
    """A hook whose behaviour the test switches; ``gate`` holds calls until set."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = True
        self.gate: trio.Event | None = None

    async def __call__(self, value: str, context: ChatContext) -> PluginResult[str] | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("down")
        return None


async def test_open_circuit_skips_the_hook_then_admits_one_trial(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = HookRegistry()
    hook = Flaky()
    reg = HookRegistration("flaky", BM, hook, breaker=CircuitBreaker(3, 10.0))
    registry.register(reg)
    with trio.fail_after(100):
        for _ in range(3):
            await registry.run(BM, "v", CTX)
        assert reg.breaker.state is CircuitState.OPEN
        for _ in range(2):
            outcome = await registry.run(BM, "v", CTX)
            assert outcome.failures == ()
        assert hook.calls == 3
        assert (reg.stats.calls, reg.stats.failures, reg.stats.skipped) == (3, 3, 2)
        assert registry.metrics()[0].circuit == "open"

        await trio.sleep(10)
        assert registry.metrics()[0].circuit == "half_open"
        hook.fail = False
        hook.gate = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(registry.run, BM, "v", CTX)
            await trio.testing.wait_all_tasks_blocked()
            assert hook.calls == 4, "exactly one trial call runs"
            assert reg.stats.skipped == 4
            hook.gate.set()
        assert reg.breaker.state is CircuitState.CLOSED
        hook.gate = None
        await registry.run(BM, "v", CTX)
        assert hook.calls == 5


async def test_failed_trial_reopens_the_circuit(autojump_clock: trio.testing.MockClock) -> None:
    registry = HookRegistry()
    hook = Flaky()
    reg = HookRegistration("flaky", BM, hook, breaker=CircuitBreaker(1, 10.0))
    registry.register(reg)
    with trio.fail_after(100):
        await registry.run(BM, "v", CTX)
        await trio.sleep(10)
        await registry.run(BM, "v", CTX)
        assert hook.calls == 2
        assert reg.breaker.state is CircuitState.OPEN
        await trio.sleep(9)
        await registry.run(BM, "v", CTX)
        assert hook.calls == 2


async def test_cancelled_trial_does_not_wedge_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = HookRegistry()
    hook = Flaky()
    reg = HookRegistration("flaky", BM, hook, timeout_s=None, breaker=CircuitBreaker(1, 10.0))
    registry.register(reg)
    with trio.fail_after(100):
        await registry.run(BM, "v", CTX)
        await trio.sleep(10)
        hook.gate = trio.Event()
        with trio.move_on_after(1):
            await registry.run(BM, "v", CTX)
        assert hook.calls == 2
        assert reg.stats.failures == 1, "a cancelled call is no verdict on the plugin"
        hook.gate, hook.fail = None, False
        await registry.run(BM, "v", CTX)
        assert hook.calls == 3
        assert reg.breaker.state is CircuitState.CLOSED


async def test_fail_fast_raises_hook_failed_after_reporting() -> None:
    registry = HookRegistry()
    log: list[str] = []
    seen: list[HookFailure] = []

    async def on_error(failure: HookFailure, context: ChatContext) -> None:
        seen.append(failure)

    registry.register(HookRegistration("watcher", HookType.ON_ERROR, on_error))
    registry.register(
        HookRegistration("strict", BM, raiser(ValueError("bad")), priority=0, fail_fast=True)
    )
    registry.register(HookRegistration("later", BM, recorder("later", log), priority=10))
    with pytest.raises(
        HookFailed, match=r"^hook 'strict' \(before_message\) failed: ValueError: bad$"
    ) as info:
        await registry.run(BM, "v", CTX)
    assert isinstance(info.value.__cause__, ValueError)
    assert log == []
    assert [f.name for f in seen] == ["strict"]


async def test_on_error_receives_failure_and_does_not_recurse() -> None:
    registry = HookRegistry()
    received: list[tuple[HookFailure, ChatContext]] = []

    async def on_error(failure: HookFailure, context: ChatContext) -> None:
        received.append((failure, context))

    err_log: list[str] = []
    broken = HookRegistration(
        "broken-handler", HookType.ON_ERROR, raiser(RuntimeError("handler"), err_log), priority=0
    )
    registry.register(broken)
    registry.register(HookRegistration("handler", HookType.ON_ERROR, on_error, priority=10))
    registry.register(HookRegistration("bad", BM, raiser(KeyError("k"))))
    outcome = await registry.run(BM, "v", CTX)

    expected = HookFailure("bad", BM, "KeyError: 'k'", timed_out=False)
    assert outcome.failures == (expected,)
    assert received == [(expected, CTX)]
    assert err_log == ["raised"], "the failing ON_ERROR hook ran once and was not re-reported"
    assert (broken.stats.calls, broken.stats.failures) == (1, 1)
    assert broken.stats.last_error == "RuntimeError: handler"


async def test_disabled_registrations_are_skipped() -> None:
    registry = HookRegistry()
    log: list[str] = []
    off = HookRegistration("off", BM, recorder("off", log), enabled=False)
    registry.register(off)
    registry.register(HookRegistration("pl", BM, recorder("pl-1", log)))
    registry.register(HookRegistration("pl", HookType.AFTER_MESSAGE, recorder("pl-2", log)))
    await registry.run(BM, "v", CTX)
    assert log == ["pl-1"]
    assert (off.stats.calls, off.stats.skipped) == (0, 0)

    registry.set_enabled("pl", False)
    await registry.run(BM, "v", CTX)
    await registry.run(HookType.AFTER_MESSAGE, "v", CTX)
    assert log == ["pl-1"]
    registry.set_enabled("pl", True)
    registry.set_enabled("off", True)
    await registry.run(HookType.AFTER_MESSAGE, "v", CTX)
    await registry.run(BM, "v", CTX)
    assert log == ["pl-1", "pl-2", "off", "pl-1"]


async def test_unregister_by_name_and_by_handle() -> None:
    registry = HookRegistry()
    log: list[str] = []
    registry.register(HookRegistration("mem", BM, recorder("mem-1", log)))
    registry.register(HookRegistration("mem", HookType.AFTER_MESSAGE, recorder("mem-2", log)))
    remove_rag = registry.register(HookRegistration("rag", BM, recorder("rag", log)))
    registry.register(HookRegistration("rag", BM, recorder("rag-2", log)))

    registry.unregister("mem")
    assert not registry.has(HookType.AFTER_MESSAGE)
    await registry.run(BM, "v", CTX)
    assert log == ["rag", "rag-2"]

    remove_rag()
    remove_rag()  # idempotent
    await registry.run(BM, "v", CTX)
    assert log == ["rag", "rag-2", "rag-2"]
    registry.unregister("rag")
    registry.unregister("nobody")
    assert not registry.has(BM)
    assert registry.registrations() == []


async def test_registering_the_same_registration_twice_is_refused() -> None:
    registry = HookRegistry()
    reg = HookRegistration("twice", BM, recorder("t", []))
    registry.register(reg)
    with pytest.raises(ValueError, match=r"hook 'twice' \(before_message\) is already registered"):
        registry.register(reg)


async def test_fast_path_without_registrations() -> None:
    registry = HookRegistry()
    registry.register(HookRegistration("x", BM, recorder("x", [])))
    assert registry.has(BM)
    assert not registry.has(HookType.ON_STREAM_CHUNK)
    payload = object()
    outcome = await registry.run(HookType.ON_STREAM_CHUNK, payload, CTX)
    assert outcome.value is payload
    assert (outcome.reply, outcome.short_circuited_by, outcome.failures) == (None, None, ())


async def test_percentiles_are_nearest_rank() -> None:
    stats = HookStats()
    assert stats.percentile(50) is None
    stats.durations.extend(float(n) for n in range(100, 0, -1))
    assert stats.percentile(50) == 50.0
    assert stats.percentile(95) == 95.0
    assert stats.percentile(0) == 1.0
    assert stats.percentile(100) == 100.0
    with pytest.raises(ValueError, match=r"percentile must be within 0\.\.100, got 101"):
        stats.percentile(101)
    stats.durations.extend([0.0] * DURATION_WINDOW)
    assert len(stats.durations) == DURATION_WINDOW == 1024


async def test_metrics_report_counts_percentiles_and_circuit() -> None:
    registry = HookRegistry()
    reg = HookRegistration("m", BM, raiser(ValueError("x")), priority=HookPriority.LOW)
    registry.register(reg)
    await registry.run(BM, "v", CTX)
    reg.stats.durations.clear()
    reg.stats.durations.extend([5.0, 1.0, 3.0, 2.0, 4.0])
    (metrics,) = registry.metrics()
    assert metrics == HookMetrics(
        name="m",
        hook_type="before_message",
        priority=75,
        enabled=True,
        calls=1,
        failures=1,
        timeouts=0,
        short_circuits=0,
        skipped=0,
        p50_ms=3.0,
        p95_ms=5.0,
        circuit="closed",
        last_error="ValueError: x",
    )
    assert metrics.as_dict() == {
        "name": "m",
        "hook_type": "before_message",
        "priority": 75,
        "enabled": True,
        "calls": 1,
        "failures": 1,
        "timeouts": 0,
        "short_circuits": 0,
        "skipped": 0,
        "p50_ms": 3.0,
        "p95_ms": 5.0,
        "circuit": "closed",
        "last_error": "ValueError: x",
    }
    assert type(metrics.as_dict()["priority"]) is int


async def test_shared_stats_aggregate_across_registrations() -> None:
    registry = HookRegistry()
    shared = HookStats()
    registry.register(HookRegistration("pl", BM, recorder("a", []), stats=shared))
    registry.register(
        HookRegistration("pl", HookType.AFTER_MESSAGE, raiser(ValueError("late")), stats=shared)
    )
    await registry.run(BM, "v", CTX)
    await registry.run(HookType.AFTER_MESSAGE, "v", CTX)
    await registry.run(BM, "v", CTX)
    assert (shared.calls, shared.failures, len(shared.durations)) == (3, 1, 3)
    assert [(m.hook_type, m.calls, m.failures) for m in registry.metrics()] == [
        ("before_message", 3, 1),
        ("after_message", 3, 1),
    ]


# --- guarded ------------------------------------------------------------------------------


async def test_guarded_runs_one_call_under_the_registration() -> None:
    registry = HookRegistry()
    reg = HookRegistration("mw", BM, recorder("unused", []))

    async def call() -> PluginResult[str]:
        return PluginResult.ok("through")

    result = await registry.guarded(reg, call)
    assert result == PluginResult.ok("through")
    assert reg.stats.calls == 1

    async def hit() -> PluginResult[str]:
        return PluginResult.short_circuit("cached")

    result = await registry.guarded(reg, hit)
    assert result is not None
    assert result.reply is not None
    assert (reg.stats.calls, reg.stats.short_circuits) == (2, 1)

    reg.enabled = False
    assert await registry.guarded(reg, call) is None
    assert reg.stats.calls == 2


async def test_guarded_turns_an_exception_into_a_failed_result_and_reports_it() -> None:
    registry = HookRegistry()
    seen: list[HookFailure] = []

    async def on_error(failure: HookFailure, context: ChatContext) -> None:
        seen.append(failure)

    registry.register(HookRegistration("watch", HookType.ON_ERROR, on_error))
    reg = HookRegistration("mw", BM, recorder("unused", []), breaker=CircuitBreaker(1, 60.0))

    async def call() -> PluginResult[str]:
        raise ValueError("middleware broke")

    result = await registry.guarded(reg, call, context=CTX)
    assert result is not None
    assert not result.success
    assert result.error == "ValueError: middleware broke"
    assert [f.error for f in seen] == ["ValueError: middleware broke"]

    assert await registry.guarded(reg, call) is None, "the circuit is open now"
    assert reg.stats.skipped == 1

    strict = HookRegistration("strict", BM, recorder("unused", []), fail_fast=True)
    with pytest.raises(HookFailed, match=r"hook 'strict' \(before_message\) failed: ValueError"):
        await registry.guarded(strict, call)


async def test_guarded_keeps_the_plugins_own_failed_result() -> None:
    registry = HookRegistry()
    reg = HookRegistration("mw", BM, recorder("unused", []))
    failed: PluginResult[str] = PluginResult.fail("no", reason="rate")

    async def call() -> PluginResult[str]:
        return failed

    assert await registry.guarded(reg, call) is failed
    assert reg.stats.last_error == "no"


async def test_short_circuit_reply_is_a_message() -> None:
    registry = HookRegistry()
    reply = Message.assistant("cached answer")

    async def cache(value: str, context: ChatContext) -> PluginResult[str]:
        return PluginResult.short_circuit(reply)

    registry.register(HookRegistration("cache", BM, cache))
    outcome = await registry.run(BM, "q", CTX)
    assert outcome.reply is reply
    assert outcome.value == "q"
