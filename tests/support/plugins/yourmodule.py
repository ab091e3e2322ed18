"""The README's plugin example, kept verbatim so tests prove it works as written.

The formatter is off so its layout stays the README's.
"""
# fmt: off

from chatcore.plugin import BaseMessageProcessor, Message, ChatContext

class Shout(BaseMessageProcessor):
    name = "shout"

    async def process_message(self, message: Message, context: ChatContext) -> Message:
        return message.replace(content=message.content.upper())
