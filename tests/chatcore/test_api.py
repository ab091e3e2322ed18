"""The synchronous corners of the public API (no Trio test runner)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import chatcore

if TYPE_CHECKING:
    from pathlib import Path


def test_sync_ask_for_scripts(data_dir: Path) -> None:
    reply = chatcore.ask("from a script", backend="echo")
    assert reply.content == "echo: from a script"
    assert (data_dir / "chatcore.db").exists()


def test_the_public_surface_changes_only_on_purpose() -> None:
    assert sorted(chatcore.__all__) == [
        "BackendError",
        "ChatContext",
        "ChatcoreError",
        "Chunk",
        "Citation",
        "Config",
        "ConfigError",
        "Conversation",
        "ConversationNotFound",
        "ConversationSummary",
        "Engine",
        "EngineClosed",
        "EngineStatus",
        "EngineStopped",
        "InvalidInput",
        "Message",
        "MessageStatus",
        "PluginError",
        "PluginLoadError",
        "PluginResult",
        "ReplyStream",
        "Role",
        "UnknownBackend",
        "Usage",
        "ask",
        "load_config",
        "open_engine",
    ]
    for name in chatcore.__all__:
        assert getattr(chatcore, name) is not None
