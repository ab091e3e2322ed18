"""One message in the chat log: who said it, the Markdown body, and a flag when it is unfinished."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Markdown, Static

from chatcore import MessageStatus, Role

if TYPE_CHECKING:
    from textual.app import ComposeResult
    from textual.widgets.markdown import MarkdownStream

__all__ = ["EarlierMessages", "MessageView", "NoticeView"]


def _flag(status: str, note: str | None) -> str:
    return f"[{status}] {note}" if note else f"[{status}]"


class MessageView(Vertical):
    """A role line and the Markdown body, streamed while the reply arrives."""

    DEFAULT_CSS = """
    MessageView { height: auto; margin: 0 0 1 0; }
    MessageView > .role { color: $text-muted; text-style: bold; }
    MessageView.-user > .role { color: $accent; }
    MessageView > .flag { color: $warning; }
    MessageView > Markdown { margin: 0; padding: 0 0 0 2; }
    """

    def __init__(
        self,
        role: Role | str,
        text: str = "",
        *,
        status: str | None = None,
        note: str | None = None,
    ) -> None:
        super().__init__(classes=f"-{Role(role).value}")
        self.role = Role(role)
        self.text = text
        self.status = status
        """``partial`` or ``error`` once the reply ended unfinished; shown as ``[partial]``."""
        self.note = note
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Static("you" if self.role is Role.USER else str(self.role), classes="role")
        yield Markdown(self.text)
        if self.status and self.status != MessageStatus.COMPLETE:
            yield Static(_flag(self.status, self.note), classes="flag", markup=False)

    async def append(self, fragment: str) -> None:
        self.text += fragment
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(Markdown))
        await self._stream.write(fragment)

    async def finish(self, status: str | None) -> None:
        """The reply is over: flush the stream, flag it unless it is complete."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if status and status != MessageStatus.COMPLETE:
            self.status = status
            await self.mount(Static(_flag(status, None), classes="flag", markup=False))


class NoticeView(Static):
    """A line from chatcore itself (not a message): an error and what to do about it."""

    def __init__(self, text: str, *, level: str = "error") -> None:
        # Error texts quote config tables such as "[backends.openai]": never markup.
        super().__init__(text, classes=f"notice -{level}", markup=False)
        self.text = text
        self.level = level


class EarlierMessages(NoticeView):
    """The "… N earlier messages" line: clicking it shows the next page of them."""

    @dataclass
    class Requested(Message):
        """Someone asked for the next page of earlier messages."""

    def __init__(self, count: int) -> None:
        super().__init__(f"… {count} earlier messages (click to show more)", level="info")
        self.count = count

    def on_click(self) -> None:
        self.post_message(self.Requested())
