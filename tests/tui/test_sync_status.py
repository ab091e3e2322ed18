"""The status bar's sync slot and the palette's "Sync now", on the real engine and Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, redis_factory
from test_chat import RecordingApp, config_from, send, started, wait_for

from chatcore import load_config
from tui.app import ChatcoreApp
from tui.widgets.status import StatusBar

pytestmark = pytest.mark.asyncio

__all__ = ["redis_factory"]  # fixture used here

ECHO = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'


def status_line(app: ChatcoreApp) -> str:
    return str(app.chat.query_one(StatusBar).render())


def replicated(url: str) -> str:
    # A long backoff: only "Sync now" brings the app back online quickly.
    return ECHO + (
        f'[replication]\nredis_url = "{url}"\n'
        "backoff_base_seconds = 60.0\nbackoff_max_seconds = 60.0\n"
        "connect_timeout_seconds = 1.0\n"
    )


async def test_status_bar_shows_connectivity_and_pending_and_sync_now_drains(
    data_dir: Path, tmp_path: Path, redis_factory: Any
) -> None:
    server: RedisServer = redis_factory()
    config = config_from(tmp_path, replicated(server.url))
    app = RecordingApp(config)
    async with app.run_test() as pilot:
        await started(app)
        await wait_for(lambda: "sync ○ offline" in status_line(app))
        await send(pilot, "while offline")
        await wait_for(lambda: status_line(app).endswith("sync ○ offline · 3 pending"))

        await asyncio.to_thread(server.start)
        await pilot.press("ctrl+p")
        await pilot.press(*"sync now")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(lambda: status_line(app).endswith("sync ● online · 0 pending"))
        assert "Syncing now." in app.notes
        await pilot.press("ctrl+q")
    with server.client() as client:
        assert client.xlen("chatcore:changes") == 3


async def test_without_replication_the_slot_stays_empty_and_sync_now_says_why(
    data_dir: Path,
) -> None:
    app = RecordingApp(load_config(default_backend="echo"))
    async with app.run_test() as pilot:
        await started(app)
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert commands.count("Sync now") == 1
        app.action_sync_now()
        assert app.notes[-1] == (
            "Replication is off: set [replication] redis_url in the config to sync."
        )
        assert "sync" not in status_line(app)
        await pilot.press("ctrl+q")
