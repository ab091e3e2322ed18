"""The plugins and help screens, driven through Textual's Pilot on the real engine (echo)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.style import Style
from textual.pilot import Pilot
from textual.widgets import DataTable, Label

import tui.app
from chatcore import Config, load_config
from chatcore.plugin import PluginStatus
from tui.app import ChatcoreApp
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen
from tui.screens.plugins import MIN_LAST_ERROR_WIDTH, PluginsScreen, cell_text, summary

pytestmark = pytest.mark.asyncio

BASE = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'

ALWAYS_FAILS = """
[[plugins]]
plugin = "engine_plugins:AlwaysFails"
circuit_failure_threshold = 2
"""

HOT_MODULE = """
from chatcore import PluginResult
from chatcore.plugin import BaseMessageProcessor, PluginMetadata, PluginType


class Hot(BaseMessageProcessor):
    metadata = PluginMetadata(name="hot", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(self, message, context):
        return PluginResult.ok(message.replace(content=message.content + "{tag}"))
"""

BRACKETS_MODULE = """
from chatcore.plugin import BaseMessageProcessor, PluginMetadata, PluginType


class Hot(BaseMessageProcessor):
    metadata = PluginMetadata(name="hot", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(self, message, context):
        raise ValueError("bad [red]value[/] [/oops]")
"""


class RecordingApp(ChatcoreApp):
    """The app, keeping the notifications it shows."""

    # CSS_PATH is relative to the module defining the class: point at the app's own file.
    CSS_PATH = Path(tui.app.__file__).with_name("chatcore.tcss")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.notes: list[tuple[str, str]] = []

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        self.notes.append((str(severity), message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


# --- helpers ---------------------------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def config_with(tmp_path: Path, extra: str = "") -> Config:
    path = tmp_path / "chatcore.toml"
    path.write_text(BASE + extra)
    return load_config(path)


async def started(pilot: Pilot[None]) -> ChatcoreApp:
    app = pilot.app
    assert isinstance(app, ChatcoreApp)
    await wait_for(lambda: app.bridge.engine is not None)
    return app


async def send(pilot: Pilot[None], text: str) -> None:
    """Type a message in the prompt, send it, and wait for the echo."""
    app = pilot.app
    assert isinstance(app, ChatcoreApp) and isinstance(app.screen, ChatScreen)
    await pilot.press(*text)
    await pilot.press("enter")
    await wait_for(lambda: app.last_reply is not None and text in app.last_reply.content)


async def open_plugins(pilot: Pilot[None], *rows: str) -> DataTable[Any]:
    """F2, then wait until the live table lists ``rows``."""
    await pilot.press("f2")
    screen = pilot.app.screen
    assert isinstance(screen, PluginsScreen)
    table: DataTable[Any] = screen.query_one("#plugins", DataTable)
    await wait_for(lambda: all(name in table.rows for name in rows))
    return table


def cell(table: DataTable[Any], row: str, column: str) -> str:
    return str(table.get_cell(row, column))


def selected(table: DataTable[Any]) -> str | None:
    key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
    return key.value


async def select(pilot: Pilot[None], table: DataTable[Any], name: str) -> None:
    target = table.get_row_index(name)
    while table.cursor_row != target:
        await pilot.press("down" if table.cursor_row < target else "up")
    assert selected(table) == name


def title(pilot: Pilot[None]) -> str:
    return str(pilot.app.screen.query_one("#plugins-title", Label).content)


# --- plugins screen --------------------------------------------------------------------------


async def test_a_failing_plugins_circuit_shows_open_and_reset_closes_it(
    data_dir: Path, tmp_path: Path
) -> None:
    app = RecordingApp(config_with(tmp_path, ALWAYS_FAILS))
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot)
        for text in ("one", "two", "three"):
            await send(pilot, text)
        table = await open_plugins(pilot, "echo", "always_fails")
        await wait_for(lambda: cell(table, "always_fails", "circuit") == "open")
        # Two failures opened the circuit; the third turn went around the plugin.
        assert [cell(table, "always_fails", c) for c in ("calls", "failures", "state")] == [
            "2",
            "2",
            "active",
        ]
        assert cell(table, "always_fails", "last_error") == "RuntimeError: this plugin is broken"
        assert cell(table, "always_fails", "type") == "processor"
        assert [cell(table, "echo", c) for c in ("type", "calls", "circuit")] == [
            "backend",
            "3",
            "closed",
        ]
        p50 = cell(table, "echo", "p50_ms")
        assert p50.count(".") == 1 and len(p50.split(".")[1]) == 2, p50
        assert cell(table, "always_fails", "p50_ms") != ""
        assert title(pilot) == "1 plugin, 1 backend, 1 circuit open"
        # Drawn in the theme's error colour, as the theme switcher has it now.
        error_colour = Style(color=app.get_css_variables()["error"])
        assert table.get_cell("always_fails", "circuit").style == error_colour

        await select(pilot, table, "always_fails")
        # The line under the table tells more about the selected row.
        detail = str(pilot.app.screen.query_one("#plugins-detail").render())
        assert detail == (
            "always_fails  engine_plugins:AlwaysFails 0.0.0\n"
            "last error: RuntimeError: this plugin is broken"
        )
        await pilot.press("c")
        await wait_for(lambda: cell(table, "always_fails", "circuit") == "closed")
        assert ("information", "Circuit of always_fails reset.") in app.notes
        assert title(pilot) == "1 plugin, 1 backend"


async def test_pause_then_resume_changes_the_state_cell(data_dir: Path, tmp_path: Path) -> None:
    app = RecordingApp(config_with(tmp_path, ALWAYS_FAILS))
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot)
        table = await open_plugins(pilot, "echo", "always_fails")
        await select(pilot, table, "always_fails")
        await pilot.press("p")
        await wait_for(lambda: cell(table, "always_fails", "state") == "paused")
        assert app.notes[-1] == ("information", "Paused always_fails.")
        assert title(pilot) == "1 plugin, 1 backend, 1 paused"

        await pilot.press("p")  # already paused: the manager refuses, the screen says why
        await wait_for(lambda: any(severity == "error" for severity, _ in app.notes))
        assert app.notes[-1] == (
            "error",
            "plugin 'always_fails': cannot go from paused to paused "
            "(allowed: active, error, unloading)",
        )

        await pilot.press("r")
        await wait_for(lambda: cell(table, "always_fails", "state") == "active")
        assert app.notes[-1] == ("information", "Resumed always_fails.")


@pytest.fixture
def hot_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway plugin module on ``sys.path``, forgotten after the test."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    # A .pyc from the first version, written in the same second, could hide the edit.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    source = folder / "tui_hotplug.py"
    source.write_text(HOT_MODULE.replace("{tag}", "|v1"))
    yield source
    sys.modules.pop("tui_hotplug", None)


async def test_reload_reimports_a_module_plugin(
    data_dir: Path, tmp_path: Path, hot_module: Path
) -> None:
    app = RecordingApp(config_with(tmp_path, '[[plugins]]\nplugin = "tui_hotplug:Hot"\n'))
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot)
        await send(pilot, "hi")
        assert app.last_reply is not None and app.last_reply.content == "echo: hi|v1"

        hot_module.write_text(HOT_MODULE.replace("{tag}", "|v2"))
        table = await open_plugins(pilot, "hot")
        await select(pilot, table, "hot")
        await pilot.press("l")
        await wait_for(lambda: ("information", "Reloaded hot (active).") in app.notes)
        await wait_for(lambda: cell(table, "hot", "state") == "active")

        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
        await send(pilot, "again")
        assert app.last_reply.content == "echo: again|v2"


async def test_a_reload_that_fails_is_reported_and_the_old_version_kept(
    data_dir: Path, tmp_path: Path, hot_module: Path
) -> None:
    app = RecordingApp(config_with(tmp_path, '[[plugins]]\nplugin = "tui_hotplug:Hot"\n'))
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot)
        table = await open_plugins(pilot, "hot")
        hot_module.write_text("def broken(:\n")
        await select(pilot, table, "hot")
        await pilot.press("l")
        await wait_for(lambda: any(severity == "error" for severity, _ in app.notes))
        assert "SyntaxError" in app.notes[-1][1]
        # The previous version keeps running; the row says why the reload failed.
        await wait_for(lambda: "reload failed" in cell(table, "hot", "last_error"))
        assert cell(table, "hot", "state") == "active"
        assert "previous version keeps running" in cell(table, "hot", "last_error")
        assert "in error" not in title(pilot)


async def test_rows_follow_plugins_that_come_and_go(data_dir: Path, tmp_path: Path) -> None:
    extra = ALWAYS_FAILS + '[[plugins]]\nplugin = "engine_plugins:Blocker"\n'
    app = RecordingApp(config_with(tmp_path, extra))
    async with app.run_test(size=(140, 40)) as pilot:
        engine = (await started(pilot)).bridge.engine
        assert engine is not None
        table = await open_plugins(pilot, "echo", "always_fails", "blocker")
        await select(pilot, table, "blocker")

        app.bridge.spawn(engine.plugins.unload_plugin, "always_fails")
        await wait_for(lambda: "always_fails" not in table.rows)
        assert [key.value for key in table.rows] == ["echo", "blocker"]
        assert selected(table) == "blocker"  # the cursor stays on its plugin, not its index

        app.bridge.spawn(engine.plugins.load_plugin, "engine_plugins:Recorder")
        await wait_for(lambda: "recorder" in table.rows)
        assert [key.value for key in table.rows] == ["echo", "blocker", "recorder"]
        assert selected(table) == "blocker"
        assert cell(table, "recorder", "state") == "active"
        assert title(pilot) == "2 plugins, 1 backend"

        # A narrower terminal rebuilds the columns to fit the last error; the cursor stays.
        await pilot.resize_terminal(90, 30)
        await wait_for(lambda: table.columns["last_error"].width == MIN_LAST_ERROR_WIDTH)
        assert selected(table) == "blocker"


def status_row(**fields: Any) -> PluginStatus:
    defaults: dict[str, Any] = dict(
        name="x",
        type="processor",
        state="active",
        priority=50,
        calls=0,
        failures=0,
        timeouts=0,
        circuit="closed",
        last_error=None,
        p50_ms=None,
        p95_ms=None,
    )
    return PluginStatus(**(defaults | fields))


async def test_cells_format_latency_and_shorten_long_errors() -> None:
    assert cell_text("p50_ms", None) == ""
    assert cell_text("p95_ms", 1.23456) == "1.23"
    assert cell_text("p95_ms", 12) == "12.00"
    assert cell_text("calls", 0) == "0"
    long_error = "ValueError: " + "x" * 100 + "\nsecond line"
    shown = cell_text("last_error", long_error)
    assert len(shown) == 40 and shown.endswith("…") and "\n" not in shown
    assert cell_text("last_error", "short\nerror") == "short error"
    assert cell_text("last_error", long_error, width=16) == "ValueError: xxx…"


async def test_summary_counts_plugins_backends_and_trouble() -> None:
    rows = [
        status_row(name="echo", type="backend"),
        status_row(name="a", circuit="open"),
        status_row(name="b", circuit="open", state="paused"),
        status_row(name="c", circuit="half_open", state="error"),
    ]
    assert summary(rows) == (
        "3 plugins, 1 backend, 2 circuits open, 1 circuit half open, 1 paused, 1 in error"
    )
    assert summary([]) == "0 plugins, 0 backends"


async def test_an_error_with_brackets_is_shown_as_text_not_markup(
    data_dir: Path, tmp_path: Path, hot_module: Path
) -> None:
    hot_module.write_text(BRACKETS_MODULE)
    app = RecordingApp(config_with(tmp_path, '[[plugins]]\nplugin = "tui_hotplug:Hot"\n'))
    async with app.run_test(size=(160, 30)) as pilot:
        await started(pilot)
        await send(pilot, "hi")
        table = await open_plugins(pilot, "hot")
        await wait_for(lambda: cell(table, "hot", "failures") == "1")
        assert cell(table, "hot", "last_error") == "ValueError: bad [red]value[/] [/oops]"
        await pilot.pause()
        lines = [table.render_line(y).text for y in range(table.size.height)]
        assert any("ValueError: bad [red]value[/] [/oops]" in line for line in lines), lines


# --- help screen -----------------------------------------------------------------------------


def help_rows(pilot: Pilot[None]) -> dict[str, list[str]]:
    screen = pilot.app.screen
    assert isinstance(screen, HelpScreen)
    table: DataTable[Any] = screen.query_one("#keys", DataTable)
    return {
        str(key.value): [str(c) for c in table.get_row(key)]
        for key in table.rows
        if key.value is not None
    }


async def test_help_lists_every_screens_actions_with_their_default_keys(
    data_dir: Path, tmp_path: Path
) -> None:
    app = ChatcoreApp(config_with(tmp_path))
    async with app.run_test(size=(120, 50)) as pilot:
        await started(pilot)
        await pilot.press("f1")
        rows = help_rows(pilot)
        assert rows["new_chat"] == ["ctrl+n", "New chat", "new_chat", "everywhere"]
        assert rows["plugins"] == ["f2", "Plugins", "plugins", "everywhere"]
        # Screens that aren't open are listed too, under their own name.
        assert rows["stop_reply"] == ["escape", "Stop reply", "stop_reply", "chat"]
        assert rows["pause_plugin"] == ["p", "Pause", "pause_plugin", "plugins"]
        assert rows["close_plugins"][0] == "escape, f2"
        assert rows["cancel_switch"][3] == "backend switcher"
        assert rows["close_help"] == ["escape, f1, q", "Close", "close_help", "help"]
        assert rows["Command palette"][0] == "ctrl+p"
        assert list(rows)[:3] == ["quit", "copy_or_quit", "new_chat"]  # app-wide actions first


async def test_help_follows_tui_keys(data_dir: Path, tmp_path: Path) -> None:
    keys = '[tui.keys]\nnew_chat = "ctrl+t"\npause_plugin = "z"\nswitch_backend = "f2"\n'
    app = ChatcoreApp(config_with(tmp_path, keys))
    async with app.run_test(size=(120, 50)) as pilot:
        await started(pilot)
        # What Textual itself now binds on the chat screen...
        active = {b.binding.id: key for key, b in app.screen.active_bindings.items()}
        assert active["new_chat"] == "ctrl+t"
        assert active["switch_backend"] == "f2"
        assert "plugins" not in active  # its f2 was taken by switch_backend

        await pilot.press("f1")
        rows = help_rows(pilot)
        # ...is what the help screen says.
        assert rows["new_chat"] == ["ctrl+t", "New chat", "new_chat", "everywhere"]
        assert rows["switch_backend"][0] == "f2"
        assert rows["plugins"][0] == "—"
        assert rows["pause_plugin"][0] == "z"
        assert rows["resume_plugin"][0] == "r"


async def test_help_opened_on_the_plugins_screen_lists_the_same_keys(
    data_dir: Path, tmp_path: Path
) -> None:
    app = ChatcoreApp(config_with(tmp_path, '[tui.keys]\npause_plugin = "z"\n'))
    async with app.run_test(size=(120, 50)) as pilot:
        await started(pilot)
        await open_plugins(pilot, "echo")
        await pilot.press("f1")
        rows = help_rows(pilot)
        assert rows["pause_plugin"] == ["z", "Pause", "pause_plugin", "plugins"]
        assert rows["stop_reply"][0] == "escape"
        await pilot.press("escape")
        assert isinstance(app.screen, PluginsScreen)


async def test_escape_closes_the_plugins_and_help_screens(data_dir: Path, tmp_path: Path) -> None:
    app = ChatcoreApp(config_with(tmp_path))
    async with app.run_test() as pilot:
        await started(pilot)
        await open_plugins(pilot, "echo")
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)


@pytest.mark.parametrize(("command", "screen"), [("Plugins", PluginsScreen), ("Help", HelpScreen)])
async def test_the_command_palette_opens_the_screens(
    data_dir: Path, tmp_path: Path, command: str, screen: type[Any]
) -> None:
    app = ChatcoreApp(config_with(tmp_path))
    async with app.run_test() as pilot:
        await started(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*command)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, screen))
