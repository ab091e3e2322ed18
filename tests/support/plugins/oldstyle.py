"""The README's plugin example as chatcore 0.1 documented it, kept verbatim.

Plugins written this way must keep working for a release: the deprecated
``chatcore.plugins`` alias, an explicit ``plugin_type`` and ``PluginResult.ok``.
"""
# fmt: off

from chatcore import ChatContext, Message, PluginResult
from chatcore.plugins import BaseMessageProcessor, PluginMetadata, PluginType


class Shout(BaseMessageProcessor):
    metadata = PluginMetadata(name="shout", version="1.0.0", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        return PluginResult.ok(message.replace(content=message.content.upper()))
