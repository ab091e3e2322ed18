"""The backends through the real `chatcore` command: selection, failures, one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from fakes.openai import FakeOpenAI
from helpers import subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(env),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_cli_drop_after_two_chunks_exits_non_zero_with_one_line(
    tmp_path: Path,
) -> None:
    with FakeOpenAI(reply_chunks=("Hi", " from", " OpenAI")) as server:
        server.drop_after(2)
        config = tmp_path / "cut.toml"
        config.write_text(
            f'[backends.openai]\nplugin = "openai"\nbase_url = "{server.url}/v1"\n'
            'model = "gpt-4o-mini"\n'
        )
        result = run_cli("ask", "--config", str(config), "--backend", "openai", "hi", env={})
    assert result.returncode == 1
    assert result.stdout == "Hi from\n"
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: openai: ")
    assert "cut" in result.stderr


def test_cli_backend_selection_by_flag_and_by_environment(tmp_path: Path) -> None:
    with FakeOpenAI(reply_chunks=("from", " openai")) as server:
        config = tmp_path / "two.toml"
        config.write_text(
            '[backends.echo]\nplugin = "echo"\n'
            f'[backends.openai]\nplugin = "openai"\nbase_url = "{server.url}/v1"\n'
            'model = "gpt-4o-mini"\n'
        )
        by_flag = run_cli("ask", "--config", str(config), "--backend", "openai", "hi", env={})
        by_env = run_cli(
            "ask", "--config", str(config), "--json", "hi", env={"CHATCORE_BACKEND": "openai"}
        )
        echo = run_cli("ask", "--config", str(config), "hi", env={"CHATCORE_BACKEND": "echo"})
        unknown = run_cli("ask", "--config", str(config), "--backend", "gpt", "hi", env={})
    assert by_flag.stdout == "from openai\n"
    assert json.loads(by_env.stdout)["backend"] == "openai"
    assert echo.stdout == "echo: hi\n"
    assert unknown.returncode == 2
    assert "unknown backend 'gpt'; configured backends: echo, openai" in unknown.stderr


def test_shipped_config_without_ollama_fails_fast_with_one_line() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli(
        "ask", "hi", env={"CHATCORE_BACKEND": "", "OLLAMA_HOST": f"http://127.0.0.1:{port}"}
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: ollama: cannot reach http://127.0.0.1:{port}")
    assert "ollama serve" in lines[0]
    assert "--backend" in lines[0]


def test_backends_models_and_check_one_line_each(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with FakeOpenAI(models=("gpt-4o-mini", "gpt-4o")) as server:
        config = tmp_path / "check.toml"
        config.write_text(
            f'[backends.openai]\nplugin = "openai"\nbase_url = "{server.url}/v1"\n'
            'model = "gpt-4o-mini"\n'
            f'[backends.ollama]\nplugin = "ollama"\nhost = "http://127.0.0.1:{dead_port}"\n'
            'model = "llama3.2"\n'
            '[backends.echo]\nplugin = "echo"\n'
        )
        models = run_cli("backends", "models", "openai", "--json", "--config", str(config), env={})
        check = run_cli("backends", "check", "--config", str(config), env={})
    assert json.loads(models.stdout) == ["gpt-4o-mini", "gpt-4o"]
    assert check.returncode == 1  # ollama is down
    lines = check.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", "openai"],
        ["FAIL", "ollama"],
        ["ok", "echo"],
    ]
    assert f"cannot reach http://127.0.0.1:{dead_port}" in lines[1]


def test_cli_ask_over_the_context_window_fails_with_one_line_instead_of_an_empty_reply(
    tmp_path: Path,
) -> None:
    with FakeOpenAI() as server:
        server.context_window = 3
        config = tmp_path / "small.toml"
        config.write_text(
            f'[backends.llama]\nplugin = "openai"\nbase_url = "{server.url}/v1"\n'
            'model = "gpt-4o-mini"\nmax_retries = 0\n'
        )
        result = run_cli(
            "ask", "--config", str(config), "--backend", "llama", "one two three four", env={}
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "ended without finishing (the prompt may exceed the model's context window" in (
        result.stderr
    )


def test_cli_backends_models_at_a_base_url_without_v1_says_which_base_url_to_try(
    tmp_path: Path,
) -> None:
    with FakeOpenAI() as server:
        config = tmp_path / "nov1.toml"
        config.write_text(
            f'[backends.local]\nplugin = "openai"\nbase_url = "{server.url}"\n'
            'model = "gpt-4o-mini"\nmax_retries = 0\n'
        )
        env = {"CHATCORE_BACKEND": "local"}
        ask = run_cli("ask", "--config", str(config), "hi", env=env)
        models = run_cli("backends", "models", "local", "--config", str(config), env=env)
    for result in (ask, models):
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert f'try "{server.url}/v1"' in result.stderr
        assert "not found" not in result.stderr and "None" not in result.stderr


def test_cli_rag_with_an_embedding_model_without_pooling_warns_and_falls_back_to_bm25(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.txt").write_text("Refunds are paid within fourteen days of a return.")
    with FakeOpenAI() as server:
        server.pooling = False
        config = tmp_path / "rag.toml"
        config.write_text(
            f'[backends.llama]\nplugin = "openai"\nbase_url = "{server.url}/v1"\n'
            'model = "gpt-4o-mini"\nembedding_model = "text-embedding-3-small"\n'
            '[[plugins]]\nplugin = "rag"\n[plugins.config]\nembed_backend = "llama"\n'
        )
        env = {"CHATCORE_BACKEND": "llama"}
        add = run_cli("--config", str(config), "rag", "add", str(docs), env=env)
        search = run_cli("--config", str(config), "rag", "search", "refunds", env=env)
    for result in (add, search):
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
        assert len(warnings) == 1
        assert "one vector per token" in warnings[0] and "--pooling mean" in warnings[0]
    assert "refunds.txt" in search.stdout
