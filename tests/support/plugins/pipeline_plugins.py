"""Plugins that log where a turn is, for the pipeline rules of tests/chatcore/test_pipeline.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from chatcore.plugin import (
    BaseBackendProvider,
    BaseFeatureExtension,
    BaseMessageProcessor,
    BaseMiddleware,
    Chunk,
    HookType,
    PluginResult,
    hook,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from chatcore.plugin import CallNext, ChatContext, Message

LOG: list[str] = []
"""What happened, in order; tests clear it first."""


def _text(context: ChatContext) -> str:
    return context.messages[-1].content


class Steps(BaseBackendProvider):
    """A backend that logs each turn's start and end and streams one word per step.

    ``step_seconds`` (config) is the wait between words, so turns overlap in time.
    """

    name = "steps"

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:
        text = _text(context)
        LOG.append(f"backend:start:{text}")
        words = text.split()
        for index, word in enumerate(words):
            await trio.sleep(float(self.config.get("step_seconds", 0.01)))
            yield Chunk(text=word + " ", index=index)
        LOG.append(f"backend:end:{text}")


class Wrap(BaseMiddleware):
    """Logs around the rest of the turn."""

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        LOG.append(f"wrap:in:{_text(context)}")
        reply = await call_next(context)
        LOG.append(f"wrap:out:{reply.content}")
        return reply


class Twice(BaseMiddleware):
    """Calls call_next twice: the second call is refused, the turn still ends once."""

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        reply = await call_next(context)
        try:
            await call_next(context)
        except Exception as exc:
            LOG.append(f"twice:{exc}")
        return reply


class Completion(BaseMessageProcessor):
    """Logs every completed turn (ON_REQUEST_COMPLETE) and every error (ON_ERROR)."""

    @hook(HookType.ON_REQUEST_COMPLETE)
    async def completed(self, reply: Message, context: ChatContext) -> None:
        LOG.append(f"complete:{reply.status}:{reply.content.strip()}")

    @hook(HookType.ON_ERROR)
    async def errored(self, failure: object, context: ChatContext) -> None:
        LOG.append("on_error")


class Refuse(BaseMessageProcessor):
    """Answers any message containing "secret" itself; the backend never sees it."""

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> Message | PluginResult[Message]:
        if "secret" in message.content:
            return PluginResult.short_circuit("I won't say.")
        return message


class Explode(BaseMessageProcessor):
    """Raises on "explode"; configured ``fail_fast`` it fails the turn outside isolation."""

    async def process_message(self, message: Message, context: ChatContext) -> None:
        if "explode" in message.content:
            raise RuntimeError("boom")


class Mark(BaseFeatureExtension):
    """Logs that the features stage ran."""

    async def enrich(self, context: ChatContext) -> None:
        LOG.append(f"feature:{_text(context)}")
