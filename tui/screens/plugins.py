"""The plugins screen: every plugin and backend, live, with pause/resume/reload/reset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message as UIMessage
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

from chatcore import ChatcoreError

if TYPE_CHECKING:
    from textual.app import ComposeResult

    from chatcore.plugins import PluginStatus
    from tui.app import ChatcoreApp

__all__ = ["COLUMNS", "REFRESH_SECONDS", "PluginsScreen"]

REFRESH_SECONDS = 0.5
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


@dataclass
class StatusRead(UIMessage):
    rows: list[PluginStatus]


@dataclass
class ActionDone(UIMessage):
    text: str
    error: bool = False


class PluginsScreen(Screen[None]):
    """Plugins and backends with their state, circuit and call statistics."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f2", "app.pop_screen", "Back", id="close_plugins"),
        Binding("p", "pause", "Pause", id="pause_plugin"),
        Binding("r", "resume", "Resume", id="resume_plugin"),
        Binding("l", "reload", "Reload", id="reload_plugin"),
        Binding("c", "reset_circuit", "Reset circuit", id="reset_circuit"),
    ]

    @property
    def chat_app(self) -> ChatcoreApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Label("Plugins and backends", id="plugins-title")
        yield DataTable(id="plugins", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.read_status()
        self.set_interval(REFRESH_SECONDS, self.read_status)
        table.focus()

    def read_status(self) -> None:
        """Ask the engine for fresh rows (read inside Trio: circuits use Trio's clock)."""
        engine = self.chat_app.bridge.engine
        if engine is None:
            return
        self.chat_app.bridge.call(
            lambda: self.post_message(StatusRead(list(engine.plugins.get_plugin_status().values())))
        )

    def on_status_read(self, event: StatusRead) -> None:
        table = self.query_one(DataTable)
        for status in event.rows:
            row = status.as_dict()
            cells = ["" if row[c] is None else str(row[c]) for c in COLUMNS]
            if status.name in table.rows:
                for column, value in zip(COLUMNS, cells, strict=True):
                    table.update_cell(status.name, column, value)
            else:
                table.add_row(*cells, key=status.name)

    def _selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return None if key.value is None else str(key.value)

    def _run(self, what: str, call: Any) -> None:
        name = self._selected()
        engine = self.chat_app.bridge.engine
        if name is None or engine is None:
            return

        async def act() -> None:
            try:
                await call(engine.plugins, name)
            except ChatcoreError as exc:
                self.post_message(ActionDone(f"{what} {name}: {exc}", error=True))
            else:
                self.post_message(ActionDone(f"{what} {name}: done"))

        self.chat_app.bridge.spawn(act)

    def action_pause(self) -> None:
        self._run("pause", lambda plugins, name: plugins.pause(name))

    def action_resume(self) -> None:
        self._run("resume", lambda plugins, name: plugins.resume(name))

    def action_reload(self) -> None:
        self._run("reload", lambda plugins, name: plugins.reload(name))

    def action_reset_circuit(self) -> None:
        async def reset(plugins: Any, name: str) -> None:
            plugins.reset_circuit(name)

        self._run("reset circuit of", reset)

    def on_action_done(self, event: ActionDone) -> None:
        self.notify(event.text, severity="error" if event.error else "information")
        self.read_status()
