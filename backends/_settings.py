"""What each built-in backend reads from its ``[backends.NAME]`` table.

A backend's ``settings_model`` names every key it understands beyond the ones
every backend table has (``plugin``, ``model``, ``timeout_seconds``, the retry and
circuit keys: see :class:`chatcore.config.BackendConfig`); any other key is a
config error naming the file and the key (a ``temprature`` is caught, not
ignored). The models import nothing heavy: no client library.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnthropicSettings",
    "BackendSettings",
    "EchoSettings",
    "OllamaSettings",
    "OpenAISettings",
]


class BackendSettings(BaseModel):
    """The keys chatcore itself hands every backend (validated in ``BackendConfig``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: str | None = None
    """Model to ask for; empty means the backend's own default."""
    timeout_seconds: float | None = None
    """Longest wait for one reply, in seconds."""
    temperature: float | None = None
    """Sampling temperature; unset means the backend's default."""
    max_tokens: int | None = None
    """Upper limit on tokens in one reply."""


class EchoSettings(BackendSettings):
    """``[backends.NAME]`` of ``plugin = "echo"``."""

    delay_seconds: float = Field(default=0.0, ge=0)
    """Pause before each streamed chunk, to see streaming and cancelling at work."""


class OllamaSettings(BackendSettings):
    """``[backends.NAME]`` of ``plugin = "ollama"``."""

    host: str | None = None
    """Server URL; empty means $OLLAMA_HOST, then http://127.0.0.1:11434."""
    embed_model: str | None = None
    """Model for embeddings (RAG, memory); empty means `model`."""
    # Any: the backend checks it's a table itself, so its own message names the key
    # also when the backend is used outside an engine.
    options: Any = None
    """Ollama's model options (num_ctx, top_p, ...): a table, passed as given."""
    keep_alive: str | float | None = None
    """How long Ollama keeps the model loaded after a request ("5m", seconds, -1)."""


class _KeyedSettings(BackendSettings):
    api_key: str | None = None
    """The API key; better left out and read from the environment (`api_key_env`)."""
    api_key_env: str | None = None
    """The environment variable holding the key, if not the provider's usual one."""
    base_url: str | None = None
    """The API's base URL, e.g. an OpenAI-compatible local server."""


class OpenAISettings(_KeyedSettings):
    """``[backends.NAME]`` of ``plugin = "openai"``."""

    organization: str | None = None
    """OpenAI organization id sent with each request."""
    embedding_model: str | None = None
    """Model for embeddings (RAG, memory); empty means `model`."""


class AnthropicSettings(_KeyedSettings):
    """``[backends.NAME]`` of ``plugin = "anthropic"``."""
