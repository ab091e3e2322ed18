"""The streaming body of a reply: which text is settled, and the swap to Markdown at the end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textual.app import App, ComposeResult
from textual.widgets import Markdown, Static

from chatcore import Role
from tui.widgets.message import MessageView, NoticeView, StreamingBody, settled_length

FENCED = "Intro line\n\n```python\nx = 1\n\ny = 2\n```\n\nAfter the code\n"

markdown_lines = st.lists(
    st.sampled_from(["", "text", "## Heading", "- item", "```", "~~~", "    code", "````"]),
    max_size=30,
)


def test_blank_lines_end_blocks_and_the_open_block_is_not_settled() -> None:
    text = "First paragraph\n\nSecond one, still arriving"
    assert text[: settled_length(text)] == "First paragraph\n\n"
    assert settled_length("no blank line yet\n") == 0
    assert settled_length("") == 0


def test_a_blank_line_inside_a_fence_does_not_end_a_block() -> None:
    inside = FENCED[: FENCED.index("y = 2")]
    assert inside[: settled_length(inside)] == "Intro line\n\n"
    assert FENCED[: settled_length(FENCED)] == FENCED[: FENCED.index("After")]


def test_a_shorter_or_different_fence_does_not_close_one() -> None:
    text = "````\n```\n\n~~~\n\n````\n\nend\n"
    assert text[: settled_length(text)] == "````\n```\n\n~~~\n\n````\n\n"


@given(markdown_lines, st.integers(min_value=0, max_value=400), st.booleans())
def test_settling_in_steps_agrees_with_settling_at_once(
    lines: list[str], cut: int, open_last_line: bool
) -> None:
    text = "\n".join(lines) + ("" if open_last_line else "\n")
    cut = min(cut, len(text))
    earlier = settled_length(text[:cut])
    assert earlier <= cut
    assert settled_length(text, earlier) == settled_length(text)
    settled = settled_length(text)
    assert settled == 0 or text[:settled].endswith("\n")


class OneReply(App[None]):
    def compose(self) -> ComposeResult:
        yield MessageView(Role.ASSISTANT, streaming=True)


@pytest.mark.asyncio
async def test_a_streamed_reply_settles_blocks_then_becomes_markdown() -> None:
    app = OneReply()
    async with app.run_test() as pilot:
        view = app.query_one(MessageView)
        body = view.query_one(StreamingBody)
        pieces = [FENCED[i : i + 7] for i in range(0, len(FENCED), 7)]
        for piece in pieces:
            await view.append(piece)
        await pilot.pause()
        shown = [body.render_line(y).text.strip() for y in range(body.size.height)]
        # The intro and the whole code block (its blank line included) are settled,
        # each followed by a blank line; the last paragraph is the open block.
        assert [line for line in shown if line] == [
            "Intro line",
            "x = 1",
            "y = 2",
            "After the code",
        ]
        assert shown.index("y = 2") - shown.index("x = 1") == 2
        assert body.text == view.text == FENCED
        await view.finish("complete")
        await pilot.pause()
        await pilot.pause()
        assert not view.query(StreamingBody)
        assert view.query_one(Markdown).source == FENCED


@pytest.mark.asyncio
async def test_a_reply_that_stops_midway_is_flagged_partial() -> None:
    app = OneReply()
    async with app.run_test() as pilot:
        view = app.query_one(MessageView)
        await view.append("Half a sent")
        await view.finish("partial")
        await pilot.pause()
        await pilot.pause()
        assert view.query_one(Markdown).source == "Half a sent"
        flags = [str(w.visual) for w in view.query(".flag").results(Static)]
        assert flags == ["[partial]"]


@pytest.mark.asyncio
async def test_quitting_right_after_a_reply_ends_is_clean() -> None:
    # The swap to Markdown is due after the next frame; the app may be gone by then.
    app = OneReply()
    async with app.run_test():
        view = app.query_one(MessageView)
        await view.append("The whole answer.")
        await view.finish("complete")
        app.exit()
    assert app.return_code == 0


HOSTILE = "red \x1b[31malert\x1b[0m, title \x1b]0;pwned\x07, clear \x1b[2J\x9b5m\r\n\r\nnext line"
"""Model output that would recolour, retitle and clear the terminal if passed through."""
SHOWN = "red \\x1b[31malert\\x1b[0m, title \\x1b]0;pwned\\x07, clear \\x1b[2J\\x9b5m"


class Hostile(App[None]):
    def compose(self) -> ComposeResult:
        yield MessageView(Role.ASSISTANT, streaming=True)
        yield MessageView(Role.ASSISTANT, HOSTILE, status="error", note="\x1b[5m")
        yield NoticeView(f"backend said: {HOSTILE}")


def screen_text(app: App[None]) -> list[str]:
    return [strip.text.strip() for strip in app.screen._compositor.render_strips()]


@pytest.mark.asyncio
async def test_control_characters_in_a_reply_show_as_escapes_never_reach_the_terminal() -> None:
    app = Hostile()
    async with app.run_test(size=(120, 24)) as pilot:
        live = app.query(MessageView).first()
        for i in range(0, len(HOSTILE), 5):  # "\r" and "\n" arrive in different chunks
            await live.append(HOSTILE[i : i + 5])
        await pilot.pause()
        lines = screen_text(app)
        assert sum(line.endswith(SHOWN) for line in lines) == 3  # streaming, stored, and the notice
        assert lines.count("next line") == 3
        assert "[error] \\x1b[5m" in lines
        await live.finish("complete")
        await pilot.pause()
        await pilot.pause()
        assert not live.query(StreamingBody)
        assert live.text == HOSTILE  # kept as said; only its display is escaped
        lines = screen_text(app)
        assert sum(line.endswith(SHOWN) for line in lines) == 3
        assert not [
            line for line in lines if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in line)
        ]
