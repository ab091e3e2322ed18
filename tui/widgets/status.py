"""The status bar: backend and model, tokens of the last turn, and sync status."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

__all__ = ["StatusBar"]


class StatusBar(Static):
    """One line under the chat; clicking the backend opens the switcher."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $text-muted;
    }
    """

    backend: reactive[str] = reactive("")
    model: reactive[str] = reactive("")
    tokens: reactive[str] = reactive("")
    sync: reactive[str] = reactive("")
    """Filled by replication (connectivity and outbox depth); empty until then."""

    @dataclass
    class BackendClicked(Message):
        """The backend part was clicked: open the switcher."""

    def render(self) -> str:
        parts = [f"backend {self.backend or '…'}"]
        if self.model:
            parts.append(f"model {self.model}")
        if self.tokens:
            parts.append(self.tokens)
        if self.sync:
            parts.append(f"sync {self.sync}")
        return "  ·  ".join(parts)

    def on_click(self) -> None:
        self.post_message(self.BackendClicked())
