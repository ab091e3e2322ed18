"""Process plugins that work: their changes must cross the boundary both ways."""

from __future__ import annotations

import os
import socket

from chatcore import ChatContext, Chunk, Message, PluginResult
from chatcore.hooks import HookType
from chatcore.messages import REPLY_METADATA
from chatcore.plugin import (
    BaseFeatureExtension,
    BaseMessageProcessor,
    BaseMiddleware,
    CallNext,
    PluginMetadata,
    PluginType,
    hook,
)


class Shouter(BaseMessageProcessor):
    """Upper-cases the user's message and tags it with the pid it ran in."""

    metadata = PluginMetadata(name="shouter", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        text = message.content.upper()
        if self.config.get("tag_pid"):
            text += f" [pid {os.getpid()}]"
        return PluginResult.ok(message.replace(content=text))

    async def process_reply(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        return PluginResult.ok(message.with_metadata(shouted_by=os.getpid()))


class Blocker(BaseMessageProcessor):
    """Answers the turn itself when the message holds the configured word."""

    metadata = PluginMetadata(name="isolated_blocker", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        if str(self.config.get("word", "forbidden")) in message.content:
            return PluginResult.short_circuit("blocked in a child process")
        return PluginResult.ok(message)


class Noop(BaseMessageProcessor):
    """Returns the message unchanged: what the benchmark measures is the boundary."""

    metadata = PluginMetadata(name="isolated_noop", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)


class Enricher(BaseFeatureExtension):
    """Adds a system prompt and attaches its pid to the reply's metadata."""

    metadata = PluginMetadata(name="enricher", plugin_type=PluginType.FEATURE_EXTENSION)

    async def enrich(self, context: ChatContext) -> PluginResult[ChatContext]:
        extra = {REPLY_METADATA: {"enriched_by": os.getpid(), "history": len(context.messages)}}
        return PluginResult.ok(context.replace(system="be brief").with_metadata(**extra))


class Wrapper(BaseMiddleware):
    """Middleware in a child: changes the context on the way in and the reply on the way out."""

    metadata = PluginMetadata(name="wrapper", plugin_type=PluginType.MIDDLEWARE)

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        if context.last_user_message and "cached" in context.last_user_message.content:
            return Message.assistant("answered by the middleware")
        reply = await call_next(context.with_metadata(wrapped=True))
        return reply.replace(content=f"{reply.content} [wrapped in {os.getpid()}]")


class ChunkAndHook(BaseMessageProcessor):
    """Sees streamed chunks and a BEFORE_MODEL_LOAD hook across the boundary."""

    metadata = PluginMetadata(name="chunk_and_hook", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)

    async def process_chunk(self, chunk: Chunk, context: ChatContext) -> PluginResult[Chunk]:
        return PluginResult.ok(chunk.replace(text=chunk.text.replace("e", "3")))

    @hook(HookType.BEFORE_MODEL_LOAD)
    async def pick_model(self, payload: ChatContext, context: ChatContext) -> PluginResult[object]:
        return PluginResult.ok(payload.replace(model="chosen-in-child"))


class NetworkProbe(BaseMessageProcessor):
    """Tries to connect to ``host``:``port`` and says what happened, in the message."""

    metadata = PluginMetadata(name="network_probe", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        address = (str(self.config["host"]), int(self.config["port"]))
        try:
            with socket.create_connection(address, timeout=2):
                outcome = "connected"
        except OSError as exc:
            outcome = f"no connection: {exc.strerror or exc}"
        return PluginResult.ok(message.replace(content=outcome))


class NetworkedProbe(NetworkProbe):
    """The same probe, with the ``network`` permission."""

    metadata = PluginMetadata(
        name="networked_probe",
        plugin_type=PluginType.MESSAGE_PROCESSOR,
        permissions=("network",),
    )


class Whisper(BaseMessageProcessor):
    """Written the new way (name attribute, values returned) and run in a child process."""

    name = "whisper"

    async def process_message(self, message: Message, context: ChatContext) -> Message:
        return message.replace(content=message.content.lower())

    async def process_reply(self, message: Message, context: ChatContext) -> None:
        return None
