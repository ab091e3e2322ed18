"""One test per supervision rule of chatcore.actors (OTP one_for_one on Trio)."""

from __future__ import annotations

import json
import random
import re

import pytest
import trio

from chatcore.actors import (
    Actor,
    ActorState,
    ActorStatus,
    RestartType,
    Supervisor,
    open_supervisor,
)
from chatcore.errors import EngineStopped

CRASH = "crash"
RETURN = "return"
FOREVER = "forever"


class Scripted:
    """An actor whose n-th run follows ``script[n]``; runs past the script serve forever."""

    def __init__(
        self,
        name: str,
        script: list[str] | None = None,
        *,
        work_s: float = 0.0,
        stops: list[str] | None = None,
        cleanup_s: float = 0.0,
    ) -> None:
        self.name = name
        self.script = script or []
        self.work_s = work_s
        self.stops = stops
        self.cleanup_s = cleanup_s
        self.runs = 0
        self.run_times: list[float] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        outcome = self.script[self.runs] if self.runs < len(self.script) else FOREVER
        self.runs += 1
        self.run_times.append(trio.current_time())
        task_status.started()
        if self.work_s:
            await trio.sleep(self.work_s)
        if outcome == CRASH:
            raise RuntimeError(f"boom {self.runs}")
        if outcome == RETURN:
            return
        try:
            await trio.sleep_forever()
        finally:
            if self.cleanup_s:
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.cleanup_s)
            if self.stops is not None:
                self.stops.append(self.name)


class Worker:
    """Owns a bounded inbox that outlives its runs; a "poison" item crashes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox_send, self.inbox = trio.open_memory_channel[str](8)
        self.done_send, self.done = trio.open_memory_channel[str](8)
        self.runs = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        task_status.started()
        async for item in self.inbox:
            if item == "poison":
                raise RuntimeError("poison item")
            await self.done_send.send(item)


class UpperBound(random.Random):
    """Jitter that always picks the ceiling, so delays show the exponential schedule."""

    def uniform(self, a: float, b: float) -> float:
        return b


def by_name(sup: Supervisor) -> dict[str, ActorStatus]:
    return {s.name: s for s in sup.status()}


async def test_start_returns_once_the_actor_called_started(autojump_clock: trio.abc.Clock) -> None:
    class Slow:
        name = "slow"

        async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await trio.sleep(3)
            task_status.started()
            await trio.sleep_forever()

    with trio.fail_after(60):
        async with open_supervisor() as sup:
            assert sup.status() == ()
            await sup.start(Slow())
            assert trio.current_time() == pytest.approx(3)
            assert sup.status() == (
                ActorStatus("slow", ActorState.RUNNING, RestartType.PERMANENT, 0, 0, None),
            )


async def test_start_raises_when_the_actor_fails_before_started(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Broken:
        name = "broken"
        runs = 0

        async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            self.runs += 1
            raise ValueError("bad setting")

    broken = Broken()
    with trio.fail_after(60):
        async with open_supervisor() as sup:
            with pytest.raises(ValueError, match=r"^bad setting$"):
                await sup.start(broken)
            await trio.sleep(5)
            assert broken.runs == 1
            assert sup.status() == ()
            assert sup.escalation is None


async def test_permanent_actor_restarts_after_crash_and_keeps_its_inbox(
    autojump_clock: trio.abc.Clock,
) -> None:
    worker = Worker("worker")
    with trio.fail_after(60):
        async with open_supervisor(rng=random.Random(1)) as sup:
            await sup.start(worker)
            for item in ["a", "poison", "b", "c"]:
                await worker.inbox_send.send(item)
            assert [await worker.done.receive() for _ in range(3)] == ["a", "b", "c"]
            assert worker.runs == 2
            assert sup.status() == (
                ActorStatus(
                    "worker",
                    ActorState.RUNNING,
                    RestartType.PERMANENT,
                    1,
                    1,
                    "RuntimeError: poison item",
                ),
            )


async def test_transient_restarts_after_crash_but_not_after_return(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor = Scripted("t", [CRASH, RETURN])
    with trio.fail_after(60):
        async with open_supervisor(rng=random.Random(2)) as sup:
            await sup.start(actor, restart=RestartType.TRANSIENT)
            await trio.sleep(5)
            assert actor.runs == 2
            assert sup.status() == (
                ActorStatus(
                    "t", ActorState.STOPPED, RestartType.TRANSIENT, 1, 1, "RuntimeError: boom 1"
                ),
            )


async def test_temporary_is_never_restarted(autojump_clock: trio.abc.Clock) -> None:
    crashing = Scripted("crashing", [CRASH])
    returning = Scripted("returning", [RETURN])
    with trio.fail_after(60):
        async with open_supervisor(rng=random.Random(3)) as sup:
            await sup.start(crashing, restart=RestartType.TEMPORARY)
            await sup.start(returning, restart=RestartType.TEMPORARY)
            await trio.sleep(5)
            assert (crashing.runs, returning.runs) == (1, 1)
            assert sup.status() == (
                ActorStatus(
                    "crashing",
                    ActorState.FAILED,
                    RestartType.TEMPORARY,
                    0,
                    1,
                    "RuntimeError: boom 1",
                ),
                ActorStatus("returning", ActorState.STOPPED, RestartType.TEMPORARY, 0, 0, None),
            )


async def test_permanent_restarts_after_normal_return(autojump_clock: trio.abc.Clock) -> None:
    actor = Scripted("p", [RETURN])
    with trio.fail_after(60):
        async with open_supervisor(rng=random.Random(4)) as sup:
            await sup.start(actor)
            await trio.sleep(5)
            assert actor.runs == 2
            assert sup.status() == (
                ActorStatus("p", ActorState.RUNNING, RestartType.PERMANENT, 1, 0, None),
            )


async def test_backoff_doubles_per_restart_and_is_capped(autojump_clock: trio.abc.Clock) -> None:
    actor = Scripted("flaky", [CRASH] * 5)
    with trio.fail_after(60):
        async with open_supervisor(
            max_restarts=10, within_s=100, backoff_base_s=0.05, backoff_max_s=0.3, rng=UpperBound()
        ) as sup:
            await sup.start(actor)
            await trio.sleep(5)
            assert sup.status()[0].restarts == 5
    gaps = [b - a for a, b in zip(actor.run_times, actor.run_times[1:], strict=False)]
    assert gaps == pytest.approx([0.05, 0.1, 0.2, 0.3, 0.3])


async def test_backoff_has_full_jitter(autojump_clock: trio.abc.Clock) -> None:
    actor = Scripted("flaky", [CRASH] * 5)
    twin = random.Random(42)
    ceilings = [0.05, 0.1, 0.2, 0.3, 0.3]
    expected = [twin.uniform(0, c) for c in ceilings]
    with trio.fail_after(60):
        async with open_supervisor(
            max_restarts=10,
            within_s=100,
            backoff_base_s=0.05,
            backoff_max_s=0.3,
            rng=random.Random(42),
        ) as sup:
            await sup.start(actor)
            await trio.sleep(5)
    gaps = [b - a for a, b in zip(actor.run_times, actor.run_times[1:], strict=False)]
    assert gaps == pytest.approx(expected)
    assert all(0 <= g <= c for g, c in zip(gaps, ceilings, strict=True))
    assert gaps != pytest.approx(ceilings)
    assert sup.status()[0].state is ActorState.STOPPED


async def test_restart_intensity_escalates_and_stops_others_in_reverse_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    stops: list[str] = []
    crashy = Scripted("crashy", [CRASH] * 100)
    seen: Supervisor | None = None
    with trio.fail_after(60), pytest.raises(EngineStopped) as info:
        async with open_supervisor(max_restarts=3, within_s=10, rng=random.Random(5)) as sup:
            seen = sup
            await sup.start(Scripted("a", stops=stops))
            await sup.start(Scripted("b", stops=stops))
            await sup.start(crashy)
            await sup.start(Scripted("d", stops=stops))
            await trio.sleep_forever()
    err = info.value
    assert type(err) is EngineStopped
    assert not isinstance(err, BaseExceptionGroup)
    assert str(err) == (
        "actor 'crashy' crashed 4 times in 10 s (max_restarts=3); last error: RuntimeError: boom 4"
    )
    assert isinstance(err.__cause__, RuntimeError)
    assert str(err.__cause__) == "boom 4"
    assert stops == ["d", "b", "a"]
    assert crashy.runs == 4
    assert seen is not None
    assert seen.escalation is err
    assert {s.name: s.state for s in seen.status()} == {
        "a": ActorState.STOPPED,
        "b": ActorState.STOPPED,
        "crashy": ActorState.FAILED,
        "d": ActorState.STOPPED,
    }


async def test_intensity_counts_the_restarts_of_all_actors(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Two actors that each crash twice stay within max_restarts=3 on their own, but
    # the supervisor has one budget for all its children, as in OTP.
    first = Scripted("first", [CRASH] * 2)
    second = Scripted("second", [CRASH] * 2)
    with trio.fail_after(60), pytest.raises(EngineStopped) as info:
        async with open_supervisor(max_restarts=3, within_s=10, rng=UpperBound()) as sup:
            await sup.start(first)
            await sup.start(second)
            await trio.sleep_forever()
    assert re.fullmatch(
        r"actors crashed 4 times in 10 s, the last actor '(first|second)' "
        r"\(max_restarts=3\); last error: RuntimeError: boom \d",
        str(info.value),
    )


@pytest.mark.parametrize(("work_s", "escalates"), [(0.6, False), (0.3, True)])
async def test_intensity_window_slides(
    autojump_clock: trio.abc.Clock, work_s: float, escalates: bool
) -> None:
    # With at most 2 restarts per second, crashes every 0.6 s never fill the window, however
    # many there are; every 0.3 s they do.
    actor = Scripted("slow-crash", [CRASH] * 10, work_s=work_s)
    seen: Supervisor | None = None

    async def body() -> None:
        nonlocal seen
        async with open_supervisor(
            max_restarts=2, within_s=1.0, backoff_base_s=0.001, rng=UpperBound()
        ) as sup:
            seen = sup
            await sup.start(actor)
            await trio.sleep(30)

    with trio.fail_after(60):
        if escalates:
            with pytest.raises(EngineStopped, match=r"crashed 3 times in 1 s \(max_restarts=2\)"):
                await body()
        else:
            await body()
    assert seen is not None
    status = seen.status()[0]
    if escalates:
        assert status.crashes == 3
        assert status.state is ActorState.FAILED
    else:
        assert seen.escalation is None
        assert (status.crashes, status.restarts) == (10, 10)


async def test_stop_cancels_children_one_by_one_in_reverse_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    stopped_at: list[tuple[str, float]] = []

    class Recorder(list[str]):
        def append(self, name: str) -> None:
            stopped_at.append((name, trio.current_time()))

    with trio.fail_after(60):
        async with open_supervisor() as sup:
            for name in "abc":
                await sup.start(Scripted(name, stops=Recorder(), cleanup_s=1.0))
            start = trio.current_time()
            await sup.stop()
            # Each child finishes its 1 s cleanup before the next one is cancelled.
            assert [(n, t - start) for n, t in stopped_at] == [("c", 1.0), ("b", 2.0), ("a", 3.0)]
            assert [s.state for s in sup.status()] == [ActorState.STOPPED] * 3


async def test_leaving_open_supervisor_stops_children_in_reverse_order() -> None:
    stops: list[str] = []
    with trio.fail_after(10):
        async with open_supervisor() as sup:
            for name in "abc":
                await sup.start(Scripted(name, stops=stops))
    assert stops == ["c", "b", "a"]
    assert sup.escalation is None


async def test_error_in_body_stops_children_and_is_not_wrapped() -> None:
    stops: list[str] = []
    with trio.fail_after(10), pytest.raises(KeyError, match="oops") as info:
        async with open_supervisor() as sup:
            for name in "ab":
                await sup.start(Scripted(name, stops=stops))
            raise KeyError("oops")
    assert type(info.value) is KeyError
    assert stops == ["b", "a"]


async def test_on_crash_gets_name_and_exception(autojump_clock: trio.abc.Clock) -> None:
    calls: list[tuple[str, BaseException]] = []
    with trio.fail_after(60):
        async with open_supervisor(
            rng=random.Random(6), on_crash=lambda name, exc: calls.append((name, exc))
        ) as sup:
            await sup.start(Scripted("x", [CRASH, CRASH]))
            await trio.sleep(5)
    assert [(name, type(exc), str(exc)) for name, exc in calls] == [
        ("x", RuntimeError, "boom 1"),
        ("x", RuntimeError, "boom 2"),
    ]


async def test_duplicate_names_are_rejected() -> None:
    with trio.fail_after(10):
        async with open_supervisor() as sup:
            await sup.start(Scripted("same"))
            with pytest.raises(ValueError, match="'same' is already supervised"):
                await sup.start(Scripted("same"))
            assert len(sup.status()) == 1


async def test_supervisor_runs_in_a_caller_nursery() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sup = Supervisor(nursery)
            await sup.start(Scripted("solo"))
            assert sup.status()[0].state is ActorState.RUNNING
            await sup.stop()
    assert sup.status()[0].state is ActorState.STOPPED


async def test_status_is_json_friendly_and_actors_match_the_protocol() -> None:
    status = ActorStatus("w", ActorState.FAILED, RestartType.TRANSIENT, 2, 3, "RuntimeError: boom")
    assert json.loads(json.dumps(status.as_dict())) == {
        "name": "w",
        "state": "failed",
        "restart_type": "transient",
        "restarts": 2,
        "crashes": 3,
        "last_error": "RuntimeError: boom",
    }
    assert isinstance(Scripted("s"), Actor)
    assert isinstance(Worker("w"), Actor)
    assert not isinstance(object(), Actor)
