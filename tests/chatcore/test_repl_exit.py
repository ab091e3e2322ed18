"""Bare `chatcore` with piped prompts exits as `ask` does: 1 for a failed turn, 2 for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import free_port, subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))


def run(tmp_path: Path, stdin: bytes, backend: str = "echo") -> subprocess.CompletedProcess[bytes]:
    config = tmp_path / "chatcore.toml"
    config.write_text(
        'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
        f'[backends.down]\nplugin = "ollama"\nhost = "http://127.0.0.1:{free_port()}"\n'
        'model = "x"\nmax_retries = 0\n'
    )
    return subprocess.run(
        [CHATCORE, "--config", str(config), "--backend", backend],
        input=stdin,
        capture_output=True,
        env=subprocess_env(),
        timeout=60,
    )


def test_piped_prompts_that_all_answer_exit_0(tmp_path: Path) -> None:
    result = run(tmp_path, b"one\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert b"echo: one" in result.stdout and b"echo: two" in result.stdout


def test_a_failed_turn_in_piped_mode_exits_1_after_the_other_lines(tmp_path: Path) -> None:
    result = run(tmp_path, b"are you there?\nand now?\n", backend="down")
    assert result.returncode == 1
    assert result.stderr.count(b"error: down: cannot reach") == 2


def test_a_refused_line_in_piped_mode_exits_2_and_the_rest_is_sent(tmp_path: Path) -> None:
    result = run(tmp_path, b"caf\xe9\nfine\n")
    assert result.returncode == 2
    assert b"echo: fine" in result.stdout
    assert b"error: this line is not UTF-8 text" in result.stderr
