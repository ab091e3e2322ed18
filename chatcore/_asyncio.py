"""chatcore under asyncio: the Trio engine runs as a guest on the running asyncio loop.

``open_engine`` asks sniffio which library is running. Under asyncio (a plain
``asyncio.run``, FastAPI, Jupyter), it starts Trio in guest mode on the same loop
and thread (``trio.lowlevel.start_guest_run``), so there are no threads and no
locks: Trio's scheduling steps run as callbacks of the asyncio loop. Each call
from asyncio code (``send``, ``messages``, ...) runs as a Trio task of the guest
and hands its result back through an asyncio future; cancelling the asyncio side
cancels the Trio task, so a cancelled reply is stored ``partial`` as under Trio.
The chat app uses the same ``TrioGuest`` (``tui/bridge.py``).
"""

from __future__ import annotations

import contextlib
import functools
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import trio

from .errors import EngineClosed
from .messages import Chunk

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator, Awaitable, Callable
    from types import TracebackType

    from ._conversation import Conversation, ReplyStream
    from ._engine import Engine
    from .messages import Message

__all__ = ["AsyncioReplyStream", "TrioGuest", "bridged", "open_guest_engine"]

T = TypeVar("T")
P = ParamSpec("P")

# asyncio itself is imported where it is used: Trio programs and the CLI never pay for it.


class TrioGuest:
    """A Trio run hosted by the running asyncio loop, taking calls from asyncio code."""

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._cancel = trio.CancelScope()
        self._done: asyncio.Future[None] | None = None
        self._crash: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None and self._done is not None and not self._done.done()

    def start(self, main: Callable[[], Awaitable[None]]) -> asyncio.Future[None]:
        """Start ``await main()`` under Trio on the running loop; the future ends with it."""
        import asyncio

        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        trio.lowlevel.start_guest_run(
            self._run,
            main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=self._finished,
            # asyncio owns the signal wakeup fd of the main thread.
            host_uses_signal_set_wakeup_fd=True,
        )
        return self._done

    async def _run(self, main: Callable[[], Awaitable[None]]) -> None:
        self.token = trio.lowlevel.current_trio_token()
        with self._cancel:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await main()
                finally:
                    self._nursery = None
                    nursery.cancel_scope.cancel()

    def _finished(self, outcome: Any) -> None:
        assert self._done is not None
        try:
            outcome.unwrap()
        except BaseException as exc:
            self._crash = exc
        if not self._done.done():
            if self._crash is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(self._crash)
                # Whoever waits for it reports it; nobody waiting is no reason to log.
                self._done.exception()

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run plain ``fn()`` inside the Trio run (for Trio objects such as cancel scopes)."""
        if self.token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(fn)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``await fn(*args)`` as a Trio task of the guest's nursery."""
        nursery = self._nursery
        if nursery is not None:
            self.call_soon(lambda: nursery.start_soon(fn, *args))

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """From asyncio: ``await fn(*args, **kwargs)`` in Trio and return (or raise) its result.

        Cancelling the caller cancels the Trio task and waits for it to end, so what
        it leaves behind (a ``partial`` reply) is in place when the caller goes on.
        """
        import asyncio

        if not self.running:
            raise EngineClosed("the engine is closed; open a new one with open_engine()")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        ended: asyncio.Future[None] = loop.create_future()
        scope = trio.CancelScope()

        async def task() -> None:
            try:
                with scope:
                    value = await fn(*args, **kwargs)
                    if not result.done():
                        result.set_result(value)
            except Exception as exc:
                if not result.done():
                    result.set_exception(exc)
            finally:
                if not result.done():  # cancelled by the caller, or the engine stopping
                    result.set_exception(EngineClosed("the engine closed during the call"))
                    result.exception()
                ended.set_result(None)

        self.spawn(task)
        try:
            return await result
        except asyncio.CancelledError:
            self.call_soon(scope.cancel)
            await asyncio.shield(ended)
            raise

    async def stop(self, stopping: trio.Event) -> None:
        """Set ``stopping`` (inside Trio) and wait until the run has ended."""
        if self._done is None:
            return
        self.call_soon(stopping.set)
        await self._done


def bridged(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """An engine method that, called from asyncio, runs in the engine's Trio guest."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        guest = _guest_of(args[0])
        if guest is not None and not trio.lowlevel.in_trio_task():
            return await guest.call(method, *args, **kwargs)
        return await method(*args, **kwargs)

    return wrapper


def _guest_of(owner: Any) -> TrioGuest | None:
    engine = getattr(owner, "_engine", owner)
    guest: TrioGuest | None = getattr(engine, "_guest", None)
    return guest


@asynccontextmanager
async def open_guest_engine(
    opener: Callable[..., contextlib.AbstractAsyncContextManager[Engine]],
    config: Any,
    overrides: dict[str, Any],
) -> AsyncIterator[Engine]:
    """``open_engine`` under asyncio: the engine opened by ``opener`` inside a Trio guest."""
    import asyncio

    guest = TrioGuest()
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Engine] = loop.create_future()
    stopping = trio.Event()

    async def main() -> None:
        try:
            async with opener(config, **overrides) as engine:
                engine._guest = guest
                ready.set_result(engine)
                await stopping.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
                return  # reported through `ready`, not as a crash of the run
            raise

    done = guest.start(main)
    try:
        engine = await ready
    except BaseException:
        await asyncio.wait([done])
        raise
    try:
        yield engine
    finally:
        await guest.stop(stopping)


_END = object()


class AsyncioReplyStream:
    """``Conversation.stream`` under asyncio: the Trio stream's chunks, read from asyncio.

    The same interface as ``ReplyStream``: ``async for``, ``async with`` (leaving
    early stops the reply, kept ``partial``), ``cancel()``, ``aclose()``, ``message``.
    """

    def __init__(self, guest: TrioGuest, open_stream: Callable[[], ReplyStream]) -> None:
        import asyncio

        self._guest = guest
        self._open_stream = open_stream
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._trio_stream: ReplyStream | None = None
        self._started = False
        self._finished = False
        self._cancel_requested = False
        self._conversation_id: str | None = None
        self.message: Message | None = None

    @property
    def conversation_id(self) -> str | None:
        return self._conversation_id

    @property
    def cancelled(self) -> bool:
        return self._cancel_requested

    def cancel(self) -> None:
        """Stop the reply; what arrived so far is stored as ``partial``."""
        self._cancel_requested = True
        if self._trio_stream is not None:
            self._guest.call_soon(self._trio_stream.cancel)

    async def _pump(self) -> None:
        put = self._queue.put_nowait
        try:
            async with self._open_stream() as stream:
                self._trio_stream = stream
                self._conversation_id = stream.conversation_id
                if self._cancel_requested:
                    stream.cancel()
                async for chunk in stream:
                    put(chunk)
                self.message = stream.message
            put(_END)
        except Exception as exc:
            put(exc)
        except BaseException:
            put(EngineClosed("the engine closed mid-reply; what arrived so far is saved"))
            raise

    def __aiter__(self) -> AsyncioReplyStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._finished:
            raise StopAsyncIteration
        if not self._started:
            if not self._guest.running:
                raise EngineClosed("the engine is closed; open a new one with open_engine()")
            self._started = True
            self._guest.spawn(self._pump)
        item = await self._queue.get()
        if isinstance(item, Chunk):
            return item
        self._finished = True
        if isinstance(item, BaseException):
            raise item
        raise StopAsyncIteration

    async def __aenter__(self) -> AsyncioReplyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the reply if it is still running and wait until it is stored."""
        if not self._started or self._finished:
            self._finished = True
            return
        self.cancel()
        while True:  # drain until the Trio side has stored the reply and said so
            item = await self._queue.get()
            if not isinstance(item, Chunk):
                self._finished = True
                return


def asyncio_stream(
    conversation: Conversation, open_stream: Callable[[], ReplyStream]
) -> ReplyStream | None:
    """The stream ``conversation.stream`` hands to asyncio code, if it runs under asyncio."""
    guest = _guest_of(conversation)
    if guest is None or trio.lowlevel.in_trio_task():
        return None
    # Not a subclass, the same interface: callers use it exactly as a ReplyStream.
    return cast("ReplyStream", AsyncioReplyStream(guest, open_stream))
