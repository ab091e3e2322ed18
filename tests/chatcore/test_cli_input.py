"""What `chatcore ask` accepts as a prompt: bytes on stdin or argv, as a shell sends them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))


def run_bytes(*args: bytes, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CHATCORE.encode(), *args],
        input=input,
        capture_output=True,
        env=subprocess_env(),
        timeout=60,
    )


def stored_messages(data_dir: Path) -> list[tuple[str, str]]:
    db = data_dir / "chatcore.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT role, content FROM messages ORDER BY seq").fetchall()


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        pytest.param((b"ask",), b"caf\xe9", id="stdin"),
        pytest.param((b"ask",), b"caf\xe9\n", id="stdin-with-newline"),
        pytest.param((b"ask", b"caf\xe9"), b"", id="argument"),
    ],
)
def test_prompt_that_is_not_utf8_is_refused_before_the_turn(
    args: tuple[bytes, ...], stdin: bytes, data_dir: Path
) -> None:
    result = run_bytes(*args, input=stdin)

    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith("error: ")
    assert "not UTF-8" in stderr
    assert "0xe9" in stderr  # which byte, so the user can find it
    assert len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr
    assert result.stdout == b""
    assert stored_messages(data_dir) == []


def test_stdin_is_decoded_as_utf8_whatever_the_stream_encoding(data_dir: Path) -> None:
    # A latin-1 stdin stream would read the two bytes of "é" as "Ã©".
    result = subprocess.run(
        [CHATCORE, "ask", "--json"],
        input="café\n".encode(),
        capture_output=True,
        env=subprocess_env({"PYTHONIOENCODING": "latin-1"}),
        timeout=60,
    )

    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout.decode("latin-1"))["content"] == "echo: café"
    assert stored_messages(data_dir)[0] == ("user", "café")


def test_the_trailing_newline_of_piped_input_is_not_part_of_the_prompt(data_dir: Path) -> None:
    result = run_bytes(b"ask", input=b"first line\nsecond line\n")

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == "echo: first line\nsecond line\n"
    assert stored_messages(data_dir) == [
        ("user", "first line\nsecond line"),
        ("assistant", "echo: first line\nsecond line"),
    ]


def test_windows_line_ending_at_the_end_is_dropped_too(data_dir: Path) -> None:
    result = run_bytes(b"ask", input=b"hello\r\n")

    assert result.returncode == 0, result.stderr.decode()
    assert stored_messages(data_dir)[0] == ("user", "hello")


def test_prompt_loop_refuses_a_line_that_is_not_utf8_and_goes_on(data_dir: Path) -> None:
    # Piped lines, so bare `chatcore` runs the prompt loop.
    result = run_bytes(input=b"caf\xe9\nhello\n")

    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr  # the rest went out; the exit says one line was refused
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert "not UTF-8" in errors[0]
    assert "0xe9" in errors[0]
    assert "echo: hello\n" in result.stdout.decode()
    assert stored_messages(data_dir) == [("user", "hello"), ("assistant", "echo: hello")]
