"""click's own usage errors read like chatcore's: one `error:` line, exit 2; `-h` is `--help`."""

from __future__ import annotations

import json
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
            "error: Invalid value for '--limit' / '-n': 'zero' is not a valid integer range. "
            "(see 'chatcore history list -h')",
        ),
    ],
)
def test_a_usage_error_is_one_error_line_and_exit_2(args: tuple[str, ...], line: str) -> None:
    result = chatcore(*args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")


def test_short_options_for_limit_and_yes(tmp_path: Path) -> None:
    assert chatcore("ask", "--backend", "echo", "hello").returncode == 0
    listed = chatcore("history", "list", "-n", "1", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert chatcore("history", "search", "hello", "-n", "1").returncode == 0
    deleted = chatcore("history", "delete", row["id"], "-y")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(chatcore("history", "list", "--json").stdout) == []


def test_exporting_to_a_folder_that_is_not_there_is_bad_input(tmp_path: Path) -> None:
    assert chatcore("ask", "--backend", "echo", "hello").returncode == 0
    [row] = json.loads(chatcore("history", "list", "--json").stdout)
    target = tmp_path / "no" / "dir" / "x.md"
    result = chatcore("history", "export", row["id"], "-o", str(target))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"error: cannot write {target}: No such file or directory\n"
