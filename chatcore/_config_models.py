"""The settings models: what a configuration may contain, with defaults and checks.

Each field carries an attribute docstring; ``chatcore config show --docs`` prints
them. Validation problems are raised as pydantic errors and turned into one
:class:`~chatcore.errors.ConfigError` by :func:`validate_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
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

from ._config_errors import KeyedError, dotted, file_of, flat_items, translate
from ._config_schema import NAME_PATTERN, collect_docs
from ._config_secrets import mask, mask_url
from .errors import UnknownBackend

if TYPE_CHECKING:
    from collections.abc import Mapping

APP_NAME = "chatcore"
DB_FILENAME = "chatcore.db"
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

BackendName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

Loc = tuple[str | int, ...]
"""A key's place in the configuration, as pydantic gives it: ``("backends", "echo", "model")``."""


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

    required: bool = True
    """No turn runs while this plugin failed to load; false lets turns go on without it."""

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
            raise KeyedError(
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
    """Textual theme (e.g. "textual-light"); empty keeps the default; `config check` lists them."""

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
                f"expected a redis://, rediss:// or unix:// URL, got {mask_url(value)!r}"
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
            raise KeyedError(
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
    _sources: tuple[Path, ...] = PrivateAttr(default=())
    _files: dict[Loc, Path] = PrivateAttr(default_factory=dict)
    _labels: dict[str, str] = PrivateAttr(default_factory=dict)

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
            raise KeyedError(
                ("default_backend",),
                f"unknown backend {self.default_backend!r}; configured backends: {known}",
            )
        for index, fallback in enumerate(self.router.fallbacks):
            if fallback not in self.backends:
                known = ", ".join(sorted(self.backends)) or "none"
                raise KeyedError(
                    ("router", "fallbacks", index),
                    f"unknown backend {fallback!r}; configured backends: {known}",
                )
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.plugins):
            name = entry.instance_name
            if name in seen:
                raise KeyedError(
                    ("plugins", index, "name"),
                    f"duplicate plugin name {name!r} (plugins[{seen[name]}] has it too); "
                    "give one of them a distinct `name`",
                )
            seen[name] = index
        return self

    @property
    def source(self) -> Path | None:
        """The file this configuration was loaded from (of several, the one that wins)."""
        return self._source

    @property
    def sources(self) -> tuple[Path, ...]:
        """Every file read, in order; later ones win (the user config over the shipped one)."""
        return self._sources

    def file_for(self, loc: Loc) -> Path | None:
        """The file that set the value at ``loc`` (or started its table); else ``source``."""
        return file_of(self._files, loc) or self._source

    def origin(self, loc: Loc) -> str:
        """Where the value at ``loc`` came from: a file, ``$CHATCORE_...``, override or default."""
        return self._origin(loc, self.model_dump(mode="json"))

    def value_origins(self) -> dict[str, str]:
        """Each dotted key of :meth:`display_dict` to where its value came from."""
        data = self.model_dump(mode="json")
        return {dotted(loc): self._origin(loc, data) for loc, _ in flat_items(self.display_dict())}

    def _origin(self, loc: Loc, data: Any) -> str:
        if loc and str(loc[0]) in self._labels:
            return self._labels[str(loc[0])]
        for end in range(len(loc), 0, -1):
            file = self._files.get(loc[:end])
            if file is None:
                continue
            # A table merges key by key: its entry says which file started it, not
            # who set a key left out of it. A list is replaced whole.
            return str(file) if end == len(loc) or not _is_table(data, loc[:end]) else "default"
        return "default"

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
        origins = dict(self._labels)
        files = dict(self._files)
        for key, value in overrides.items():
            if value is not None:
                data[key] = value
                origins[key] = "override"
                for stale in [k for k in files if k[0] == key]:
                    del files[stale]
        return validate_config(
            data, path=self._source, origins=origins, files=files, sources=self._sources
        )

    def display_dict(self) -> dict[str, Any]:
        """The effective configuration as JSON-able data, with secrets masked."""
        data = self.model_dump(mode="json")
        data["data_dir"] = str(self.resolved_data_dir)
        masked: dict[str, Any] = mask(data)
        return masked

    def field_docs(self) -> dict[str, str]:
        """Map each dotted key to its docstring (``backends.<name>.model``, ``plugins[].name``)."""
        return collect_docs(type(self))


def _is_table(data: Any, loc: Loc) -> bool:
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, dict)


def validate_config(
    data: Any,
    *,
    path: Path | None,
    origins: Mapping[str, str],
    files: Mapping[Loc, Path] | None = None,
    sources: tuple[Path, ...] | None = None,
) -> Config:
    """Validate parsed data into a :class:`Config` loaded from ``path``.

    Args:
        data: The parsed (and layered) settings.
        path: The file that wins; errors name it unless ``files`` knows better.
        origins: Top-level key -> the variable or "override" that set it.
        files: Key -> the file that wrote it (tables too), when several were layered.
        sources: Every file read, in order (default: ``path`` alone).

    Raises:
        ConfigError: naming the file the bad value came from, the dotted key and what
            was expected.
    """
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise translate(
            exc, root=Config, path=path, origins=origins, raw=data, files=files
        ) from None
    config._source = path
    config._sources = sources if sources is not None else ((path,) if path else ())
    config._files = dict(files or {})
    config._labels = dict(origins)
    return config
