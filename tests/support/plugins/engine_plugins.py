"""Plugins the engine tests configure as ``engine_plugins:Name``.

Each one does one observable thing, so a test can tell from the reply or the
stored messages that the pipeline called it, in which order, and with what.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import trio
from pydantic import BaseModel, ConfigDict

from chatcore import ChatContext, Chunk, Message, PluginResult, Usage
from chatcore.hooks import HookType
from chatcore.messages import REPLY_METADATA
from chatcore.plugin import (
    BaseBackendProvider,
    BaseFeatureExtension,
    BaseMessageProcessor,
    BaseMiddleware,
    CallNext,
    PluginMetadata,
    PluginType,
    hook,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Tests read and reset this to see which plugin ran when.
EVENTS: list[str] = []


class Recorder(BaseMessageProcessor):
    metadata = PluginMetadata(name="recorder", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        EVENTS.append(f"{self.name}:before:{message.content}")
        return PluginResult.ok(message)

    async def process_reply(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        EVENTS.append(f"{self.name}:after:{message.content}")
        return PluginResult.ok(
            message.replace(content=message.content + self.config.get("suffix", ""))
        )


class AlwaysFails(BaseMessageProcessor):
    metadata = PluginMetadata(name="always_fails", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        raise RuntimeError("this plugin is broken")


class Sleeper(BaseMessageProcessor):
    metadata = PluginMetadata(name="sleeper", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        await trio.sleep(float(self.config.get("seconds", 60)))
        return PluginResult.ok(message.replace(content="slept"))


class Blocker(BaseMessageProcessor):
    """Refuses any message containing a configured word."""

    metadata = PluginMetadata(name="blocker", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        if str(self.config.get("word", "forbidden")) in message.content:
            return PluginResult.short_circuit(
                str(self.config.get("refusal", "I can't help with that."))
            )
        return PluginResult.ok(message)


class Onion(BaseMiddleware):
    metadata = PluginMetadata(name="onion", plugin_type=PluginType.MIDDLEWARE)

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        EVENTS.append(f"{self.name}:in")
        reply = await call_next(context)
        EVENTS.append(f"{self.name}:out:{reply.content}")
        return reply


class CannedAnswer(BaseMiddleware):
    """Answers without calling the rest of the pipeline (as a cache would)."""

    metadata = PluginMetadata(name="canned", plugin_type=PluginType.MIDDLEWARE)

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        return Message.assistant("from the cache")


class BrokenMiddleware(BaseMiddleware):
    metadata = PluginMetadata(name="broken_mw", plugin_type=PluginType.MIDDLEWARE)

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        raise ValueError("middleware bug")


class Incomplete(BaseMessageProcessor):
    """Forgot to implement process_message."""

    metadata = PluginMetadata(name="incomplete", plugin_type=PluginType.MESSAGE_PROCESSOR)


class TwiceMiddleware(BaseMiddleware):
    """A buggy retry: calls the rest of the pipeline twice."""

    metadata = PluginMetadata(name="twice", plugin_type=PluginType.MIDDLEWARE)

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        await call_next(context)
        return await call_next(context)


class StrictOnComplete(BaseMessageProcessor):
    """Fails turns with "bad" in them, and fails again when such a turn completes."""

    metadata = PluginMetadata(name="strict", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        if "bad" in message.content:
            return PluginResult.fail("strict refuses this message")
        return PluginResult.ok(message)

    @hook(HookType.ON_REQUEST_COMPLETE)
    async def on_complete(self, reply: Message, _: ChatContext) -> PluginResult[Message] | None:
        if reply.status != "complete":
            return PluginResult.fail("strict refuses an incomplete turn")
        return None


class AddSystem(BaseFeatureExtension):
    metadata = PluginMetadata(name="add_system", plugin_type=PluginType.FEATURE_EXTENSION)

    async def enrich(self, context: ChatContext) -> PluginResult[ChatContext]:
        EVENTS.append(f"{self.name}:enrich")
        return PluginResult.ok(context.replace(system=str(self.config.get("system", "be brief"))))


class Cites(BaseFeatureExtension):
    """Attaches fixed citations to the reply, the way the RAG feature does."""

    metadata = PluginMetadata(name="cites", plugin_type=PluginType.FEATURE_EXTENSION)
    CITATIONS: ClassVar[list[dict[str, Any]]] = [
        {"document": "guide.md", "chunk": 3, "score": 0.4213, "heading": "Install"},
        {"document": "faq.txt", "chunk": 0, "score": 0.2},
    ]

    async def enrich(self, context: ChatContext) -> PluginResult[ChatContext]:
        return PluginResult.ok(
            context.with_metadata(**{REPLY_METADATA: {"citations": self.CITATIONS}})
        )


class TunedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: int = 3
    words: list[str] = []


class Tuned(BaseMessageProcessor):
    """Declares its settings; the manager validates its [plugins.config] table."""

    metadata = PluginMetadata(name="tuned", plugin_type=PluginType.MESSAGE_PROCESSOR)
    settings_model = TunedSettings

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        settings: TunedSettings = self.settings
        return PluginResult.ok(message.replace(content=f"{message.content} x{settings.threshold}"))


class ModelSwitch:
    """Not a plugin class by itself; the hook plugin below uses it."""


class HookPlugin(BaseMessageProcessor):
    metadata = PluginMetadata(name="hooks", plugin_type=PluginType.MESSAGE_PROCESSOR)
    seen: ClassVar[list[Any]] = []

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)

    @hook(HookType.ON_REQUEST_START)
    async def on_start(self, context: ChatContext, _: ChatContext) -> None:
        EVENTS.append("hook:on_request_start")

    @hook(HookType.BEFORE_MODEL_LOAD)
    async def before_model(self, context: ChatContext, _: ChatContext) -> PluginResult[ChatContext]:
        EVENTS.append("hook:before_model_load")
        return PluginResult.ok(context.replace(model="switched-model"))

    @hook(HookType.ON_REQUEST_COMPLETE)
    async def on_complete(self, reply: Message, _: ChatContext) -> None:
        EVENTS.append(f"hook:on_request_complete:{reply.content}")


class Dep(BaseMessageProcessor):
    """Depends on whatever its metadata is rebuilt with (see make_dep)."""

    metadata = PluginMetadata(name="dep", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)


def make_dep(name: str, *deps: str) -> type[Dep]:
    return type(
        name,
        (Dep,),
        {
            "metadata": PluginMetadata(
                name=name, plugin_type=PluginType.MESSAGE_PROCESSOR, dependencies=deps
            )
        },
    )


CycleA = make_dep("cycle_a", "cycle_b")
CycleB = make_dep("cycle_b", "cycle_a")
NeedsGhost = make_dep("needs_ghost", "ghost")


class ContextBackend(BaseBackendProvider):
    """Replies with what it was given: system prompt, model and the history's contents."""

    metadata = PluginMetadata(name="context_backend", plugin_type=PluginType.BACKEND_PROVIDER)

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        history = "|".join(f"{m.role}:{m.content}" for m in context.messages)
        text = f"system={context.system} model={context.model} history={history}"
        yield Chunk(text=text, index=0, done=True, usage=Usage(7, 11), model=context.model)


class FailingBackend(BaseBackendProvider):
    """Streams two pieces, then fails: the partial reply must be kept."""

    metadata = PluginMetadata(name="failing_backend", plugin_type=PluginType.BACKEND_PROVIDER)

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        yield Chunk(text="half ", index=0)
        yield Chunk(text="a reply", index=1)
        raise ConnectionError("connection reset by peer")


CALLS: dict[str, int] = {}
"""Calls per scripted backend instance; tests reset it."""


class ScriptedBackend(BaseBackendProvider):
    """Fails its first ``fail_times`` calls with ``error``, then answers ``<name>: <message>``.

    ``error``: "unavailable", "rate_limited" (with ``retry_after``), "timeout", "auth".
    With ``fail_mid_stream = true`` it streams "partial " before failing.
    """

    metadata = PluginMetadata(name="scripted", plugin_type=PluginType.BACKEND_PROVIDER)

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:  # type: ignore[override]
        from chatcore.errors import (
            BackendAuthError,
            BackendRateLimited,
            BackendTimeout,
            BackendUnavailable,
        )

        calls = CALLS[self.name] = CALLS.get(self.name, 0) + 1
        if calls <= int(self.config.get("fail_times", 0)):
            if self.config.get("fail_mid_stream"):
                yield Chunk(text="partial ", index=0)
            kind = self.config.get("error", "unavailable")
            message = f"{self.name} failure {calls}"
            if kind == "rate_limited":
                retry_after = self.config.get("retry_after")
                raise BackendRateLimited(
                    message,
                    backend=self.name,
                    retry_after=None if retry_after is None else float(retry_after),
                )
            if kind == "timeout":
                raise BackendTimeout(message, backend=self.name)
            if kind == "auth":
                raise BackendAuthError(message, backend=self.name)
            raise BackendUnavailable(message, backend=self.name)
        last = context.last_user_message
        text = f"{self.name}: {last.content if last else ''}"
        yield Chunk(text=text, index=0, done=True, usage=Usage(1, 2), model=context.model)
