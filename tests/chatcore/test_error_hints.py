"""Library errors say what to fix in terms of config and API; the CLI adds its own hints.

A Python API user or the chat app gets no ``--backend`` or ``chatcore ...`` advice that
does not apply to them; the command line's error line keeps it. Each case raises the
error through the engine (real HTTP to the loopback fakes) and then prints it as the
CLI does, and one case runs the ``chatcore`` command itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from fakes.anthropic import FakeAnthropic
from fakes.openai import FakeOpenAI
from helpers import free_port, subprocess_env

from chatcore import open_engine
from chatcore.cli._common import _guarded
from chatcore.errors import (
    BackendAuthError,
    BackendUnavailable,
    ChatcoreError,
    ConversationNotFound,
    ModelNotFound,
)

WriteConfig = Callable[..., Path]
CHATCORE = str(Path(sys.executable).with_name("chatcore"))
CLI_ADVICE = re.compile(r"--[a-z]|`chatcore ")
"""A command-line flag or a ``chatcore`` command: advice only the CLI can give."""


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def api_text(exc: BaseException) -> str:
    """All an API user reads of an error: its message and its notes."""
    return str(exc) + "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))


def cli_line(exc: ChatcoreError, capsys: pytest.CaptureFixture[str]) -> str:
    """The line the CLI prints for ``exc`` (the same ``_guarded`` every command runs in)."""

    def fail() -> None:
        raise exc

    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        _guarded(fail)
    assert code.value.code == exc.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err.removesuffix("\n")


async def test_an_unreachable_backend(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    path = write_config(
        f'[backends.local]\nplugin = "ollama"\nhost = "http://127.0.0.1:{port}"\n'
        'model = "llama3.2"\nmax_retries = 0\n'
    )
    with trio.fail_after(20):
        async with open_engine(path, backend="local") as engine:
            with pytest.raises(BackendUnavailable) as info:
                await engine.conversation().send("hi")
    text = api_text(info.value)
    assert CLI_ADVICE.search(text) is None, text
    assert f"cannot reach http://127.0.0.1:{port}" in text
    assert "`ollama serve`" in text
    assert "host in [backends.local]" in text
    line = cli_line(info.value, capsys)
    assert line.startswith(f"error: local: cannot reach http://127.0.0.1:{port}")
    assert "`ollama serve`" in line
    assert line.endswith("; pick another backend with --backend NAME")


async def test_a_missing_key(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with FakeAnthropic() as fake:
        path = write_config(
            f'[backends.cloud]\nplugin = "anthropic"\nbase_url = "{fake.url}"\n'
            'model = "claude-sonnet-5-5"\nmax_retries = 0\n'
        )
        with trio.fail_after(20):
            async with open_engine(path, backend="cloud") as engine:
                with pytest.raises(BackendAuthError) as info:
                    await engine.conversation().send("hi")
    text = api_text(info.value)
    assert CLI_ADVICE.search(text) is None, text
    assert "no API key: set $ANTHROPIC_API_KEY (or api_key in [backends.cloud])" in text
    line = cli_line(info.value, capsys)
    assert "set $ANTHROPIC_API_KEY (or api_key in [backends.cloud])" in line
    assert line.endswith("; pick another backend with --backend NAME")


async def test_an_unknown_model(
    write_config: WriteConfig, fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        f'[backends.local]\nplugin = "openai"\nbase_url = "{fake.url}/v1"\n'
        'model = "gpt-4o-mini"\nmax_retries = 0\n'
    )
    with trio.fail_after(20):
        async with open_engine(path, backend="local") as engine:
            with pytest.raises(ModelNotFound) as info:
                await engine.conversation().send("hi", model="gpt-4o-mnii")
    text = api_text(info.value)
    assert CLI_ADVICE.search(text) is None, text
    assert "model 'gpt-4o-mnii' not found" in text
    assert "model in [backends.local]" in text
    line = cli_line(info.value, capsys)
    assert line.endswith("; see `chatcore backends models local`")


async def test_an_open_circuit(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        f'[backends.local]\nplugin = "ollama"\nhost = "http://127.0.0.1:{free_port()}"\n'
        'model = "llama3.2"\nmax_retries = 0\ncircuit_failure_threshold = 1\n'
        "circuit_reset_seconds = 30\n"
    )
    with trio.fail_after(20):
        async with open_engine(path, backend="local") as engine:
            conversation = engine.conversation()
            with pytest.raises(BackendUnavailable, match="cannot reach"):
                await conversation.send("hi")
            with pytest.raises(BackendUnavailable, match="is failing") as info:
                await conversation.send("hi again")
    text = api_text(info.value)
    assert CLI_ADVICE.search(text) is None, text
    assert "its circuit opened after 1 consecutive errors" in text
    assert "default_backend" in text and "[router] fallbacks" in text
    line = cli_line(info.value, capsys)
    assert line.endswith("; pick another backend with --backend NAME")


async def test_an_unknown_conversation(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_engine(backend="echo") as engine:
        with pytest.raises(ConversationNotFound) as info:
            engine.conversation("0000ffff-no-such")
    text = api_text(info.value)
    assert text == "no conversation '0000ffff-no-such'"
    assert cli_line(info.value, capsys) == (
        "error: no conversation '0000ffff-no-such' (see `chatcore history list`)"
    )


def test_the_chatcore_command_still_names_the_flag(write_config: WriteConfig) -> None:
    port = free_port()
    path = write_config(
        f'[backends.local]\nplugin = "ollama"\nhost = "http://127.0.0.1:{port}"\n'
        'model = "llama3.2"\nmax_retries = 0\n'
    )
    result = subprocess.run(
        [CHATCORE, "ask", "--config", str(path), "--backend", "local", "hi"],
        capture_output=True,
        text=True,
        env=subprocess_env({}),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: local: cannot reach http://127.0.0.1:{port}")
    assert line.endswith(
        "`ollama serve` or set host in [backends.local]; pick another backend with --backend NAME"
    )


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args],
        capture_output=True,
        text=True,
        env=subprocess_env({}),
        timeout=60,
        input=stdin,
    )


def test_every_command_line_error_path_adds_the_hint(write_config: WriteConfig) -> None:
    port = free_port()
    path = write_config(
        f'[backends.local]\nplugin = "ollama"\nhost = "http://127.0.0.1:{port}"\n'
        'model = "llama3.2"\nmax_retries = 0\n'
    )
    hint = "; pick another backend with --backend NAME"
    as_json = run_cli("ask", "--json", "--config", str(path), "--backend", "local", "hi")
    repl = run_cli("--config", str(path), "--backend", "local", stdin="hi\n")
    history = run_cli("history", "show", "0000ffff-no-such")
    assert as_json.returncode == 1
    # A script reads the JSON: it gets the error as stored (history show), no CLI advice.
    assert not json.loads(as_json.stdout)["error"].endswith(hint)
    assert [line for line in repl.stderr.splitlines() if line.startswith("error:")] == [
        f"error: local: cannot reach http://127.0.0.1:{port} (connection refused); start it "
        f"with `ollama serve` or set host in [backends.local]{hint}"
    ]
    assert history.returncode == 2
    assert history.stderr == (
        "error: no conversation '0000ffff-no-such' (see `chatcore history list`)\n"
    )


def test_the_memory_api_and_the_scaffold_leave_flags_to_the_cli(tmp_path: Path) -> None:
    from chatcore.cli._common import _error_line
    from chatcore.errors import InvalidInput, ScaffoldError
    from chatcore.scaffold import write_skeleton
    from features.memory import MemoryStore

    store = MemoryStore(tmp_path / "memory.db")
    try:
        with pytest.raises(InvalidInput) as blank:
            store.list(user="  ")
    finally:
        store.close()
    assert "--" not in str(blank.value)
    assert _error_line(blank.value).endswith("give --user NAME or leave it out")

    (tmp_path / "shout").mkdir()
    (tmp_path / "shout" / "taken.txt").write_text("x")
    with pytest.raises(ScaffoldError) as taken:
        write_skeleton("shout", "processor", tmp_path)
    assert "--" not in str(taken.value)
    assert _error_line(taken.value).endswith("choose another --dir")
