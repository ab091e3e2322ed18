"""chatcore: offline-first, actor-based chatbot middleware."""
from .messages import ChatContext, Chunk, Message
from .result import PluginResult
__all__ = ["ChatContext", "Chunk", "Message", "PluginResult"]
