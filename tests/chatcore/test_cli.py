"""The `chatcore` command as a user runs it: a real process, real files, exit codes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import PLUGIN_STATUS_KEYS, subprocess_env

CHATCORE = str(Path(sys.executable).with_name("chatcore"))


def run(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        env=subprocess_env(env),
        timeout=60,
    )


def run_json(*args: str, **kwargs: Any) -> Any:
    result = run(*args, "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ask_prints_the_echo_reply_and_history_shows_both_messages(data_dir: Path) -> None:
    result = run("ask", "--backend", "echo", "hello")
    assert (result.returncode, result.stdout, result.stderr) == (0, "echo: hello\n", "")

    answer = run_json("ask", "--backend", "echo", "second question")
    assert set(answer) >= {
        "conversation_id",
        "message_id",
        "content",
        "backend",
        "model",
        "tokens_in",
        "tokens_out",
    }
    assert answer["content"] == "echo: second question"
    assert (answer["backend"], answer["model"]) == ("echo", "echo")
    assert (answer["tokens_in"], answer["tokens_out"]) == (2, 3)

    shown = run_json("history", "show", answer["conversation_id"])
    assert shown["id"] == answer["conversation_id"]
    assert shown["title"] == "second question"
    assert [(m["role"], m["content"], m["status"]) for m in shown["messages"]] == [
        ("user", "second question", "complete"),
        ("assistant", "echo: second question", "complete"),
    ]
    assert shown["messages"][1]["id"] == answer["message_id"]
    assert set(shown["messages"][0]) == {"id", "role", "content", "status", "model", "created_at"}
    assert (data_dir / "chatcore.db").is_file()

    listed = run_json("history", "list")
    assert [c["title"] for c in listed] == ["second question", "hello"]
    assert set(listed[0]) == {"id", "short_id", "title", "updated_at", "message_count", "failed"}
    assert listed[0]["message_count"] == 2


def test_prompt_from_stdin_and_continuing_conversations() -> None:
    first = run("ask", "--json", input="from stdin\n")
    assert first.returncode == 0, first.stderr
    conversation_id = json.loads(first.stdout)["conversation_id"]
    second = run_json("ask", "-c", "follow up")
    assert second["conversation_id"] == conversation_id
    third = run_json("ask", "--conversation", conversation_id[:10], "third")
    assert third["conversation_id"] == conversation_id
    shown = run_json("history", "show", conversation_id)
    assert len(shown["messages"]) == 6


def test_the_readme_plugin_example_configured_by_module_path(tmp_path: Path) -> None:
    config = tmp_path / "shout.toml"
    config.write_text(
        'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
        '[[plugins]]\nplugin = "yourmodule:Shout"\n'
    )
    result = run("ask", "--config", str(config), "--backend", "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "echo: HELLO\n")
    plugins = run_json("plugins", "--config", str(config))
    assert [(p["name"], p["type"], p["state"]) for p in plugins] == [
        ("echo", "backend", "active"),
        ("shout", "processor", "active"),
    ]
    assert set(plugins[0]) == PLUGIN_STATUS_KEYS | {"process"}


@pytest.mark.parametrize(
    ("config_text", "key", "expected"),
    [
        (
            'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'
            'timeout_seconds = "soon"\n',
            r"backends\.echo\.timeout_seconds",
            "expected a number",
        ),
        (
            'default_backend = "nope"\n[backends.echo]\nplugin = "echo"\n',
            "default_backend",
            "unknown backend 'nope'",
        ),
        (
            '[[plugins]]\nplugin = "yourmodule:Shout"\npriority = "high"\n',
            r"plugins\[0\]\.priority",
            "expected",
        ),
    ],
)
def test_a_bad_config_exits_2_naming_file_and_key(
    tmp_path: Path, config_text: str, key: str, expected: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(config_text)
    for args in (["ask", "hi"], ["config", "check"], ["plugins"]):
        # No $CHATCORE_BACKEND here: it would override the file's default_backend.
        result = run(*args, "--config", str(config), env={"CHATCORE_BACKEND": ""})
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(f"error: {config}: ")
        assert key.replace("\\", "") in result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_backend_flag_exits_2() -> None:
    result = run("ask", "--backend", "nope", "hi")
    assert result.returncode == 2
    assert "unknown backend 'nope'" in result.stderr
    assert "echo" in result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["ask", ""], "", "empty prompt"),
        (["ask"], "   \n", "empty prompt"),
        (["ask", "x" * 100_001], "", "prompt too long: 100,001 characters"),
        (["ask"], "bad\x00byte", "NUL bytes"),
    ],
)
def test_bad_prompts_get_one_line_and_write_nothing(
    args: list[str], stdin: str, expected: str, data_dir: Path
) -> None:
    result = run(*args, input=stdin)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    db = data_dir / "chatcore.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)


def test_ctrl_c_during_a_stream_stops_cleanly_and_keeps_a_partial_reply(
    tmp_path: Path, data_dir: Path
) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(
        'default_backend = "slow"\n[backends.slow]\nplugin = "echo"\ndelay_seconds = 0.5\n'
    )
    proc = subprocess.Popen(
        [
            CHATCORE,
            "ask",
            "--config",
            str(config),
            "--backend",
            "slow",
            "one two three four five six seven eight",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdout is not None
    # Wait for the first streamed piece, then press Ctrl-C.
    first = proc.stdout.read(len("echo: "))
    assert first == "echo: "
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert stdout.endswith("\n")  # the terminal is left on a fresh line
    assert "interrupted: the partial reply is saved" in stderr
    assert "Traceback" not in stderr
    with sqlite3.connect(data_dir / "chatcore.db") as conn:
        rows = conn.execute("SELECT role, content, status FROM messages ORDER BY seq").fetchall()
    assert rows[0] == ("user", "one two three four five six seven eight", "complete")
    assert rows[1][0] == "assistant"
    assert rows[1][2] == "partial"
    assert rows[1][1].startswith("echo: ")
    assert rows[1][1] != "echo: one two three four five six seven eight"


def test_history_show_unknown_id_and_config_commands(tmp_path: Path) -> None:
    missing = run("history", "show", "ffffffff")
    assert missing.returncode == 2
    assert "no conversation 'ffffffff'" in missing.stderr

    path = run("config", "path")
    assert path.returncode == 0
    assert path.stdout.strip().endswith("(shipped default)")
    config = tmp_path / "mine.toml"
    config.write_text(
        '[backends.echo]\nplugin = "echo"\n'
        '[backends.remote]\nplugin = "openai"\napi_key = "sk-very-secret"\n'
    )
    env_path = run("config", "path", env={"CHATCORE_CONFIG": str(config)})
    assert env_path.stdout.strip() == f"{config}  ($CHATCORE_CONFIG)"

    check = run("config", "check", "--config", str(config))
    assert (check.returncode, check.stdout.strip()) == (0, f"ok: {config}")
    shown = run("config", "show", "--config", str(config))
    assert shown.returncode == 0
    assert "sk-very-secret" not in shown.stdout
    assert json.loads(shown.stdout)["backends"]["remote"]["api_key"] == "***"


def test_config_check_reports_plugins_that_cannot_load(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text('[[plugins]]\nplugin = "no_such_module:Thing"\nname = "thing"\n')
    result = run("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert f"error: {config}: plugins[0].plugin: plugin 'no_such_module:Thing': cannot import" in (
        result.stderr
    )


def test_backends_list_shows_the_shipped_backends_and_labels_echo() -> None:
    rows = run_json("backends", "list", env={"CHATCORE_BACKEND": ""})
    assert [
        {k: row[k] for k in ("name", "plugin", "model", "state", "circuit", "is_default")}
        for row in rows
    ] == [
        {
            "name": "ollama",
            "plugin": "ollama",
            "model": "llama3.2",
            "state": "active",
            "circuit": "closed",
            "is_default": True,
        },
        {
            "name": "openai",
            "plugin": "openai",
            "model": "gpt-4o-mini",
            "state": "active",
            "circuit": "closed",
            "is_default": False,
        },
        {
            "name": "anthropic",
            "plugin": "anthropic",
            "model": "claude-sonnet-5-5",
            "state": "active",
            "circuit": "closed",
            "is_default": False,
        },
        {
            "name": "echo",
            "plugin": "echo",
            "model": "echo",
            "state": "active",
            "circuit": "closed",
            "is_default": False,
        },
    ]
    plain = run("backends", env={"CHATCORE_BACKEND": "echo"})
    echo_line = next(line for line in plain.stdout.splitlines() if " echo " in line)
    assert echo_line.startswith("*")
    assert "not a language model" in echo_line


def test_bare_chatcore_runs_an_interactive_prompt_loop() -> None:
    result = run(input="hello there\n/new\nsecond\n")
    assert result.returncode == 0, result.stderr
    assert "echo: hello there" in result.stdout
    assert "echo: second" in result.stdout
    listed = run_json("history", "list")
    assert len(listed) == 2


def test_help_lists_the_commands_without_importing_the_engine() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("ask", "plugins", "history", "config", "backends"):
        assert command in result.stdout
    # Cold start is measured by the benchmark; here we check the reason it is fast:
    # the CLI module imports none of the engine's heavy dependencies.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, chatcore.cli;"
            "print(sorted(m for m in ('trio','pydantic','sqlite_utils') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_a_failing_plugin_never_fails_a_turn_and_its_open_circuit_outlives_the_process(
    tmp_path: Path,
) -> None:
    config = tmp_path / "failing.toml"
    config.write_text(
        '[backends.echo]\nplugin = "echo"\n'
        '[[plugins]]\nplugin = "engine_plugins:AlwaysFails"\n'
        "circuit_failure_threshold = 2\ncircuit_reset_seconds = 3600\n"
    )
    for i in range(3):
        result = run("ask", "--config", str(config), f"turn {i}")
        assert (result.returncode, result.stdout) == (0, f"echo: turn {i}\n"), result.stderr
    rows = {row["name"]: row for row in run_json("plugins", "--config", str(config))}
    failing = rows["always_fails"]
    assert (failing["calls"], failing["failures"], failing["circuit"]) == (2, 2, "open")
    assert failing["last_error"] == "RuntimeError: this plugin is broken"
    assert rows["echo"]["calls"] == 3
    assert rows["echo"]["p50_ms"] is not None


def test_ask_lists_the_sources_of_a_reply_under_it(tmp_path: Path) -> None:
    config = tmp_path / "cites.toml"
    config.write_text(
        '[backends.echo]\nplugin = "echo"\n[[plugins]]\nplugin = "engine_plugins:Cites"\n'
    )
    result = run("ask", "--config", str(config), "where?")
    assert (result.returncode, result.stdout) == (
        0,
        "echo: where?\n\nSources:\n"
        "  [1] guide.md > Install (chunk 3, score 0.42)\n"
        "  [2] faq.txt (chunk 0, score 0.20)\n",
    ), result.stderr
    answer = run_json("ask", "--config", str(config), "--json", "again?")
    assert [c["document"] for c in answer["citations"]] == ["guide.md", "faq.txt"]


def test_a_failing_backend_gets_one_line_after_the_partial_reply(
    tmp_path: Path, data_dir: Path
) -> None:
    config = tmp_path / "failing.toml"
    config.write_text('[backends.failing]\nplugin = "engine_plugins:FailingBackend"\n')
    result = run("ask", "--config", str(config), "--backend", "failing", "hi")
    assert result.returncode == 1
    assert result.stdout == "half a reply\n"
    assert result.stderr == (
        "error: backend 'failing' failed: ConnectionError: connection reset by peer\n"
    )
    with sqlite3.connect(data_dir / "chatcore.db") as conn:
        rows = conn.execute("SELECT role, content, status FROM messages ORDER BY seq").fetchall()
    assert rows == [("user", "hi", "complete"), ("assistant", "half a reply", "partial")]


def test_options_before_the_command_apply_to_it(tmp_path: Path) -> None:
    config = tmp_path / "two.toml"
    config.write_text(
        '[backends.echo]\nplugin = "echo"\n'
        '[backends.other]\nplugin = "echo"\nmodel = "other-model"\n'
    )
    answer = run_json("--config", str(config), "--backend", "other", "ask", "hi")
    assert (answer["backend"], answer["model"]) == ("other", "other-model")
    missing = run("--config", str(tmp_path / "missing.toml"), "history", "list")
    assert missing.returncode == 2
    assert "file not found" in missing.stderr
    unknown = run("--backend", "nope", "ask", "hi")
    assert unknown.returncode == 2
    assert "unknown backend 'nope'" in unknown.stderr
