"""What the model's output may do to the user's terminal: the real `chatcore` process
writing to a pseudo-terminal, to a pipe, and with ``--raw``.

The echo backend repeats the prompt, so a prompt with escape sequences stands for a
reply (or a RAG passage it quotes) that carries them.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import tty
from pathlib import Path

from helpers import subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))

# Clear the screen, retitle the window, ring the bell, return to the line start to
# overwrite it, a C1 CSI, DEL, backspace; newline and tab are text and stay.
HOSTILE = "hi \x1b[2J\x1b]0;pwned\x07 there\rX\x9b31m ok\x7f\x08\ttab\nline two"
SAFE = "hi [2J]0;pwned thereX31m ok\ttab\nline two"


def run_on_pty(*args: str, stdin: bytes | None = None) -> tuple[int, bytes]:
    """Run chatcore with stdout (and stdin, unless given) on a raw pty; return what it wrote."""
    master, slave = pty.openpty()
    tty.setraw(slave)  # no \n -> \r\n translation: compare the exact bytes written
    try:
        proc = subprocess.Popen(
            [CHATCORE, *args],
            stdin=subprocess.PIPE if stdin is not None else slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=subprocess_env(),
        )
    finally:
        os.close(slave)
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    output = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        output += data
    os.close(master)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.stderr.close()
    code = proc.wait(timeout=60)
    assert b"Traceback" not in stderr, stderr.decode()
    return code, output


def test_ask_on_a_terminal_drops_control_characters_but_keeps_newline_and_tab() -> None:
    code, output = run_on_pty("ask", HOSTILE)

    assert code == 0
    assert output.decode() == f"echo: {SAFE}\n"


def test_ask_raw_on_a_terminal_writes_the_reply_as_sent() -> None:
    code, output = run_on_pty("ask", "--raw", HOSTILE)

    assert code == 0
    assert output.decode() == f"echo: {HOSTILE}\n"


def test_ask_into_a_pipe_is_always_raw() -> None:
    result = subprocess.run(
        [CHATCORE, "ask", HOSTILE], capture_output=True, env=subprocess_env(), timeout=60
    )

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"echo: {HOSTILE}\n"


def test_prompt_loop_on_a_terminal_drops_control_characters() -> None:
    # Piped prompts with the reply on a terminal: bare `chatcore` runs the prompt loop.
    code, output = run_on_pty(stdin=b"hi \x1b]0;pwned\x07 there\n/quit\n")

    assert code == 0
    text = output.decode()
    assert "echo: hi ]0;pwned there\n" in text
    assert "\x1b" not in text
    assert "\x07" not in text


def test_sources_from_indexed_documents_are_made_safe_on_a_terminal(tmp_path: Path) -> None:
    doc = tmp_path / "refunds.md"
    doc.write_text("# Refunds \x1b]0;pwned\x07 policy\n\nRefunds take ten days.\n")
    config = tmp_path / "rag.toml"
    config.write_text('[backends.echo]\nplugin = "echo"\n[[plugins]]\nplugin = "rag"\n')
    added = subprocess.run(
        [CHATCORE, "--config", str(config), "rag", "add", str(doc)],
        capture_output=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert added.returncode == 0, added.stderr.decode()

    code, output = run_on_pty("ask", "--config", str(config), "refunds")

    assert code == 0
    text = output.decode()
    assert f"[1] {doc} > Refunds ]0;pwned policy (chunk 0" in text
    assert "\x1b" not in text
    assert "\x07" not in text
