"""One message in the chat log: who said it, the Markdown body, and a flag when it is unfinished."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.containers import Vertical
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Markdown, Static

from chatcore import MessageStatus, Role
from chatcore.messages import citation_lines

if TYPE_CHECKING:
    from rich.markdown import Markdown as RichMarkdown
    from textual.app import ComposeResult
    from textual.geometry import Size

__all__ = [
    "EarlierMessages",
    "MessageView",
    "NoticeView",
    "StreamingBody",
    "settled_length",
    "visible_controls",
]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CONTROL = re.compile(r"\r(?!\n)|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 and C1 control characters but tab and line ends, and a carriage return alone."""


def visible_controls(text: str) -> str:
    """``text`` with its control characters written out as escapes (ESC as ``\\x1b``).

    What a model says, or an error quotes, is drawn into the terminal: an ESC
    passed through could recolour it, retitle the window or clear the screen.
    """
    text = text.replace("\r\n", "\n")
    return (
        _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text) if _CONTROL.search(text) else text
    )


def settled_length(text: str, start: int = 0) -> int:
    """How much of ``text`` (from ``start``, a block boundary) is whole Markdown blocks.

    A block ends at a blank line outside a fenced code block; text after the last
    such line may still change how it renders (an open paragraph, list or fence).
    """
    settled = start
    fence: str | None = None
    position = start
    for line in text[start:].splitlines(keepends=True):
        position += len(line)
        if not line.endswith("\n"):
            break  # the last line is still arriving
        marker = _FENCE.match(line)
        if fence is None:
            if marker:
                fence = marker.group(1)
            elif not line.strip():
                settled = position
        elif marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
            fence = None
    return settled


def _rendered(markdown: str) -> RichMarkdown:
    # Imported on first use: rich's Markdown (with Pygments) costs ~40 ms at start.
    from rich.markdown import Markdown as RichMarkdown

    return RichMarkdown(visible_controls(markdown), code_theme="monokai", hyperlinks=False)


class StreamingBody(Widget):
    """A reply while it streams: finished blocks rendered once, the open block per chunk.

    Textual's Markdown widget re-parses the open block and mounts new block widgets
    inside a batch update, which holds back every frame until the mount is done,
    and each widget adds to every layout. This is one widget drawing cached lines
    (Textual's line API): a finished block (ended by a blank line outside a code
    fence) is rendered once, a chunk re-renders only the open block, and a chunk
    that doesn't change the height costs a repaint, not a layout. When the reply
    ends, the message swaps this for a Markdown widget of the whole text.
    """

    DEFAULT_CSS = """
    StreamingBody { height: auto; padding: 0 0 0 2; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self._settled = 0
        self._blocks: list[str] = []
        self._settled_lines: list[Strip] = []
        self._open_lines: list[Strip] = []
        self._width = 0

    async def append(self, fragment: str) -> None:
        """Show one more streamed piece (async to match ``MessageView.append``)."""
        height = self._height
        self.text += fragment
        settled = settled_length(self.text, self._settled)
        if settled > self._settled:
            block = self.text[self._settled : settled].strip("\r\n")
            self._settled = settled
            if block:
                self._blocks.append(block)
                self._settled_lines += self._render_block(block)
        self._open_lines = self._render_markdown(self.text[self._settled :])
        self.refresh(layout=self._height != height)

    @property
    def _height(self) -> int:
        return len(self._settled_lines) + len(self._open_lines)

    def _render_markdown(self, markdown: str) -> list[Strip]:
        if self._width <= 0 or not markdown.strip():
            return []
        console = self.app.console
        options = console.options.update_width(self._width)
        lines = console.render_lines(_rendered(markdown), options, pad=False)
        return [Strip(line).adjust_cell_length(self._width) for line in lines]

    def _render_block(self, block: str) -> list[Strip]:
        lines = self._render_markdown(block)
        return [*lines, Strip.blank(self._width)] if lines else lines

    def _set_width(self, width: int) -> None:
        if width == self._width or width <= 0:
            return
        self._width = width
        self._settled_lines = [line for b in self._blocks for line in self._render_block(b)]
        self._open_lines = self._render_markdown(self.text[self._settled :])

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        self._set_width(width)
        return self._height

    def on_resize(self) -> None:
        self._set_width(self.content_size.width)

    def render_line(self, y: int) -> Strip:
        settled = self._settled_lines
        if y < len(settled):
            line = settled[y]
        elif y - len(settled) < len(self._open_lines):
            line = self._open_lines[y - len(settled)]
        else:
            line = Strip.blank(self._width)
        return line.apply_style(self.rich_style)


def _flag(status: str, note: str | None) -> str:
    return f"[{status}] {visible_controls(note)}" if note else f"[{status}]"


class MessageView(Vertical):
    """A role line and the Markdown body, streamed while the reply arrives."""

    DEFAULT_CSS = """
    MessageView { height: auto; margin: 0 0 1 0; }
    MessageView > .role { color: $text-muted; text-style: bold; }
    MessageView.-user > .role { color: $accent; }
    MessageView > .flag { color: $warning; }
    MessageView > Markdown { margin: 0; padding: 0 0 0 2; }
    MessageView > .citations { color: $text-muted; padding: 0 0 0 2; }
    """

    def __init__(
        self,
        role: Role | str,
        text: str = "",
        *,
        status: str | None = None,
        note: str | None = None,
        streaming: bool = False,
        citations: object = None,
    ) -> None:
        super().__init__(classes=f"-{Role(role).value}")
        self.role = Role(role)
        self.text = text
        self.status = status
        """``partial`` or ``error`` once the reply ended unfinished; shown as ``[partial]``."""
        self.note = note
        self._streaming = StreamingBody() if streaming else None
        """The body while the reply streams (``streaming=True``); a Markdown widget after."""
        self.citations = citation_lines(citations)

    def compose(self) -> ComposeResult:
        yield Static("you" if self.role is Role.USER else str(self.role), classes="role")
        yield self._streaming if self._streaming is not None else Markdown(self._shown)
        if self.citations:
            yield self._citation_view()
        if self.status and self.status != MessageStatus.COMPLETE:
            yield Static(_flag(self.status, self.note), classes="flag", markup=False)

    @property
    def _shown(self) -> str:
        """The text as drawn: Markdown, with control characters escaped."""
        return visible_controls(self.text)

    def _citation_view(self) -> Static:
        text = "Sources:\n" + "\n".join(self.citations)
        return Static(visible_controls(text), classes="citations", markup=False)

    async def show_citations(self, citations: object) -> None:
        """List the sources a finished reply was answered from (RAG), under its text."""
        self.citations = citation_lines(citations)
        if self.citations and not self.query(".citations"):
            await self.mount(self._citation_view())

    async def append(self, fragment: str) -> None:
        """Show one more streamed piece of the reply."""
        self.text += fragment
        if self._streaming is None:
            raise RuntimeError("append() needs a MessageView made with streaming=True")
        await self._streaming.append(fragment)

    async def finish(self, status: str | None) -> None:
        """The reply is over: show it as Markdown, flag it unless it is complete."""
        streaming, self._streaming = self._streaming, None
        if streaming is not None:
            # After the frame that shows the last words: the swap parses the whole
            # reply, and nobody should wait for that to see how it ended.
            self.call_after_refresh(self._show_as_markdown, streaming)
        if status and status != MessageStatus.COMPLETE:
            self.status = status
            await self.mount(Static(_flag(status, None), classes="flag", markup=False))

    async def _show_as_markdown(self, streaming: StreamingBody) -> None:
        if not (self.is_attached and streaming.is_attached):
            return  # the log was cleared (a new chat, the app closing) in the meantime
        # One swap, painted as one frame: never both bodies, never neither.
        with self.app.batch_update():
            await self.mount(Markdown(self._shown), before=streaming)
            await streaming.remove()


class NoticeView(Static):
    """A line from chatcore itself (not a message): an error and what to do about it."""

    def __init__(self, text: str, *, level: str = "error") -> None:
        # Error texts quote config tables such as "[backends.openai]": never markup.
        super().__init__(visible_controls(text), classes=f"notice -{level}", markup=False)
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
