"""``chatcore history``: list, show, search, export and delete stored conversations."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._common import _fail, _guarded, _load, _print_json, _print_table, config_option, json_option
from ._root import cli

if TYPE_CHECKING:
    from ..store import ConversationSummary, Store

HISTORY_SEARCH_LIMIT = 20
HISTORY_LIST_LIMIT = 100


def _open_store(config_path: Path | None) -> Store:
    from ..store import Store

    config = _load(config_path)
    # The outbox follows the config exactly as in the engine: a deletion made
    # here replicates when Redis is configured, and queues nothing otherwise.
    outbox = bool(config.replication.redis_url)
    store: Store = _guarded(lambda: Store(config.db_path, outbox=outbox))
    return store


def _resolve_or_fail(store: Store, conversation_id: str) -> ConversationSummary:
    """The conversation that ID (or a unique prefix of it or of its short id) names, else exit 2."""
    from ..errors import ConversationNotFound
    from ._common import _error_line

    full_id: str | None = _guarded(lambda: store.resolve_conversation_id(conversation_id))
    summary = store.get_conversation(full_id) if full_id else None
    if summary is None:
        _fail(_error_line(ConversationNotFound(conversation_id)), 2)
    return summary


@cli.group()
def history() -> None:
    """Stored conversations."""


@history.command("list")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=HISTORY_LIST_LIMIT,
    show_default=True,
    help="Show at most N.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every conversation.")
@click.option(
    "--failed",
    "show_failed",
    is_flag=True,
    help="Also show conversations whose every turn failed (hidden by default).",
)
@config_option
@json_option
def history_list(
    limit: int, show_all: bool, show_failed: bool, config_path: Path | None, as_json: bool
) -> None:
    """List conversations, most recently updated first.

    A conversation whose every turn failed (the backend was down, a key missing) is
    kept, with the error as its reply, but listed only with --failed.
    """
    store = _open_store(config_path)
    try:
        # One more than shown tells whether the list was cut.
        conversations = store.list_conversations(
            limit=None if show_all else limit + 1, failed=show_failed
        )
        cut = not show_all and len(conversations) > limit
        if cut:
            conversations = conversations[:limit]
        short_ids = store.short_ids([c.id for c in conversations])
        hidden = 0 if show_failed or as_json else store.count_failed_conversations()
    finally:
        store.close()
    if cut and not as_json:
        click.echo(f"(the newest {limit}; --limit N or --all for more)", err=True)
    if hidden:
        those = "conversation" if hidden == 1 else "conversations"
        are, them = ("is", "it") if hidden == 1 else ("are", "them")
        note = f"({hidden} {those} whose every turn failed {are} hidden; --failed shows {them})"
        click.echo(note, err=True)
    rows = [
        {
            "id": c.id,
            "short_id": short_ids[c.id],
            "title": c.title,
            "updated_at": c.updated_at.isoformat(),
            "message_count": c.message_count,
            "failed": c.failed,
        }
        for c in conversations
    ]
    if as_json:
        _print_json(rows)
        return
    # People type what they see: the table's ID column is the short id.
    table = [
        {
            **row,
            "id": row["short_id"],
            "title": f"[failed] {row['title']}" if row["failed"] else row["title"],
        }
        for row in rows
    ]
    _print_table(table, ["id", "updated_at", "message_count"], extra="title")


@history.command("show")
@click.argument("conversation_id")
@config_option
@json_option
def history_show(conversation_id: str, config_path: Path | None, as_json: bool) -> None:
    """Show one conversation (ID may be a unique prefix, or the short id `list` shows)."""
    store = _open_store(config_path)
    try:
        summary = _resolve_or_fail(store, conversation_id)
        messages = store.get_messages(summary.id)
        system = store.conversation_system(summary.id)
    finally:
        store.close()
    if as_json:
        _print_json(
            {
                "id": summary.id,
                "title": summary.title,
                "backend": summary.backend,
                "model": summary.model,
                "system": system,
                "messages": [
                    {
                        "id": m.id,
                        "role": str(m.role),
                        "content": m.content,
                        "status": str(m.status),
                        "model": m.model,
                        "created_at": m.created_at.isoformat(),
                    }
                    for m in messages
                ],
            }
        )
        return
    click.echo(f"# {summary.title}  ({summary.id})")
    on = " · ".join(part for part in (summary.backend, summary.model) if part)
    if on:
        click.echo(f"on: {on}")
    if system:
        click.echo(f"system: {system}")
    for m in messages:
        flag = "" if str(m.status) == "complete" else f" [{m.status}]"
        click.echo(f"\n{m.role}{flag}:\n{m.content}")


@history.command("search")
@click.argument("text")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=HISTORY_SEARCH_LIMIT,
    show_default=True,
    help="Show at most N matches.",
)
@config_option
@json_option
def history_search(text: str, limit: int, config_path: Path | None, as_json: bool) -> None:
    """Find messages containing every word of TEXT, newest first.

    Words match whole words and their forms ("run" finds "running"); end a word
    with * to match a prefix. Quotes and other punctuation are plain text.
    """
    if not text.strip():
        _fail("nothing to search for: give at least one word", 2)
    store = _open_store(config_path)
    try:
        hits = store.search(text, limit=limit)
    finally:
        store.close()
    if as_json:
        _print_json([hit.as_dict() for hit in hits])
        return
    if not hits:
        click.echo("(no matches)")
        return
    for hit in hits:
        when = hit.created_at.strftime("%Y-%m-%d %H:%M")
        click.echo(f"{hit.conversation_id}  {when}  {hit.role}  {hit.title}")
        click.echo(f"    {' '.join(hit.snippet.split())}")


@history.command("export")
@click.argument("conversation_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "json"]),
    default="md",
    show_default=True,
    help="Markdown for reading, JSON for tools.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE (created owner-only) instead of standard output.",
)
@config_option
def history_export(
    conversation_id: str, fmt: str, output: Path | None, config_path: Path | None
) -> None:
    """Export one conversation (ID may be a unique prefix) as Markdown or JSON."""
    import os

    from ..export import export_format, read_transcript

    store = _open_store(config_path)
    try:
        summary = _resolve_or_fail(store, conversation_id)
        transcript = read_transcript(store, summary.id)
    finally:
        store.close()
    messages = transcript.messages
    text = transcript.render(export_format(fmt))
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        # Owner-only like the database: an export is the same private history.
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}", 2)  # a bad path: bad input
    click.echo(f"exported {len(messages)} message(s) to {output}", err=True)


@history.command("delete")
@click.argument("conversation_id")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@config_option
def history_delete(conversation_id: str, yes: bool, config_path: Path | None) -> None:
    """Delete a conversation (ID may be a unique prefix) and all its messages.

    Asks first on a terminal; anywhere else (scripts, pipes) --yes is required.
    With replication on, the deletion reaches the other devices too.
    """
    store = _open_store(config_path)
    try:
        summary = _resolve_or_fail(store, conversation_id)
        if not yes:
            if not sys.stdin.isatty():
                _fail("standard input is not a terminal: add --yes to delete without asking", 2)
            question = f"Delete “{summary.title}” ({summary.id}, {summary.message_count} messages)?"
            if not click.confirm(question, default=False):
                click.echo("kept")
                return
        store.delete_conversation(summary.id)
    finally:
        store.close()
    click.echo(f"deleted {summary.id}  {summary.title}")
