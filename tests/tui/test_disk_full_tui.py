"""The chat app on a full disk: a notice, and the unsent message back in the box."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_chat import ECHO, config_from, log_views, notices, send, started, wait_for

from tui.app import ChatcoreApp
from tui.widgets.prompt import PromptInput

pytestmark = pytest.mark.asyncio


class _FullAtCommit:
    """The store's writer connection, except that COMMIT fails as on a full disk."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.full = True

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql.strip().upper() == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_a_full_disk_is_a_notice_and_the_message_waits_in_the_box(
    data_dir: Path, tmp_path: Path
) -> None:
    app = ChatcoreApp(config_from(tmp_path, ECHO))
    async with app.run_test() as pilot:
        await started(app)
        await send(pilot, "first")
        engine = app.bridge.engine
        assert engine is not None
        store: Any = engine.store
        real = store._writer
        store._writer = full = _FullAtCommit(real)
        await send(pilot, "words worth keeping")
        (notice,) = notices(app)
        assert f"no space left for {data_dir} (database or disk is full)" in notice
        assert "your message is back in the box" in notice
        prompt = app.chat.query_one(PromptInput)
        assert prompt.text == "words worth keeping"

        full.full = False
        await pilot.press("enter")
        await wait_for(lambda: log_views(app)[-1] == ("assistant", "echo: words worth keeping"))
        assert prompt.text == ""
        store._writer = real
        await pilot.press("ctrl+q")
