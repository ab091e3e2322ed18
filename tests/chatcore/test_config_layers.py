"""A user config layers over the shipped default; --config and $CHATCORE_CONFIG are read alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

from chatcore import _config_load, open_engine
from chatcore.config import config_layers, load_config, shipped_config_path, user_config_path
from chatcore.errors import ConfigError

CHATCORE = str(Path(sys.executable).with_name("chatcore"))
SHIPPED_BACKENDS = {"ollama", "openai", "anthropic", "echo"}


def user_config(home: Path, text: str, name: str = "config.toml") -> Path:
    """Write the user config where platformdirs looks for it (XDG_CONFIG_HOME of the test)."""
    folder = home / ".config" / "chatcore"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    assert user_config_path() == path
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"  # made by the autouse isolated_env fixture


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the shipped default, to layer plugins and bad values under a user file."""
    path = tmp_path / "shipped" / "default.toml"
    path.parent.mkdir()
    monkeypatch.setattr(_config_load, "shipped_config_path", lambda: path)
    return path


def test_a_user_config_with_only_a_theme_keeps_the_shipped_backends(home: Path) -> None:
    user = user_config(home, '[tui]\ntheme = "textual-light"\n')
    config = load_config(env={})
    assert config.tui.theme == "textual-light"
    assert set(config.backends) == SHIPPED_BACKENDS
    assert config.default_backend == "ollama"
    assert config.backends["ollama"].options["host"] == "http://127.0.0.1:11434"
    assert config.source == user
    assert config.sources == (shipped_config_path(), user)


def test_backend_tables_merge_key_by_key(home: Path) -> None:
    user_config(
        home,
        'default_backend = "local"\n'
        '[backends.ollama]\nmodel = "qwen3"\n'
        '[backends.local]\nplugin = "echo"\n'
        '[tui.keys]\nnew_chat = "ctrl+t"\n',
    )
    config = load_config(env={})
    ollama = config.backends["ollama"]
    assert (ollama.plugin, ollama.model, ollama.timeout_seconds) == ("ollama", "qwen3", 120.0)
    assert ollama.options["host"] == "http://127.0.0.1:11434"
    assert set(config.backends) == {*SHIPPED_BACKENDS, "local"}
    assert config.default_backend == "local"
    assert config.tui.keys == {"new_chat": "ctrl+t"}
    assert config.replication.batch_size == 500  # a shipped table the user didn't touch


def test_lists_replace(home: Path, shipped: Path) -> None:
    shipped.write_text(
        '[backends.echo]\nplugin = "echo"\n'
        '[router]\nfallbacks = ["echo"]\n'
        '[[plugins]]\nplugin = "normalizer"\n'
        '[[plugins]]\nplugin = "cache"\n'
        '[tui.keys]\nnew_chat = "ctrl+n"\nplugins = "f2"\n',
    )
    user_config(
        home,
        '[router]\nfallbacks = []\n[[plugins]]\nplugin = "metrics"\n[tui.keys]\nplugins = "f3"\n',
    )
    config = load_config(env={})
    assert [p.plugin for p in config.plugins] == ["metrics"]
    assert config.router.fallbacks == []
    assert config.tui.keys == {"new_chat": "ctrl+n", "plugins": "f3"}


def test_relative_paths_start_at_the_folder_of_the_file_that_wrote_them(
    home: Path, shipped: Path
) -> None:
    shipped.write_text('plugin_dirs = ["shipped-plugins"]\n')
    user = user_config(home, 'data_dir = "data"\n')
    config = load_config(env={})
    assert config.plugin_dirs == [shipped.parent / "shipped-plugins"]
    assert config.data_dir == user.parent / "data"


def test_explicit_files_are_read_alone(home: Path, tmp_path: Path) -> None:
    user_config(home, 'system_prompt = "from the user config"\n')
    mine = tmp_path / "mine.toml"
    mine.write_text('[tui]\ntheme = "textual-light"\n')
    for config in (
        load_config(mine, env={}),
        load_config(env={"CHATCORE_CONFIG": str(mine)}),
    ):
        assert set(config.backends) == {"echo"}  # the model's default, not the shipped file's
        assert config.system_prompt is None
        assert config.sources == (mine,)
    assert config_layers(mine, env={}) == [(mine, "--config")]
    assert config_layers(env={"CHATCORE_CONFIG": str(mine)}) == [(mine, "$CHATCORE_CONFIG")]


def test_layers_without_a_user_config(home: Path) -> None:
    assert config_layers(env={}) == [(shipped_config_path(), "shipped default")]
    user = user_config(home, "")
    assert config_layers(env={}) == [
        (shipped_config_path(), "shipped default"),
        (user, "user config"),
    ]


def test_an_error_names_the_file_the_value_came_from(home: Path, shipped: Path) -> None:
    shipped.write_text('[backends.echo]\nplugin = "echo"\n[runtime]\nmax_restarts = -1\n')
    user = user_config(home, '[backends.echo]\ntimeout_seconds = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_config(env={})
    assert info.value.path == str(user)
    assert info.value.key == "backends.echo.timeout_seconds"
    assert str(info.value).startswith(
        f"{user}: backends.echo.timeout_seconds: expected a number, got 'soon'; "
    )
    # The second problem is in the other file, and says so.
    assert str(info.value).endswith(
        f"runtime.max_restarts: expected a number of at least 0, got -1 (in {shipped})"
    )

    user.write_text("[runtime]\nchannel_capacity = 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(env={})
    assert (info.value.path, info.value.key) == (str(shipped), "runtime.max_restarts")


def test_a_missing_key_in_a_table_names_the_file_that_started_it(home: Path) -> None:
    user = user_config(home, '[backends.mine]\nmodel = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(env={})
    assert (info.value.path, info.value.key) == (str(user), "backends.mine.plugin")
    assert info.value.problem == "required key missing"


def test_value_origins(home: Path) -> None:
    user = user_config(home, 'system_prompt = "be brief"\n[backends.ollama]\nmodel = "qwen3"\n')
    config = load_config(env={"CHATCORE_BACKEND": "echo"})
    origins = config.value_origins()
    assert origins["system_prompt"] == str(user)
    assert origins["backends.ollama.model"] == str(user)
    assert origins["backends.ollama.host"] == str(shipped_config_path())
    assert origins["default_backend"] == "$CHATCORE_BACKEND"
    assert origins["runtime.channel_capacity"] == "default"
    assert origins["backends.ollama.max_retries"] == "default"
    assert config.with_overrides(system_prompt="x").value_origins()["system_prompt"] == "override"


# --- the command ---------------------------------------------------------------------


def run(
    *args: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATCORE, *args],
        input="",
        capture_output=True,
        text=True,
        env=subprocess_env(
            {
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "CHATCORE_BACKEND": "",
                "CHATCORE_CONFIG": "",
                **(env or {}),
            }
        ),
        timeout=60,
    )


def test_config_path_lists_every_file_in_effect_in_order(home: Path, tmp_path: Path) -> None:
    where = home / ".config" / "chatcore" / "config.toml"
    none = run("config", "path", home=home)
    assert none.returncode == 0, none.stderr
    assert none.stdout == f"{shipped_config_path()}  (shipped default)\n"
    assert none.stderr == (
        f"note: no user config; create {where} to layer your settings over the shipped default\n"
    )

    user = user_config(home, '[tui]\ntheme = "textual-light"\n')
    both = run("config", "path", home=home)
    assert both.stdout == (f"{shipped_config_path()}  (shipped default)\n{user}  (user config)\n")
    assert both.stderr == ""

    mine = tmp_path / "mine.toml"
    mine.write_text("")
    alone = run("config", "path", "--config", str(mine), home=home)
    assert alone.stdout == f"{mine}  (--config)\n"
    assert alone.stderr == "note: read alone, not layered over the shipped default\n"


def test_config_show_origin_says_where_each_value_came_from(home: Path) -> None:
    user = user_config(
        home, '[tui]\ntheme = "textual-light"\n[backends.openai]\napi_key = "sk-very-secret"\n'
    )
    result = run("config", "show", "--origin", home=home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f'tui.theme = "textual-light"  # {user}' in lines
    assert f'backends.openai.api_key = "***"  # {user}' in lines
    assert f'default_backend = "ollama"  # {shipped_config_path()}' in lines
    assert f'backends.ollama.host = "http://127.0.0.1:11434"  # {shipped_config_path()}' in lines
    assert "runtime.channel_capacity = 256  # default" in lines
    assert "sk-very-secret" not in result.stdout
    plain = run("config", "show", home=home)
    assert json.loads(plain.stdout)["tui"]["theme"] == "textual-light"


async def test_a_plugin_table_error_names_the_file_of_the_plugins_list(
    home: Path, shipped: Path
) -> None:
    shipped.write_text(
        '[backends.echo]\nplugin = "echo"\n[[plugins]]\nplugin = "cache"\nconfig = { ttl = 3 }\n'
    )
    user_config(home, '[tui]\ntheme = "textual-light"\n')
    config = load_config(env={})
    with pytest.raises(ConfigError) as info:
        async with open_engine(config):
            pass
    assert (info.value.path, info.value.key) == (str(shipped), "plugins[0].config.ttl")
