"""The normalizer: what each step changes, what the metadata says, and that it is idempotent."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore import ChatContext, Message
from processors.normalizer import Normalizer, normalize

CONTEXT = ChatContext(conversation_id="c1", backend="echo")


@pytest.mark.parametrize(
    ("text", "expected", "changes"),
    [
        ("plain text", "plain text", []),
        ("Cafe\u0301", "Caf\u00e9", ["nfc"]),
        ("bell\x07 and\x00 nul\x1b[31m", "bell and nul[31m", ["control_chars"]),
        ("tab\tand\nnewline stay", "tab\tand\nnewline stay", []),
        ("windows\r\nline\rends", "windows\nline\nends", ["control_chars"]),
        ("c1\x85 and del\x7f", "c1 and del", ["control_chars"]),
        ("a\n\nb", "a\n\nb", []),
        ("a\n\n\nb", "a\n\nb", ["blank_lines"]),
        ("a\n \n\t\n\n  \nb", "a\n\nb", ["blank_lines"]),
        ("  padded\n\n", "padded", ["trimmed"]),
        (
            " x\x07\u0301\r\n\r\n\r\ny ",
            "x\u0301\n\ny",
            ["control_chars", "blank_lines", "trimmed"],
        ),
        # A control between a letter and its accent: removed first, so they compose.
        ("e\x00\u0301", "\u00e9", ["nfc", "control_chars"]),
    ],
)
def test_normalize_changes_only_what_needs_changing(
    text: str, expected: str, changes: list[str]
) -> None:
    assert normalize(text) == (expected, changes)


async def test_processor_records_the_changes_in_metadata() -> None:
    plugin = Normalizer()
    message = Message.user("  Cafe\u0301\n\n\n\nbye ")
    result = await plugin.process_message(message, CONTEXT)
    changed = result.unwrap()
    assert changed.content == "Caf\u00e9\n\nbye"
    assert changed.id == message.id
    assert dict(changed.metadata) == {"normalizer": {"changes": ["nfc", "blank_lines", "trimmed"]}}


async def test_processor_leaves_a_clean_message_untouched() -> None:
    plugin = Normalizer()
    message = Message.user("already clean\n\nsecond paragraph")
    assert (await plugin.process_message(message, CONTEXT)).unwrap() is message


async def test_a_message_of_only_controls_is_not_emptied() -> None:
    message = Message.user("\x01\x02")
    assert (await Normalizer().process_message(message, CONTEXT)).unwrap() is message


# Any text, with the characters each step is about made likely.
TEXT = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\n", "\r", "\r\n", "\t", " ", "\x00", "\x85", "e\u0301", "\u0301"]),
    ),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_normalizing_twice_is_normalizing_once(text: str) -> None:
    once, _ = normalize(text)
    twice, changes = normalize(once)
    assert twice == once
    assert changes == []


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_the_result_has_no_control_characters_and_is_nfc(text: str) -> None:
    out, changes = normalize(text)
    assert all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in out)
    assert unicodedata.is_normalized("NFC", out)
    assert "\n\n\n" not in out
    assert out == out.strip()
    assert bool(changes) == (out != text)
