"""A tokenizer-free token estimate, tuned to over-count GPT-4's ``cl100k_base`` slightly.

Budgets only hold if the estimate errs high, so every rule here rounds towards
more tokens: a word is one token up to six letters and grows after that (rare and
made-up words split into pieces), digits go in groups of three (as cl100k splits
them), punctuation and whitespace runs cost their own tokens, and scripts that
byte-level BPE serves poorly (CJK, Hangul, Indic, ...) cost a token or more per
character. The calibration, and where it is known to err, is in docs/memory.md.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from chatcore.messages import ChatContext, Message

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "SAFETY_FACTOR",
    "context_tokens",
    "estimate_tokens",
    "message_tokens",
    "messages_tokens",
    "truncate_to_tokens",
]

SAFETY_FACTOR = 1.1
"""The raw estimate is scaled by this and rounded up, so text the rules undercount
(a made-up word such as "tiktoken" is three tokens) still fits."""
MESSAGE_OVERHEAD_TOKENS = 4
"""Role and separator tokens that chat formats add to every message."""
REPLY_PRIMING_TOKENS = 3
"""Tokens a chat format adds to start the assistant's reply."""

_FREE_LETTERS = 6
"""An ASCII word up to this long counts as one token (nearly all common words are)."""
_PER_EXTRA_LETTER = 0.3
_PER_EXTRA_SPACE = 0.125
_PER_EXTRA_PUNCT = 0.5

# One piece is a word with the space before it, up to three digits, a run of
# punctuation with the space before it, or a run of whitespace: the same cuts
# cl100k's pre-tokenizer makes, so each piece costs at least one token.
_PIECES = re.compile(r" ?[^\W\d_]+| ?[^\w\s]+|_+|\d{1,3}|\s+")


def _char_cost(ch: str) -> float:
    """Tokens for one non-ASCII character, by script (a coarse code point table)."""
    code = ord(ch)
    if code < 0x0250:  # Latin-1 and Latin Extended: accents break merges now and then
        return 0.5
    if code < 0x0530:  # IPA, Greek, Cyrillic: cl100k has many but short pieces
        return 0.5
    if 0x3040 <= code <= 0x30FF:  # Hiragana, Katakana: about a token each
        return 1.0
    if 0x1100 <= code <= 0x11FF or 0xAC00 <= code <= 0xD7AF:  # Hangul
        return 1.5
    if 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or code >= 0x20000:  # Han
        return 1.3
    # Hebrew, Arabic, Indic, Thai, ...: often one or more byte pieces per character.
    return 1.0


def _word_cost(word: str) -> float:
    if word.isascii():
        return 1.0 + max(0, len(word) - _FREE_LETTERS) * _PER_EXTRA_LETTER
    ascii_letters = sum(1 for ch in word if ch.isascii())
    cost = 1.0 + max(0, ascii_letters - _FREE_LETTERS) * _PER_EXTRA_LETTER if ascii_letters else 0.0
    cost += sum(_char_cost(ch) for ch in word if not ch.isascii())
    return max(1.0, cost)


def _punct_cost(run: str) -> float:
    if run.isascii():
        return 1.0 + (len(run) - 1) * _PER_EXTRA_PUNCT
    # Emoji and other symbols are several bytes, usually two or three tokens each.
    return sum(1.0 if ch.isascii() else 2.0 for ch in run)


_ASCII_WORDS = re.compile(r"[A-Za-z]+")
_ASCII_LONG_WORDS = re.compile(rf"[A-Za-z]{{{_FREE_LETTERS + 1},}}")
_DIGIT_GROUPS = re.compile(r"\d{1,3}")
_PUNCT_RUNS = re.compile(r"[^\w\s]+|_+")
_SPACE_RUNS = re.compile(r"\s+")
_ABSORBED_SPACES = re.compile(r"(?<!\s) (?=[^\s\d_])")


def _raw_cost_ascii(text: str) -> float:
    """``_raw_cost`` for ASCII text, from counts the regex engine makes (several times faster)."""
    long_words = _ASCII_LONG_WORDS.findall(text)
    punct = _PUNCT_RUNS.findall(text)
    spaces = _SPACE_RUNS.findall(text)
    return (
        len(_ASCII_WORDS.findall(text))
        + (sum(map(len, long_words)) - _FREE_LETTERS * len(long_words)) * _PER_EXTRA_LETTER
        + len(_DIGIT_GROUPS.findall(text))
        + len(punct)
        + (sum(map(len, punct)) - len(punct)) * _PER_EXTRA_PUNCT
        # A single space before a word or punctuation rides along with it.
        + len(spaces)
        - len(_ABSORBED_SPACES.findall(text))
        + (sum(map(len, spaces)) - len(spaces)) * _PER_EXTRA_SPACE
    )


def _raw_cost(text: str) -> float:
    total = 0.0
    for match in _PIECES.finditer(text):
        piece = match.group()
        head = piece[0]
        if head == " " and len(piece) > 1 and not piece[1].isspace():
            piece = piece[1:]  # the space rides along with the word or punctuation
            head = piece[0]
        if head.isdigit():
            total += 1.0
        elif head.isspace():
            total += 1.0 + (len(piece) - 1) * _PER_EXTRA_SPACE
        elif head == "_" or not (head.isalpha()):
            total += _punct_cost(piece)
        else:
            total += _word_cost(piece)
    return total


def estimate_tokens(text: str) -> int:
    """Estimated ``cl100k_base`` tokens in ``text``, erring high; 0 for empty text.

    Text is NFC-normalised first so a decomposed accent doesn't count twice.
    """
    if not text:
        return 0
    if text.isascii():
        return math.ceil(_raw_cost_ascii(text) * SAFETY_FACTOR)
    return math.ceil(_raw_cost(unicodedata.normalize("NFC", text)) * SAFETY_FACTOR)


def message_tokens(message: Message) -> int:
    """Tokens one message costs in a chat request: its content plus the per-message overhead."""
    return estimate_tokens(message.content) + MESSAGE_OVERHEAD_TOKENS


def messages_tokens(messages: Iterable[Message]) -> int:
    return sum(message_tokens(m) for m in messages)


def context_tokens(context: ChatContext) -> int:
    """Estimated prompt tokens of a whole request: system prompt, messages, reply priming."""
    total = messages_tokens(context.messages) + REPLY_PRIMING_TOKENS
    if context.system:
        total += estimate_tokens(context.system) + MESSAGE_OVERHEAD_TOKENS
    return total


def truncate_to_tokens(text: str, limit: int, *, marker: str = " …") -> str:
    """``text`` cut at a word boundary so that it (with ``marker``) fits in ``limit`` tokens."""
    if estimate_tokens(text) <= limit:
        return text
    words = text.split()
    low, high = 0, len(words)
    # Binary search on the number of words kept: the estimate grows with the prefix.
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_tokens(" ".join(words[:middle]) + marker) <= limit:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low]) + marker if low else ""
