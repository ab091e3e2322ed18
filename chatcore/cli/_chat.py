"""``chatcore tui`` and ``chatcore ask``: the chat app and one question on stdout."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    _argument_prompt,
    _fail,
    _guarded,
    _load,
    _print_json,
    _read_stdin_prompt,
    config_option,
    json_option,
)
from ._root import cli

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Config
    from ..messages import Message

EXIT_INTERRUPTED = 130


@cli.command()
@click.option("--backend", default=None, help="Backend to chat with (a [backends.NAME] table).")
@click.option("--conversation", "conversation_id", default=None, help="Open conversation ID.")
@config_option
def tui(backend: str | None, conversation_id: str | None, config_path: Path | None) -> None:
    """Open the chat app."""
    config = _load(config_path, default_backend=backend)
    from tui.app import run_tui

    _guarded(lambda: run_tui(config, conversation=conversation_id))


@cli.command()
@click.argument("prompt", required=False)
@click.option("--backend", default=None, help="Backend name (a [backends.NAME] table).")
@click.option("--model", default=None, help="Model to ask for (default: the backend's).")
@click.option(
    "--system",
    default=None,
    help="System prompt of the conversation: kept for its later turns until another "
    '--system replaces it (--system "" removes it).',
)
@click.option("--conversation", "conversation_id", default=None, help="Continue conversation ID.")
@click.option(
    "--id",
    "client_id",
    default=None,
    help="Idempotency key of this turn (a UUID, say): run again with the same key, it "
    "prints the stored reply instead of asking a second time.",
)
@click.option(
    "-c", "--continue", "continue_latest", is_flag=True, help="Continue the latest conversation."
)
@click.option(
    "--raw",
    is_flag=True,
    help="Write the reply as sent, control characters included (on a terminal they are "
    "dropped by default; into a pipe the reply is always raw).",
)
@config_option
@json_option
def ask(
    prompt: str | None,
    backend: str | None,
    model: str | None,
    system: str | None,
    conversation_id: str | None,
    client_id: str | None,
    continue_latest: bool,
    raw: bool,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Ask one question and stream the reply to stdout.

    The prompt comes from PROMPT or, when it is missing, from standard input.
    """
    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            _fail("no prompt: give it as an argument or on standard input", 2)
        prompt = _read_stdin_prompt()
    else:
        prompt = _argument_prompt(prompt)
    if conversation_id and continue_latest:
        _fail("use either --conversation ID or --continue, not both", 2)
    config = _load(config_path, default_backend=backend)
    text = prompt

    def run() -> int:
        import trio

        return trio.run(
            _ask_async,
            config,
            text,
            model,
            system,
            conversation_id,
            continue_latest,
            as_json,
            raw,
            client_id,
        )

    code = _guarded(run)
    sys.exit(code)


async def _ask_async(
    config: Config,
    prompt: str,
    model: str | None,
    system: str | None,
    conversation_id: str | None,
    continue_latest: bool,
    as_json: bool,
    raw: bool,
    client_id: str | None = None,
) -> int:
    from .._engine import open_engine
    from .._repl import EXIT_TERMINATED, TERMINATED, Terminated, is_terminal, stream_reply

    async with open_engine(config) as engine:
        if continue_latest:
            conversation = engine.latest_conversation() or engine.conversation()
        else:
            conversation = engine.conversation(conversation_id)
        reply_stream = conversation.stream(prompt, model=model, system=system, client_id=client_id)
        terminated = False
        try:
            error = await stream_reply(reply_stream, None if as_json else sys.stdout, raw=raw)
        except Terminated:  # SIGTERM ends `ask` as Ctrl-C does, with its own exit code
            terminated, error = True, None
        reply = reply_stream.message
        if as_json and reply is not None and error is None:
            _print_json(_ask_json(conversation.id, reply))
        elif reply is not None:
            _print_citations(reply, safe=not raw and is_terminal(sys.stdout))
    if error is not None and as_json:
        # A script reads stdout: the failure is JSON too, with the conversation to look
        # into; its text is the stored error's, without command-line advice.
        notes = "".join(f"; {note}" for note in getattr(error, "__notes__", ()))
        _print_json({"error": f"{error}{notes}", "conversation_id": conversation.id})
        return 1
    if error is not None:
        raise error
    if terminated:
        click.echo(TERMINATED, err=True)
        return EXIT_TERMINATED
    if reply_stream.cancelled:
        click.echo("interrupted: the partial reply is saved", err=True)
        return EXIT_INTERRUPTED
    return 0


def _print_citations(reply: Message, *, safe: bool) -> None:
    from .._repl import terminal_safe
    from ..messages import citation_lines

    lines = citation_lines(reply.metadata.get("citations"))
    if lines:
        click.echo("\nSources:")
        for line in lines:
            # Document names and headings come from indexed files, as untrusted as a reply.
            click.echo(f"  {terminal_safe(line) if safe else line}")


def _ask_json(conversation_id: str, reply: Message) -> dict[str, Any]:
    from .._generation import TOKENS_ESTIMATED

    return {
        "conversation_id": conversation_id,
        "message_id": reply.id,
        "content": reply.content,
        "backend": reply.metadata.get("backend"),
        "model": reply.model,
        "tokens_in": reply.tokens_in,
        "tokens_out": reply.tokens_out,
        # The backend sent no usage: the counts are chatcore's estimate.
        "tokens_estimated": bool(reply.metadata.get(TOKENS_ESTIMATED)),
        "status": str(reply.status),
        "citations": list(reply.metadata.get("citations") or []),
    }
