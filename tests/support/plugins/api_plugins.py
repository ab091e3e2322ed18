"""Plugins written in each style the plugin API accepts, for tests/chatcore/test_plugin_api.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatcore.plugin import (
    BaseFeatureExtension,
    BaseMessageProcessor,
    BaseMiddleware,
    HookType,
    PluginMetadata,
    PluginResult,
    PluginType,
    hook,
)

if TYPE_CHECKING:
    from chatcore.plugin import CallNext, ChatContext, Chunk, Message


class Tagger(BaseFeatureExtension):
    """A feature that names no type anywhere: the base class makes it a feature."""

    metadata = PluginMetadata(name="tagger", version="2.1.0")

    async def enrich(self, context: ChatContext) -> ChatContext:
        last = context.messages[-1]
        tagged = last.replace(content=f"[tagged] {last.content}")
        return context.replace(messages=(*context.messages[:-1], tagged))


class Unchanged(BaseFeatureExtension):
    """A feature returning None: the context passes on as it was."""

    async def enrich(self, context: ChatContext) -> None:
        return None


class LookAlike:
    """Has a processor's method but no plugin base class: refused with the reason."""

    async def process_message(self, message: Message, context: ChatContext) -> Message:
        return message.replace(content="never")


class Confused(BaseMessageProcessor):
    """Says it is a feature, but is a processor by its base class."""

    metadata = PluginMetadata(name="confused", plugin_type=PluginType.FEATURE_EXTENSION)

    async def process_message(self, message: Message, context: ChatContext) -> Message:
        return message


class Bracket(BaseMessageProcessor):
    """Overrides only the reply: the user's message goes to the backend untouched."""

    name = "bracket"
    version = "0.3.0"

    async def process_reply(self, message: Message, context: ChatContext) -> Message:
        return message.replace(content=f"[{message.content}]")


class Quiet(BaseMessageProcessor):
    """Returns None: seen, unchanged."""

    async def process_message(self, message: Message, context: ChatContext) -> None:
        return None


class Wrapped(BaseMessageProcessor):
    """The 0.1 way: a PluginResult."""

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message.replace(content=message.content + "!"))


class Sloppy(BaseMessageProcessor):
    """Returns text where a Message belongs: a counted failure, the turn goes on."""

    async def process_message(self, message: Message, context: ChatContext) -> str:
        return "not a message"


class ChunkCounter(BaseMessageProcessor):
    """Only a ``@hook`` method, returning the value: a valid processor."""

    seen: int = 0

    @hook(HookType.ON_STREAM_CHUNK)
    async def count(self, chunk: Chunk, context: ChatContext) -> Chunk:
        ChunkCounter.seen += 1
        return chunk


class Nothing(BaseMessageProcessor):
    """Overrides nothing at all: it would never run, so it is refused."""


class Polite(BaseMiddleware):
    """Middleware needs no metadata either."""

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        return await call_next(context)
