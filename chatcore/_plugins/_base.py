"""The base classes plugins subclass, their metadata and the ``@hook`` marker.

A plugin's type comes from its base class: a subclass of ``BaseMessageProcessor``
is a processor, of ``BaseFeatureExtension`` a feature, and so on. ``name`` and
``version`` may be plain class attributes; a full ``metadata = PluginMetadata(...)``
is accepted as well. Hook methods return the new value, ``None`` (unchanged) or a
``PluginResult``; raising is a failure the hook executor counts and isolates.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from ..hooks import HookType
from ..messages import Message, Role

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..messages import ChatContext, Chunk
    from ..result import PluginResult
    from ._host import PluginHost

__all__ = [
    "KNOWN_PERMISSIONS",
    "BaseBackendProvider",
    "BaseFeatureExtension",
    "BaseMessageProcessor",
    "BaseMiddleware",
    "BasePlugin",
    "CallNext",
    "PluginConfig",
    "PluginMetadata",
    "PluginType",
    "hook",
    "marked_hooks",
]

KNOWN_PERMISSIONS = frozenset({"network", "filesystem", "store"})
"""What ``PluginMetadata.permissions`` may name; ``store`` gives ``host.database_path``."""

DEFAULT_VERSION = "0.0.0"


class PluginType(StrEnum):
    MIDDLEWARE = "middleware"
    MESSAGE_PROCESSOR = "processor"
    FEATURE_EXTENSION = "feature"
    BACKEND_PROVIDER = "backend"


@dataclass(frozen=True, slots=True)
class PluginMetadata:
    """Who a plugin is: its name and version, what it needs and may do."""

    name: str
    version: str = DEFAULT_VERSION
    plugin_type: PluginType | None = None
    """Deprecated: the type comes from the base class. Still accepted so plugins
    written for chatcore 0.1 load; a value that disagrees with the base class is a
    load error naming the plugin."""
    author: str = ""
    description: str = ""
    dependencies: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.plugin_type is not None:
            object.__setattr__(self, "plugin_type", PluginType(self.plugin_type))
        for name in ("dependencies", "tags", "permissions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """How one plugin instance runs, built from its ``[[plugins]]`` or ``[backends.x]`` table."""

    name: str
    enabled: bool = True
    priority: int = 50
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max_retries: int = 0
    timeout_seconds: float | None = 5.0
    rate_limit: float | None = None
    isolation: str = "inline"
    max_memory_mb: int = 512
    max_cpu_seconds: float = 600.0
    trusted: bool = False
    fail_fast: bool = False
    circuit_failure_threshold: int = 5
    circuit_reset_seconds: float = 30.0


CallNext = Callable[["ChatContext"], Awaitable["Message"]]
"""What a middleware calls to pass the turn on: the rest of the pipeline, returning the reply."""

_HOOK_ATTR = "__chatcore_hook__"


def hook(hook_type: HookType) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a plugin method as a handler of ``hook_type``.

    The method is called as ``await method(payload, context)`` and returns the
    new payload, ``None`` (unchanged) or a ``PluginResult`` (``fail`` to report a
    problem, ``short_circuit`` to answer the turn).
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _HOOK_ATTR, HookType(hook_type))
        return fn

    return mark


def hook_type_of(fn: object) -> HookType | None:
    """The hook point a method was marked for with ``@hook``, or None."""
    found = getattr(fn, _HOOK_ATTR, None)
    return found if isinstance(found, HookType) else None


def mark_hook(fn: Callable[..., Any], hook_type: HookType) -> None:
    """Mark ``fn`` as ``@hook(hook_type)`` (for stand-ins that forward a marked method)."""
    setattr(fn, _HOOK_ATTR, hook_type)


def marked_hooks(plugin: BasePlugin) -> list[tuple[HookType, Callable[[Any, ChatContext], Any]]]:
    """The ``@hook`` methods of ``plugin``, bound, in name order."""
    cls = type(plugin)
    found = []
    for attr in dir(cls):
        hook_type = hook_type_of(getattr(cls, attr, None))
        if hook_type is not None:
            found.append((hook_type, getattr(plugin, attr)))
    return found


def _snake_case(class_name: str) -> str:
    """``PIIRedactor`` → ``pii_redactor``, ``Shout`` → ``shout``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name)
    return spaced.lower()


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


class BasePlugin(abc.ABC):
    """What every plugin has: metadata, settings, a lifecycle, the engine's ``host``.

    Subclass one of the four plugin bases, not this class. After ``initialize``
    the plugin's own settings (the ``config`` table of its entry) are in
    ``self.config`` (and validated in ``self.settings`` when ``settings_model`` is
    set), and its instance name is in ``self.name``.
    """

    plugin_type: ClassVar[PluginType | None] = None
    """Set by each plugin base class; the manager refuses a class without one."""
    metadata: ClassVar[PluginMetadata]
    name: str
    """On the class: the plugin's name. On an instance: the name it was loaded under."""
    version: ClassVar[str] = DEFAULT_VERSION
    settings_model: ClassVar[type[BaseModel] | None] = None
    """A pydantic model of the plugin's ``config`` table; when set, the manager
    validates the table at load (a bad value is a ``ConfigError`` naming the file
    and key) and ``initialize`` puts the validated model in ``self.settings``."""
    config: Mapping[str, Any]
    settings: Any
    plugin_config: PluginConfig
    host: PluginHost | None = None
    """Set by the engine's plugin manager; None when a plugin runs outside an engine."""
    _plugin_base: ClassVar[bool] = True
    """True only on the base classes themselves (they describe no plugin)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if own.get("_plugin_base", False):
            return
        cls._plugin_base = False
        declared = own.get("metadata")
        if declared is not None:
            if not isinstance(declared, PluginMetadata):
                raise TypeError(
                    f"{cls.__qualname__}.metadata must be a PluginMetadata, "
                    f"got {type(declared).__name__}"
                )
            if "name" in own and own["name"] != declared.name:
                raise TypeError(
                    f"{cls.__qualname__}: name = {own['name']!r} disagrees with "
                    f"metadata.name = {declared.name!r}; keep one of them"
                )
            cls.name = declared.name
            cls.version = declared.version
            return
        inherited: PluginMetadata | None = getattr(cls, "metadata", None)
        name = own.get("name")
        if not isinstance(name, str) or not name:
            name = inherited.name if inherited is not None else _snake_case(cls.__name__)
        version = own.get("version", inherited.version if inherited else DEFAULT_VERSION)
        description = _first_line(own.get("__doc__")) or (
            inherited.description if inherited is not None else ""
        )
        base = inherited or PluginMetadata(name)
        cls.metadata = PluginMetadata(
            name=name,
            version=str(version),
            author=base.author,
            description=description,
            dependencies=base.dependencies,
            tags=base.tags,
            permissions=base.permissions,
        )
        cls.name = name

    def __init__(self) -> None:
        self.config = MappingProxyType({})
        self.name = type(self).metadata.name

    async def initialize(self, config: PluginConfig) -> None:
        self.plugin_config = config
        self.config = MappingProxyType(dict(config.config))
        self.name = config.name
        if self.settings_model is not None:
            self.settings = self.settings_model.model_validate(dict(config.config))
        await self._do_initialize()

    async def shutdown(self) -> None:
        await self._do_shutdown()

    async def health(self) -> Mapping[str, Any]:
        return {"ok": True}

    # Optional template steps, deliberately empty rather than abstract.
    async def _do_initialize(self) -> None:  # noqa: B027
        """Override to set up resources; ``self.config`` is available here."""

    async def _do_shutdown(self) -> None:  # noqa: B027
        """Override to release resources."""


class BaseMessageProcessor(BasePlugin):
    """Sees the user's message before the backend (``process_message``) and the reply
    before the user (``process_reply``, and ``process_chunk`` for streamed pieces).

    Each defaults to passing its value on unchanged, and is wired into the
    pipeline only when overridden: override one or several.
    """

    plugin_type = PluginType.MESSAGE_PROCESSOR
    _plugin_base = True

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> Message | PluginResult[Message] | None:
        """The user message as the backend should see it (BEFORE_MESSAGE)."""
        return message

    async def process_reply(
        self, message: Message, context: ChatContext
    ) -> Message | PluginResult[Message] | None:
        """The finished reply as the user should see it (AFTER_MESSAGE)."""
        return message

    async def process_chunk(
        self, chunk: Chunk, context: ChatContext
    ) -> Chunk | PluginResult[Chunk] | None:
        """One streamed piece of the reply as the user should see it (ON_STREAM_CHUNK)."""
        return chunk


class BaseMiddleware(BasePlugin):
    """Onion middleware: do work, ``await call_next(context)``, do more work, return the reply."""

    plugin_type = PluginType.MIDDLEWARE
    _plugin_base = True

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        return await call_next(context)


class BaseFeatureExtension(BasePlugin):
    """Enriches the context sent to the backend (history, retrieved passages, ...)."""

    plugin_type = PluginType.FEATURE_EXTENSION
    _plugin_base = True

    @abc.abstractmethod
    async def enrich(self, context: ChatContext) -> ChatContext | PluginResult[ChatContext] | None:
        """The context the backend should see: return it changed, or None for unchanged."""


class BaseBackendProvider(BasePlugin):
    """A backend streams the reply as ``Chunk``s; ``chat`` collects a stream into a ``Message``."""

    plugin_type = PluginType.BACKEND_PROVIDER
    _plugin_base = True

    @abc.abstractmethod
    def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:
        """Subclasses implement this."""

    async def chat(self, context: ChatContext) -> Message:
        parts: list[str] = []
        tokens_in = tokens_out = None
        model = context.model
        async for chunk in self.stream(context):
            parts.append(chunk.text)
            if chunk.usage is not None:
                tokens_in, tokens_out = chunk.usage.tokens_in, chunk.usage.tokens_out
            model = chunk.model or model
        return Message(
            role=Role.ASSISTANT,
            content="".join(parts),
            model=model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )

    async def list_models(self) -> list[str]:
        model = self.config.get("model")
        return [str(model)] if model else []

    async def aclose(self) -> None:
        """Release connections; called at shutdown."""

    async def shutdown(self) -> None:
        await self.aclose()
        await super().shutdown()


PLUGIN_BASES: tuple[type[BasePlugin], ...] = (
    BaseMessageProcessor,
    BaseFeatureExtension,
    BaseMiddleware,
    BaseBackendProvider,
)

_BASE_BY_METHOD = (
    ("process_message", BaseMessageProcessor),
    ("process_reply", BaseMessageProcessor),
    ("enrich", BaseFeatureExtension),
    ("handle", BaseMiddleware),
    ("stream", BaseBackendProvider),
)


def not_a_plugin_reason(obj: object) -> str:
    """Why ``obj`` cannot be loaded as a plugin, naming the base class it should subclass."""
    suggested = next(
        (base for method, base in _BASE_BY_METHOD if callable(getattr(obj, method, None))),
        BaseMessageProcessor,
    )
    others = ", ".join(b.__name__ for b in PLUGIN_BASES if b is not suggested)
    what = obj.__qualname__ if isinstance(obj, type) else repr(obj)
    return (
        f"{what} is not a chatcore plugin class: subclass "
        f"chatcore.plugin.{suggested.__name__} (or {others})"
    )


def plugin_type_problem(cls: type[BasePlugin]) -> str | None:
    """Why a subclass of ``BasePlugin`` is still not a loadable plugin, or None."""
    if not isinstance(cls, type) or not issubclass(cls, PLUGIN_BASES):
        return not_a_plugin_reason(cls)
    declared = cls.metadata.plugin_type
    if declared is not None and declared is not cls.plugin_type:
        return (
            f"plugin {cls.metadata.name!r}: metadata says plugin_type={declared.value!r}, "
            f"but {cls.__qualname__} subclasses a {cls.plugin_type} base class; the base "
            "class decides the type: drop plugin_type from its metadata"
        )
    return None
