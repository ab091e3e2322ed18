"""`chatcore greet`: a command added through the `chatcore.commands` entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from chatcore.config import validate_settings
from chatcore.plugin import config_option, json_option, load_command_config, print_json, run_guarded

from . import GreeterSettings

if TYPE_CHECKING:
    from pathlib import Path

    from chatcore.config import Config

__all__ = ["greet_command"]


def greet_command() -> click.Command:
    """Greet NAME as the example_greeter plugin is configured to."""
    return greet


@click.command()
@click.argument("name")
@config_option
@json_option
def greet(name: str, config_path: Path | None, as_json: bool) -> None:
    """Greet NAME with the greeting of the config's example_greeter plugin.

    Without an example_greeter entry in [[plugins]] the default greeting is used.
    """
    config = load_command_config(config_path)
    settings, configured = run_guarded(lambda: greeter_settings(config))
    text = f"{settings.greeting}, {name}!"
    if as_json:
        print_json({"text": text, "greeting": settings.greeting, "configured": configured})
        return
    click.echo(text)
    if not configured:
        click.echo(f"(no example_greeter plugin in {config.source}: default greeting)", err=True)


def greeter_settings(config: Config) -> tuple[GreeterSettings, bool]:
    """The settings of the first enabled example_greeter entry, and whether there is one."""
    for index, entry in enumerate(config.plugins):
        if entry.enabled and entry.plugin == "example_greeter":
            key = f"plugins[{index}].config"
            settings = validate_settings(GreeterSettings, entry.config, path=config.source, key=key)
            return settings, True
    return GreeterSettings(), False
