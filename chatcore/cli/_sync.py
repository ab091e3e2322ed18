"""``chatcore sync``: push, pull and status of replication to Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import _guarded, _load, _print_json, config_option, json_option
from ._root import cli

if TYPE_CHECKING:
    from pathlib import Path


@cli.group()
def sync() -> None:
    """Replication to Redis ([replication] redis_url): push, pull, status."""


@sync.command("push")
@config_option
def sync_push(config_path: Path | None) -> None:
    """Send every pending local change to Redis once, then exit.

    Exits 1 with one line when Redis is unreachable, 2 when replication is off.
    """
    from ..replication import describe_target, sync_push

    config = _load(config_path)
    count: int = _guarded(lambda: sync_push(config))
    click.echo(f"pushed {count} change(s) to {describe_target(config.replication.redis_url)}")


@sync.command("pull")
@config_option
def sync_pull(config_path: Path | None) -> None:
    """Merge the changes other devices pushed since the last pull, then exit."""
    from ..replication import describe_target, sync_pull

    config = _load(config_path)
    count: int = _guarded(lambda: sync_pull(config))
    target = describe_target(config.replication.redis_url)
    click.echo(f"pulled from {target}: {count} change(s) applied")


@sync.command("status")
@config_option
@json_option
def sync_status(config_path: Path | None, as_json: bool) -> None:
    """Connectivity (one PING), pending outbox rows, device id, last push and pull."""
    from ..replication import sync_status

    config = _load(config_path)
    status = _guarded(lambda: sync_status(config))
    if as_json:
        _print_json(status.as_dict())
        return
    if status.state == "off":
        click.echo("replication is off ([replication] redis_url is empty)")
        return
    for key, value in status.as_dict().items():
        click.echo(f"{key}: {'-' if value is None else value}")
