"""Snapshot tests of the app's screens, grouped by feature, each with a pilot script.

Update them on purpose with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the SVGs in the diff before committing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from chatcore import load_config
from tui.app import ChatcoreApp
from tui.widgets.prompt import PromptInput

if TYPE_CHECKING:
    from collections.abc import Callable

    from textual.pilot import Pilot

SIZE = (110, 32)


ECHO_ONLY = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
"""Snapshots shouldn't change when the shipped config does."""


def echo_app(tmp_path: Path) -> ChatcoreApp:
    config = tmp_path / "snapshot.toml"
    config.write_text(ECHO_ONLY)
    return ChatcoreApp(load_config(config))


async def engine_started(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, ChatcoreApp)
    # A blinking cursor would be on in one snapshot and off in the next.
    app.chat.query_one(PromptInput).cursor_blink = False
    await until(lambda: app.bridge.engine is not None)
    await pilot.pause()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# --- chat ------------------------------------------------------------------------------------


def test_chat_screen_after_one_turn(
    snap_compare: Callable[..., bool], data_dir: Path, tmp_path: Path
) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await engine_started(pilot)
        app = pilot.app
        assert isinstance(app, ChatcoreApp)
        await pilot.press(*"Show me **markdown** and `code`")
        await pilot.press("enter")
        await until(lambda: app.last_reply is not None)
        # Settle everything that follows a turn: the list refresh, Markdown, scrolling.
        await until(lambda: bool(app.chat.state.summaries))
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.3)

    assert snap_compare(echo_app(tmp_path), terminal_size=SIZE, run_before=run_before)


# --- plugins ---------------------------------------------------------------------------------


def test_plugins_screen(snap_compare: Callable[..., bool], data_dir: Path, tmp_path: Path) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await engine_started(pilot)
        await pilot.press("f2")
        await pilot.pause(0.8)  # one live refresh

    assert snap_compare(echo_app(tmp_path), terminal_size=SIZE, run_before=run_before)


# --- help ------------------------------------------------------------------------------------


def test_help_screen(snap_compare: Callable[..., bool], data_dir: Path, tmp_path: Path) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await engine_started(pilot)
        await pilot.press("f1")
        await pilot.pause(0.2)

    assert snap_compare(echo_app(tmp_path), terminal_size=SIZE, run_before=run_before)
