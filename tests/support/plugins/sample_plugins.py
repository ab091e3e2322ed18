"""Plugin classes that tests/chatcore/test_plugins.py loads as ``sample_plugins:Class``.

Every lifecycle step and hook call is appended to ``EVENTS`` as ``"<what>:<name>"``
(the test module clears it before each test), so tests can assert on order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatcore.hooks import HookType
from chatcore.plugin import (
    BaseMessageProcessor,
    BaseMiddleware,
    PluginMetadata,
    PluginStatus,
    PluginType,
    hook,
)
from chatcore.result import PluginResult

if TYPE_CHECKING:
    from chatcore.messages import ChatContext, Message

EVENTS: list[str] = []


class Tagger(BaseMessageProcessor):
    """Appends ``|<tag>`` to the user's message (``tag`` from its config, else its name)."""

    metadata = PluginMetadata(name="tagger", version="2.1.0", description="tags messages")

    async def _do_initialize(self) -> None:
        EVENTS.append(f"init:{self.name}")

    async def _do_shutdown(self) -> None:
        EVENTS.append(f"shutdown:{self.name}")

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        tag = self.config.get("tag", self.name)
        return PluginResult.ok(message.replace(content=f"{message.content}|{tag}"))


class Replier(Tagger):
    """Also sees the assistant's reply, which it marks with ``(seen)``."""

    metadata = PluginMetadata(name="replier")

    async def process_reply(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        return PluginResult.ok(message.replace(content=f"{message.content} (seen)"))


# A chain: top needs mid, mid needs base.
class Base(Tagger):
    metadata = PluginMetadata(name="base")


class Mid(Tagger):
    metadata = PluginMetadata(name="mid", dependencies=("base",))


class Top(Tagger):
    metadata = PluginMetadata(name="top", dependencies=("mid",))


# A two-plugin cycle; dependencies name metadata names, so a test that gives the
# entries other instance names also checks that dependencies resolve through them.
class CycleA(Tagger):
    metadata = PluginMetadata(name="cycle_a", dependencies=("cycle_b",))


class CycleB(Tagger):
    metadata = PluginMetadata(name="cycle_b", dependencies=("cycle_a",))


class NeedsGhost(Tagger):
    metadata = PluginMetadata(name="needs_ghost", dependencies=("ghost",))


class Broken(Tagger):
    """Fails in ``initialize``."""

    metadata = PluginMetadata(name="broken")

    async def _do_initialize(self) -> None:
        EVENTS.append(f"init:{self.name}")
        raise RuntimeError("boom")


class NeedsBroken(Tagger):
    metadata = PluginMetadata(name="needs_broken", dependencies=("broken",))


class RequestWatcher(BaseMiddleware):
    """A middleware that also watches ``ON_REQUEST_START`` through ``@hook``."""

    metadata = PluginMetadata(name="request_watcher", plugin_type=PluginType.MIDDLEWARE)

    @hook(HookType.ON_REQUEST_START)
    async def on_start(self, message: Message, context: ChatContext) -> None:
        EVENTS.append(f"request:{context.conversation_id}:{message.content}")


class LoadWatcher(BaseMiddleware):
    """Records every ``ON_PLUGIN_LOAD`` it sees."""

    metadata = PluginMetadata(name="load_watcher", plugin_type=PluginType.MIDDLEWARE)

    @hook(HookType.ON_PLUGIN_LOAD)
    async def on_load(self, status: PluginStatus, context: ChatContext) -> None:
        EVENTS.append(f"loaded:{status.name}")
