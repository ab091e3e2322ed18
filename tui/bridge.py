"""The one place where Textual's asyncio loop and chatcore's Trio engine meet.

Trio runs in guest mode on the app's own loop and thread
(``trio.lowlevel.start_guest_run`` with ``loop.call_soon_threadsafe``), so there
are no threads and no locks. The UI reaches the engine only through
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
    """Starts the engine in guest mode and carries calls and results across."""

    def __init__(self, app: App[Any], config: Config) -> None:
        self.app = app
        self.config = config
        self.engine: Engine | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._cancel = trio.CancelScope()
        self._done: asyncio.Future[None] | None = None
        self._stopping = False

    @property
    def starting(self) -> bool:
        """Started (or about to be) and not yet stopping: the engine may still come up."""
        return not self._stopping and (self._done is None or not self._done.done())

    @property
    def running(self) -> bool:
        return self._nursery is not None and self._done is not None and not self._done.done()

    def start(self) -> None:
        """Start Trio on the running asyncio loop (call from the app, e.g. on mount)."""
        if self._stopping or self._done is not None:
            return  # the app is already closing, or the engine was started
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=self._finished,
            # asyncio owns the signal wakeup fd on the main thread.
            host_uses_signal_set_wakeup_fd=True,
        )

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        if self._stopping:
            return
        # Imported here, after the app's first frame: the engine (store, plugins, the
        # clients' dependencies) takes a few hundred milliseconds to import.
        from chatcore import ChatcoreError, open_engine

        with self._cancel:
            try:
                async with open_engine(self.config) as engine, trio.open_nursery() as nursery:
                    self.engine = engine
                    self._nursery = nursery
                    self.app.post_message(EngineReady())
                    await trio.sleep_forever()
            except ChatcoreError as exc:
                self.app.post_message(EngineFailed(str(exc)))
            finally:
                self._nursery = None

    def _finished(self, outcome: Any) -> None:
        assert self._done is not None
        try:
            outcome.unwrap()
        except BaseException as exc:  # an engine bug: report it, the UI stays up
            self.app.post_message(EngineFailed(f"{type(exc).__name__}: {exc}"))
        if not self._done.done():
            self._done.set_result(None)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``await fn(*args)`` as a Trio task of the engine's nursery."""
        if self._token is None or self._nursery is None:
            return
        nursery = self._nursery
        self._token.run_sync_soon(lambda: nursery.start_soon(fn, *args))

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """From a Trio task of the engine: run blocking ``fn(*args)`` in a worker thread."""
        return await trio.to_thread.run_sync(fn, *args)

    def call(self, fn: Callable[[], Any]) -> None:
        """Run plain ``fn()`` inside the Trio run (for Trio objects such as cancel scopes)."""
        if self._token is not None:
            self._token.run_sync_soon(fn)

    async def stop(self) -> None:
        """Cancel the engine (partial replies are saved) and wait until Trio is done."""
        self._stopping = True
        if self._done is None or self._done.done():
            return
        if self._token is not None:
            self._token.run_sync_soon(self._cancel.cancel)
        await self._done
