"""What a running engine lends a plugin, and the actor that runs its background jobs."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import trio

from ..errors import describe_error

if TYPE_CHECKING:
    from pathlib import Path

    from ..messages import SharedRecord
    from ..store import KVNamespace
    from ._base import BaseBackendProvider
    from ._records import PluginStatus

__all__ = ["BACKGROUND_QUEUE_SIZE", "BackgroundJob", "BackgroundJobs", "PluginHost"]

BACKGROUND_QUEUE_SIZE = 64
"""Background jobs waiting to run before ``spawn`` says no (try again later)."""

logger = logging.getLogger(__name__)

BackgroundJob = Callable[[], Awaitable[None]]


def _no_status() -> Mapping[str, PluginStatus]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PluginHost:
    """What a running engine lends a plugin, set as ``plugin.host`` before ``initialize``.

    A plugin gets its own key-value namespace in the store (``kv``), a way to
    run slow work off the turn (``spawn``), the configured backends
    (``backend``), e.g. to embed text or summarise, and ``share``, which gives text
    that is about to leave the machine (a log line, say) to every plugin that must
    redact it. ``database_path`` is the
    engine's SQLite file, for features that keep their own tables in it; it is
    None unless the plugin's metadata declares the ``store`` permission.
    """

    name: str
    kv: KVNamespace
    data_dir: Path
    database_path: Path | None
    backend: Callable[[str], Awaitable[BaseBackendProvider]]
    """Load (if needed) and return the backend configured under that name."""
    spawn: Callable[[BackgroundJob], bool]
    """Run a job in the background; False when the queue is full (try again later)."""
    share: Callable[[SharedRecord], Awaitable[SharedRecord]]
    """The record as it may leave the machine: after every plugin's ``BEFORE_SHARE`` hook."""
    plugin_status: Callable[[], Mapping[str, PluginStatus]] = _no_status
    """Read-only status and call statistics of every plugin and backend (for metrics)."""


class BackgroundJobs:
    """The actor that runs plugins' background jobs (summaries, indexing) in its nursery.

    A job that raises is logged and dropped; it never takes the engine down.
    """

    name = "plugin-jobs"

    def __init__(self, capacity: int = BACKGROUND_QUEUE_SIZE) -> None:
        self._send, self._receive = trio.open_memory_channel[BackgroundJob](capacity)
        self.running = 0
        self.failed = 0
        self.last_error: str | None = None

    def submit(self, job: BackgroundJob) -> bool:
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            return False
        return True

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for job in self._receive:
                nursery.start_soon(self._guarded, job)

    async def _guarded(self, job: BackgroundJob) -> None:
        self.running += 1
        try:
            await job()
        except Exception as exc:
            self.failed += 1
            self.last_error = describe_error(exc)
            # The job's repr would carry its arguments (a summary job holds the conversation's
            # messages), and logs leave the machine: name the function, never its data.
            logger.warning("background job %s failed: %s", job_name(job), self.last_error)
        finally:
            self.running -= 1


def job_name(job: BackgroundJob) -> str:
    """The job's function as ``module.Qualified.name``, without its bound arguments."""
    func: object = job
    while isinstance(func, functools.partial):
        func = func.func
    func = getattr(func, "__func__", func)  # a bound method: its function, not its instance
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{qualname}" if module else qualname


def refuse_background_job(job: BackgroundJob) -> bool:
    """``spawn`` for a plugin whose engine runs no background jobs: always full."""
    return False
