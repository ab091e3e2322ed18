"""The status bar: backend and model, tokens of the last turn, and sync status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

if TYPE_CHECKING:
    from chatcore.replication import SyncStatus

__all__ = ["StatusBar", "sync_text", "tokens_text"]

_SYNC_MARKS = {"online": "●", "connecting": "◌", "degraded": "◐", "offline": "○"}


def sync_text(status: SyncStatus) -> str:
    """The sync slot: "● online · 0 pending", "○ offline · 12 pending"."""
    mark = _SYNC_MARKS.get(status.state, "○")
    return f"{mark} {status.state} · {status.pending} pending"


def tokens_text(tokens_in: int | None, tokens_out: int | None, *, estimated: bool) -> str:
    """The tokens slot: "tokens 12 in / 30 out", or "tokens ~12 in / ~30 out (estimated)"
    when the backend reported none and chatcore counted them itself."""
    if estimated:
        return f"tokens ~{tokens_in or 0} in / ~{tokens_out or 0} out (estimated)"
    return f"tokens {tokens_in or 0} in / {tokens_out or 0} out"


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
    generating: reactive[bool] = reactive(False)
    """A reply is streaming: the bar says "generating…" until it ends."""
    sync: reactive[str] = reactive("")
    """Filled by replication (connectivity and outbox depth); empty until then."""

    @dataclass
    class BackendClicked(Message):
        """The backend part was clicked: open the switcher."""

    def render(self) -> str:
        parts = ["generating…"] if self.generating else []
        parts.append(f"backend {self.backend or '…'}")
        if self.model:
            parts.append(f"model {self.model}")
        if self.tokens:
            parts.append(self.tokens)
        if self.sync:
            parts.append(f"sync {self.sync}")
        return "  ·  ".join(parts)

    def on_click(self) -> None:
        self.post_message(self.BackendClicked())
