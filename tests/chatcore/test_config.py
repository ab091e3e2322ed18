"""Tests for chatcore.config: models, lookup order, substitution and error messages."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from helpers import REPO_ROOT
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from chatcore import config as config_mod
from chatcore.config import (
    BackendConfig,
    Config,
    PluginEntry,
    ReplicationConfig,
    RuntimeConfig,
    expand_vars,
    load_config,
    resolve_config_path,
    shipped_config_path,
    user_config_path,
    validate_settings,
)
from chatcore.errors import ConfigError, UnknownBackend

REPO = REPO_ROOT
EXAMPLE = REPO / "config" / "example.toml"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the platform's user config folder at an empty temp folder."""
    folder = tmp_path / "user-config"
    folder.mkdir()

    def fake(appname: str | None = None, *args: Any, **kwargs: Any) -> Path:
        assert appname == "chatcore"
        return folder

    monkeypatch.setattr(platformdirs, "user_config_path", fake)
    return folder


# --- shipped files -------------------------------------------------------------------


def test_shipped_default_loads_with_no_environment() -> None:
    path = shipped_config_path()
    assert path == REPO / "config" / "default.toml"
    config = load_config(path, env={})
    assert config.source == path
    assert config.default_backend == "ollama"  # local first
    assert {name: b.plugin for name, b in config.backends.items()} == {
        "ollama": "ollama",
        "openai": "openai",
        "anthropic": "anthropic",
        "echo": "echo",
    }
    assert config.backends["ollama"].options["host"] == "http://127.0.0.1:11434"
    assert config.backends["openai"].options["base_url"] == "https://api.openai.com/v1"
    assert "api_key" not in config.backends["openai"].options  # read from the env at call time
    assert config.router.fallbacks == []
    assert config.plugins == []
    assert config.replication.redis_url == ""


def test_example_loads_with_no_environment() -> None:
    config = load_config(EXAMPLE, env={})
    assert set(config.backends) == {"echo", "ollama", "openai", "anthropic"}
    assert config.backends["ollama"].options["host"] == "http://127.0.0.1:11434"
    assert config.backends["openai"].options["api_key"] == ""
    assert [p.instance_name for p in config.plugins] == ["filter", "shout"]
    assert config.data_dir is None
    assert config.system_prompt is None


def test_example_shows_every_key() -> None:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    written = set(raw)
    for section in ("runtime", "router", "tui", "replication"):
        written |= {f"{section}.{key}" for key in raw[section]}
    for backend in raw["backends"].values():
        written |= {f"backends.<name>.{key}" for key in backend}
    for entry in raw["plugins"]:
        written |= {f"plugins[].{key}" for key in entry}
    documented = set(Config().field_docs()) - {"backends.<name>.<other>"}
    assert documented - written == set()


def test_example_substitutes_environment() -> None:
    env = {"OPENAI_API_KEY": "sk-live", "CHATCORE_REDIS_URL": "redis://:pw@cache:6379/0"}
    config = load_config(EXAMPLE, env=env)
    assert config.backends["openai"].options["api_key"] == "sk-live"
    assert config.replication.redis_url == "redis://:pw@cache:6379/0"


# --- lookup order --------------------------------------------------------------------


def test_lookup_falls_back_to_shipped_default(user_dir: Path) -> None:
    assert resolve_config_path(env={}) == (shipped_config_path(), "shipped default")


def test_lookup_order(user_dir: Path, tmp_path: Path) -> None:
    user = write(user_dir, "config.toml", 'default_backend = "echo"\n')
    from_env = write(tmp_path, "env.toml", "")
    explicit = write(tmp_path, "explicit.toml", "")
    env = {"CHATCORE_CONFIG": str(from_env)}

    assert resolve_config_path(env={}) == (user, "user config")
    assert resolve_config_path(env=env) == (from_env, "$CHATCORE_CONFIG")
    assert resolve_config_path(explicit, env=env) == (explicit, "--config")
    assert resolve_config_path(str(explicit), env=env) == (explicit, "--config")


def test_empty_chatcore_config_is_ignored(user_dir: Path) -> None:
    assert resolve_config_path(env={"CHATCORE_CONFIG": ""})[1] == "shipped default"


def test_user_config_prefers_toml_then_yaml(user_dir: Path) -> None:
    assert user_config_path() == user_dir / "config.toml"  # nothing exists yet
    yml = write(user_dir, "config.yml", "")
    assert user_config_path() == yml
    yaml_file = write(user_dir, "config.yaml", "")
    assert user_config_path() == yaml_file
    toml_file = write(user_dir, "config.toml", "")
    assert user_config_path() == toml_file


def test_load_config_follows_lookup(user_dir: Path, tmp_path: Path) -> None:
    write(user_dir, "config.yaml", "system_prompt: from user\n")
    assert load_config(env={}).system_prompt == "from user"
    env_file = write(tmp_path, "env.toml", 'system_prompt = "from env"\n')
    config = load_config(env={"CHATCORE_CONFIG": str(env_file)})
    assert config.system_prompt == "from env"
    assert config.source == env_file


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found$") as info:
        load_config(missing, env={})
    assert info.value.key == ""
    assert info.value.path == str(missing)


# --- ${VAR} substitution -------------------------------------------------------------


def test_substitution_in_nested_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        """
default_backend = "ollama"
system_prompt = "You are ${WHO}."
[backends.ollama]
plugin = "ollama"
host = "${OLLAMA_HOST:-http://127.0.0.1:11434}"
options = { stop = ["${STOP:-</s>}", "$${literal}"] }
"${KEY_NOT_EXPANDED}" = "x"
""",
    )
    config = load_config(path, env={"WHO": "terse", "STOP": ""})
    assert config.system_prompt == "You are terse."
    options = config.backends["ollama"].options
    assert options["host"] == "http://127.0.0.1:11434"
    assert options["options"] == {"stop": ["</s>", "${literal}"]}
    assert options["${KEY_NOT_EXPANDED}"] == "x"


def test_substitution_feeds_typed_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        '[backends.echo]\nplugin = "echo"\ntimeout_seconds = "${ECHO_TIMEOUT:-2.5}"\n',
    )
    assert load_config(path, env={}).backends["echo"].timeout_seconds == 2.5
    assert load_config(path, env={"ECHO_TIMEOUT": "9"}).backends["echo"].timeout_seconds == 9


def test_unset_variable_names_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        '[backends.openai]\nplugin = "openai"\napi_key = "${OPENAI_API_KEY}"\n',
    )
    with pytest.raises(
        ConfigError,
        match=r"c\.toml: backends\.openai\.api_key: environment variable OPENAI_API_KEY is not "
        r"set \(write \$\{OPENAI_API_KEY:-default\} to give a fallback\)",
    ) as info:
        load_config(path, env={})
    assert info.value.key == "backends.openai.api_key"


def test_unset_variable_inside_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[[plugins]]\nplugin = "x"\nconfig = { a = ["${GONE}"] }\n')
    with pytest.raises(
        ConfigError, match=r"plugins\[0\]\.config\.a\[0\]: environment variable GONE"
    ):
        load_config(path, env={})


def test_malformed_reference(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", 'system_prompt = "${not valid}"\n')
    with pytest.raises(ConfigError, match=r"system_prompt: malformed reference '\$\{not valid\}'"):
        load_config(path, env={})


def test_expand_vars_cases() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert expand_vars("${A}-${A:-x}", env) == "1-1"
    assert expand_vars("${EMPTY}|${EMPTY:-d}|${UNSET:-}", env) == "|d|"
    assert expand_vars("$A $ {A} $$ $${A}", env) == "$A $ {A} $$ ${A}"
    with pytest.raises(ConfigError, match="environment variable UNSET is not set"):
        expand_vars("${UNSET}", env)


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
NO_DOLLAR = st.text(st.characters(exclude_characters="$", codec="utf-8"))


@given(NO_DOLLAR)
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert expand_vars(text, {}) == text


@given(NAMES, st.text(st.characters(exclude_characters="}", codec="utf-8")), NO_DOLLAR)
def test_default_used_when_unset(name: str, default: str, around: str) -> None:
    text = f"{around}${{{name}:-{default}}}{around}"
    assert expand_vars(text, {}) == f"{around}{default}{around}"


@given(NAMES, st.text(st.characters(codec="utf-8")))
def test_values_are_not_expanded_again(name: str, value: str) -> None:
    assert expand_vars(f"${{{name}}}", {name: value}) == value
    assert expand_vars(f"${{{name}:-fallback}}", {name: value}) == (value or "fallback")


@given(NO_DOLLAR)
def test_double_dollar_escapes(text: str) -> None:
    assert expand_vars(f"$${{{text}}}", {}) == f"${{{text}}}"


# --- $CHATCORE_BACKEND, $CHATCORE_DATA_DIR and overrides -----------------------------

TWO_BACKENDS = """
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.ollama]
plugin = "ollama"
"""


def test_chatcore_backend_overrides_default(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TWO_BACKENDS)
    config = load_config(path, env={"CHATCORE_BACKEND": "ollama"})
    assert config.default_backend == "ollama"
    assert config.backend() == ("ollama", config.backends["ollama"])


def test_chatcore_backend_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TWO_BACKENDS)
    with pytest.raises(
        ConfigError,
        match=r"c\.toml: default_backend: unknown backend 'nope'; configured backends: "
        r"echo, ollama \(from \$CHATCORE_BACKEND\)$",
    ) as info:
        load_config(path, env={"CHATCORE_BACKEND": "nope"})
    assert info.value.key == "default_backend"


def test_chatcore_backend_rescues_a_file_without_echo(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[backends.openai]\nplugin = "openai"\n')
    with pytest.raises(ConfigError, match=r"default_backend: unknown backend 'echo'"):
        load_config(path, env={})
    assert load_config(path, env={"CHATCORE_BACKEND": "openai"}).default_backend == "openai"


def test_chatcore_data_dir(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", 'data_dir = "from-file"\n')
    assert load_config(path, env={}).resolved_data_dir == tmp_path / "from-file"
    config = load_config(path, env={"CHATCORE_DATA_DIR": str(tmp_path / "env")})
    assert config.resolved_data_dir == tmp_path / "env"
    assert config.db_path == tmp_path / "env" / "chatcore.db"


def test_data_dir_defaults_to_platform_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platformdirs, "user_data_path", lambda appname=None: tmp_path / appname)
    config = load_config(write(tmp_path, "c.toml", 'data_dir = ""\n'), env={})
    assert config.data_dir is None
    assert config.db_path == tmp_path / "chatcore" / "chatcore.db"


def test_data_dir_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(write(tmp_path, "c.toml", 'data_dir = "~/chat"\n'), env={})
    assert config.resolved_data_dir == tmp_path / "chat"


def test_keyword_overrides_win(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TWO_BACKENDS)
    config = load_config(
        path,
        env={"CHATCORE_BACKEND": "ollama", "CHATCORE_DATA_DIR": "/env"},
        default_backend="echo",
        data_dir=tmp_path / "kw",
        system_prompt=None,  # None means "not overridden"
    )
    assert config.default_backend == "echo"
    assert config.data_dir == tmp_path / "kw"
    assert config.system_prompt is None


def test_plugin_dirs_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(folder, "c.toml", f'plugin_dirs = ["plugins", "{tmp_path / "abs"}"]\n')
    config = load_config(path, env={})
    assert config.plugin_dirs == [folder / "plugins", tmp_path / "abs"]


# --- YAML ----------------------------------------------------------------------------


def test_yaml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """
default_backend: local
backends:
  local:
    plugin: ollama
    host: ${HOST:-http://localhost:11434}
    model: llama3.2
plugins:
  - plugin: pkg.mod:Shout
    priority: 10
runtime:
  max_restarts: 3
""",
    )
    config = load_config(path, env={})
    assert config.backend() == ("local", config.backends["local"])
    assert config.backends["local"].options == {"host": "http://localhost:11434"}
    assert config.plugins[0].instance_name == "shout"
    assert config.runtime.max_restarts == 3


def test_empty_yml_is_all_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "c.yml", ""), env={}).default_backend == "echo"


def test_yaml_errors_name_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path, "c.yml", "backends:\n  openai:\n    plugin: openai\n    max_tokens: lots\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"c\.yml: backends\.openai\.max_tokens: expected a whole number, got 'lots'",
    ):
        load_config(path, env={})


# --- syntax and type errors ----------------------------------------------------------


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.toml: invalid TOML: .*line 1") as info:
        load_config(write(tmp_path, "c.toml", "default_backend = \n"), env={})
    assert info.value.key == ""


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML: "):
        load_config(write(tmp_path, "c.yaml", "backends: [\n"), env={})


def test_top_level_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml: expected a table .* got a list"):
        load_config(write(tmp_path, "c.yaml", "- echo\n"), env={})


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        (
            '[backends.openai]\nplugin = "openai"\ntimeout_seconds = "abc"',
            "backends.openai.timeout_seconds",
            "expected a number, got 'abc'",
        ),
        (
            '[[plugins]]\nplugin = "x"\nenabled = "yes please"',
            "plugins[0].enabled",
            "expected true or false, got 'yes please'",
        ),
        (
            '[[plugins]]\nplugin = "x"\n[[plugins]]\nplugin = "y"\ntimeout_seconds = 0',
            "plugins[1].timeout_seconds",
            "expected a number greater than 0, got 0",
        ),
        ("max_message_chars = 1.5", "max_message_chars", "expected a whole number, got 1.5"),
        (
            '[backends.echo]\nplugin = "echo"\ntemperature = 2.5',
            "backends.echo.temperature",
            "expected a number of at most 2, got 2.5",
        ),
        (
            '[backends.echo]\nplugin = "echo"\nmodel = 4',
            "backends.echo.model",
            "expected a string, got 4",
        ),
        ("plugins = 3", "plugins", "expected a list, got 3"),
        ('runtime = "fast"', "runtime", "expected a table, got 'fast'"),
        ("data_dir = 5", "data_dir", "expected a path (a string), got 5"),
        ('[backends.echo]\nmodel = "m"', "backends.echo.plugin", "required key missing"),
        ("[runtime]\nchannel_capacity = 0", "runtime.channel_capacity", "of at least 1, got 0"),
        (
            "[runtime]\nrestart_backoff_seconds = 3",
            "runtime.restart_backoff_max_seconds",
            "expected at least restart_backoff_seconds (3.0), got 2.0",
        ),
        (
            '[replication]\nredis_url = "http://cache"',
            "replication.redis_url",
            "expected a redis://, rediss:// or unix:// URL, got 'http://cache'",
        ),
        (
            '[replication]\nkey_prefix = "a{b}"',
            "replication.key_prefix",
            "without spaces or braces, got 'a{b}'",
        ),
        (
            '[backends."gpt 4"]\nplugin = "openai"',
            'backends."gpt 4"',
            "invalid backend name 'gpt 4'; use only letters, digits",
        ),
        (
            '[[plugins]]\nplugin = "x"\nname = "has space"',
            "plugins[0].name",
            "invalid name 'has space'",
        ),
    ],
)
def test_wrong_values_name_file_and_key(tmp_path: Path, toml: str, key: str, problem: str) -> None:
    path = write(tmp_path, "conf.toml", toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    error = info.value
    assert error.path == str(path)
    assert error.key == key
    assert problem in error.problem
    assert str(error).startswith(f"{path}: {key}: ")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", 'colour = "red"\n')
    with pytest.raises(
        ConfigError,
        match=r"c\.toml: colour: unknown key \(allowed: default_backend, data_dir, "
        r"max_message_chars, system_prompt, dev, plugin_dirs, backends, plugins, runtime, router, "
        r"tui, replication\)",
    ):
        load_config(path, env={})


def test_unknown_plugin_key_suggests_a_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[[plugins]]\nplugin = "x"\ntimout = 1\n')
    with pytest.raises(
        ConfigError,
        match=r"plugins\[0\]\.timout: unknown key; did you mean 'timeout_seconds'\? "
        r"\(allowed: plugin, name, priority, ",
    ):
        load_config(path, env={})


class _GreetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    greeting: str = "Hello"
    shout: bool = False


def test_unknown_key_in_a_plugins_settings_lists_that_plugins_keys(tmp_path: Path) -> None:
    # The hint comes from the plugin's own settings model, not from the top-level Config.
    with pytest.raises(
        ConfigError,
        match=r"^.*c\.toml: plugins\[2\]\.config\.greting: unknown key; did you mean "
        r"'greeting'\? \(allowed: greeting, shout\)$",
    ):
        validate_settings(
            _GreetSettings, {"greting": "hi"}, path=tmp_path / "c.toml", key="plugins[2].config"
        )
    settings = validate_settings(
        _GreetSettings, {"shout": True}, path=None, key="plugins[0].config"
    )
    assert settings == _GreetSettings(shout=True)


def test_unknown_default_backend(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TWO_BACKENDS.replace('"echo"\n[', '"nope"\n[', 1))
    with pytest.raises(
        ConfigError,
        match=r"c\.toml: default_backend: unknown backend 'nope'; configured backends: "
        r"echo, ollama$",
    ):
        load_config(path, env={})


def test_several_errors_start_with_the_first_in_the_file(tmp_path: Path) -> None:
    # Model order would put max_message_chars first; the file has system_prompt first.
    path = write(tmp_path, "c.toml", 'system_prompt = 5\nmax_message_chars = "many"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "system_prompt"
    assert str(info.value) == (
        f"{path}: system_prompt: expected a string, got 5; "
        "max_message_chars: expected a whole number, got 'many'"
    )


def test_duplicate_plugin_names(tmp_path: Path) -> None:
    text = '[[plugins]]\nplugin = "a.b:Shout"\n[[plugins]]\nplugin = "shout"\n'
    path = write(tmp_path, "c.toml", text)
    with pytest.raises(
        ConfigError,
        match=r"c\.toml: plugins\[1\]\.name: duplicate plugin name 'shout' \(plugins\[0\] has it",
    ) as info:
        load_config(path, env={})
    assert info.value.key == "plugins[1].name"
    fixed = write(tmp_path, "fixed.toml", text + 'name = "shout2"\n')
    assert [p.instance_name for p in load_config(fixed, env={}).plugins] == ["shout", "shout2"]


# --- models --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"plugin": "pkg.mod:Shout"}, "shout"),
        ({"plugin": "pkg.mod:Outer.Inner"}, "inner"),
        ({"plugin": "x/foo.py"}, "foo"),
        ({"plugin": "C:\\plugins\\Bar.py"}, "Bar"),
        ({"plugin": "content_filter"}, "content_filter"),
        ({"plugin": "pkg.mod:Shout", "name": "loud"}, "loud"),
    ],
)
def test_instance_name(entry: dict[str, Any], expected: str) -> None:
    assert PluginEntry.model_validate(entry).instance_name == expected


def test_backend_extras_are_kept_as_options() -> None:
    backend = BackendConfig.model_validate(
        {
            "plugin": "ollama",
            "model": "llama3.2",
            "host": "http://h:1",
            "keep_alive": "5m",
            "options": {"num_ctx": 4096},
        }
    )
    assert backend.model == "llama3.2"
    assert backend.options == {
        "host": "http://h:1",
        "keep_alive": "5m",
        "options": {"num_ctx": 4096},
    }
    assert BackendConfig(plugin="echo").options == {}


def test_backend_lookup() -> None:
    config = Config()
    assert config.backend() == ("echo", BackendConfig(plugin="echo"))
    assert config.backend("echo")[0] == "echo"
    with pytest.raises(UnknownBackend, match=r"unknown backend 'gpt'; configured backends: echo"):
        config.backend("gpt")


def test_models_are_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError, match="frozen"):
        config.default_backend = "other"
    with pytest.raises(ValidationError, match="frozen"):
        config.runtime.max_restarts = 1


def test_every_field_has_a_docstring() -> None:
    models: list[type[BaseModel]] = [
        Config,
        BackendConfig,
        PluginEntry,
        RuntimeConfig,
        ReplicationConfig,
    ]
    for model in models:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no docstring"


def test_field_docs() -> None:
    docs = Config().field_docs()
    assert docs["default_backend"].startswith("Backend used when none is asked for")
    assert docs["runtime.max_restarts"] == RuntimeConfig.model_fields["max_restarts"].description
    assert "backends.<name>.timeout_seconds" in docs
    assert "plugins[].priority" in docs
    assert "replication.redis_url" in docs
    assert all(docs.values())


# --- display and overrides -----------------------------------------------------------


def test_display_dict_masks_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        """
[backends.echo]
plugin = "echo"
max_tokens = 100
[backends.openai]
plugin = "openai"
api_key = "${OPENAI_API_KEY}"
base_url = "https://user:hunter2@proxy.example/v1"
headers = { Authorization = "Bearer abc", "X-Trace" = "t" }
[backends.anthropic]
plugin = "anthropic"
api_key = ""
[[plugins]]
plugin = "x"
config = { access_token = "tok", password = "pw", secret = "" }
[replication]
redis_url = "redis://:s3cret@cache:6379/0"
""",
    )
    config = load_config(path, env={"OPENAI_API_KEY": "sk-123"})
    shown = config.display_dict()
    text = json.dumps(shown)
    for secret in ("sk-123", "hunter2", "Bearer abc", "tok", "pw", "s3cret"):
        assert f'"{secret}' not in text and f":{secret}@" not in text
    openai = shown["backends"]["openai"]
    assert openai["api_key"] == "***"
    assert openai["base_url"] == "https://user:***@proxy.example/v1"
    assert openai["headers"] == {"Authorization": "***", "X-Trace": "t"}
    assert shown["backends"]["anthropic"]["api_key"] == ""  # unset stays visibly unset
    assert shown["plugins"][0]["config"] == {"access_token": "***", "password": "***", "secret": ""}
    assert shown["replication"]["redis_url"] == "redis://:***@cache:6379/0"
    assert shown["replication"]["key_prefix"] == "chatcore"
    assert shown["backends"]["echo"]["max_tokens"] == 100  # "tokens" is not a secret
    assert shown["data_dir"] == str(config.resolved_data_dir)
    # The configuration itself keeps the real values.
    assert config.backends["openai"].options["api_key"] == "sk-123"


def test_with_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TWO_BACKENDS)
    config = load_config(path, env={})
    changed = config.with_overrides(default_backend="ollama", data_dir=None, system_prompt="Hi")
    assert (changed.default_backend, changed.system_prompt) == ("ollama", "Hi")
    assert changed.source == path
    assert changed.backends == config.backends
    assert config.default_backend == "echo"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"default_backend": "nope"},
            r"c\.toml: default_backend: unknown backend 'nope'; configured backends: echo, "
            r"ollama \(from override\)",
        ),
        ({"max_message_chars": "x"}, r"max_message_chars: expected a whole number, got 'x'"),
        ({"colour": "red"}, r"colour: unknown key \(allowed: default_backend, "),
        (
            {"runtime": {"max_restarts": -1}},
            r"runtime\.max_restarts: expected a number of at least 0",
        ),
    ],
)
def test_with_overrides_errors(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    config = load_config(write(tmp_path, "c.toml", TWO_BACKENDS), env={})
    with pytest.raises(ConfigError, match=message):
        config.with_overrides(**overrides)


def test_public_surface() -> None:
    assert set(config_mod.__all__) == {
        "APP_NAME",
        "DB_FILENAME",
        "ENV_BACKEND",
        "ENV_CONFIG",
        "ENV_DATA_DIR",
        "BackendConfig",
        "Config",
        "PluginEntry",
        "ReplicationConfig",
        "RouterConfig",
        "TuiConfig",
        "RuntimeConfig",
        "config_layers",
        "expand_vars",
        "load_config",
        "resolve_config_path",
        "shipped_config_path",
        "user_config_path",
        "validate_settings",
    }
