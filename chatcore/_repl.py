"""A plain interactive prompt loop: what bare ``chatcore`` runs until the chat UI exists."""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

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
            async with trio.open_nursery() as nursery:
                await nursery.start(_cancel_on_sigint, reply)
                try:
                    async with reply:
                        async for chunk in reply:
                            sys.stdout.write(chunk.text)
                            sys.stdout.flush()
                except ChatcoreError as exc:
                    print(f"\nerror: {exc}", file=sys.stderr)
                nursery.cancel_scope.cancel()
            sys.stdout.write("\n")


async def _cancel_on_sigint(reply: ReplyStream, task_status: trio.TaskStatus[None]) -> None:
    """Ctrl-C during a reply stops that reply (kept as partial), not the program."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            reply.cancel()
            return
