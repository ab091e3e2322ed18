"""Process plugins that fail in the ways a child process must contain.

Each misbehaves on every call: raising, hanging past its timeout, allocating
memory without bound, or ending its own process.
"""

from __future__ import annotations

import os
import time

from chatcore import ChatContext, Message, PluginResult
from chatcore.plugin import BaseMessageProcessor, PluginMetadata, PluginType

HOARD: list[bytearray] = []
"""Module-level, so what the hog allocated stays allocated until its process dies."""


class Raiser(BaseMessageProcessor):
    metadata = PluginMetadata(name="raiser", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        raise RuntimeError("raiser always raises")


class Hanger(BaseMessageProcessor):
    """Blocks its whole process (not just a task): only a kill gets it back."""

    metadata = PluginMetadata(name="hanger", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        time.sleep(3600)
        return PluginResult.ok(message.replace(content="woke up"))


class MemoryHog(BaseMessageProcessor):
    metadata = PluginMetadata(name="memory_hog", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        while True:
            HOARD.append(bytearray(4 * 1024 * 1024))


class Exiter(BaseMessageProcessor):
    metadata = PluginMetadata(name="exiter", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        os._exit(7)


class FailsToStart(BaseMessageProcessor):
    metadata = PluginMetadata(name="fails_to_start", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def _do_initialize(self) -> None:
        raise ValueError(f"missing setting {self.config.get('need', 'token')!r}")

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)
