"""The root ``chatcore`` group: bare ``chatcore`` opens the chat, and the command listing."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ._common import _fail, _guarded, _load, config_option

if TYPE_CHECKING:
    from pathlib import Path

PLUGIN_COMMANDS: dict[str, tuple[str, str]] = {
    "memory": ("memory", "Long-term memories the chat remembers about you."),
    "metrics": ("metrics", "Latency histograms and counters of the metrics middleware."),
    "rag": ("rag", "Documents the chat answers from (RAG): add, search, list, remove."),
}
"""Subcommands that built-in plugins provide: command → (plugin name, one-line help).

The plugin class is imported only when its command runs (``chatcore --help``
stays fast); its classmethod ``cli_command()`` returns the click command.
"""


class _ChatcoreGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *PLUGIN_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in PLUGIN_COMMANDS:
            return command
        plugin, _ = PLUGIN_COMMANDS[cmd_name]
        from ..errors import PluginLoadError
        from ..plugins import resolve_plugin_class

        try:
            command = resolve_plugin_class(plugin).cli_command()  # type: ignore[attr-defined]
        except (PluginLoadError, AttributeError) as exc:
            _fail(f"the {cmd_name!r} command comes from the {plugin!r} plugin, which failed: {exc}")
        assert isinstance(command, click.Command)
        command.name = cmd_name
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The listing uses PLUGIN_COMMANDS' help, so `--help` imports no plugin.
        rows = []
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        for name in self.list_commands(ctx):
            if name in PLUGIN_COMMANDS and name not in self.commands:
                rows.append((name, PLUGIN_COMMANDS[name][1]))
                continue
            command = self.commands[name]
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_ChatcoreGroup, invoke_without_command=True)
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
    cli(prog_name="chatcore")
