"""Configuration: typed models, the TOML/YAML loader and the lookup order.

A file is parsed, ``${VAR}`` references are filled from the environment, the
``$CHATCORE_*`` variables and keyword overrides are applied, and the result is
validated into frozen pydantic models. Every problem surfaces as one
:class:`~chatcore.errors.ConfigError` naming the file, the dotted key and what
was expected.

This is the public module; the work is done in private ones: the models in
``_config_models``, loading in ``_config_load``, error messages in
``_config_errors``, masking in ``_config_secrets`` and walking the models in
``_config_schema``.
"""

from __future__ import annotations

from ._config_load import ENV_BACKEND as ENV_BACKEND
from ._config_load import ENV_CONFIG as ENV_CONFIG
from ._config_load import ENV_DATA_DIR as ENV_DATA_DIR
from ._config_load import USER_CONFIG_NAMES as USER_CONFIG_NAMES
from ._config_load import SettingsModel as SettingsModel
from ._config_load import config_layers as config_layers
from ._config_load import expand_vars as expand_vars
from ._config_load import load_config as load_config
from ._config_load import resolve_config_path as resolve_config_path
from ._config_load import shipped_config_path as shipped_config_path
from ._config_load import user_config_path as user_config_path
from ._config_load import validate_settings as validate_settings
from ._config_models import APP_NAME as APP_NAME
from ._config_models import DB_FILENAME as DB_FILENAME
from ._config_models import DEFAULT_BACKEND as DEFAULT_BACKEND
from ._config_models import DEFAULT_BACKEND_MAX_RETRIES as DEFAULT_BACKEND_MAX_RETRIES
from ._config_models import DEFAULT_BACKEND_TIMEOUT_SECONDS as DEFAULT_BACKEND_TIMEOUT_SECONDS
from ._config_models import DEFAULT_CHANNEL_CAPACITY as DEFAULT_CHANNEL_CAPACITY
from ._config_models import DEFAULT_CIRCUIT_FAILURE_THRESHOLD as DEFAULT_CIRCUIT_FAILURE_THRESHOLD
from ._config_models import DEFAULT_CIRCUIT_RESET_SECONDS as DEFAULT_CIRCUIT_RESET_SECONDS
from ._config_models import DEFAULT_KEY_PREFIX as DEFAULT_KEY_PREFIX
from ._config_models import DEFAULT_MAX_MESSAGE_CHARS as DEFAULT_MAX_MESSAGE_CHARS
from ._config_models import DEFAULT_MAX_RESTARTS as DEFAULT_MAX_RESTARTS
from ._config_models import DEFAULT_PLUGIN_MAX_CPU_SECONDS as DEFAULT_PLUGIN_MAX_CPU_SECONDS
from ._config_models import DEFAULT_PLUGIN_MAX_MEMORY_MB as DEFAULT_PLUGIN_MAX_MEMORY_MB
from ._config_models import DEFAULT_PLUGIN_PRIORITY as DEFAULT_PLUGIN_PRIORITY
from ._config_models import DEFAULT_PLUGIN_TIMEOUT_SECONDS as DEFAULT_PLUGIN_TIMEOUT_SECONDS
from ._config_models import DEFAULT_PULL_INTERVAL_SECONDS as DEFAULT_PULL_INTERVAL_SECONDS
from ._config_models import (
    DEFAULT_REDIS_COMMAND_TIMEOUT_SECONDS as DEFAULT_REDIS_COMMAND_TIMEOUT_SECONDS,
)
from ._config_models import (
    DEFAULT_REDIS_CONNECT_TIMEOUT_SECONDS as DEFAULT_REDIS_CONNECT_TIMEOUT_SECONDS,
)
from ._config_models import (
    DEFAULT_REPLICATION_BACKOFF_MAX_SECONDS as DEFAULT_REPLICATION_BACKOFF_MAX_SECONDS,
)
from ._config_models import (
    DEFAULT_REPLICATION_BACKOFF_SECONDS as DEFAULT_REPLICATION_BACKOFF_SECONDS,
)
from ._config_models import DEFAULT_REPLICATION_BATCH_SIZE as DEFAULT_REPLICATION_BATCH_SIZE
from ._config_models import (
    DEFAULT_RESTART_BACKOFF_MAX_SECONDS as DEFAULT_RESTART_BACKOFF_MAX_SECONDS,
)
from ._config_models import DEFAULT_RESTART_BACKOFF_SECONDS as DEFAULT_RESTART_BACKOFF_SECONDS
from ._config_models import DEFAULT_RESTART_WINDOW_SECONDS as DEFAULT_RESTART_WINDOW_SECONDS
from ._config_models import DEFAULT_RETRY_BACKOFF_MAX_SECONDS as DEFAULT_RETRY_BACKOFF_MAX_SECONDS
from ._config_models import DEFAULT_RETRY_BACKOFF_SECONDS as DEFAULT_RETRY_BACKOFF_SECONDS
from ._config_models import DEFAULT_SHUTDOWN_GRACE_SECONDS as DEFAULT_SHUTDOWN_GRACE_SECONDS
from ._config_models import DEFAULT_STAGE_CONCURRENCY as DEFAULT_STAGE_CONCURRENCY
from ._config_models import BackendConfig as BackendConfig
from ._config_models import BackendName as BackendName
from ._config_models import Config as Config
from ._config_models import PluginEntry as PluginEntry
from ._config_models import ReplicationConfig as ReplicationConfig
from ._config_models import RouterConfig as RouterConfig
from ._config_models import RuntimeConfig as RuntimeConfig
from ._config_models import TuiConfig as TuiConfig
from ._config_schema import NAME_PATTERN as NAME_PATTERN
from ._config_secrets import MASK as MASK

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
    "config_layers",
    "expand_vars",
    "load_config",
    "resolve_config_path",
    "shipped_config_path",
    "user_config_path",
    "validate_settings",
]
