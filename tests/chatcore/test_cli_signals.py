"""SIGTERM (what `kill`, `timeout`, systemd and docker send) stops a reply the way Ctrl-C
does: the real `chatcore` process against a slow echo backend, the partial reply read
back with `chatcore history show`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
PROMPT = "one two three four five six seven eight"
EXIT_TERMINATED = 128 + signal.SIGTERM


@pytest.fixture
def slow_config(tmp_path: Path) -> Path:
    config = tmp_path / "slow.toml"
    config.write_text(
        'default_backend = "slow"\n[backends.slow]\nplugin = "echo"\ndelay_seconds = 0.5\n'
    )
    return config


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


def stored_turn() -> list[tuple[str, str, str]]:
    """The messages of the one stored conversation, as `chatcore history show` gives them."""
    conversations = chatcore_json("history", "list")
    assert len(conversations) == 1
    shown = chatcore_json("history", "show", conversations[0]["id"])
    return [(m["role"], m["content"], m["status"]) for m in shown["messages"]]


def assert_partial_reply_stored() -> None:
    user, assistant = stored_turn()
    assert user == ("user", PROMPT, "complete")
    role, content, status = assistant
    assert (role, status) == ("assistant", "partial")
    assert content.startswith("echo: ")
    assert content != f"echo: {PROMPT}"


def test_sigterm_during_ask_stores_the_partial_reply_and_exits_143(slow_config: Path) -> None:
    proc = subprocess.Popen(
        [CHATCORE, "ask", "--config", str(slow_config), "--backend", "slow", PROMPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.read(len("echo: ")) == "echo: "  # the reply is streaming
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == EXIT_TERMINATED, stderr
    assert stdout.endswith("\n")  # the terminal is left on a fresh line
    assert stderr == "terminated: the partial reply is saved\n"
    assert_partial_reply_stored()


def test_sigterm_in_the_prompt_loop_stores_the_partial_reply_and_exits_143(
    slow_config: Path,
) -> None:
    # Piped stdin (kept open, as a supervisor's pipe would be): bare `chatcore` runs the loop.
    proc = subprocess.Popen(
        [CHATCORE, "--config", str(slow_config), "--backend", "slow"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(PROMPT + "\n")
    proc.stdin.flush()
    assert proc.stdout.read(len("you> echo: ")) == "you> echo: "
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == EXIT_TERMINATED, stderr
    assert stdout.endswith("\n")  # no prompt for a next line: the loop has ended
    assert "terminated: the partial reply is saved" in stderr
    assert "Traceback" not in stderr
    assert_partial_reply_stored()


def test_sigint_in_the_prompt_loop_stops_only_the_reply(slow_config: Path) -> None:
    proc = subprocess.Popen(
        [CHATCORE, "--config", str(slow_config), "--backend", "slow"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(PROMPT + "\n")
    proc.stdin.flush()
    assert proc.stdout.read(len("you> echo: ")) == "you> echo: "
    proc.send_signal(signal.SIGINT)
    # The loop goes on: the next line is read, then /quit ends it normally.
    proc.stdin.write("/quit\n")
    proc.stdin.flush()
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert_partial_reply_stored()
