"""The README's plugin example, kept verbatim so tests prove it works as written.

It deliberately has no ``from __future__ import annotations`` (the README has
none), and the formatter is off so its layout stays the README's.
"""
# fmt: off

from chatcore import ChatContext, Message, PluginResult
from chatcore.plugins import BaseMessageProcessor, PluginMetadata, PluginType

class Shout(BaseMessageProcessor):
    metadata = PluginMetadata(name="shout", version="1.0.0", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        return PluginResult.ok(message.replace(content=message.content.upper()))
