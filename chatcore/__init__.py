"""chatcore: offline-first, actor-based chatbot middleware.

The public API is what this module exports; everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._engine import (
        Conversation as Conversation,
    )
    from ._engine import (
        Engine as Engine,
    )
    from ._engine import (
        EngineStatus as EngineStatus,
    )
    from ._engine import (
        ReplyStream as ReplyStream,
    )
    from ._engine import (
        ask as ask,
    )
    from ._engine import (
        open_engine as open_engine,
    )
    from .config import Config as Config
    from .config import load_config as load_config
    from .errors import (
        BackendError as BackendError,
    )
    from .errors import (
        ChatcoreError as ChatcoreError,
    )
    from .errors import (
        ConfigError as ConfigError,
    )
    from .errors import (
        ConversationNotFound as ConversationNotFound,
    )
    from .errors import (
        EngineClosed as EngineClosed,
    )
    from .errors import (
        EngineStopped as EngineStopped,
    )
    from .errors import (
        InvalidInput as InvalidInput,
    )
    from .errors import (
        PluginError as PluginError,
    )
    from .errors import (
        PluginLoadError as PluginLoadError,
    )
    from .errors import (
        UnknownBackend as UnknownBackend,
    )
    from .messages import (
        ChatContext as ChatContext,
    )
    from .messages import (
        Chunk as Chunk,
    )
    from .messages import (
        Citation as Citation,
    )
    from .messages import (
        Message as Message,
    )
    from .messages import (
        MessageStatus as MessageStatus,
    )
    from .messages import (
        Role as Role,
    )
    from .messages import (
        Usage as Usage,
    )
    from .result import PluginResult as PluginResult
    from .store import ConversationSummary as ConversationSummary

__version__ = "0.1.0"

# Imports are lazy (PEP 562) so `chatcore --help` doesn't pay for Trio and pydantic.
_EXPORTS = {
    "Conversation": "._engine",
    "Engine": "._engine",
    "EngineStatus": "._engine",
    "ReplyStream": "._engine",
    "ask": "._engine",
    "open_engine": "._engine",
    "Config": ".config",
    "load_config": ".config",
    "BackendError": ".errors",
    "ChatcoreError": ".errors",
    "ConfigError": ".errors",
    "ConversationNotFound": ".errors",
    "EngineClosed": ".errors",
    "EngineStopped": ".errors",
    "InvalidInput": ".errors",
    "PluginError": ".errors",
    "PluginLoadError": ".errors",
    "UnknownBackend": ".errors",
    "ChatContext": ".messages",
    "Chunk": ".messages",
    "Citation": ".messages",
    "Message": ".messages",
    "MessageStatus": ".messages",
    "Role": ".messages",
    "Usage": ".messages",
    "PluginResult": ".result",
    "ConversationSummary": ".store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'chatcore' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
