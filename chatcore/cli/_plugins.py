"""``chatcore plugins`` and ``chatcore backends``: what is loaded, and in what state."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ._common import (
    _engine_status,
    _guarded,
    _load,
    _print_json,
    _print_table,
    _run_trio,
    config_option,
    json_option,
)
from ._root import cli

HEALTH_TIMEOUT_S = 5.0
PLUGIN_JSON_KEYS = (
    "name",
    "type",
    "state",
    "priority",
    "calls",
    "failures",
    "timeouts",
    "circuit",
    "last_error",
    "p50_ms",
    "p95_ms",
    "process",
)


@cli.group(invoke_without_command=True)
@config_option
@json_option
@click.pass_context
def plugins(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """List plugins and backends with their state, circuit and call statistics.

    `chatcore plugins new NAME --type TYPE` writes a new plugin's skeleton.
    """
    if ctx.invoked_subcommand is not None:
        return
    config = _load(config_path)
    status = _engine_status(config)
    rows = [s.as_dict() for s in status.plugins.values()]
    if as_json:
        keys = list(PLUGIN_JSON_KEYS)
        _print_json([{k: row[k] for k in keys} for row in rows])
        return
    _print_table(
        rows,
        ["name", "type", "state", "priority", "calls", "failures", "timeouts", "circuit"],
        extra="last_error",
    )


@plugins.command("new")
@click.argument("name")
@click.option(
    "--type",
    "plugin_type",
    type=click.Choice(["processor", "feature", "middleware", "backend"]),
    default="processor",
    show_default=True,
    help="What the plugin is.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    help="Folder to create NAME/ in (default: the current folder).",
)
def plugins_new(name: str, plugin_type: str, directory: Path) -> None:
    """Write a working plugin skeleton in NAME/: module, test, pyproject.toml, README.

    The generated test runs the plugin through a real engine on the echo backend;
    `pytest NAME` passes as written.
    """
    from ..scaffold import write_skeleton

    scaffold = _guarded(lambda: write_skeleton(name, plugin_type, directory))
    for path in scaffold.files:
        click.echo(f"created {path}")
    click.echo(f"next: pytest {scaffold.root}   (then edit {scaffold.files[0].name})")


@cli.group(invoke_without_command=True)
@click.pass_context
def backends(ctx: click.Context) -> None:
    """Configured backends (see `backends list`)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(backends_list)


@backends.command("list")
@config_option
@json_option
def backends_list(config_path: Path | None = None, as_json: bool = False) -> None:
    """List the configured backends; the default one is marked."""
    config = _load(config_path)
    status = _engine_status(config, all_backends=True)
    rows = []
    for name, backend in config.backends.items():
        plugin_status = status.plugins[name]
        rows.append(
            {
                "name": name,
                "plugin": backend.plugin,
                "model": backend.model or _default_model(backend.plugin),
                "state": plugin_status.state,
                "circuit": plugin_status.circuit,
                "is_default": name == config.default_backend,
                "description": plugin_status.description or plugin_status.last_error or "",
            }
        )
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        row["default"] = "*" if row["is_default"] else ""
    _print_table(rows, ["default", "name", "plugin", "model", "state"], extra="description")


def _default_model(plugin: str) -> str | None:
    return "echo" if plugin == "echo" else None


@backends.command("models")
@click.argument("name")
@config_option
@json_option
def backends_models(name: str, config_path: Path | None, as_json: bool) -> None:
    """List the models backend NAME offers."""
    config = _load(config_path)

    async def main() -> list[str]:
        from .._engine import open_engine

        async with open_engine(config) as engine:
            engine.conversation(backend=name)  # an unknown name lists the configured ones
            await engine.plugins.ensure_backend(name)
            return await engine.plugins.get_backend_provider(name).list_models()

    models: list[str] = _guarded(lambda: _run_trio(main))
    if as_json:
        _print_json(models)
    else:
        for model in models:
            click.echo(model)


@backends.command("check")
@config_option
@json_option
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=HEALTH_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for each backend.",
)
def backends_check(config_path: Path | None, as_json: bool, timeout_s: float) -> None:
    """Check that each configured backend is reachable (one line each).

    Exits 1 when any backend is not.
    """
    config = _load(config_path)

    async def main() -> list[dict[str, Any]]:
        import trio

        from .._engine import open_engine

        results: dict[str, dict[str, Any]] = {}
        async with open_engine(config) as engine:
            await engine.plugins.load_all_backends()
            statuses = engine.plugins.get_plugin_status()

            async def check(backend: str) -> None:
                row: dict[str, Any] = {"name": backend, "ok": False, "detail": ""}
                results[backend] = row
                if statuses[backend].state != "active":
                    row["detail"] = statuses[backend].last_error or statuses[backend].state
                    return
                provider = engine.plugins.get_backend_provider(backend)
                with trio.move_on_after(timeout_s) as scope:
                    report = dict(await provider.health())
                    row.update(ok=bool(report.get("ok")), url=report.get("url"))
                    row["detail"] = str(report.get("detail") or "")
                if scope.cancelled_caught:
                    row["detail"] = f"no answer within {timeout_s:g} s"

            async with trio.open_nursery() as nursery:
                for backend in config.backends:
                    nursery.start_soon(check, backend)
        return [results[b] for b in config.backends]

    rows: list[dict[str, Any]] = _guarded(lambda: _run_trio(main))
    if as_json:
        _print_json(rows)
    else:
        width = max(len(r["name"]) for r in rows)
        for row in rows:
            mark = "ok  " if row["ok"] else "FAIL"
            name, url = row["name"], row.get("url") or ""
            detail = row["detail"].removeprefix(f"{name}: ")
            if url and url not in detail:
                detail = f"{url}  {detail}".strip()
            click.echo(f"{mark}  {name.ljust(width)}  {detail}".rstrip())
    if not all(row["ok"] for row in rows):
        sys.exit(1)
