"""The one place where Textual's asyncio loop and chatcore's Trio engine meet.

Trio runs in guest mode on the app's own loop and thread, through the same
``TrioGuest`` that ``open_engine`` uses under asyncio (``chatcore._asyncio``), so
there are no threads and no locks. The UI reaches the engine only through
``EngineBridge.spawn`` / ``call`` (scheduled with the Trio token); the engine
reaches the UI only by posting Textual messages. The rest of ``tui/`` never
imports Trio: the Trio tasks it starts use the engine's API and ``run_in_thread``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from textual.message import Message as UIMessage

# Same distribution: the guest run is shared with open_engine under asyncio.
from chatcore._asyncio import TrioGuest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from textual.app import App

    from chatcore import Config, Engine

__all__ = ["EngineBridge", "EngineFailed", "EngineReady"]

T = TypeVar("T")


@dataclass
class EngineReady(UIMessage):
    """The engine is open; ``bridge.engine`` may be used (from Trio tasks)."""


@dataclass
class EngineFailed(UIMessage):
    """The engine could not start or stopped with an error (config, crash)."""

    error: str


class EngineBridge:
    """Starts the engine in a Trio guest run and carries calls and results across."""

    def __init__(self, app: App[Any], config: Config) -> None:
        self.app = app
        self.config = config
        self.engine: Engine | None = None
        self._guest = TrioGuest()
        self._cancel = trio.CancelScope()
        self._done: asyncio.Future[None] | None = None
        self._stopping = False

    @property
    def starting(self) -> bool:
        """Started (or about to be) and not yet stopping: the engine may still come up."""
        return not self._stopping and (self._done is None or not self._done.done())

    @property
    def running(self) -> bool:
        return self._guest.running

    def start(self) -> None:
        """Start Trio on the running asyncio loop (call from the app, e.g. on mount)."""
        if self._stopping or self._done is not None:
            return  # the app is already closing, or the engine was started
        self._done = self._guest.start(self._main)
        self._done.add_done_callback(self._finished)

    async def _main(self) -> None:
        if self._stopping:
            return
        # Imported here, after the app's first frame: the engine (store, plugins, the
        # clients' dependencies) takes a few hundred milliseconds to import.
        from chatcore import ChatcoreError, open_engine

        with self._cancel:
            try:
                async with open_engine(self.config) as engine:
                    self.engine = engine
                    self.app.post_message(EngineReady())
                    await trio.sleep_forever()
            except ChatcoreError as exc:
                self.app.post_message(EngineFailed(str(exc)))

    def _finished(self, done: asyncio.Future[None]) -> None:
        crash = None if done.cancelled() else done.exception()
        if crash is not None:  # an engine bug: report it, the UI stays up
            self.app.post_message(EngineFailed(f"{type(crash).__name__}: {crash}"))

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``await fn(*args)`` as a Trio task beside the engine."""
        self._guest.spawn(fn, *args)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """From a Trio task of the engine: run blocking ``fn(*args)`` in a worker thread."""
        return await trio.to_thread.run_sync(fn, *args)

    def call(self, fn: Callable[[], Any]) -> None:
        """Run plain ``fn()`` inside the Trio run (for Trio objects such as cancel scopes)."""
        self._guest.call_soon(fn)

    async def stop(self) -> None:
        """Cancel the engine (partial replies are saved) and wait until Trio is done."""
        self._stopping = True
        if self._done is None or self._done.done():
            return
        self._guest.call_soon(self._cancel.cancel)
        await asyncio.wait([self._done])
