"""SIGTERM (`kill`, systemd, docker) ends the chat app the way Ctrl-C does: the reply in
flight is stored as partial, the terminal is restored. A real `chatcore` under tmux."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import subprocess_env
from test_tmux import Tmux

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
PROMPT = "one two three four five six seven eight nine ten"


def chatcore_json(*args: str) -> Any:
    result = subprocess.run(
        [CHATCORE, *args, "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def app_pid(tmux: Tmux) -> int:
    """The chatcore process: the one child of the window's shell (`env` execs it)."""
    shell = int(tmux("display-message", "-p", "-t", "smoke", "#{pane_pid}").strip())
    children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_sigterm_mid_reply_stores_the_partial_reply_and_exits_143(tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(
        'default_backend = "slow"\n[backends.slow]\nplugin = "echo"\ndelay_seconds = 0.5\n'
    )
    env = subprocess_env({"CHATCORE_CONFIG": str(config), "CHATCORE_BACKEND": "slow"})
    wanted = ("CHATCORE_CONFIG", "CHATCORE_DATA_DIR", "CHATCORE_BACKEND", "PYTHONPATH", "HOME")
    exports = " ".join(f"{k}={v!r}" for k, v in env.items() if k in wanted)
    tmux = Tmux()
    try:
        tmux(
            "new-session", "-d", "-s", "smoke", "-x", "120", "-y", "40",
            f"env {exports} TERM=xterm-256color {CHATCORE}; echo chatcore-exited-$?; sleep 30",
        )  # fmt: skip
        tmux.wait_for("backend slow")
        tmux("send-keys", "-t", "smoke", "-l", PROMPT)
        tmux("send-keys", "-t", "smoke", "Enter")
        tmux.wait_for("echo: one")  # the reply is streaming
        pid = app_pid(tmux)

        os.kill(pid, signal.SIGTERM)

        tmux.wait_for("chatcore-exited-143")
        assert tmux("display-message", "-p", "-t", "smoke", "#{alternate_on}").strip() == "0"
    finally:
        tmux.kill()

    [conversation] = chatcore_json("history", "list")
    shown = chatcore_json("history", "show", conversation["id"])
    user, reply = shown["messages"]
    assert (user["content"], user["status"]) == (PROMPT, "complete")
    assert (reply["role"], reply["status"]) == ("assistant", "partial")
    assert reply["content"].startswith("echo: one")
    assert reply["content"] != f"echo: {PROMPT}"
