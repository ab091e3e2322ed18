"""The status bar marks token counts chatcore estimated because the backend sent none."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.openai import FakeOpenAI
from test_chat import config_from, send, started

from features._tokens import estimate_tokens
from tui.app import ChatcoreApp
from tui.widgets.status import StatusBar

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("server_counts", [False, True])
async def test_the_status_bar_marks_estimated_tokens(
    data_dir: Path, tmp_path: Path, server_counts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATCORE_BACKEND", "llama")
    with FakeOpenAI(reply_chunks=("Hi", " there"), usage=(21, 4)) as server:
        server.stream_usage = server_counts
        config = config_from(
            tmp_path,
            'default_backend = "llama"\n'
            f'[backends.llama]\nplugin = "openai"\nbase_url = "{server.url}/v1"\n'
            'model = "gpt-4o-mini"\n',
        )
        app = ChatcoreApp(config)
        async with app.run_test() as pilot:
            await started(app)
            await send(pilot, "hello")
            tokens = app.chat.query_one(StatusBar).tokens
            await pilot.press("ctrl+q")
    if server_counts:
        assert tokens == "tokens 21 in / 4 out"
    else:
        out = estimate_tokens("Hi there")
        assert tokens.startswith("tokens ~") and tokens.endswith(f" in / ~{out} out (estimated)")
