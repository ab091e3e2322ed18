"""``chatcore config``: which file is used, whether it is valid, the effective values."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ._common import _engine_status, _fail, _guarded, _load, _print_json, config_option
from ._root import cli

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Config
    from ..plugin import PluginStatus


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("path")
@config_option
def config_path_cmd(config_path: Path | None) -> None:
    """Print the config files in effect, in order (later ones win), and why."""
    from ..config import config_layers, user_config_path

    root = click.get_current_context().find_root().params
    layers = _guarded(lambda: config_layers(config_path or root.get("config_path")))
    for path, source in layers:
        click.echo(f"{path}  ({source})")
    if len(layers) == 1 and layers[0][1] in ("--config", "$CHATCORE_CONFIG"):
        click.echo("note: read alone, not layered over the shipped default", err=True)
    elif len(layers) == 1:
        click.echo(
            f"note: no user config; create {user_config_path()} to layer your settings "
            "over the shipped default",
            err=True,
        )


@config_group.command("check")
@config_option
def config_check(config_path: Path | None) -> None:
    """Validate the config, including that every plugin and backend can be loaded."""
    config = _load(config_path)
    if config.tui.theme:
        from tui.app import unknown_theme  # Textual's themes: imported only when one is set

        problem = unknown_theme(config)
        if problem is not None:
            _fail(problem, 2)
    status = _engine_status(config, all_backends=True)
    broken = [s for s in status.plugins.values() if s.state == "error"]
    for s in broken:
        click.echo(f"error: {_where(config, s)}", err=True)
    if broken:
        sys.exit(2)
    click.echo(f"ok: {config.source}")


@config_group.command("show")
@config_option
@click.option("--docs", is_flag=True, help="Also print what each key means.")
@click.option(
    "--origin", is_flag=True, help="One `key = value  # origin` line per value: which file set it."
)
def config_show(config_path: Path | None, docs: bool, origin: bool) -> None:
    """Print the effective config as JSON (secrets masked)."""
    config = _load(config_path)
    if origin:
        import json

        from .._config_errors import dotted, flat_items

        origins = config.value_origins()
        for loc, value in flat_items(config.display_dict()):
            key = dotted(loc)
            click.echo(f"{key} = {json.dumps(value, ensure_ascii=False)}  # {origins[key]}")
    else:
        _print_json(config.display_dict())
    if docs:
        for key, doc in config.field_docs().items():
            click.echo(f"{key}: {doc}")


def _where(config: Config, status: PluginStatus) -> str:
    """A load error as a config error: the file and the dotted key of the table at fault.

    An unknown or unimportable plugin is the ``plugin`` key's fault; anything else
    the table's. A plugin found in a plugin directory has no table: it keeps its name.
    """
    problem = status.last_error or "failed to load"
    loc: tuple[str | int, ...] | None = None
    if status.type == "backend" and status.name in config.backends:
        loc = ("backends", status.name)
    else:
        for index, entry in enumerate(config.plugins):
            if status.name in (entry.name, entry.instance_name) or (
                entry.name is None and entry.plugin == status.plugin
            ):
                loc = ("plugins", index)
                break
    if loc is None:
        return f"{status.name}: {problem}"
    file = config.file_for(loc)
    if any(problem.startswith(f"{source}: ") for source in config.sources):
        return problem  # a ConfigError already: it names its file and key
    key = f"backends.{loc[1]}" if loc[0] == "backends" else f"plugins[{loc[1]}]"
    if problem.startswith(f"{key}."):
        return f"{file}: {problem}"
    if problem.startswith(f"plugin {status.plugin!r}"):
        key += ".plugin"
    return f"{file}: {key}: {problem}"
