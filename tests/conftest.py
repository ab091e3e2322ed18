"""Shared fixtures: every test gets its own data dir and no user-level config.

Test modules live in one folder per package (``tests/chatcore/``, ``tests/backends/``
...); what they share is in ``tests/support/`` (on ``sys.path``: ``helpers``, the
HTTP ``fakes``, ``redis_server``, and the fixture plugins of ``support/plugins``).
Trio mode is switched on per folder, by the engine folders' own conftest.py; the
chat app's tests in ``tests/tui/`` run on Textual's asyncio harness.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio.testing

_SUPPORT = Path(__file__).parent / "support"
sys.path[:0] = [str(_SUPPORT), str(_SUPPORT / "plugins")]

_ISOLATED_VARS = ("CHATCORE_CONFIG", "CHATCORE_BACKEND", "CHATCORE_DATA_DIR")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point chatcore at a fresh data dir and a HOME with no user config."""
    for var in _ISOLATED_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CHATCORE_DATA_DIR", str(data_dir))
    # The shipped default backend is Ollama, which tests can't assume is running:
    # they talk to echo unless they choose otherwise.
    monkeypatch.setenv("CHATCORE_BACKEND", "echo")
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OLLAMA_HOST", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return data_dir


@pytest.fixture
def data_dir(isolated_env: Path) -> Path:
    return isolated_env


@pytest.fixture
def write_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a TOML config file and return its path."""

    def write(text: str, name: str = "chatcore.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    """A mock clock that jumps only after 20 ms of real idleness.

    The engine writes to SQLite in a worker thread; with ``autojump_threshold=0``
    the clock would jump past timeouts while the thread is busy. Waiting a few
    real milliseconds first keeps virtual time honest for engine tests.
    """
    return trio.testing.MockClock(autojump_threshold=0.02)


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connecting is refused at once."""
    from helpers import free_port  # importable once the path above is set

    return free_port()
