"""The ``chatcore`` command line.

Heavy imports (Trio, pydantic, sqlite-utils, the engine) happen inside the
commands, so ``chatcore --help`` starts fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Config
    from .messages import Message
    from .store import ConversationSummary, Store

__all__ = [
    "PLUGIN_COMMANDS",
    "config_option",
    "json_option",
    "load_command_config",
    "main",
    "print_json",
    "run_guarded",
]

EXIT_INTERRUPTED = 130
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


def _guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body; chatcore's own errors become one line and an exit code."""
    from .errors import ChatcoreError

    try:
        return fn()
    except ChatcoreError as exc:
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
        _fail(f"{exc}{notes}", exc.exit_code)


def _load(config_path: Path | None, **overrides: Any) -> Config:
    """Load the config; `chatcore --config F --backend B CMD` applies to CMD too."""
    from .config import load_config

    root = click.get_current_context().find_root().params
    config_path = config_path or root.get("config_path")
    if overrides.get("default_backend") is None and root.get("backend"):
        overrides["default_backend"] = root["backend"]
    cleaned = {k: v for k, v in overrides.items() if v is not None}
    config: Config = _guarded(lambda: load_config(config_path, **cleaned))
    return config


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# Public helpers for plugins that add commands (see ``PLUGIN_COMMANDS``): the same
# config lookup, error lines and exit codes as chatcore's own commands.
load_command_config = _load
run_guarded = _guarded
print_json = _print_json

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
        from .errors import PluginLoadError
        from .plugins import resolve_plugin_class

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
        from ._repl import run_repl

        _guarded(lambda: run_repl(config))


@cli.command()
@click.option("--backend", default=None, help="Backend to chat with (a [backends.NAME] table).")
@click.option("--conversation", "conversation_id", default=None, help="Open conversation ID.")
@config_option
def tui(backend: str | None, conversation_id: str | None, config_path: Path | None) -> None:
    """Open the chat app."""
    config = _load(config_path, default_backend=backend)
    from tui.app import run_tui

    _guarded(lambda: run_tui(config, conversation=conversation_id))


# --- ask -------------------------------------------------------------------------------------


@cli.command()
@click.argument("prompt", required=False)
@click.option("--backend", default=None, help="Backend name (a [backends.NAME] table).")
@click.option("--model", default=None, help="Model to ask for (default: the backend's).")
@click.option("--system", default=None, help="System prompt for this turn.")
@click.option("--conversation", "conversation_id", default=None, help="Continue conversation ID.")
@click.option(
    "-c", "--continue", "continue_latest", is_flag=True, help="Continue the latest conversation."
)
@config_option
@json_option
def ask(
    prompt: str | None,
    backend: str | None,
    model: str | None,
    system: str | None,
    conversation_id: str | None,
    continue_latest: bool,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Ask one question and stream the reply to stdout.

    The prompt comes from PROMPT or, when it is missing, from standard input.
    """
    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            _fail("no prompt: give it as an argument or on standard input", 2)
        prompt = sys.stdin.read()
    if conversation_id and continue_latest:
        _fail("use either --conversation ID or --continue, not both", 2)
    config = _load(config_path, default_backend=backend)
    text = prompt

    def run() -> int:
        import trio

        return trio.run(
            _ask_async, config, text, model, system, conversation_id, continue_latest, as_json
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
) -> int:
    from ._engine import open_engine
    from ._repl import stream_reply

    async with open_engine(config) as engine:
        if continue_latest:
            conversation = engine.latest_conversation() or engine.conversation()
        else:
            conversation = engine.conversation(conversation_id)
        reply_stream = conversation.stream(prompt, model=model, system=system)
        error = await stream_reply(reply_stream, None if as_json else sys.stdout)
        reply = reply_stream.message
        if as_json and reply is not None and error is None:
            _print_json(_ask_json(conversation.id, reply))
        elif reply is not None:
            _print_citations(reply)
    if error is not None:
        raise error
    if reply_stream.cancelled:
        click.echo("interrupted: the partial reply is saved", err=True)
        return EXIT_INTERRUPTED
    return 0


def _print_citations(reply: Message) -> None:
    from .messages import citation_lines

    lines = citation_lines(reply.metadata.get("citations"))
    if lines:
        click.echo("\nSources:")
        for line in lines:
            click.echo(f"  {line}")


def _ask_json(conversation_id: str, reply: Message) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "message_id": reply.id,
        "content": reply.content,
        "backend": reply.metadata.get("backend"),
        "model": reply.model,
        "tokens_in": reply.tokens_in,
        "tokens_out": reply.tokens_out,
        "status": str(reply.status),
        "citations": list(reply.metadata.get("citations") or []),
    }


# --- plugins and backends --------------------------------------------------------------------


def _engine_status(config: Config, *, all_backends: bool = False) -> Any:
    import trio

    from ._engine import open_engine

    async def main() -> Any:
        async with open_engine(config) as engine:
            if all_backends:
                await engine.plugins.load_all_backends()
            return engine.status()

    return _guarded(lambda: trio.run(main))


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
    from .scaffold import write_skeleton

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
        from ._engine import open_engine

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

        from ._engine import open_engine

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


# --- history ---------------------------------------------------------------------------------


HISTORY_SEARCH_LIMIT = 20
HISTORY_LIST_LIMIT = 100


def _open_store(config_path: Path | None) -> Store:
    from .store import Store

    config = _load(config_path)
    # The outbox follows the config exactly as in the engine: a deletion made
    # here replicates when Redis is configured, and queues nothing otherwise.
    outbox = bool(config.replication.redis_url)
    store: Store = _guarded(lambda: Store(config.db_path, outbox=outbox))
    return store


def _resolve_or_fail(store: Store, conversation_id: str) -> ConversationSummary:
    """The conversation that ID (or a unique prefix of it) names, else exit 2."""
    from .errors import ConversationNotFound

    full_id = store.resolve_conversation_id(conversation_id)
    summary = store.get_conversation(full_id) if full_id else None
    if summary is None:
        _fail(str(ConversationNotFound(conversation_id)), 2)
    return summary


@cli.group()
def history() -> None:
    """Stored conversations."""


@history.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=HISTORY_LIST_LIMIT,
    show_default=True,
    help="Show at most N.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every conversation.")
@config_option
@json_option
def history_list(limit: int, show_all: bool, config_path: Path | None, as_json: bool) -> None:
    """List conversations, most recently updated first."""
    store = _open_store(config_path)
    try:
        # One more than shown tells whether the list was cut.
        conversations = store.list_conversations(limit=None if show_all else limit + 1)
    finally:
        store.close()
    cut = not show_all and len(conversations) > limit
    if cut:
        conversations = conversations[:limit]
        if not as_json:
            click.echo(f"(the newest {limit}; --limit N or --all for more)", err=True)
    rows = [
        {
            "id": c.id,
            "title": c.title,
            "updated_at": c.updated_at.isoformat(),
            "message_count": c.message_count,
        }
        for c in conversations
    ]
    if as_json:
        _print_json(rows)
        return
    _print_table(rows, ["id", "updated_at", "message_count"], extra="title")


@history.command("show")
@click.argument("conversation_id")
@config_option
@json_option
def history_show(conversation_id: str, config_path: Path | None, as_json: bool) -> None:
    """Show one conversation (ID may be a unique prefix)."""
    from .errors import ConversationNotFound

    store = _open_store(config_path)
    try:
        full_id = store.resolve_conversation_id(conversation_id)
        summary = store.get_conversation(full_id) if full_id else None
        if summary is None:
            _fail(str(ConversationNotFound(conversation_id)), 2)
        messages = store.get_messages(summary.id)
    finally:
        store.close()
    if as_json:
        _print_json(
            {
                "id": summary.id,
                "title": summary.title,
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
    for m in messages:
        flag = "" if str(m.status) == "complete" else f" [{m.status}]"
        click.echo(f"\n{m.role}{flag}:\n{m.content}")


@history.command("search")
@click.argument("text")
@click.option(
    "--limit",
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

    from .export import export_format, read_transcript

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
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"exported {len(messages)} message(s) to {output}", err=True)


@history.command("delete")
@click.argument("conversation_id")
@click.option("--yes", is_flag=True, help="Delete without asking.")
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


# --- replay ----------------------------------------------------------------------------------


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
    from .replay import render_report, replay_conversation

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


# --- sync ------------------------------------------------------------------------------------


@cli.group()
def sync() -> None:
    """Replication to Redis ([replication] redis_url): push, pull, status."""


@sync.command("push")
@config_option
def sync_push(config_path: Path | None) -> None:
    """Send every pending local change to Redis once, then exit.

    Exits 1 with one line when Redis is unreachable, 2 when replication is off.
    """
    from .replication import describe_target, sync_push

    config = _load(config_path)
    count: int = _guarded(lambda: sync_push(config))
    click.echo(f"pushed {count} change(s) to {describe_target(config.replication.redis_url)}")


@sync.command("pull")
@config_option
def sync_pull(config_path: Path | None) -> None:
    """Merge the changes other devices pushed since the last pull, then exit."""
    from .replication import describe_target, sync_pull

    config = _load(config_path)
    count: int = _guarded(lambda: sync_pull(config))
    target = describe_target(config.replication.redis_url)
    click.echo(f"pulled from {target}: {count} change(s) applied")


@sync.command("status")
@config_option
@json_option
def sync_status(config_path: Path | None, as_json: bool) -> None:
    """Connectivity (one PING), pending outbox rows, device id, last push and pull."""
    from .replication import sync_status

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


# --- config ----------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("path")
@config_option
def config_path_cmd(config_path: Path | None) -> None:
    """Print which config file is used, and why."""
    from .config import resolve_config_path

    path, source = _guarded(lambda: resolve_config_path(config_path))
    click.echo(f"{path}  ({source})")


@config_group.command("check")
@config_option
def config_check(config_path: Path | None) -> None:
    """Validate the config, including that every plugin and backend can be loaded."""
    config = _load(config_path)
    status = _engine_status(config, all_backends=True)
    broken = [s for s in status.plugins.values() if s.state == "error"]
    for s in broken:
        click.echo(f"error: {s.name}: {s.last_error}", err=True)
    if broken:
        sys.exit(2)
    click.echo(f"ok: {config.source}")


@config_group.command("show")
@config_option
@click.option("--docs", is_flag=True, help="Also print what each key means.")
def config_show(config_path: Path | None, docs: bool) -> None:
    """Print the effective config as JSON (secrets masked)."""
    config = _load(config_path)
    _print_json(config.display_dict())
    if docs:
        for key, doc in config.field_docs().items():
            click.echo(f"{key}: {doc}")


def main() -> None:
    cli(prog_name="chatcore")
