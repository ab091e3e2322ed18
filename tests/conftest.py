"""Shared fixtures: every test gets its own data dir and no user-level config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio.testing

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent

# Fixture plugins are imported by `module:Class` specs, as a user would configure them.
sys.path.insert(0, str(TESTS_DIR / "plugins_fixtures"))

PLUGIN_STATUS_KEYS = frozenset(
    [
        "name",
        "type",
        "state",
        "priority",
        "calls",
        "failures",
        "timeouts",
        "circuit",
        "last_error",
        "p50_ms",
        "p95_ms",
    ]
)
"""The fields of a `chatcore plugins --json` row that the runtime issue fixes."""

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


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running the real `chatcore` command with test plugins importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), str(TESTS_DIR / "plugins_fixtures"), env.get("PYTHONPATH", "")]
    )
    env.update(extra or {})
    return env


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    """A mock clock that jumps only after 20 ms of real idleness.

    The engine writes to SQLite in a worker thread; with ``autojump_threshold=0``
    the clock would jump past timeouts while the thread is busy. Waiting a few
    real milliseconds first keeps virtual time honest for engine tests.
    """
    return trio.testing.MockClock(autojump_threshold=0.02)
