"""A pipeline stage as an actor: a pool of worker tasks reading one bounded inbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._turn import Turn

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["StageActor"]


class StageActor:
    """A pipeline stage: a pool of worker tasks, each handling one turn at a time.

    The pool starts with one worker and grows, up to ``concurrency``, whenever a
    turn arrives and no worker is idle; so a stage costs one task switch per turn
    rather than a task spawn, and many conversations still move through it at once.
    """

    def __init__(
        self,
        name: str,
        handler: Callable[[Turn], Awaitable[None]],
        on_error: Callable[[Turn, Exception], Awaitable[None]],
        on_abandon: Callable[[Turn, BaseException], Awaitable[None]],
        *,
        capacity: int,
        concurrency: int,
    ) -> None:
        self.name = name
        self._handler = handler
        self._on_error = on_error
        self._on_abandon = on_abandon
        self.send_channel, self._inbox = trio.open_memory_channel[Turn](capacity)
        self._max_workers = concurrency
        self._workers = 0
        self._idle = 0
        self._nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._workers = self._idle = 0
            self._add_worker()
            task_status.started()

    def _add_worker(self) -> None:
        assert self._nursery is not None
        self._workers += 1
        self._nursery.start_soon(self._work)

    async def _work(self) -> None:
        while True:
            self._idle += 1
            try:
                turn = await self._inbox.receive()
            finally:
                self._idle -= 1
            if not self._idle and self._workers < self._max_workers:
                self._add_worker()
            try:
                try:
                    await self._handler(turn)
                except Exception as exc:
                    try:
                        await self._on_error(turn, exc)
                    except Exception as second:
                        # Failing while failing (a fail_fast hook in the error path) is
                        # still this turn's failure, not the stage's: keep the stage up.
                        turn.finish(second)
            except BaseException as exc:
                # This worker is going away (a crash here, a restart, shutdown): the
                # turn it holds must still end, with what the user said stored.
                with trio.CancelScope(shield=True):
                    await self._on_abandon(turn, exc)
                raise

    def statistics(self) -> tuple[int, int, int]:
        """(queued turns, workers, idle workers)."""
        return (self._inbox.statistics().current_buffer_used, self._workers, self._idle)
