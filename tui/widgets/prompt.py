"""The multi-line prompt: Enter sends, Shift+Enter or Ctrl+J starts a new line.

Enter only offers the text (``Submitted``); the screen clears the box once it has
taken the message, so a message it can't send yet (a reply is still arriving)
stays where it was typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from textual.message import Message
from textual.widgets import TextArea

if TYPE_CHECKING:
    from collections.abc import Mapping

    from textual import events

__all__ = ["PromptInput"]


class PromptInput(TextArea):
    """A TextArea whose Enter submits instead of breaking the line."""

    DEFAULT_CSS = """
    PromptInput {
        height: auto;
        min-height: 3;
        max-height: 10;
    }
    """

    OWN_KEYS: ClassVar[Mapping[str, str]] = {
        "enter": "sends",
        "shift+enter": "breaks lines",
        "ctrl+j": "breaks lines",
    }
    """Keys the box handles itself (not through bindings), and what it does with them."""

    @dataclass
    class Submitted(Message):
        text: str

    def taken(self, text: str) -> None:
        """The screen took ``text``: empty the box, unless it was edited since."""
        if self.text == text:
            self.clear()

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            text = self.text
            if text.strip():
                self.post_message(self.Submitted(text))
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        await super()._on_key(event)
