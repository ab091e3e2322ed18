"""The conversation list: newest first, filtered by what is typed above it (or on it)."""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from tui.widgets.message import visible_controls

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from markdown_it import MarkdownIt
    from textual import events

    from chatcore import ConversationSummary

__all__ = ["CONVERSATIONS_SHOWN", "ConversationList", "matches", "plain_title"]

CONVERSATIONS_SHOWN = 1000
"""Rows put in the list at once. OptionList measures every row it holds, so ten
thousand rows cost a visible pause on each keystroke; beyond this many matches
the list says how many more there are and the filter narrows them down."""


@functools.cache
def _inline_parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


_MARKUP = re.compile(r"[*_`\[\]!<&\\~]")
"""Characters without which a title's Markdown is its text."""


@functools.lru_cache(maxsize=65_536)
def plain_title(title: str) -> str:
    """A title as its Markdown reads (``Show me **this**`` → ``Show me this``).

    Titles are the first words of a conversation, often Markdown; one line of
    title shows no styles, and the asterisks and backticks would only be noise.
    """
    title = visible_controls(title)  # pasted text may hold terminal escapes
    if not _MARKUP.search(title):
        return title  # most titles: no parse (the list rebuilds on every keystroke)
    words: list[str] = []
    for line in _inline_parser().parseInline(title):
        for token in line.children or []:
            if token.type in ("text", "code_inline", "html_inline", "image"):
                words.append(token.content)  # an image's content is its alt text
            elif token.type in ("softbreak", "hardbreak"):
                words.append(" ")
    return "".join(words).strip() or title


def matches(title: str, terms: Sequence[str]) -> bool:
    """Every term (already case-folded) occurs in the title, in any order."""
    folded = title.casefold()
    return all(term in folded for term in terms)


class ConversationList(OptionList):
    """Conversation titles; selecting one opens it, Delete deletes it (after asking)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "delete", "screen.delete_conversation", "Delete conversation", id="delete_conversation"
        ),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        # Titles are user text: "[draft]" is a word, not a style.
        super().__init__(id=id, markup=False)
        self.matched = 0
        """Conversations matching the current filter (shown or not)."""

    def show(
        self,
        summaries: Sequence[ConversationSummary],
        query: str = "",
        *,
        current: str | None = None,
        said: Collection[str] = (),
    ) -> None:
        """Fill the list with the summaries matching ``query``, keeping their order: by
        title, or by what was said in them (``said``: ids a content search found)."""
        terms = query.casefold().split()
        options: list[Option] = []
        self.matched = 0
        for summary in summaries:
            title = plain_title(summary.title)
            if (
                terms
                and summary.id not in said
                and not (matches(title, terms) or matches(summary.title, terms))
            ):
                continue
            self.matched += 1
            if self.matched <= CONVERSATIONS_SHOWN:
                options.append(Option(title, id=summary.id))
        hidden = self.matched - len(options)
        if hidden:
            options.append(Option(f"… {hidden:,} more: type to narrow", disabled=True))
        elif not options:
            options.append(Option("no match" if terms else "no conversations yet", disabled=True))
        self.set_options(options)
        self.select_id(current)

    @dataclass
    class Typed(Message):
        """A character typed while the list has focus: it belongs in the filter."""

        character: str

    def on_key(self, event: events.Key) -> None:
        if not (event.is_printable and event.character) or event.key in self.screen.active_bindings:
            return
        event.stop()
        event.prevent_default()
        self.post_message(self.Typed(event.character))

    def select_id(self, conversation_id: str | None) -> None:
        """Highlight the conversation with this id, if it is shown."""
        if conversation_id is None:
            return
        # Not shown when filtered out or beyond the rows shown: then nothing is highlighted.
        with contextlib.suppress(OptionDoesNotExist):
            self.highlighted = self.get_option_index(conversation_id)

    @property
    def highlighted_id(self) -> str | None:
        """The id of the highlighted conversation, if a conversation row is highlighted."""
        if self.highlighted is None:
            return None
        return self.get_option_at_index(self.highlighted).id

    @property
    def shown_ids(self) -> list[str]:
        """Ids of the conversations in the list, top to bottom."""
        return [option.id for option in self.options if option.id is not None]
