"""Paths and helpers the test modules share (conftest.py holds the fixtures)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

SUPPORT_DIR = Path(__file__).parent
"""tests/support: fakes, fixture plugins, data files, the example distribution."""
TESTS_DIR = SUPPORT_DIR.parent
REPO_ROOT = TESTS_DIR.parent
PLUGINS_DIR = SUPPORT_DIR / "plugins"
"""Fixture plugins, imported by ``module:Class`` specs as a user would configure them."""
RAG_DOCS = SUPPORT_DIR / "rag_docs"
EXAMPLE_PLUGIN_DIR = SUPPORT_DIR / "example_plugin"

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


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running the real `chatcore` command with test plugins importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SUPPORT_DIR), str(PLUGINS_DIR), env.get("PYTHONPATH", "")]
    )
    env.update(extra or {})
    return env


def free_port() -> int:
    """A loopback port nothing listens on (for now): connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
