"""An example third-party plugin: puts a greeting in front of every reply."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

from chatcore.plugin import BaseMessageProcessor, PluginMetadata, PluginType
from chatcore.result import PluginResult

if TYPE_CHECKING:
    from chatcore.messages import ChatContext, Message

__all__ = ["Greeter", "GreeterSettings"]


class GreeterSettings(BaseModel):
    """The `[plugins.config]` table of an `example_greeter` entry."""

    model_config = ConfigDict(extra="forbid")

    greeting: str = "Hello"
    """Put in front of every reply, followed by "! "."""


class Greeter(BaseMessageProcessor):
    """Leaves the user's message alone and greets in the reply."""

    metadata = PluginMetadata(
        name="example_greeter",
        version="1.0.0",
        plugin_type=PluginType.MESSAGE_PROCESSOR,
        author="chatcore",
        description="Example third-party plugin: greets in every reply",
    )
    settings_model: ClassVar[type[BaseModel]] = GreeterSettings
    settings: GreeterSettings

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)

    async def process_reply(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        return PluginResult.ok(
            message.replace(content=f"{self.settings.greeting}! {message.content}")
        )
