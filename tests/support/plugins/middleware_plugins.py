"""Plugins the middleware tests configure by ``module:Class`` (kept free of denied imports)."""

from __future__ import annotations

import os

from chatcore.messages import ChatContext, Message
from chatcore.plugin import BaseMessageProcessor, PluginMetadata, PluginType
from chatcore.result import PluginResult


class LeakyProcessor(BaseMessageProcessor):
    """Fails with the API key in its error message, as careless code might."""

    metadata = PluginMetadata(name="leaky", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        raise RuntimeError(f"request failed with key {os.environ['OPENAI_API_KEY']}")
