"""`chatcore sync push|pull|status` through click's CliRunner, against a real redis-server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import free_port
from redis_server import RedisServer, make_tls_files, redis_factory, redis_server

from chatcore.cli import cli

__all__ = ["redis_factory", "redis_server"]  # fixtures used here

STATUS_KEYS = ["state", "pending", "last_error", "device_id", "last_push", "last_pull"]
PASSWORD = "hunter2-Xy9"


def write_config(folder: Path, url: str, name: str = "chatcore.toml") -> Path:
    path = folder / name
    path.write_text(
        'default_backend = "echo"\n'
        "[replication]\n"
        f'redis_url = "{url}"\n'
        "connect_timeout_seconds = 1.0\n"
        "command_timeout_seconds = 1.0\n"
    )
    return path


def run(*args: str, data_dir: Path | None = None) -> Result:
    env = {"CHATCORE_DATA_DIR": str(data_dir)} if data_dir is not None else None
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def ask(config: Path, data_dir: Path, text: str, *more: str) -> dict[str, Any]:
    result = run("ask", "--config", str(config), "--json", *more, text, data_dir=data_dir)
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.output)
    return answer


# --- replication off ------------------------------------------------------------------------


def test_without_a_redis_url_status_says_off_and_push_pull_refuse(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    status = run("sync", "status", "--config", str(config))
    assert (status.exit_code, status.output) == (
        0,
        "replication is off ([replication] redis_url is empty)\n",
    )
    as_json = json.loads(run("sync", "status", "--json", "--config", str(config)).output)
    assert list(as_json) == STATUS_KEYS
    assert (as_json["state"], as_json["pending"]) == ("off", 0)
    for command in ("push", "pull"):
        result = run("sync", command, "--config", str(config))
        assert result.exit_code == 2
        assert result.output.startswith("error: replication is off: [replication] redis_url")
        assert result.output.count("\n") == 1


# --- unreachable ------------------------------------------------------------------------------


def test_push_to_an_unreachable_redis_is_one_line_exit_1_without_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    ask(config, tmp_path / "data", "kept for later")
    for command in ("push", "pull"):
        result = run("sync", command, "--config", str(config), data_dir=tmp_path / "data")
        assert result.exit_code == 1
        assert re.fullmatch(
            rf"error: Redis at redis://127\.0\.0\.1:{port} is unreachable: .*Connection refused.*; "
            r"check \[replication\] redis_url\n",
            result.output,
        ), result.output
        assert PASSWORD not in result.output
    status = run("sync", "status", "--json", "--config", str(config), data_dir=tmp_path / "data")
    assert status.exit_code == 0
    assert PASSWORD not in status.output
    report = json.loads(status.output)
    assert list(report) == STATUS_KEYS
    assert report["state"] == "offline"
    assert report["pending"] == 3  # the conversation and the two messages wait
    assert "Connection refused" in report["last_error"]
    assert re.fullmatch(r"[0-9a-f]{32}", report["device_id"])
    assert (report["last_push"], report["last_pull"]) == (None, None)


def test_config_show_masks_the_password_in_the_redis_url(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"redis://:{PASSWORD}@cache.example:6379/0")
    result = run("config", "show", "--config", str(config))
    assert result.exit_code == 0
    assert PASSWORD not in result.output
    assert json.loads(result.output)["replication"]["redis_url"] == (
        "redis://:***@cache.example:6379/0"
    )


def test_a_password_in_the_query_string_is_refused_with_a_hint(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"redis://cache:6379/0?password={PASSWORD}")
    result = run("sync", "status", "--config", str(config))
    assert result.exit_code == 2
    assert "replication.redis_url: put the password in the URL's user part" in result.output
    assert PASSWORD not in result.output


# --- against a real server --------------------------------------------------------------------


def test_push_then_pull_on_another_device(tmp_path: Path, redis_factory: Any) -> None:
    server: RedisServer = redis_factory(password=PASSWORD)
    server.start()
    config = write_config(tmp_path, server.url)
    device_a, device_b = tmp_path / "a", tmp_path / "b"
    answer = ask(config, device_a, "hello from a")

    pushed = run("sync", "push", "--config", str(config), data_dir=device_a)
    assert pushed.exit_code == 0, pushed.output
    # The engine of `ask` may have pushed some already: whatever is left is sent now.
    assert re.fullmatch(
        rf"pushed [0-3] change\(s\) to redis://127\.0\.0\.1:{server.port}\n", pushed.output
    )
    status = json.loads(
        run("sync", "status", "--json", "--config", str(config), data_dir=device_a).output
    )
    assert (status["state"], status["pending"], status["last_error"]) == ("online", 0, None)
    assert status["last_push"] is not None

    pulled = run("sync", "pull", "--config", str(config), data_dir=device_b)
    assert pulled.exit_code == 0, pulled.output
    assert pulled.output == f"pulled from redis://127.0.0.1:{server.port}: 3 change(s) applied\n"
    shown = run("history", "show", answer["conversation_id"], "--json", data_dir=device_b)
    contents = [m["content"] for m in json.loads(shown.output)["messages"]]
    assert contents == ["hello from a", "echo: hello from a"]
    again = run("sync", "pull", "--config", str(config), data_dir=device_b)
    assert again.output.endswith(": 0 change(s) applied\n")

    human = run("sync", "status", "--config", str(config), data_dir=device_b)
    assert human.output.splitlines()[0] == "state: online"
    assert PASSWORD not in human.output
    for folder in (device_a, device_b):
        for file in folder.iterdir():
            assert PASSWORD.encode() not in file.read_bytes(), file


def test_rediss_against_a_plain_port_fails_with_a_tls_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = write_config(tmp_path, f"rediss://127.0.0.1:{redis_server.port}/0")
    result = run("sync", "push", "--config", str(config))
    assert result.exit_code == 1
    assert result.output.startswith(
        f"error: Redis at rediss://127.0.0.1:{redis_server.port} is unreachable: "
        "TLS handshake failed"
    ), result.output
    assert result.output.count("\n") == 1


def test_rediss_to_a_tls_server(tmp_path: Path, redis_factory: Any) -> None:
    cert, key, ca = make_tls_files(tmp_path / "tls")
    server: RedisServer = redis_factory(tls=(cert, key, ca), password=PASSWORD)
    server.start()
    config = write_config(tmp_path, f"{server.url}?ssl_ca_certs={ca}")
    ask(config, tmp_path / "data", "over tls")
    result = run("sync", "push", "--config", str(config), data_dir=tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"to rediss://127.0.0.1:{server.port}\n")
    with server.client() as client:
        assert client.xlen("chatcore:changes") == 3


@pytest.mark.parametrize("command", ["push", "pull"])
def test_unix_socket_urls_work(tmp_path: Path, redis_factory: Any, command: str) -> None:
    server: RedisServer = redis_factory()
    socket_path = tmp_path / "redis.sock"
    server.extra_args = ["--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    server.start()
    config = write_config(tmp_path, f"unix://{socket_path}")
    result = run("sync", command, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert f"unix://{socket_path}" in result.output


def test_sync_push_shares_through_the_configured_plugins(
    tmp_path: Path, redis_factory: Any
) -> None:
    # Written while Redis was away, pushed later by the command: the PII redactor's
    # BEFORE_SHARE hook runs there too, so the address leaves as its placeholder.
    server: RedisServer = redis_factory()
    config = write_config(tmp_path, server.url)
    config.write_text(
        config.read_text()
        + '[[plugins]]\nplugin = "pii_redactor"\n[plugins.config]\nskip_backends = []\n'
    )
    data_dir = tmp_path / "data"
    answer = ask(config, data_dir, "write to ann@example.org please")
    server.start()
    pushed = run("sync", "push", "--config", str(config), data_dir=data_dir)
    assert pushed.exit_code == 0, pushed.output
    with server.client() as client:
        sent = {
            json.loads(text)["role"]: json.loads(text)
            for text in client.hgetall(
                f"chatcore:{{conv:{answer['conversation_id']}}}:msgs"
            ).values()
        }
        title = client.hget(f"chatcore:{{conv:{answer['conversation_id']}}}:meta", "title")
    assert sent["user"]["content"] == "write to <EMAIL_1> please"
    assert "local" not in sent["user"]["metadata"]
    assert title == "write to <EMAIL_1> please"
    shown = run("history", "show", answer["conversation_id"], "--json", data_dir=data_dir)
    assert json.loads(shown.output)["messages"][0]["content"] == "write to ann@example.org please"
