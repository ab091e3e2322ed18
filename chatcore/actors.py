"""Actors and a one_for_one supervisor on Trio, after Erlang/OTP.

Each actor runs in its own nursery under its own cancel scope; a crashed actor is restarted
alone after a jittered exponential backoff, and restarting too often stops everything and
raises :class:`~chatcore.errors.EngineStopped` to the parent.
"""

from __future__ import annotations

import random
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio

from .errors import EngineStopped, describe_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "MAX_RESTARTS",
    "RESTART_WINDOW_S",
    "Actor",
    "ActorState",
    "ActorStatus",
    "RestartType",
    "Supervisor",
    "open_supervisor",
]

MAX_RESTARTS = 5
RESTART_WINDOW_S = 10.0
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 2.0


class RestartType(StrEnum):
    """When a child is restarted (OTP restart types)."""

    PERMANENT = "permanent"
    """Always: after a crash and after a normal return."""
    TRANSIENT = "transient"
    """Only after a crash."""
    TEMPORARY = "temporary"
    """Never."""


class ActorState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ActorStatus:
    """A snapshot of one supervised actor."""

    name: str
    state: ActorState
    restart_type: RestartType
    restarts: int
    crashes: int
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        """Return the status as plain JSON-friendly values."""
        return {
            "name": self.name,
            "state": self.state.value,
            "restart_type": self.restart_type.value,
            "restarts": self.restarts,
            "crashes": self.crashes,
            "last_error": self.last_error,
        }


@runtime_checkable
class Actor(Protocol):
    """A long-running service: calls ``task_status.started()`` once ready, then serves."""

    name: str

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


@dataclass(slots=True, eq=False)
class _Child:
    actor: Actor
    restart_type: RestartType
    state: ActorState = ActorState.STARTING
    restarts: int = 0
    crashes: int = 0
    last_error: str | None = None
    # Times of the restarts still inside the intensity window, oldest first.
    recent: deque[float] = field(default_factory=deque)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)

    def snapshot(self) -> ActorStatus:
        return ActorStatus(
            name=self.actor.name,
            state=self.state,
            restart_type=self.restart_type,
            restarts=self.restarts,
            crashes=self.crashes,
            last_error=self.last_error,
        )


def _single(exc: BaseException) -> BaseException:
    """Unwrap groups of exactly one exception, as a nursery of one task produces."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Supervisor:
    """Supervises actors one_for_one in the given nursery.

    Args:
        nursery: Where the supervising tasks run; an escalation is raised into it.
        max_restarts: Restarts allowed within ``within_s``, counted over all actors as
            OTP does, before the supervisor gives up.
        within_s: Length of the sliding intensity window, in seconds of ``trio.current_time()``.
        backoff_base_s: Upper bound of the first restart delay; doubles for each further
            restart inside the window.
        backoff_max_s: Cap on the upper bound of any restart delay.
        rng: Source of jitter (seed one in tests).
        on_crash: Called with the actor's name and exception after each crash.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        max_restarts: int = MAX_RESTARTS,
        within_s: float = RESTART_WINDOW_S,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        rng: random.Random | None = None,
        on_crash: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._nursery = nursery
        self._max_restarts = max_restarts
        self._within_s = within_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng if rng is not None else random.Random()
        self._on_crash = on_crash
        self._children: list[_Child] = []
        self._escalation: EngineStopped | None = None
        # Every restart still inside the intensity window, oldest first, and whose it was.
        self._recent: deque[tuple[float, _Child]] = deque()

    @property
    def escalation(self) -> EngineStopped | None:
        """The error the supervisor gave up with, or None while it has not."""
        return self._escalation

    async def start(self, actor: Actor, *, restart: RestartType = RestartType.PERMANENT) -> None:
        """Start ``actor`` under supervision; return once it called ``task_status.started()``.

        Args:
            actor: The actor to run; the same object is run again on each restart.
            restart: When to restart it.

        Raises:
            ValueError: An actor with this name was already started here.
            Exception: Whatever ``actor.run`` raised before it called ``started()``; the
                actor is then not supervised.
        """
        if any(c.actor.name == actor.name for c in self._children):
            raise ValueError(f"an actor named {actor.name!r} is already supervised")
        child = _Child(actor, restart)
        self._children.append(child)
        try:
            await self._nursery.start(self._supervise, child)
        except BaseException:
            self._children.remove(child)
            raise

    def status(self) -> tuple[ActorStatus, ...]:
        """Return a snapshot of every actor, in start order."""
        return tuple(c.snapshot() for c in self._children)

    async def stop(self) -> None:
        """Cancel the actors one by one in reverse start order, waiting for each to finish."""
        await self._stop_children(skip=None)

    async def _stop_children(self, *, skip: _Child | None) -> None:
        for child in reversed(self._children):
            if child is not skip:
                child.scope.cancel()
                await child.done.wait()

    async def _supervise(
        self, child: _Child, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with child.scope:
                await self._run_child(child, task_status)
        finally:
            if child.state not in (ActorState.FAILED, ActorState.STOPPED):
                child.state = ActorState.STOPPED
            child.done.set()

    async def _run_child(self, child: _Child, task_status: trio.TaskStatus[None]) -> None:
        started = False
        while True:
            error: Exception | None = None
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(child.actor.run)
                    child.state = ActorState.RUNNING
                    if not started:
                        started = True
                        task_status.started()
            except Exception as exc:
                # A group holding Cancelled is not an Exception and passes through untouched.
                leaf = _single(exc)
                error = leaf if isinstance(leaf, Exception) else exc
            if error is not None and not started:
                child.state = ActorState.FAILED
                # Raised outside the except block so its context stays the actor's own.
                raise error
            if error is not None:
                child.crashes += 1
                child.last_error = describe_error(error)
                if self._on_crash is not None:
                    self._on_crash(child.actor.name, error)
                if child.restart_type is RestartType.TEMPORARY:
                    child.state = ActorState.FAILED
                    return
            elif child.restart_type is not RestartType.PERMANENT:
                child.state = ActorState.STOPPED
                return
            await self._before_restart(child, error)

    async def _before_restart(self, child: _Child, error: Exception | None) -> None:
        """Count the restart against the window, then wait out the backoff or escalate.

        The intensity counts every actor's restarts (OTP's rule: one supervisor, one
        budget); the backoff grows with this actor's own recent restarts.
        """
        now = trio.current_time()
        horizon = now - self._within_s
        while self._recent and self._recent[0][0] <= horizon:
            self._recent.popleft()
        while child.recent and child.recent[0] <= horizon:
            child.recent.popleft()
        if len(self._recent) + 1 > self._max_restarts:
            await self._escalate(child, error, len(self._recent) + 1)
        attempt = len(child.recent) + 1
        self._recent.append((now, child))
        child.recent.append(now)
        child.state = ActorState.RESTARTING
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2 ** (attempt - 1))
        await trio.sleep(self._rng.uniform(0, ceiling))
        child.restarts += 1

    async def _escalate(self, child: _Child, error: Exception | None, count: int) -> None:
        child.state = ActorState.FAILED
        last = describe_error(error) if error is not None else "run() returned"
        name, window = child.actor.name, f"{self._within_s:g} s"
        if all(owner is child for _, owner in self._recent):
            what = f"actor {name!r} crashed {count} times in {window}"
        else:
            what = f"actors crashed {count} times in {window}, the last actor {name!r}"
        stopped = EngineStopped(f"{what} (max_restarts={self._max_restarts}); last error: {last}")
        stopped.__cause__ = error
        self._escalation = stopped
        await self._stop_children(skip=child)
        raise stopped


@asynccontextmanager
async def open_supervisor(
    *,
    max_restarts: int = MAX_RESTARTS,
    within_s: float = RESTART_WINDOW_S,
    backoff_base_s: float = BACKOFF_BASE_S,
    backoff_max_s: float = BACKOFF_MAX_S,
    rng: random.Random | None = None,
    on_crash: Callable[[str, BaseException], None] | None = None,
) -> AsyncIterator[Supervisor]:
    """Open a nursery with a :class:`Supervisor`; leaving the block stops its actors.

    Args:
        max_restarts: See :class:`Supervisor`.
        within_s: See :class:`Supervisor`.
        backoff_base_s: See :class:`Supervisor`.
        backoff_max_s: See :class:`Supervisor`.
        rng: See :class:`Supervisor`.
        on_crash: See :class:`Supervisor`.

    Yields:
        The supervisor.

    Raises:
        EngineStopped: The supervisor gave up on an actor that crashed too often.
    """
    supervisor: Supervisor | None = None
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(
                nursery,
                max_restarts=max_restarts,
                within_s=within_s,
                backoff_base_s=backoff_base_s,
                backoff_max_s=backoff_max_s,
                rng=rng,
                on_crash=on_crash,
            )
            try:
                yield supervisor
            finally:
                # Shielded so children still stop in reverse order when the body failed or
                # was cancelled; each child's own scope is cancelled, so this cannot hang
                # unless an actor ignores cancellation.
                with trio.CancelScope(shield=True):
                    await supervisor.stop()
    except BaseExceptionGroup as group:
        if supervisor is not None and supervisor.escalation is not None:
            failure = supervisor.escalation
        else:
            leaf = _single(group)
            if leaf is group or isinstance(leaf, trio.Cancelled):
                raise
            failure = leaf
    # Raised outside the except block so the group does not become the error's context.
    if failure is not None:
        raise failure
