"""Spell out abbreviations before the model sees them (the example of docs/plugins.md)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

from chatcore.plugin import BaseMessageProcessor, HookType, PluginMetadata, hook

if TYPE_CHECKING:
    from chatcore.plugin import ChatContext, Message


class GlossarySettings(BaseModel):
    """The [plugins.config] table: checked when the engine starts."""

    model_config = ConfigDict(extra="forbid")

    terms: dict[str, str] = {}
    """Abbreviation -> what it stands for, e.g. k8s = "Kubernetes"."""


class Glossary(BaseMessageProcessor):
    """Replaces whole-word abbreviations in the user's message and counts them."""

    metadata = PluginMetadata(
        name="glossary",
        version="1.0.0",
        description="Spells out abbreviations in user messages",
    )
    settings_model: ClassVar[type[BaseModel]] = GlossarySettings
    settings: GlossarySettings

    async def _do_initialize(self) -> None:
        # Longest first, so "k8s-ops" wins over "k8s" when both are terms.
        words = sorted(self.settings.terms, key=len, reverse=True)
        alternatives = "|".join(re.escape(word) for word in words)
        self._pattern = re.compile(rf"\b({alternatives})\b") if words else None

    async def process_message(self, message: Message, context: ChatContext) -> Message:
        if self._pattern is None:
            return message
        found: list[str] = []

        def spell_out(match: re.Match[str]) -> str:
            found.append(match.group(1))
            return self.settings.terms[match.group(1)]

        text = self._pattern.sub(spell_out, message.content)
        # Kept on the message (and stored with it), not on self: turns run concurrently.
        return message.replace(content=text).with_metadata(glossary=found)

    @hook(HookType.ON_REQUEST_COMPLETE)
    async def count(self, reply: Message, context: ChatContext) -> None:
        """After each turn, add what was expanded to the totals in the plugin's own store."""
        asked = context.last_user_message
        found = asked.metadata.get("glossary") if asked is not None else None
        if self.host is None or not found:
            return
        totals = self.host.kv.get("totals") or {}
        for word in found:
            totals[word] = totals.get(word, 0) + 1
        self.host.kv.set("totals", totals)
