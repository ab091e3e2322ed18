"""The ``echo`` backend: deterministic and offline, for demos, tests and benchmarks.

It answers ``echo: <last user message>`` and streams that reply word by word,
so every part of the pipeline (streaming, persistence, plugins) can be
exercised without a model. It is not a language model and says so in
``chatcore backends``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import trio

from chatcore.messages import ChatContext, Chunk, Usage
from chatcore.plugin import BaseBackendProvider, PluginMetadata

from ._settings import EchoSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ECHO_MODEL = "echo"
PREFIX = "echo: "
_PIECES = re.compile(r"\S+\s*|\s+")


def _estimate_tokens(text: str) -> int:
    # Whitespace-separated words: exact enough for a fake backend and free to compute.
    return len(text.split())


class EchoBackend(BaseBackendProvider):
    """Replies ``echo: <last user message>``; config ``delay_seconds`` slows each chunk."""

    metadata = PluginMetadata(
        name="echo",
        version="1.0.0",
        description="Deterministic offline echo backend for demos, tests and benchmarks "
        "(not a language model)",
        tags=("offline", "testing"),
    )
    settings_model = EchoSettings

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:
        last = context.last_user_message
        reply = PREFIX + (last.content if last is not None else "")
        delay = float(self.config.get("delay_seconds") or 0.0)
        model = context.model or str(self.config.get("model") or ECHO_MODEL)
        pieces = _PIECES.findall(reply)
        tokens_in = sum(_estimate_tokens(m.content) for m in context.messages)
        if context.system:
            tokens_in += _estimate_tokens(context.system)
        for index, piece in enumerate(pieces):
            if delay:
                await trio.sleep(delay)
            last_piece = index == len(pieces) - 1
            yield Chunk(
                text=piece,
                index=index,
                done=last_piece,
                usage=Usage(tokens_in, _estimate_tokens(reply)) if last_piece else None,
                model=model if last_piece else None,
            )

    async def list_models(self) -> list[str]:
        return [str(self.config.get("model") or ECHO_MODEL)]
