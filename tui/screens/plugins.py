"""The plugins screen: every plugin and backend, live, with pause/resume/reload/reset."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.message import Message as UIMessage
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static

from chatcore import ChatcoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from textual.app import ComposeResult

    from chatcore._plugins import PluginManager
    from chatcore.plugin import PluginStatus
    from tui.app import ChatcoreApp

__all__ = [
    "COLUMNS",
    "LAST_ERROR_WIDTH",
    "MIN_LAST_ERROR_WIDTH",
    "REFRESH_SECONDS",
    "PluginsScreen",
    "cell_text",
    "summary",
]

REFRESH_SECONDS = 0.5
"""How often the table is re-read from the engine."""

LAST_ERROR_WIDTH = 40
"""Characters of the last error shown in its cell before the screen is laid out."""

MIN_LAST_ERROR_WIDTH = 16
"""The last error column takes the table's spare width, but never less than this."""

COLUMNS = (
    "name",
    "type",
    "state",
    "priority",
    "calls",
    "failures",
    "timeouts",
    "circuit",
    "p50_ms",
    "p95_ms",
    "last_error",
)
"""Column keys, named after the fields of ``PluginStatus``."""

_LABELS = {
    "name": "name",
    "type": "type",
    "state": "state",
    "priority": "prio",
    "calls": "calls",
    "failures": "failures",
    "timeouts": "timeouts",
    "circuit": "circuit",
    "p50_ms": "p50 ms",
    "p95_ms": "p95 ms",
    "last_error": "last error",
}
_NUMERIC = frozenset({"priority", "calls", "failures", "timeouts", "p50_ms", "p95_ms"})

# Which theme colour marks a state worth noticing (CSS variable names of the theme).
_STATE_COLOURS = {"paused": "warning", "error": "error"}
_CIRCUIT_COLOURS = {"open": "error", "half_open": "warning"}


def cell_text(column: str, value: Any, *, width: int = LAST_ERROR_WIDTH) -> str:
    """How one value of a ``PluginStatus`` reads in its cell (plain text).

    The last error is cut to ``width`` with an ellipsis; the detail line shows all of it.
    """
    if value is None:
        return ""
    if column in ("p50_ms", "p95_ms"):
        return f"{float(value):.2f}"
    text = str(value)
    if column == "last_error":
        text = " ".join(text.split())  # a multi-line error would make the row taller
        if len(text) > width:
            text = text[: max(width - 1, 0)] + "…"
    return text


def summary(rows: Sequence[PluginStatus]) -> str:
    """The title line: how many plugins and backends, and what needs attention."""
    backends = sum(1 for r in rows if r.type == "backend")
    parts = [_count(len(rows) - backends, "plugin"), _count(backends, "backend")]
    open_circuits = sum(1 for r in rows if r.circuit == "open")
    half_open = sum(1 for r in rows if r.circuit == "half_open")
    paused = sum(1 for r in rows if r.state == "paused")
    failed = sum(1 for r in rows if r.state == "error")
    if open_circuits:
        parts.append(_count(open_circuits, "circuit") + " open")
    if half_open:
        parts.append(_count(half_open, "circuit") + " half open")
    if paused:
        parts.append(f"{paused} paused")
    if failed:
        parts.append(f"{failed} in error")
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- messages from the engine side ------------------------------------------------------------


@dataclass
class StatusRead(UIMessage):
    rows: list[PluginStatus]


@dataclass
class StatusFailed(UIMessage):
    text: str


@dataclass
class ActionDone(UIMessage):
    text: str
    error: bool = False


async def _pause(plugins: PluginManager, name: str) -> str:
    await plugins.pause(name)
    return f"Paused {name}."


async def _resume(plugins: PluginManager, name: str) -> str:
    await plugins.resume(name)
    return f"Resumed {name}."


async def _reload(plugins: PluginManager, name: str) -> str:
    # A failed reload raises (PluginLoadError, a ChatcoreError) and the old version
    # keeps running; the notice shows why.
    status = await plugins.reload(name)
    return f"Reloaded {name} ({status.state})."


async def _reset_circuit(plugins: PluginManager, name: str) -> str:
    plugins.reset_circuit(name)
    return f"Circuit of {name} reset."


class PluginsScreen(Screen[None]):
    """Plugins and backends with their state, circuit and call statistics."""

    DEFAULT_CSS = """
    PluginsScreen > #plugins-title {
        width: 1fr;
        padding: 0 1;
        background: $panel;
        color: $text;
        text-style: bold;
    }
    PluginsScreen > #plugins {
        height: 1fr;
    }
    PluginsScreen > #plugins-detail {
        height: auto;
        max-height: 4;
        padding: 0 1;
        background: $surface;
        color: $text-muted;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f2", "app.pop_screen", "Back", id="close_plugins"),
        Binding("p", "pause", "Pause", id="pause_plugin"),
        Binding("r", "resume", "Resume", id="resume_plugin"),
        Binding("l", "reload", "Reload", id="reload_plugin"),
        Binding("c", "reset_circuit", "Reset circuit", id="reset_circuit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, PluginStatus] = {}
        self._cells: dict[str, tuple[Text, ...]] = {}
        self._error_width = LAST_ERROR_WIDTH

    @property
    def chat_app(self) -> ChatcoreApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Label("Plugins and backends: waiting for the engine…", id="plugins-title")
        yield DataTable(id="plugins", cursor_type="row", zebra_stripes=True)
        yield Static("", id="plugins-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#plugins", DataTable)
        self._add_columns(table)
        self.read_status()
        self.set_interval(REFRESH_SECONDS, self.read_status)
        table.focus()

    # -- reading ------------------------------------------------------------------------------

    def read_status(self) -> None:
        """Ask the engine for fresh rows (read inside Trio: circuits use Trio's clock)."""
        bridge = self.chat_app.bridge
        engine = bridge.engine
        if engine is None or not bridge.running:
            error = getattr(self.chat_app, "engine_error", None)
            if error:
                title = self.query_one("#plugins-title", Label)
                title.update(Text(f"The engine is not running: {error}"))
            return

        def read() -> None:
            # An exception escaping a Trio callback would crash the whole engine run.
            try:
                rows = list(engine.plugins.get_plugin_status().values())
            except Exception as exc:
                self.post_message(StatusFailed(f"Could not read plugin status: {exc!r}"))
                return
            self.post_message(StatusRead(rows))

        # Trio's run may have ended before the bridge heard of it (RunFinishedError).
        with contextlib.suppress(RuntimeError):
            bridge.call(read)

    def on_status_read(self, event: StatusRead) -> None:
        self._rows = {row.name: row for row in event.rows}
        self._fill()
        self.query_one("#plugins-title", Label).update(Text(summary(event.rows)))
        self._show_detail()
        self._fit_last_error()

    def on_status_failed(self, event: StatusFailed) -> None:
        # In the title, not a notification: it would repeat at every refresh.
        self.query_one("#plugins-title", Label).update(Text(event.text))

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit_last_error)

    # -- the table ----------------------------------------------------------------------------

    def _add_columns(self, table: DataTable[Any]) -> None:
        for column in COLUMNS:
            width = self._error_width if column == "last_error" else None
            table.add_column(_LABELS[column], key=column, width=width)

    def _fill(self, *, rebuild: bool = False, selected: str | None = None) -> None:
        """Show ``self._rows``, touching only the cells that changed."""
        table = self.query_one("#plugins", DataTable)
        selected = selected or self._selected()
        cells = {name: self._row_cells(row) for name, row in self._rows.items()}
        if rebuild or list(cells) != [key.value for key in table.rows]:
            # Rows came or went (load, unload, reload): rebuild in the engine's order, and
            # keep the cursor on the plugin it was on rather than on the same index.
            table.clear()
            for name, row_cells in cells.items():
                table.add_row(*row_cells, key=name)
            if selected in cells:
                table.move_cursor(row=list(cells).index(selected), animate=False)
        else:
            for name, row_cells in cells.items():
                before = self._cells.get(name, ())
                for index, (column, cell) in enumerate(zip(COLUMNS, row_cells, strict=True)):
                    if index >= len(before) or not _same(before[index], cell):
                        table.update_cell(name, column, cell, update_width=True)
        self._cells = cells

    def _fit_last_error(self) -> None:
        """Give the last error column what the other columns leave of the table's width."""
        table = self.query_one("#plugins", DataTable)
        available = table.scrollable_content_region.width
        if available <= 0:
            return  # not laid out yet
        used = sum(
            column.get_render_width(table)
            for key, column in table.columns.items()
            if key != "last_error"
        )
        width = max(MIN_LAST_ERROR_WIDTH, available - used - 2 * table.cell_padding)
        if width == self._error_width:
            return
        self._error_width = width
        selected = self._selected()
        # DataTable has no public way to resize a column: put the columns back, then the rows.
        table.clear(columns=True)
        self._add_columns(table)
        self._fill(rebuild=True, selected=selected)

    def _row_cells(self, status: PluginStatus) -> tuple[Text, ...]:
        colours = self.app.get_css_variables()
        values = status.as_dict()
        cells = []
        for column in COLUMNS:
            text = cell_text(column, values[column], width=self._error_width)
            colour = None
            if column == "state":
                colour = _STATE_COLOURS.get(text)
            elif column == "circuit":
                colour = _CIRCUIT_COLOURS.get(text)
            # Text, never a plain str: DataTable would parse "[...]" in an error as markup.
            cells.append(
                Text(
                    text,
                    style=_style(colours.get(colour, "")) if colour else "",
                    justify="right" if column in _NUMERIC else "left",
                    no_wrap=True,
                    overflow="ellipsis",
                )
            )
        return tuple(cells)

    @on(DataTable.RowHighlighted, "#plugins")
    def _row_highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#plugins-detail", Static)
        name = self._selected()
        row = self._rows.get(name) if name is not None else None
        if row is None:
            detail.update("")
            return
        text = Text(row.name, style="bold")
        about = " ".join(part for part in (row.plugin, row.version) if part)
        if about:
            text.append(f"  {about}")
        if row.description:
            text.append(f"  {row.description}")
        if row.last_error:
            text.append(f"\nlast error: {row.last_error}")
        detail.update(text)

    # -- actions ------------------------------------------------------------------------------

    def _selected(self) -> str | None:
        table = self.query_one("#plugins", DataTable)
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return None if key.value is None else str(key.value)

    def _run(self, operation: Callable[[PluginManager, str], Awaitable[str]]) -> None:
        name = self._selected()
        engine = self.chat_app.bridge.engine
        if engine is None:
            self.notify("The engine is still starting.", severity="warning")
            return
        if name is None:
            self.notify("No plugin selected.", severity="warning")
            return

        async def act() -> None:
            # A failed admin action is reported, never allowed to take the engine down.
            try:
                text = await operation(engine.plugins, name)
            except ChatcoreError as exc:
                self.post_message(ActionDone(str(exc), error=True))
            except Exception as exc:
                self.post_message(ActionDone(f"{name}: {type(exc).__name__}: {exc}", error=True))
            else:
                self.post_message(ActionDone(text))

        self.chat_app.bridge.spawn(act)

    def action_pause(self) -> None:
        self._run(_pause)

    def action_resume(self) -> None:
        self._run(_resume)

    def action_reload(self) -> None:
        self._run(_reload)

    def action_reset_circuit(self) -> None:
        self._run(_reset_circuit)

    def on_action_done(self, event: ActionDone) -> None:
        # markup=False: plugin errors are arbitrary text and may contain "[".
        self.notify(event.text, severity="error" if event.error else "information", markup=False)
        self.read_status()


def _same(a: Text, b: Text) -> bool:
    # Text equality ignores the style, and a theme switch changes only the style.
    return (a.plain, str(a.style)) == (b.plain, str(b.style))


def _style(colour: str) -> Style | str:
    """A Rich style for a theme colour; themes may use names Rich doesn't know."""
    try:
        # The ANSI themes name their colours "ansi_red"; Rich calls that one "red".
        return Style(color=colour.removeprefix("ansi_"))
    except Exception:
        return ""
