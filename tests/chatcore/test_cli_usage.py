"""click's own usage errors read like chatcore's: one `error:` line, exit 2; `-h` is `--help`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))


def chatcore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )


@pytest.mark.parametrize("args", [(), ("ask",), ("history", "list")])
def test_dash_h_is_help(args: tuple[str, ...]) -> None:
    short, long = chatcore(*args, "-h"), chatcore(*args, "--help")
    assert (short.returncode, short.stderr) == (0, "")
    assert short.stdout == long.stdout
    assert short.stdout.startswith(f"Usage: chatcore {' '.join(args)}".rstrip() + " ")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("ask", "--zzz", "hi"), "error: No such option '--zzz'. (see 'chatcore ask -h')"),
        (("nosuchcommand",), "error: No such command 'nosuchcommand'. (see 'chatcore -h')"),
        (
            ("history", "show"),
            "error: Missing argument 'CONVERSATION_ID'. (see 'chatcore history show -h')",
        ),
        (
            ("history", "list", "--limit", "zero"),
            "error: Invalid value for '--limit': 'zero' is not a valid integer range. "
            "(see 'chatcore history list -h')",
        ),
    ],
)
def test_a_usage_error_is_one_error_line_and_exit_2(args: tuple[str, ...], line: str) -> None:
    result = chatcore(*args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")
