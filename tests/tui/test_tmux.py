"""Smoke test in a real terminal: `chatcore` under tmux starts, answers, quits cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
TMUX = shutil.which("tmux")

if TMUX is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("tmux is required for the terminal smoke test (make test installs it)")
    pytest.skip("tmux is not installed", allow_module_level=True)


class Tmux:
    """One private tmux server (its own socket) running one window."""

    def __init__(self) -> None:
        self.socket = f"chatcore-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        assert TMUX is not None
        result = subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        return result.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "smoke")

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{self.screen()}")

    def kill(self) -> None:
        self("kill-server")


def start_chatcore(tmux: Tmux, tmp_path: Path) -> None:
    """Bare `chatcore` on an echo-only config, in a 120x40 tmux window."""
    config = tmp_path / "echo.toml"
    config.write_text('default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n')
    env = subprocess_env({"CHATCORE_CONFIG": str(config)})
    wanted = ("CHATCORE_CONFIG", "CHATCORE_DATA_DIR", "CHATCORE_BACKEND", "PYTHONPATH", "HOME")
    exports = " ".join(f"{k}={v!r}" for k, v in env.items() if k in wanted)
    tmux(
        "new-session", "-d", "-s", "smoke", "-x", "120", "-y", "40",
        f"env {exports} TERM=xterm-256color {CHATCORE}; echo chatcore-exited-$?; sleep 30",
    )  # fmt: skip


def test_chatcore_starts_answers_and_quits_with_the_terminal_restored(tmp_path: Path) -> None:
    tmux = Tmux()
    try:
        start_chatcore(tmux, tmp_path)
        tmux.wait_for("backend echo")
        tmux("send-keys", "-t", "smoke", "-l", "hello from tmux")
        tmux("send-keys", "-t", "smoke", "Enter")
        tmux.wait_for("echo: hello from tmux")
        tmux("send-keys", "-t", "smoke", "C-q")
        screen = tmux.wait_for("chatcore-exited-0")
        assert tmux("display-message", "-p", "-t", "smoke", "#{alternate_on}").strip() == "0"
        assert "echo: hello from tmux" not in screen  # the app's screen is gone
    finally:
        tmux.kill()


def test_ctrl_c_quits_cleanly_too(tmp_path: Path) -> None:
    tmux = Tmux()
    try:
        start_chatcore(tmux, tmp_path)
        tmux.wait_for("backend echo")
        tmux("send-keys", "-t", "smoke", "C-c")
        tmux.wait_for("chatcore-exited-0")
        assert tmux("display-message", "-p", "-t", "smoke", "#{alternate_on}").strip() == "0"
    finally:
        tmux.kill()
