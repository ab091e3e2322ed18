"""The chat app driven through Textual's Pilot on the real engine (echo backend)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatcore import load_config
from tui.app import ChatcoreApp
from tui.screens.chat import MessageView

pytestmark = pytest.mark.asyncio


async def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_type_send_and_see_the_streamed_reply(data_dir: Path) -> None:
    app = ChatcoreApp(load_config(default_backend="echo"))
    async with app.run_test() as pilot:
        await wait_for(lambda: app.bridge.engine is not None)
        await pilot.click("#prompt")
        await pilot.press(*"hello there")
        await pilot.press("enter")
        await wait_for(lambda: app.last_reply is not None)
        views = app.screen.query(MessageView)
        assert [(v.role.value, v.text) for v in views] == [
            ("user", "hello there"),
            ("assistant", "echo: hello there"),
        ]
        await pilot.press("ctrl+q")
