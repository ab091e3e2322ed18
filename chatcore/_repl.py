"""A plain interactive prompt loop: what bare ``chatcore`` runs until the chat UI exists."""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, TextIO

import trio

from ._engine import open_engine
from .errors import ChatcoreError

if TYPE_CHECKING:
    from ._engine import ReplyStream
    from .config import Config

__all__ = ["run_repl"]

PROMPT = "you> "
HELP = "Type a message and press Enter. /new starts a new conversation, /quit (or Ctrl-D) leaves."


def run_repl(config: Config) -> None:
    trio.run(_repl, config)


async def _read_line() -> str | None:
    def read() -> str | None:
        try:
            return input(PROMPT)
        except EOFError:
            return None

    return await trio.to_thread.run_sync(read, abandon_on_cancel=True)


async def _repl(config: Config) -> None:
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        print(f"chatcore on backend {config.default_backend!r}. {HELP}", file=sys.stderr)
        while True:
            try:
                line = await _read_line()
            except KeyboardInterrupt:
                line = None
            if line is None or line.strip() in ("/quit", "/exit"):
                print(file=sys.stderr)
                return
            if not line.strip():
                continue
            if line.strip() == "/new":
                conversation = engine.conversation()
                print("(new conversation)", file=sys.stderr)
                continue
            try:
                reply = conversation.stream(line)
            except ChatcoreError as exc:
                print(f"error: {exc}", file=sys.stderr)
                continue
            error = await stream_reply(reply, sys.stdout)
            if error is not None:
                print(f"error: {error}", file=sys.stderr)


async def stream_reply(reply: ReplyStream, out: TextIO | None) -> ChatcoreError | None:
    """Write a reply to ``out`` as it streams (None: just wait for it); Ctrl-C stops it.

    Returns the turn's error instead of raising it, so the caller decides how to show
    it after the reply's last line has ended.
    """
    error: ChatcoreError | None = None
    wrote = False
    async with trio.open_nursery() as nursery:
        await nursery.start(_cancel_on_sigint, reply)
        try:
            async with reply:
                async for chunk in reply:
                    if out is not None and chunk.text:
                        out.write(chunk.text)
                        out.flush()
                        wrote = True
        except ChatcoreError as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if wrote and out is not None:
        out.write("\n")
        out.flush()
    return error


async def _cancel_on_sigint(reply: ReplyStream, task_status: trio.TaskStatus[None]) -> None:
    """Ctrl-C during a reply stops that reply (kept as partial), not the program."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            reply.cancel()
            return
