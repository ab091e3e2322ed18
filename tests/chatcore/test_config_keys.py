"""Unknown keys are errors everywhere, and every config error names the file and the dotted key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import subprocess_env
from pydantic import BaseModel, ConfigDict

from chatcore import load_config, open_engine
from chatcore.config import validate_settings
from chatcore.errors import ConfigError

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
ECHO = 'default_backend = "echo"\n[backends.echo]\nplugin = "echo"\n'


def run(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = {"CHATCORE_BACKEND": ""}
    if home is not None:
        extra |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run(
        [CHATCORE, *args],
        input="",
        capture_output=True,
        text=True,
        env=subprocess_env(extra),
        timeout=60,
    )


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return run("config", "check", "--config", str(path))


def test_a_misspelt_backend_key_is_an_error_with_the_backends_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(ECHO + "temprature = 0.2\n")
    result = check(path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: {path}: backends.echo.temprature: unknown key; did you mean 'temperature'? "
        "(allowed: plugin, model, timeout_seconds, temperature, max_tokens, "
    )
    assert "delay_seconds" in result.stderr  # echo's own key
    assert "host" not in result.stderr  # another backend's
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("plugin", "good", "own"),
    [
        (
            "ollama",
            'host = "http://127.0.0.1:1"\nkeep_alive = "5m"\noptions = { num_ctx = 8 }',
            "embed_model",
        ),
        (
            "openai",
            'base_url = "http://127.0.0.1:1/v1"\napi_key = ""\norganization = "o"',
            "embedding_model",
        ),
        ("anthropic", 'base_url = "http://127.0.0.1:1"\napi_key_env = "MY_KEY"', "api_key"),
    ],
)
async def test_each_shipped_backend_knows_its_keys(
    tmp_path: Path, plugin: str, good: str, own: str
) -> None:
    path = tmp_path / "c.toml"
    table = f"[backends.b]\nplugin = {plugin!r}\n{good}\n"
    path.write_text(ECHO + table)
    async with open_engine(load_config(path, env={})) as engine:
        await engine.plugins.load_all_backends()
        assert engine.status().plugins["b"].state == "active"

    path.write_text(ECHO + table + "colour = 1\n")
    async with open_engine(load_config(path, env={})) as engine:
        await engine.plugins.load_all_backends()
        status = engine.status().plugins["b"]
    assert status.state == "error"
    assert status.last_error is not None
    assert status.last_error.startswith(
        f"{path}: backends.b.colour: unknown key (allowed: plugin, "
    )
    assert own in status.last_error


async def test_a_bad_backend_value_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(ECHO + 'delay_seconds = "slow"\n')
    async with open_engine(load_config(path, env={})) as engine:
        status = engine.status().plugins["echo"]
    assert status.state == "error"
    assert status.last_error == (
        f"{path}: backends.echo.delay_seconds: expected a number, got 'slow'"
    )


def test_a_backend_key_from_the_shipped_default_names_that_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    user = home / ".config" / "chatcore" / "config.toml"
    user.parent.mkdir(parents=True)
    # Switching the shipped ollama table to openai keeps its host, which openai doesn't know.
    user.write_text('default_backend = "echo"\n[backends.ollama]\nplugin = "openai"\n')
    result = run("config", "check", home=home)
    assert result.returncode == 2
    assert "backends.ollama.host: unknown key (allowed: plugin, " in result.stderr
    assert "/config/default.toml: backends.ollama.host" in result.stderr


def test_an_unknown_plugin_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(ECHO + '[[plugins]]\nplugin = "normalizer"\n[[plugins]]\nplugin = "nosuch"\n')
    result = check(path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: {path}: plugins[1].plugin: plugin 'nosuch' not found: "
    )

    path.write_text(ECHO + '[backends.other]\nplugin = "no_such_module:Thing"\n')
    result = check(path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: {path}: backends.other.plugin: plugin 'no_such_module:Thing': cannot import"
    )


def test_a_plugin_without_settings_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(ECHO + '[[plugins]]\nplugin = "normalizer"\nconfig = { lowercase = true }\n')
    with pytest.raises(ConfigError) as info:
        trio.run(_start, path)
    assert str(info.value) == (
        f"{path}: plugins[0].config.lowercase: unknown key (this plugin takes no settings)"
    )


async def _start(path: Path) -> None:
    async with open_engine(load_config(path, env={})):
        pass


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regex: str
    action: str = "block"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patterns: list[_Rule] = []
    refusal: str = "no"


def test_every_problem_in_a_plugins_table_carries_the_full_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings(
            _Settings,
            {"patterns": [{"regx": "a"}], "refusal": 3},
            path=tmp_path / "c.toml",
            key="plugins[1].config",
        )
    assert info.value.key == "plugins[1].config.patterns[0].regx"
    assert info.value.problem == (
        "unknown key; did you mean 'regex'? (allowed: regex, action); "
        "plugins[1].config.patterns[0].regex: required key missing; "
        "plugins[1].config.refusal: expected a string, got 3"
    )
