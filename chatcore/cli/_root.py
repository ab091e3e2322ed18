"""The root ``chatcore`` group: bare ``chatcore`` opens the chat, and the command listing."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ._common import _fail, _guarded, _load, config_option
from ._entry_points import discover_commands

if TYPE_CHECKING:
    from pathlib import Path

    from ._entry_points import CommandTable

_TABLE_KEY = "chatcore.entry_commands"


class _ChatcoreGroup(click.Group):
    """chatcore's own commands, plus those of the ``chatcore.commands`` entry points.

    The entry points are read once per invocation, and only when needed: to list
    the commands, or to run a name that is not built in.
    """

    def _entry_commands(self, ctx: click.Context) -> CommandTable:
        table: CommandTable | None = ctx.meta.get(_TABLE_KEY)
        if table is None:
            table = discover_commands(self.commands)
            for ignored in table.ignored:
                click.echo(f"warning: {ignored.warning}", err=True)
            ctx.meta[_TABLE_KEY] = table
        return table

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._entry_commands(ctx).commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry = self._entry_commands(ctx).commands.get(cmd_name)
        if entry is None:
            return None
        try:
            return entry.load()
        except click.ClickException as exc:
            _fail(exc.message)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Entry-point commands are listed with the summary read from their source,
        # so `--help` imports no plugin.
        entries = self._entry_commands(ctx).commands
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name)
            if command is None:
                # A stand-in with the summary as its help is shortened like the others.
                command = click.Command(name, help=entries[name].summary())
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=_ChatcoreGroup,
    invoke_without_command=True,
    # Subcommands inherit it: `chatcore ask -h` too.
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="chatcore")
@config_option
@click.option("--backend", default=None, help="Backend to chat with (a [backends.NAME] table).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, backend: str | None) -> None:
    """chatcore: offline-first chatbot middleware.

    Run without a command to open the chat app on the configured backend (in a
    terminal; with piped input it reads one prompt per line instead).
    """
    if ctx.invoked_subcommand is None:
        config = _load(config_path, default_backend=backend)
        if sys.stdin.isatty() and sys.stdout.isatty():
            from tui.app import run_tui

            _guarded(lambda: run_tui(config))
            return
        from .._repl import run_repl

        _guarded(lambda: run_repl(config))


def main() -> None:
    """The ``chatcore`` console script."""
    try:
        code = cli.main(prog_name="chatcore", standalone_mode=False)
    except click.UsageError as exc:
        # click's own errors read like chatcore's: one line, where to look, exit 2.
        where = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
        _fail(f"{' '.join(exc.format_message().split())}{where}", exc.exit_code)
    except click.ClickException as exc:
        _fail(" ".join(exc.format_message().split()), exc.exit_code)
    except click.Abort:  # Ctrl-C or end of input at a prompt; click has ended the line
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
