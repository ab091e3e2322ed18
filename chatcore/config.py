"""Configuration: typed models, the TOML/YAML loader and the lookup order.

A file is parsed, ``${VAR}`` references are filled from the environment, the
``$CHATCORE_*`` variables and keyword overrides are applied, and the result is
validated into frozen pydantic models. Every problem surfaces as one
:class:`~chatcore.errors.ConfigError` naming the file, the dotted key and what
was expected.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import os
import re
import tomllib
import types
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, UnknownBackend

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
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
    "RuntimeConfig",
    "TuiConfig",
    "expand_vars",
    "load_config",
    "resolve_config_path",
    "shipped_config_path",
    "user_config_path",
    "validate_settings",
]

APP_NAME = "chatcore"
DB_FILENAME = "chatcore.db"
USER_CONFIG_NAMES = ("config.toml", "config.yaml", "config.yml")

ENV_CONFIG = "CHATCORE_CONFIG"
ENV_BACKEND = "CHATCORE_BACKEND"
ENV_DATA_DIR = "CHATCORE_DATA_DIR"

DEFAULT_BACKEND = "echo"
DEFAULT_MAX_MESSAGE_CHARS = 100_000
DEFAULT_BACKEND_TIMEOUT_SECONDS = 60.0
DEFAULT_CIRCUIT_FAILURE_THRESHOLD = 5
DEFAULT_CIRCUIT_RESET_SECONDS = 30.0
DEFAULT_BACKEND_MAX_RETRIES = 2
DEFAULT_RETRY_BACKOFF_SECONDS = 0.25
DEFAULT_RETRY_BACKOFF_MAX_SECONDS = 8.0
DEFAULT_PLUGIN_PRIORITY = 50
DEFAULT_PLUGIN_TIMEOUT_SECONDS = 5.0
DEFAULT_PLUGIN_MAX_MEMORY_MB = 512
DEFAULT_PLUGIN_MAX_CPU_SECONDS = 600.0
DEFAULT_MAX_RESTARTS = 5
DEFAULT_RESTART_WINDOW_SECONDS = 10.0
DEFAULT_RESTART_BACKOFF_SECONDS = 0.05
DEFAULT_RESTART_BACKOFF_MAX_SECONDS = 2.0
DEFAULT_CHANNEL_CAPACITY = 256
DEFAULT_STAGE_CONCURRENCY = 256
DEFAULT_SHUTDOWN_GRACE_SECONDS = 5.0
DEFAULT_KEY_PREFIX = "chatcore"
DEFAULT_REPLICATION_BATCH_SIZE = 500
DEFAULT_PULL_INTERVAL_SECONDS = 5.0
DEFAULT_REPLICATION_BACKOFF_SECONDS = 0.5
DEFAULT_REPLICATION_BACKOFF_MAX_SECONDS = 30.0
DEFAULT_REDIS_CONNECT_TIMEOUT_SECONDS = 2.0
DEFAULT_REDIS_COMMAND_TIMEOUT_SECONDS = 5.0

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
_NAME_HINT = "use only letters, digits, '_', '.' and '-'"

BackendName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class _KeyedError(ValueError):
    """A validator's complaint about a specific key below the model that raised it."""

    def __init__(self, loc: tuple[str | int, ...], problem: str) -> None:
        super().__init__(problem)
        self.loc = loc


def _blank_to_none(value: Any) -> Any:
    # TOML has no null: an empty string (often from `${VAR:-}`) means "not set".
    if isinstance(value, str) and not value.strip():
        return None
    return value


class BackendConfig(BaseModel):
    """One configured LLM backend; keys beyond the fields below go to the plugin."""

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    plugin: str = Field(min_length=1)
    """Backend plugin: "echo", "ollama", "openai", "anthropic", or "module:Class"."""

    model: str | None = None
    """Model to ask for; empty means the backend's own default."""

    timeout_seconds: float = Field(default=DEFAULT_BACKEND_TIMEOUT_SECONDS, gt=0)
    """Longest wait for one reply, in seconds."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature from 0 to 2; unset means the backend's default."""

    max_tokens: int | None = Field(default=None, gt=0)
    """Upper limit on tokens in one reply; unset means the backend's default."""

    circuit_failure_threshold: int = Field(default=DEFAULT_CIRCUIT_FAILURE_THRESHOLD, ge=1)
    """Consecutive failures that open the circuit (calls then fail fast)."""

    circuit_reset_seconds: float = Field(default=DEFAULT_CIRCUIT_RESET_SECONDS, gt=0)
    """Seconds an open circuit waits before letting one trial call through."""

    max_retries: int = Field(default=DEFAULT_BACKEND_MAX_RETRIES, ge=0)
    """Retries after a rate limit, timeout, server or connection error (never mid-reply)."""

    retry_backoff_seconds: float = Field(default=DEFAULT_RETRY_BACKOFF_SECONDS, ge=0)
    """Upper bound of the first retry's random delay; doubles per retry (Retry-After wins)."""

    retry_backoff_max_seconds: float = Field(default=DEFAULT_RETRY_BACKOFF_MAX_SECONDS, ge=0)
    """Cap on any retry delay, Retry-After included."""

    @field_validator("model", mode="before")
    @classmethod
    def _blank_model(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @property
    def options(self) -> dict[str, Any]:
        """The plugin-specific keys (host, base_url, api_key, ...), as given."""
        return dict(self.model_extra or {})


class PluginEntry(BaseModel):
    """One plugin to load into the pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    plugin: str = Field(min_length=1)
    """Built-in short name, "module:Class", a plugin file, or an entry-point name."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Instance name (unique); by default derived from `plugin`."""

    priority: int = Field(default=DEFAULT_PLUGIN_PRIORITY, ge=0, le=100)
    """Order among hooks, 0 to 100; lower runs first."""

    timeout_seconds: float = Field(default=DEFAULT_PLUGIN_TIMEOUT_SECONDS, gt=0)
    """Longest a single hook call may take, in seconds."""

    enabled: bool = True
    """Load this plugin; false keeps the entry but skips it."""

    fail_fast: bool = False
    """Fail the whole turn when this plugin fails, instead of isolating the failure."""

    circuit_failure_threshold: int = Field(default=DEFAULT_CIRCUIT_FAILURE_THRESHOLD, ge=1)
    """Consecutive failures that open the plugin's circuit."""

    circuit_reset_seconds: float = Field(default=DEFAULT_CIRCUIT_RESET_SECONDS, gt=0)
    """Seconds an open circuit waits before one trial call."""

    config: dict[str, Any] = Field(default_factory=dict)
    """Plugin-specific settings, handed to the plugin as `self.config`."""

    isolation: Literal["inline", "process"] = "inline"
    """"process" runs the plugin in a supervised child process with resource limits."""

    max_memory_mb: int = Field(default=DEFAULT_PLUGIN_MAX_MEMORY_MB, ge=16)
    """Address-space limit of a process-isolated plugin's child, in MiB."""

    max_cpu_seconds: float = Field(default=DEFAULT_PLUGIN_MAX_CPU_SECONDS, gt=0)
    """CPU-time limit of a process-isolated plugin's child, in seconds (over its life)."""

    trusted: bool = False
    """Load the plugin even if the source scan finds denied imports or calls."""

    @property
    def instance_name(self) -> str:
        """`name`, else the class name of "module:Class" or the stem of a file, lower-cased."""
        if self.name:
            return self.name
        spec = self.plugin
        # A file path first: a Windows drive letter would otherwise look like "module:Class".
        if spec.endswith(".py"):
            return Path(spec.replace("\\", "/")).stem
        if ":" in spec:
            return spec.rpartition(":")[2].rpartition(".")[2].lower()
        return spec


class RuntimeConfig(BaseModel):
    """Actor supervision and channel sizing."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_restarts: int = Field(default=DEFAULT_MAX_RESTARTS, ge=0)
    """Restarts of all actors allowed within `restart_window_seconds`; one more stops it all."""

    restart_window_seconds: float = Field(default=DEFAULT_RESTART_WINDOW_SECONDS, gt=0)
    """Sliding window, in seconds, over which restarts are counted."""

    restart_backoff_seconds: float = Field(default=DEFAULT_RESTART_BACKOFF_SECONDS, ge=0)
    """First delay before restarting a crashed actor; doubles on each further crash."""

    restart_backoff_max_seconds: float = Field(default=DEFAULT_RESTART_BACKOFF_MAX_SECONDS, ge=0)
    """Ceiling for the restart delay, in seconds."""

    channel_capacity: int = Field(default=DEFAULT_CHANNEL_CAPACITY, ge=1)
    """Buffer size of each stage's inbox; a full inbox applies backpressure."""

    stage_concurrency: int = Field(default=DEFAULT_STAGE_CONCURRENCY, ge=1)
    """Requests one stage handles at the same time."""

    shutdown_grace_seconds: float = Field(default=DEFAULT_SHUTDOWN_GRACE_SECONDS, ge=0)
    """Time given to in-flight turns to finish when the engine closes."""

    @model_validator(mode="after")
    def _backoff_ceiling(self) -> RuntimeConfig:
        if self.restart_backoff_max_seconds < self.restart_backoff_seconds:
            raise _KeyedError(
                ("restart_backoff_max_seconds",),
                f"expected at least restart_backoff_seconds "
                f"({self.restart_backoff_seconds}), got {self.restart_backoff_max_seconds}",
            )
        return self


class TuiConfig(BaseModel):
    """The terminal chat app."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    keys: dict[str, str] = Field(default_factory=dict)
    """Action id to key(s), e.g. { new_chat = "ctrl+n", plugins = "f2" }; see the help screen."""

    theme: str | None = None
    """Textual theme name (e.g. "textual-light"); empty keeps Textual's default."""

    @field_validator("theme", mode="before")
    @classmethod
    def _blank_theme(cls, value: Any) -> Any:
        return _blank_to_none(value)


class RouterConfig(BaseModel):
    """Where a turn goes when its backend fails."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    fallbacks: list[str] = Field(default_factory=list)
    """Backends to try, in order, when the chosen one is failing (open circuit or retries spent)."""


class ReplicationConfig(BaseModel):
    """Replication of history to Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    redis_url: str = ""
    """Redis URL (redis://, rediss:// or unix://); empty keeps everything offline."""

    key_prefix: str = DEFAULT_KEY_PREFIX
    """Prefix of every Redis key (no braces: they are reserved for hash tags)."""

    batch_size: int = Field(default=DEFAULT_REPLICATION_BATCH_SIZE, ge=1, le=10_000)
    """Outbox rows sent to Redis in one pipelined round trip (and stream entries read per call)."""

    pull_interval_seconds: float = Field(default=DEFAULT_PULL_INTERVAL_SECONDS, gt=0)
    """Seconds between pulls of other devices' changes while online (push is continuous)."""

    backoff_base_seconds: float = Field(default=DEFAULT_REPLICATION_BACKOFF_SECONDS, gt=0)
    """Upper bound of the random wait after the first failed connection; doubles per failure."""

    backoff_max_seconds: float = Field(default=DEFAULT_REPLICATION_BACKOFF_MAX_SECONDS, gt=0)
    """Cap on the random wait between connection attempts."""

    connect_timeout_seconds: float = Field(default=DEFAULT_REDIS_CONNECT_TIMEOUT_SECONDS, gt=0)
    """Longest wait for a connection to Redis; past it, Redis counts as offline."""

    command_timeout_seconds: float = Field(default=DEFAULT_REDIS_COMMAND_TIMEOUT_SECONDS, gt=0)
    """Longest wait for Redis to answer one command or pipelined batch."""

    @field_validator("redis_url")
    @classmethod
    def _check_scheme(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            # The value may hold a password: it is shown masked.
            raise ValueError(
                f"expected a redis://, rediss:// or unix:// URL, got {_mask_url(value)!r}"
            )
        try:
            parts.port  # noqa: B018 - parsing is the check
        except ValueError:
            raise ValueError("the port in redis_url is not a number from 0 to 65535") from None
        if any(p.split("=", 1)[0] == "password" for p in parts.query.split("&")):
            raise ValueError(
                "put the password in the URL's user part (redis://:PASSWORD@host:6379/0, "
                "e.g. with ${REDIS_PASSWORD}), not in ?password=, so it can be masked"
            )
        return value

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "{} \t\n"):
            raise ValueError(f"expected a non-empty prefix without spaces or braces, got {value!r}")
        return value

    @model_validator(mode="after")
    def _backoff_ceiling(self) -> ReplicationConfig:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise _KeyedError(
                ("backoff_max_seconds",),
                f"expected at least backoff_base_seconds "
                f"({self.backoff_base_seconds}), got {self.backoff_max_seconds}",
            )
        return self


def _default_backends() -> dict[str, BackendConfig]:
    return {DEFAULT_BACKEND: BackendConfig(plugin=DEFAULT_BACKEND)}


class Config(BaseModel):
    """The whole chatcore configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    default_backend: str = DEFAULT_BACKEND
    """Backend used when none is asked for; must name a table under [backends]."""

    data_dir: Path | None = None
    """Folder for the SQLite history; empty means the platform's user data folder."""

    max_message_chars: int = Field(default=DEFAULT_MAX_MESSAGE_CHARS, gt=0)
    """Longest user message accepted, in characters."""

    system_prompt: str | None = None
    """System prompt put before every conversation; empty means none."""

    dev: bool = False
    """Development mode: reload plugin files automatically when they change."""

    plugin_dirs: list[Path] = Field(default_factory=list)
    """Folders searched for *.py plugins; relative paths start at the config file's folder."""

    backends: dict[BackendName, BackendConfig] = Field(default_factory=_default_backends)
    """Configured backends by name; switch with `default_backend` or `--backend`."""

    plugins: list[PluginEntry] = Field(default_factory=list)
    """Plugins loaded into the pipeline, as [[plugins]] entries."""

    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    """Supervision and channel settings."""

    router: RouterConfig = Field(default_factory=RouterConfig)
    """Fallback between backends."""

    tui: TuiConfig = Field(default_factory=TuiConfig)
    """The terminal chat app: key bindings and theme."""

    replication: ReplicationConfig = Field(default_factory=ReplicationConfig)
    """Redis replication settings."""

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("system_prompt", "data_dir", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("plugin_dirs")
    @classmethod
    def _expand_plugin_dirs(cls, value: list[Path]) -> list[Path]:
        return [p.expanduser() for p in value]

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.default_backend not in self.backends:
            known = ", ".join(sorted(self.backends)) or "none"
            raise _KeyedError(
                ("default_backend",),
                f"unknown backend {self.default_backend!r}; configured backends: {known}",
            )
        for index, fallback in enumerate(self.router.fallbacks):
            if fallback not in self.backends:
                known = ", ".join(sorted(self.backends)) or "none"
                raise _KeyedError(
                    ("router", "fallbacks", index),
                    f"unknown backend {fallback!r}; configured backends: {known}",
                )
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.plugins):
            name = entry.instance_name
            if name in seen:
                raise _KeyedError(
                    ("plugins", index, "name"),
                    f"duplicate plugin name {name!r} (plugins[{seen[name]}] has it too); "
                    "give one of them a distinct `name`",
                )
            seen[name] = index
        return self

    @property
    def source(self) -> Path | None:
        """The file this configuration was loaded from, if any."""
        return self._source

    @property
    def resolved_data_dir(self) -> Path:
        """`data_dir`, or the platform's user data folder for chatcore.

        ``$CHATCORE_DATA_DIR`` is applied by :func:`load_config`, not here.
        """
        if self.data_dir is not None:
            return self.data_dir.expanduser()
        return platformdirs.user_data_path(APP_NAME)

    @property
    def db_path(self) -> Path:
        """Location of the SQLite history file."""
        return self.resolved_data_dir / DB_FILENAME

    def backend(self, name: str | None = None) -> tuple[str, BackendConfig]:
        """Look up a backend by name.

        Args:
            name: A key of ``backends``; None means ``default_backend``.

        Returns:
            The name and its configuration.

        Raises:
            UnknownBackend: No backend of that name is configured.
        """
        key = self.default_backend if name is None else name
        try:
            return key, self.backends[key]
        except KeyError:
            raise UnknownBackend(key, list(self.backends)) from None

    def with_overrides(self, **overrides: Any) -> Config:
        """Return a copy with top-level keys replaced, validated again.

        A None value means "no override", so callers can pass optional CLI
        arguments straight through.

        Raises:
            ConfigError: An override is unknown or invalid; the key is named.
        """
        data = self.model_dump()
        origins: dict[str, str] = {}
        for key, value in overrides.items():
            if value is not None:
                data[key] = value
                origins[key] = "override"
        return _validate(data, path=self._source, origins=origins)

    def display_dict(self) -> dict[str, Any]:
        """The effective configuration as JSON-able data, with secrets masked."""
        data = self.model_dump(mode="json")
        data["data_dir"] = str(self.resolved_data_dir)
        masked: dict[str, Any] = _mask(data)
        return masked

    def field_docs(self) -> dict[str, str]:
        """Map each dotted key to its docstring (``backends.<name>.model``, ``plugins[].name``)."""
        docs: dict[str, str] = {}
        _collect_docs(type(self), "", docs)
        return docs


# --- secrets -------------------------------------------------------------------------

MASK = "***"
# Judged on the last word of a key, so `api_key` and `access_token` are masked while
# `max_tokens` and `key_prefix` (not secrets) stay readable.
_SECRET_WORD_RE = re.compile(r"(key|token|secret|password|passwd|auth|authorization|credentials?)$")
_WORD_SPLIT_RE = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def _is_secret_key(key: str) -> bool:
    words = [w for w in _WORD_SPLIT_RE.split(key) if w]
    return bool(words) and _SECRET_WORD_RE.search(words[-1].lower()) is not None


def _mask_url(value: str) -> str:
    if "://" not in value or "@" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or not password:
        return value
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: MASK if _is_secret_key(str(k)) and _present(v) else _mask(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return _mask_url(value)
    return value


def _present(value: Any) -> bool:
    """True unless the value is None or empty (an unset secret is shown as unset)."""
    return value is not None and value != "" and value != {} and value != []


# --- docs ----------------------------------------------------------------------------


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    if get_origin(tp) is Annotated:
        return get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _collect_docs(model: type[BaseModel], prefix: str, out: dict[str, str]) -> None:
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        out[key] = info.description or ""
        tp = _unwrap_optional(info.annotation)
        origin = get_origin(tp)
        if _is_model(tp):
            _collect_docs(tp, f"{key}.", out)
        elif origin is dict and _is_model(get_args(tp)[1]):
            inner = get_args(tp)[1]
            _collect_docs(inner, f"{key}.<name>.", out)
            if inner.model_config.get("extra") == "allow":
                out[f"{key}.<name>.<other>"] = (
                    "Any other key is plugin-specific (host, base_url, api_key, ...) "
                    "and is passed to the plugin."
                )
        elif origin is list and _is_model(get_args(tp)[0]):
            _collect_docs(get_args(tp)[0], f"{key}[].", out)


# --- ${VAR} substitution -------------------------------------------------------------

_VAR_RE = re.compile(
    r"\$(?P<escape>\$\{)"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\$\{[^}]*\}?)"
)


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Fill ``${VAR}`` and ``${VAR:-default}`` from ``env``; ``$${`` is a literal ``${``.

    As in the shell, the default also applies when the variable is set but empty.
    Values taken from ``env`` are not expanded again.

    Raises:
        ConfigError: A variable without a default is unset, or a reference is malformed
            (path and key are left empty for the caller to fill in).
    """
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match["escape"]:
            return "${"
        if match["bad"]:
            raise ConfigError(
                None,
                "",
                f"malformed reference {match['bad']!r} (write ${{NAME}} or "
                "${NAME:-default}; $${ gives a literal ${)",
            )
        name = match["name"]
        default = match["default"]
        value = env.get(name)
        if default is not None:
            return value if value else default
        if value is None:
            raise ConfigError(
                None,
                "",
                f"environment variable {name} is not set "
                f"(write ${{{name}:-default}} to give a fallback)",
            )
        return value

    return _VAR_RE.sub(replace, text)


def _expand_tree(value: Any, env: Mapping[str, str], path: Path, loc: tuple[str | int, ...]) -> Any:
    if isinstance(value, str):
        try:
            return expand_vars(value, env)
        except ConfigError as exc:
            raise ConfigError(path, _dotted(loc), exc.problem) from None
    if isinstance(value, dict):
        return {k: _expand_tree(v, env, path, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(v, env, path, (*loc, i)) for i, v in enumerate(value)]
    return value


# --- error translation ---------------------------------------------------------------

_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if not _PLAIN_KEY_RE.match(text):
            text = json.dumps(text)  # TOML-style quoting for keys such as "gpt.4o"
        out += f".{text}" if out else text
    return out


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    tp: Any = Config
    for part in loc:
        tp = _unwrap_optional(tp)
        if _is_model(tp):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap_optional(tp)
    return tp if _is_model(tp) else None


def _unknown_key(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    allowed = list(model.model_fields)
    # Also compare with each name's first word, so "timout" finds "timeout_seconds".
    candidates = {name.split("_")[0]: name for name in reversed(allowed)}
    candidates.update({name: name for name in allowed})
    close = difflib.get_close_matches(str(loc[-1]), list(candidates), n=1)
    hint = f"; did you mean {candidates[close[0]]!r}?" if close else ""
    return f"unknown key{hint} (allowed: {', '.join(allowed)})"


_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
    "list_type": "a list",
    "path_type": "a path (a string)",
    "string_too_short": "a non-empty string",
}


_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("of at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("of at most", "le"),
}


def _describe(error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = _show(error.get("input"))
    if kind == "missing":
        return "required key missing"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind in _BOUNDS:
        words, bound = _BOUNDS[kind]
        limit = ctx.get(bound)
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)  # "greater than 0" reads better than "greater than 0.0"
        return f"expected a number {words} {limit}, got {got}"
    if kind == "string_pattern_mismatch":
        if loc and loc[-1] == "[key]":
            return f"invalid backend name {error.get('input')!r}; {_NAME_HINT}"
        if loc and loc[-1] == "name":
            return f"invalid name {error.get('input')!r}; {_NAME_HINT}"
        return f"expected text matching {ctx.get('pattern')}, got {got}"
    if kind == "value_error":
        return str(ctx.get("error") or error["msg"])
    message = str(error["msg"])
    return f"{message[:1].lower()}{message[1:]}, got {got}"


def _file_position(raw: Any, loc: tuple[Any, ...]) -> tuple[int, ...]:
    """Where a key sits in the parsed file (parsers keep order), for sorting errors."""
    position: list[int] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            position.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            position.append(part)
            node = node[part]
        else:
            position.append(1 << 30)  # absent from the file (missing key, default value)
            break
    return tuple(position)


def _translate(
    exc: ValidationError, path: Path | None, origins: Mapping[str, str], raw: Any
) -> ConfigError:
    found: list[tuple[tuple[int, ...], str, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        problem = _describe(error, loc)
        inner = (error.get("ctx") or {}).get("error")
        if isinstance(inner, _KeyedError):
            loc = (*loc, *inner.loc)
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
        if loc and str(loc[0]) in origins:
            problem += f" (from {origins[str(loc[0])]})"
        found.append((_file_position(raw, loc), _dotted(loc), problem))
    found.sort(key=lambda item: item[0])
    _, key, problem = found[0]
    rest = [f"{k}: {p}" for _, k, p in found[1:]]
    if rest:
        problem = "; ".join([problem, *rest])
    return ConfigError(path, key, problem)


def _validate(data: Any, *, path: Path | None, origins: Mapping[str, str]) -> Config:
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, path, origins, data) from None
    config._source = path
    return config


# --- files and lookup ----------------------------------------------------------------


def shipped_config_path() -> Path:
    """The ``default.toml`` shipped with chatcore (package data, or the checkout's config/)."""
    try:
        resource = importlib.resources.files("chatcore.shipped_config") / "default.toml"
    except ModuleNotFoundError:
        resource = None
    if isinstance(resource, Path) and resource.is_file():
        return resource
    return Path(__file__).resolve().parent.parent / "config" / "default.toml"


def user_config_path() -> Path:
    """``config.toml`` in the user config folder (``config.yaml``/``.yml`` if only that exists)."""
    folder = platformdirs.user_config_path(APP_NAME)
    for name in USER_CONFIG_NAMES:
        if (folder / name).is_file():
            return folder / name
    return folder / USER_CONFIG_NAMES[0]


def resolve_config_path(
    explicit: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> tuple[Path, str]:
    """Pick the configuration file: ``--config``, ``$CHATCORE_CONFIG``, user config, shipped.

    Returns:
        The path and a label saying where it came from.
    """
    env = os.environ if env is None else env
    if explicit is not None and str(explicit):
        return Path(explicit).expanduser(), "--config"
    from_env = env.get(ENV_CONFIG)
    if from_env:
        return Path(from_env).expanduser(), f"${ENV_CONFIG}"
    user = user_config_path()
    if user.is_file():
        return user, "user config"
    return shipped_config_path(), "shipped default"


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror or exc}") from None
    data: Any
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(path, "", f"invalid YAML: {exc}") from None
        if data is None:  # an empty YAML document
            data = {}
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(path, "", f"invalid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            path, "", f"expected a table of settings at the top level, got {_show(data)}"
        )
    return data


def _anchor_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative paths written in the file relative to the file's folder."""

    def anchor(value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            candidate = Path(value).expanduser()
            return value if candidate.is_absolute() else str(base / candidate)
        return value  # not a path: validation will say so

    if "data_dir" in data:
        data["data_dir"] = anchor(data["data_dir"])
    if isinstance(data.get("plugin_dirs"), list):
        data["plugin_dirs"] = [anchor(v) for v in data["plugin_dirs"]]


def _iter_env_overrides(env: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    for var, key in ((ENV_BACKEND, "default_backend"), (ENV_DATA_DIR, "data_dir")):
        value = env.get(var)
        if value:
            yield key, value, f"${var}"


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None, **overrides: Any
) -> Config:
    """Load, substitute, override and validate a configuration file.

    Args:
        path: The file to read; None follows :func:`resolve_config_path`.
        env: Environment for ``${VAR}`` and ``$CHATCORE_*``; defaults to ``os.environ``.
        **overrides: Top-level keys to replace last (None values are ignored).

    Returns:
        The validated configuration, with ``source`` set to the file.

    Raises:
        ConfigError: The file is missing, unparsable or invalid; the message names the
            file, the dotted key and the problem.
    """
    env = os.environ if env is None else env
    file, _ = resolve_config_path(path, env=env)
    data = _expand_tree(_parse(file), env, file, ())
    _anchor_paths(data, file.parent)
    origins: dict[str, str] = {}
    for key, value, origin in _iter_env_overrides(env):
        data[key] = value
        origins[key] = origin
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
            origins[key] = "override"
    return _validate(data, path=file, origins=origins)


SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


def validate_settings(
    model: type[SettingsModel], data: Mapping[str, Any], *, path: Path | None, key: str
) -> SettingsModel:
    """Validate a plugin's own ``config`` table against its settings model.

    Raises:
        ConfigError: naming ``path`` and the dotted key below ``key``
            (e.g. ``plugins[0].config.patterns[1].regex``).
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        inner = _translate(exc, None, {}, dict(data))
        raise ConfigError(path, f"{key}.{inner.key}" if inner.key else key, inner.problem) from None
