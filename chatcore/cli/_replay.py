"""``chatcore replay``: a stored conversation through a (possibly other) pipeline."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import _guarded, _load, _print_json, _run_trio, json_option
from ._root import cli


@cli.command()
@click.argument("conversation_id")
@click.option(
    "--config",
    "other_config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config whose pipeline to replay through (default: the usual lookup).",
)
@click.option("--backend", default=None, help="Backend to answer with (a [backends.NAME] table).")
@json_option
def replay(
    conversation_id: str, other_config: Path | None, backend: str | None, as_json: bool
) -> None:
    """Replay a stored conversation (ID may be a unique prefix) through a pipeline.

    Shows per turn what each processor changed, whether a plugin blocked it, and
    the stored reply next to the new one. Nothing is stored: the replay runs on a
    temporary copy of the database.
    """
    from ..replay import render_report, replay_conversation

    source = _load(None)  # where the conversation is: `chatcore --config F replay` or lookup
    pipeline = _load(other_config) if other_config is not None else source
    backend = backend or click.get_current_context().find_root().params.get("backend")
    report = _guarded(
        lambda: _run_trio(
            lambda: replay_conversation(
                conversation_id, source=source, pipeline=pipeline, backend=backend
            )
        )
    )
    if as_json:
        _print_json([turn.as_dict() for turn in report.turns])
    else:
        click.echo(render_report(report))
