"""The store actor: turns queued by many tasks, committed in groups by one writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ..errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._store import Store
    from ._writers import TurnRecord

STORE_QUEUE_CAPACITY = 256
STORE_MAX_BATCH = 512
INLINE_COMMIT_MAX_RECORDS = 4
"""Batches up to this size commit on the event loop: a commit of one or two turns
takes tens of microseconds, far less than handing it to a worker thread and back.
Larger batches, lock waits and checkpoints go to the worker thread."""


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Counters of the store writer (batches and records include direct writes)."""

    batches: int
    records: int
    largest_batch: int
    queued: int
    failed: int


@dataclass(eq=False, slots=True)
class _WriteRequest:
    records: tuple[TurnRecord, ...]
    done: trio.Event = field(default_factory=trio.Event)
    committed: bool = False
    error: BaseException | None = None


class StoreWriter:
    """The store actor: turns queued by many tasks, committed in groups.

    A batch is whatever is queued when the writer gets to it (at most
    ``max_batch`` requests), written in one transaction in one worker thread.
    If a batch fails, each of its requests is retried on its own, so one bad
    turn only fails its own caller.
    """

    name = "store"

    def __init__(
        self,
        store: Store,
        *,
        capacity: int = STORE_QUEUE_CAPACITY,
        max_batch: int = STORE_MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._store = store
        self._max_batch = max_batch
        # Created here, not in run(): queued writes survive an actor restart.
        self._send, self._receive = trio.open_memory_channel[_WriteRequest](capacity)
        self._limiter = trio.CapacityLimiter(1)
        self._batches = 0
        self._records = 0
        self._largest_batch = 0
        self._failed = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            # Shielded: once taken off the queue, a batch is committed (or its
            # callers get the error) even if the actor is being cancelled.
            with trio.CancelScope(shield=True):
                await self._commit(batch)
            if self._store.checkpoint_due:
                await trio.to_thread.run_sync(self._store.checkpoint, limiter=self._limiter)

    async def _commit(self, batch: list[_WriteRequest]) -> None:
        self._batches += 1
        self._largest_batch = max(self._largest_batch, len(batch))
        try:
            records = [record for request in batch for record in request.records]
            try:
                await self._run_in_thread(records)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    await self._commit_one_by_one(batch)
            else:
                self._records += len(records)
                for request in batch:
                    request.committed = True
        finally:
            for request in batch:
                if not request.committed and request.error is None:
                    request.error = StoreError("the store writer stopped before this write")
                if request.error is not None:
                    self._failed += 1
                request.done.set()

    async def _commit_one_by_one(self, batch: list[_WriteRequest]) -> None:
        for request in batch:
            try:
                await self._run_in_thread(request.records)
            except Exception as exc:
                request.error = exc
            else:
                self._records += len(request.records)
                request.committed = True

    async def _run_in_thread(self, records: Sequence[TurnRecord]) -> None:
        # Looked up on each call (not bound once) so a replaced store method is used.
        store = self._store
        if len(records) <= INLINE_COMMIT_MAX_RECORDS and store.write_turns(records, wait=False):
            return
        await trio.to_thread.run_sync(store.write_turns, records, limiter=self._limiter)

    async def write(self, records: Sequence[TurnRecord]) -> None:
        """Queue ``records`` and wait until they are committed.

        If the caller is cancelled while waiting, the write may still be committed.

        Raises:
            Exception: whatever committing these records raised.
        """
        if not records:
            return
        request = _WriteRequest(tuple(records))
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error

    async def write_direct(self, records: Sequence[TurnRecord]) -> None:
        """Commit ``records`` now, bypassing the queue (for shutdown, when the actor may be gone).

        Raises:
            Exception: whatever committing these records raised.
        """
        if not records:
            return
        self._batches += 1
        self._largest_batch = max(self._largest_batch, 1)
        try:
            await self._run_in_thread(records)
        except Exception:
            self._failed += 1
            raise
        self._records += len(records)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            batches=self._batches,
            records=self._records,
            largest_batch=self._largest_batch,
            queued=self._receive.statistics().current_buffer_used,
            failed=self._failed,
        )
