"""A plain interactive prompt loop: what bare ``chatcore`` runs until the chat UI exists."""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, TextIO

import trio

from ._engine import open_engine
from .cli._common import _error_line
from .errors import ChatcoreError

if TYPE_CHECKING:
    from ._engine import ReplyStream
    from .config import Config

__all__ = ["run_repl"]

EXIT_TERMINATED = 128 + signal.SIGTERM
"""143: what a shell reports for a process SIGTERM ended, after the partial reply is saved."""
TERMINATED = "terminated: the partial reply is saved"

# C0 controls but tab and newline, DEL and C1: what a terminal acts on rather than shows
# (ESC starts cursor moves and window titles, CR overwrites the line, 0x9b is CSI).
_CONTROL_CHARACTERS = dict.fromkeys(
    [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]
)

PROMPT = "you> "
HELP = "Type a message and press Enter. /new starts a new conversation, /quit (or Ctrl-D) leaves."


class Terminated(Exception):
    """SIGTERM stopped a reply: it is kept as partial, and the program should end."""


def run_repl(config: Config) -> None:
    code = trio.run(_repl, config)
    if code == EXIT_TERMINATED:
        # After the engine closed: the partial reply is in the store by now.
        print(TERMINATED, file=sys.stderr)
    if code:
        raise SystemExit(code)


async def _read_line() -> str | None:
    def read() -> str | None:
        try:
            return input(PROMPT)
        except EOFError:
            return None

    return await trio.to_thread.run_sync(read, abandon_on_cancel=True)


async def _repl(config: Config) -> int:
    """The loop; its exit code, as `ask`'s: 1 if a turn failed, else 2 if a line was
    refused (bad input), else 0; 143 when SIGTERM ended it mid-reply."""
    failed = refused = False
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
                return 1 if failed else 2 if refused else 0
            if not line.strip():
                continue
            problem = _not_utf8(line)
            if problem is not None:
                print(f"error: {problem}", file=sys.stderr)
                refused = True
                continue
            if line.strip() == "/new":
                conversation = engine.conversation()
                print("(new conversation)", file=sys.stderr)
                continue
            try:
                reply = conversation.stream(line)
            except ChatcoreError as exc:
                print(f"error: {_error_line(exc)}", file=sys.stderr)
                refused = refused or exc.exit_code == 2
                failed = failed or exc.exit_code != 2
                continue
            try:
                error = await stream_reply(reply, sys.stdout)
            except Terminated:
                return EXIT_TERMINATED
            if error is not None:
                print(f"error: {_error_line(error)}", file=sys.stderr)
                failed = True


def _not_utf8(line: str) -> str | None:
    """What is wrong with a line that was not UTF-8 (None: nothing). ``input()`` keeps
    such bytes as surrogates, which the store cannot write after the reply has printed."""
    data = line.encode("utf-8", "surrogateescape")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"this line is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); it was not sent"
        )
    return None


def terminal_safe(text: str) -> str:
    """``text`` without the control characters a terminal would act on; newline and tab stay.

    What is left of an escape sequence (``[2J``) shows as text: a reply must not move
    the cursor, retitle the window or rewrite what the user reads.
    """
    return text.translate(_CONTROL_CHARACTERS)


def is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


async def stream_reply(
    reply: ReplyStream, out: TextIO | None, *, raw: bool = False
) -> ChatcoreError | None:
    """Write a reply to ``out`` as it streams (None: just wait for it).

    Ctrl-C (SIGINT) stops the reply, kept as partial; SIGTERM (`kill`, `timeout`,
    systemd, docker) stops it the same way, then raises `Terminated` so the program ends.

    On a terminal the reply goes through `terminal_safe` unless ``raw``; into a pipe
    or file it is written as the model sent it.

    Returns the turn's error instead of raising it, so the caller decides how to show
    it after the reply's last line has ended.
    """
    error: ChatcoreError | None = None
    wrote = False
    safe = out is not None and not raw and is_terminal(out)
    stopped_by: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(_cancel_on_stop_signal, reply, stopped_by)
        try:
            async with reply:
                async for chunk in reply:
                    if out is not None and chunk.text:
                        out.write(terminal_safe(chunk.text) if safe else chunk.text)
                        out.flush()
                        wrote = True
        except ChatcoreError as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if wrote and out is not None:
        out.write("\n")
        out.flush()
    if signal.SIGTERM in stopped_by:
        raise Terminated
    return error


async def _cancel_on_stop_signal(
    reply: ReplyStream, stopped_by: list[int], task_status: trio.TaskStatus[None]
) -> None:
    """Ctrl-C or SIGTERM during a reply stops that reply (kept as partial); which one
    came is left in ``stopped_by`` (Ctrl-C leaves the prompt loop running, SIGTERM not)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            stopped_by.append(signum)
            reply.cancel()
            return
