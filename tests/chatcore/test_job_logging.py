"""A failing background job is logged by name and error, never with the conversation's text."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from chatcore import ChatContext, Chunk, open_engine
from chatcore.errors import BackendUnavailable
from chatcore.plugin import BaseBackendProvider, PluginMetadata, PluginType
from features.memory import SUMMARY_PURPOSE

WriteConfig = Callable[..., Path]

PRIVATE = "my-neighbour-Gertrude-keeps-bees-behind-the-shed"
"""A phrase of the conversation that must not reach the log."""


class SummaryFailsBackend(BaseBackendProvider):
    """Answers chat turns; every summary request fails as a backend that went away."""

    metadata = PluginMetadata(name="summary_fails", plugin_type=PluginType.BACKEND_PROVIDER)

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        if context.metadata.get("purpose") == SUMMARY_PURPOSE:
            raise BackendUnavailable("summary backend unreachable at http://127.0.0.1:9")
        yield Chunk(text="Noted, and here is a long enough answer. " * 8, index=0, done=True)


async def test_a_failed_summary_job_logs_its_name_and_error_but_no_message_text(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(
        'default_backend = "flaky"\n'
        "[backends.flaky]\n"
        'plugin = "test_job_logging:SummaryFailsBackend"\n'
        "[[plugins]]\n"
        'plugin = "memory"\n'
        "[plugins.config]\n"
        "max_context_tokens = 300\n"
        "reserve_reply_tokens = 50\n"
    )
    caplog.set_level(logging.DEBUG)
    async with open_engine(config, backend="flaky") as engine:
        conversation = engine.conversation()
        scheduled = False
        for turn in range(12):
            reply = await conversation.send(f"Turn {turn}: {PRIVATE}, " + "and more words " * 20)
            scheduled = scheduled or reply.metadata["memory"].get("summary_job") == "scheduled"
            if scheduled:
                break
        assert scheduled
        with trio.fail_after(10):
            while not any("failed" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.005)
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert "Memory._summarise" in failures[0]
    assert "BackendUnavailable: summary backend unreachable at http://127.0.0.1:9" in failures[0]
    assert PRIVATE not in caplog.text
    assert "Turn 0" not in caplog.text
