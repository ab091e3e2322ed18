"""What every command shares: the --config and --json options, loading the config,
error lines and exit codes, JSON and table output, running Trio.

Plugins that add commands use the same helpers, re-exported by ``chatcore.cli``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import Config

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $CHATCORE_CONFIG, the user config, the shipped default).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _prompt_text(data: bytes, source: str) -> str:
    """Decode a prompt as UTF-8, whatever the locale; a byte that is not UTF-8 fails here,
    before the turn, rather than in the store after the reply has printed."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(
            f"{source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it first, e.g. with `iconv -f latin1 -t utf-8`",
            2,
        )


def _read_stdin_prompt() -> str:
    """The prompt piped on stdin, without the line ending that `echo` or a file adds."""
    buffer = getattr(sys.stdin, "buffer", None)
    data = buffer.read() if buffer is not None else sys.stdin.read().encode("utf-8")
    text = _prompt_text(data, "standard input")
    return text.removesuffix("\n").removesuffix("\r")


def _argument_prompt(prompt: str) -> str:
    """Python decodes argv with surrogateescape: recover the bytes and check them."""
    return _prompt_text(os.fsencode(prompt), "the prompt")


def _error_line(exc: BaseException) -> str:
    """An error as the command line says it: the message, its notes, then the CLI's hint.

    The library's messages name config keys and the API; only here is advice added
    that works on the command line alone (``--backend NAME``, a ``chatcore`` command).
    """
    line = str(exc) + "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
    hint = getattr(exc, "cli_hint", None)
    if hint:
        line += f" {hint}" if hint.startswith("(") else f"; {hint}"
    return line


def _guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body; chatcore's own errors become one line and an exit code."""
    from ..errors import ChatcoreError

    try:
        return fn()
    except ChatcoreError as exc:
        _fail(_error_line(exc), exc.exit_code)


def _load(config_path: Path | None, **overrides: Any) -> Config:
    """Load the config; `chatcore --config F --backend B CMD` applies to CMD too."""
    from ..config import load_config

    root = click.get_current_context().find_root().params
    config_path = config_path or root.get("config_path")
    if overrides.get("default_backend") is None and root.get("backend"):
        overrides["default_backend"] = root["backend"]
    cleaned = {k: v for k, v in overrides.items() if v is not None}
    config: Config = _guarded(lambda: load_config(config_path, **cleaned))
    return config


def _print_json(value: Any) -> None:
    import json  # here, not at the top: `chatcore --help` need not pay 2 ms for it

    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# Public helpers for plugins that add commands (``chatcore.commands`` entry points):
# the same config lookup, error lines and exit codes as chatcore's own commands.
load_command_config = _load
run_guarded = _guarded
print_json = _print_json


def _engine_status(config: Config, *, all_backends: bool = False) -> Any:
    import trio

    from .._engine import open_engine

    async def main() -> Any:
        async with open_engine(config) as engine:
            if all_backends:
                await engine.plugins.load_all_backends()
            return engine.status()

    return _guarded(lambda: trio.run(main))


def _run_trio(main: Callable[[], Any]) -> Any:
    import trio

    return trio.run(main)


def _print_table(rows: list[dict[str, Any]], columns: list[str], *, extra: str) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[("" if r[c] is None else str(r[c])) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row, data in zip(cells, rows, strict=True):
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
        if data.get(extra):
            line += f"  {data[extra]}"
        click.echo(line.rstrip())
