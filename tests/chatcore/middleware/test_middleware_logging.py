"""The ``logging`` middleware: JSON lines per turn and per failure, and what never gets in."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from fakes.openai import FakeOpenAI
from helpers import subprocess_env

from chatcore import BackendError, ConfigError, open_engine

WriteConfig = Callable[..., Path]
CHATCORE = str(Path(sys.executable).with_name("chatcore"))
API_KEY = "sk-proj-Zq8hT3vK9mW2xR7pL4nB6cY1"
EMAIL = "alice@example.com"
CARD = "4111 1111 1111 1111"
TURN_FIELDS = {
    "ts",
    "event",
    "conversation_id",
    "backend",
    "model",
    "latency_ms",
    "tokens",
    "status",
    "outcomes",
    "error",
}

BASE = """
default_backend = "echo"
[backends.echo]
plugin = "echo"
"""


def logging_entry(**settings: Any) -> str:
    lines = []
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return '[[plugins]]\nplugin = "logging"\n[plugins.config]\n' + "\n".join(lines) + "\n"


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_one_line_per_turn_without_message_text_by_default(
    write_config: WriteConfig, data_dir: Path
) -> None:
    async with open_engine(write_config(BASE + logging_entry())) as engine:
        conversation = engine.conversation()
        await conversation.send("first question")
        await conversation.send("second question")
    log = data_dir / "logs" / "chatcore.jsonl"
    lines = read_log(log)
    assert len(lines) == 2
    for line in lines:
        assert set(line) == TURN_FIELDS
        assert line["event"] == "turn"
        assert line["conversation_id"] == conversation.id
        assert (line["backend"], line["model"], line["status"]) == ("echo", "echo", "complete")
        assert line["latency_ms"] >= 0
        assert line["error"] is None
    assert lines[0]["tokens"] == {"in": 2, "out": 3}
    assert "question" not in log.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o600"


async def test_content_is_logged_only_redacted_and_the_env_key_never(
    write_config: WriteConfig, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    config = write_config(BASE + logging_entry(log_content=True))
    async with open_engine(config) as engine:
        await engine.conversation().send(f"my key {API_KEY}, mail {EMAIL}, card {CARD}")
    text = (data_dir / "logs" / "chatcore.jsonl").read_text()
    assert API_KEY not in text
    assert EMAIL not in text
    assert CARD not in text
    (line,) = read_log(data_dir / "logs" / "chatcore.jsonl")
    assert line["user"] == "my key <ENV:OPENAI_API_KEY>, mail <EMAIL>, card <CARD>"
    assert line["reply"] == "echo: my key <ENV:OPENAI_API_KEY>, mail <EMAIL>, card <CARD>"


async def test_a_plugin_failure_is_its_own_line_and_the_key_is_scrubbed(
    write_config: WriteConfig, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    config = write_config(
        BASE + logging_entry() + '[[plugins]]\nplugin = "middleware_plugins:LeakyProcessor"\n'
    )
    async with open_engine(config) as engine:
        reply = await engine.conversation().send("hello")
        assert reply.content == "echo: hello"
    log = data_dir / "logs" / "chatcore.jsonl"
    assert API_KEY not in log.read_text()
    failure, turn = read_log(log)
    assert failure["event"] == "plugin_error"
    assert (failure["plugin"], failure["hook"]) == ("leaky", "before_message")
    assert failure["error"] == "RuntimeError: request failed with key <ENV:OPENAI_API_KEY>"
    assert (turn["event"], turn["status"]) == ("turn", "complete")


async def test_a_failed_backend_turn_logs_the_error_not_the_key(
    write_config: WriteConfig, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("CHATCORE_BACKEND", "openai")
    with FakeOpenAI() as openai:
        openai.expected_api_key = "sk-a-different-key-entirely"
        config = write_config(
            f"""
default_backend = "openai"
[backends.openai]
plugin = "openai"
base_url = "{openai.url}/v1"
model = "gpt-4o-mini"
max_retries = 0
"""
            + logging_entry(log_content=True)
        )
        async with open_engine(config) as engine:
            with pytest.raises(BackendError):
                await engine.conversation().send(f"use {API_KEY}")
    text = (data_dir / "logs" / "chatcore.jsonl").read_text()
    assert API_KEY not in text
    (line,) = read_log(data_dir / "logs" / "chatcore.jsonl")
    assert (line["backend"], line["status"]) == ("openai", "error")
    assert line["error"]
    assert line["user"] == "use <ENV:OPENAI_API_KEY>"


async def test_the_file_is_rotated_by_size(write_config: WriteConfig, tmp_path: Path) -> None:
    log = tmp_path / "custom" / "turns.jsonl"
    config = write_config(BASE + logging_entry(path=str(log), max_bytes=1024, backup_count=2))
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        for n in range(20):
            await conversation.send(f"turn {n}")
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["turns.jsonl", "turns.jsonl.1", "turns.jsonl.2"]
    for path in log.parent.iterdir():
        assert 0 < path.stat().st_size <= 1024
        assert all(line["event"] == "turn" for line in read_log(path))
    # The newest turn (the longest history) is last in the current file.
    newest = max(line["tokens"]["in"] for p in log.parent.iterdir() for line in read_log(p))
    assert read_log(log)[-1]["tokens"]["in"] == newest


async def test_stderr_stream_with_the_real_command(write_config: WriteConfig) -> None:
    config = write_config(BASE + logging_entry(stream="stderr"))
    result = await trio.run_process(
        [CHATCORE, "ask", "--config", str(config), "hello there"],
        capture_stdout=True,
        capture_stderr=True,
        env=subprocess_env(),
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert result.stdout.decode().strip() == "echo: hello there"
    (line,) = [json.loads(x) for x in stderr.splitlines() if x.startswith("{")]
    assert (line["event"], line["status"]) == ("turn", "complete")


async def test_path_and_stream_together_are_a_config_error(write_config: WriteConfig) -> None:
    config = write_config(BASE + logging_entry(path="x.jsonl", stream="stderr"))
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config.*either path"):
        async with open_engine(config):
            pass


async def test_other_personal_data_and_tokens_are_redacted_too(
    write_config: WriteConfig, data_dir: Path
) -> None:
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    text = (
        f"call +44 20 7946 0958 from 192.168.12.7, IBAN DE89 3704 0044 0532 0130 00, "
        f"token {token}, version 1.2.3 on 2024"
    )
    config = write_config(BASE + logging_entry(log_content=True))
    async with open_engine(config) as engine:
        await engine.conversation().send(text)
    (line,) = read_log(data_dir / "logs" / "chatcore.jsonl")
    assert line["user"] == (
        "call <PHONE> from <IP>, IBAN <IBAN>, token <SECRET>, version 1.2.3 on 2024"
    )


async def test_logged_content_passes_the_plugins_share_hooks_first(
    write_config: WriteConfig, data_dir: Path
) -> None:
    # The PII redactor's BEFORE_SHARE hook puts its own placeholder in before the
    # logger's patterns run: the line reads <EMAIL_1>, as the backend saw it.
    config = write_config(
        BASE
        + '[[plugins]]\nplugin = "pii_redactor"\n[plugins.config]\nskip_backends = []\n'
        + logging_entry(log_content=True)
    )
    async with open_engine(config) as engine:
        reply = await engine.conversation().send(f"mail {EMAIL} now")
    assert reply.content == f"echo: mail {EMAIL} now"
    (line,) = read_log(data_dir / "logs" / "chatcore.jsonl")
    assert line["user"] == "mail <EMAIL_1> now"
    assert line["reply"] == "echo: mail <EMAIL_1> now"
