"""Everything a plugin author needs, in one import.

A plugin is a class that subclasses one of the four bases; its type comes from
the base class, its ``name`` and ``version`` may be plain class attributes::

    from chatcore.plugin import BaseMessageProcessor, ChatContext, Message

    class Shout(BaseMessageProcessor):
        name = "shout"

        async def process_message(self, message: Message, context: ChatContext) -> Message:
            return message.replace(content=message.content.upper())

A hook method returns the new value, ``None`` (unchanged) or a ``PluginResult``
(``fail`` to report a problem, ``short_circuit`` to answer the turn itself);
raising is a failure the engine counts and isolates. A plugin's CLI command
(an entry point of the ``chatcore.commands`` group) uses ``config_option``,
``json_option``, ``load_command_config``, ``print_json`` and ``run_guarded``
for the same options, config lookup and errors as chatcore's own. A plugin that
keeps tables of its own in the engine's database (``host.database_path``, with the
``store`` permission) opens it with ``connect_database`` and owns its schema as a
``MigrationSet``. The modules behind these
names are private; this module's names change only on purpose (a test pins them).
"""

from __future__ import annotations

from ._plugins._base import BaseBackendProvider as BaseBackendProvider
from ._plugins._base import BaseFeatureExtension as BaseFeatureExtension
from ._plugins._base import BaseMessageProcessor as BaseMessageProcessor
from ._plugins._base import BaseMiddleware as BaseMiddleware
from ._plugins._base import CallNext as CallNext
from ._plugins._base import PluginConfig as PluginConfig
from ._plugins._base import PluginMetadata as PluginMetadata
from ._plugins._base import PluginType as PluginType
from ._plugins._base import hook as hook
from ._plugins._host import BackgroundJob as BackgroundJob
from ._plugins._host import PluginHost as PluginHost
from ._plugins._lifecycle import PluginState as PluginState
from ._plugins._records import PluginStatus as PluginStatus
from .cli._common import config_option as config_option
from .cli._common import json_option as json_option
from .cli._common import load_command_config as load_command_config
from .cli._common import print_json as print_json
from .cli._common import run_guarded as run_guarded
from .errors import BackendAuthError as BackendAuthError
from .errors import BackendBadRequest as BackendBadRequest
from .errors import BackendError as BackendError
from .errors import BackendRateLimited as BackendRateLimited
from .errors import BackendTimeout as BackendTimeout
from .errors import BackendUnavailable as BackendUnavailable
from .errors import ChatcoreError as ChatcoreError
from .errors import ConfigError as ConfigError
from .errors import InvalidInput as InvalidInput
from .errors import MigrationError as MigrationError
from .errors import ModelNotFound as ModelNotFound
from .errors import PluginError as PluginError
from .errors import PluginLoadError as PluginLoadError
from .hooks import HookFailure as HookFailure
from .hooks import HookPriority as HookPriority
from .hooks import HookType as HookType
from .messages import LOCAL_METADATA as LOCAL_METADATA
from .messages import REPLY_METADATA as REPLY_METADATA
from .messages import ChatContext as ChatContext
from .messages import Chunk as Chunk
from .messages import Message as Message
from .messages import MessageStatus as MessageStatus
from .messages import Role as Role
from .messages import SharedRecord as SharedRecord
from .messages import Usage as Usage
from .result import PluginResult as PluginResult
from .store import KVNamespace as KVNamespace
from .store import MigrationSet as MigrationSet
from .store import connect as connect_database
from .store import write_transaction as write_transaction

__all__ = [
    "LOCAL_METADATA",
    "REPLY_METADATA",
    "BackendAuthError",
    "BackendBadRequest",
    "BackendError",
    "BackendRateLimited",
    "BackendTimeout",
    "BackendUnavailable",
    "BackgroundJob",
    "BaseBackendProvider",
    "BaseFeatureExtension",
    "BaseMessageProcessor",
    "BaseMiddleware",
    "CallNext",
    "ChatContext",
    "ChatcoreError",
    "Chunk",
    "ConfigError",
    "HookFailure",
    "HookPriority",
    "HookType",
    "InvalidInput",
    "KVNamespace",
    "Message",
    "MessageStatus",
    "MigrationError",
    "MigrationSet",
    "ModelNotFound",
    "PluginConfig",
    "PluginError",
    "PluginHost",
    "PluginLoadError",
    "PluginMetadata",
    "PluginResult",
    "PluginState",
    "PluginStatus",
    "PluginType",
    "Role",
    "SharedRecord",
    "Usage",
    "config_option",
    "connect_database",
    "hook",
    "json_option",
    "load_command_config",
    "print_json",
    "run_guarded",
    "write_transaction",
]
