"""The content filter's rules, its settings, and streamed replies cut anywhere."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore import ChatContext, Chunk, ConfigError, Message, MessageStatus
from chatcore.config import validate_settings
from chatcore.plugin import PluginConfig
from processors.content_filter import (
    ContentFilter,
    ContentFilterSettings,
    Rules,
    StreamScanner,
)

CONTEXT = ChatContext(conversation_id="c1", backend="openai")


def rules(**config: Any) -> Rules:
    return Rules(ContentFilterSettings.model_validate(config))


async def plugin(**config: Any) -> ContentFilter:
    instance = ContentFilter()
    await instance.initialize(PluginConfig(name="content_filter", config=config))
    return instance


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "key", "problem"),
    [
        (
            {"patterns": [{"regex": "ok", "action": "mask"}, {"regex": "(", "action": "flag"}]},
            r"plugins\[3\]\.config\.patterns\[1\]\.regex",
            "does not compile",
        ),
        (
            {"patterns": [{"regex": "a*", "action": "mask"}]},
            r"plugins\[3\]\.config\.patterns\[0\]\.regex",
            "matches empty text",
        ),
        (
            {"patterns": [{"regex": "a", "action": "delete"}]},
            r"plugins\[3\]\.config\.patterns\[0\]\.action",
            "",
        ),
        ({"blocked": ["fine", "  "]}, r"plugins\[3\]\.config\.blocked", "entry 1 is blank"),
        ({"refusal": ""}, r"plugins\[3\]\.config\.refusal", ""),
        ({"check_reply": True}, r"plugins\[3\]\.config\.check_reply", ""),
        ({"max_match_chars": 0}, r"plugins\[3\]\.config\.max_match_chars", ""),
    ],
)
def test_bad_settings_are_config_errors_naming_the_key(
    config: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        validate_settings(
            ContentFilterSettings, config, path=Path("chatcore.toml"), key="plugins[3].config"
        )
    assert problem in str(info.value)
    assert "chatcore.toml" in str(info.value)


def test_defaults() -> None:
    defaults = ContentFilterSettings()
    assert defaults.refusal == "I can't help with that."
    assert (defaults.check_replies, defaults.max_match_chars) == (False, 200)


# -- rules on whole texts --------------------------------------------------------------------


def test_words_match_whole_words_in_any_case() -> None:
    r = rules(masked=["ass", "c++", "bad word"])
    assert (
        r.apply("Classic ASS, assess; c++ and C++11").text == "Classic ***, assess; *** and C++11"
    )
    assert r.apply("a BAD   word, a bad\nword, a badword").text == "a ***, a ***, a badword"


def test_the_longest_entry_wins_and_overlapping_masks_merge() -> None:
    r = rules(masked=["bad", "bad word"], patterns=[{"regex": r"word \d+", "action": "mask"}])
    verdict = r.apply("the bad word 42 here")
    assert verdict.text == "the *** here"
    assert dict(verdict.masked) == {"masked[1]": 1, "patterns[0]": 1}


def test_verdict_names_rules_and_counts_never_the_text() -> None:
    r = rules(
        blocked=["nuke"],
        masked=["heck"],
        patterns=[
            {"regex": r"\b\d{3}-\d{2}-\d{4}\b", "action": "flag"},
            {"regex": r"(?i)password: \S+", "action": "mask"},
        ],
    )
    verdict = r.apply("heck, PASSWORD: swordfish and 123-45-6789, heck")
    assert verdict.text == "***, *** and 123-45-6789, ***"
    assert verdict.metadata() == {
        "masked": {"masked[0]": 2, "patterns[1]": 1},
        "flagged": ["patterns[0]"],
    }
    assert r.apply("please NUKE it").metadata() == {"blocked": ["blocked[0]"]}


async def test_process_message_blocks_masks_and_flags() -> None:
    p = await plugin(
        blocked=["forbidden"],
        masked=["darn"],
        patterns=[{"regex": r"ticket-\d+", "action": "flag"}],
        refusal="No.",
    )
    blocked = await p.process_message(Message.user("a Forbidden thing"), CONTEXT)
    assert blocked.is_short_circuit and blocked.reply is not None
    assert blocked.reply.content == "No."
    assert blocked.data is not None and blocked.data.content == "a Forbidden thing"

    masked = (await p.process_message(Message.user("darn ticket-12"), CONTEXT)).unwrap()
    assert masked.content == "*** ticket-12"
    assert dict(masked.metadata["content_filter"]) == {
        "masked": {"masked[0]": 1},
        "flagged": ["patterns[0]"],
    }
    clean = Message.user("all fine")
    assert (await p.process_message(clean, CONTEXT)).unwrap() is clean


# -- streamed replies ------------------------------------------------------------------------

STREAM_RULES = {
    "masked": ["hunter2", "top secret", "x"],
    "patterns": [
        {"regex": r"\d{3}-\d{4}", "action": "mask"},
        {"regex": r"(?<=key=)[a-z]{2,6}", "action": "mask"},
        {"regex": r"zz+", "action": "flag"},
    ],
    "max_match_chars": 12,
}
WORDS = ["hunter2", "hunter", "top", "secret", "x", "xx", "555-1234", "55-12", "key=", "abc", "zzz"]
SEPARATORS = [" ", "  ", "\n", "", ",", "-", "="]


@st.composite
def text_and_cuts(draw: st.DrawFn) -> tuple[str, list[int]]:
    parts = draw(st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS))))
    text = "".join(w + s for w, s in parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    return text, cuts


def pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(text_and_cuts())
def test_a_stream_cut_anywhere_is_masked_exactly_like_the_whole_text(
    case: tuple[str, list[int]],
) -> None:
    text, cuts = case
    r = rules(**STREAM_RULES)
    scanner = StreamScanner(r)
    parts = pieces(text, cuts)
    shown = [scanner.feed(p, done=i == len(parts) - 1) for i, p in enumerate(parts)]
    whole = r.apply(text)
    assert "".join(shown) == whole.text
    assert scanner.verdict.masked == whole.masked
    assert sorted(scanner.verdict.flagged) == sorted(whole.flagged)
    assert scanner.pending == ""


@settings(max_examples=200, deadline=None)
@given(text_and_cuts())
def test_a_blocked_word_never_shows_however_the_stream_is_cut(
    case: tuple[str, list[int]],
) -> None:
    text, cuts = case
    text = text + " forbidden " + text
    r = rules(blocked=["forbidden"], max_match_chars=12)
    scanner = StreamScanner(r)
    parts = pieces(text, cuts)
    shown = "".join(scanner.feed(p, done=i == len(parts) - 1) for i, p in enumerate(parts))
    assert scanner.blocked
    assert scanner.verdict.blocked == ["blocked[0]"]
    assert "forbidden" not in shown
    # What showed is a prefix of the reply from before the blocked word.
    assert text.startswith(shown) and len(shown) <= text.index("forbidden")


def test_text_is_held_only_as_long_as_a_match_may_need() -> None:
    # "hunter2" is 7 characters; one more decides whether the word ends there.
    scanner = StreamScanner(rules(masked=["hunter2"]))
    assert scanner.feed("Hello there, my friend") == "Hello there, m"
    assert scanner.pending == "y friend"
    assert scanner.feed(", hunter") == "y friend"
    assert scanner.feed("2!", done=True) == ", ***!"


def chunk(text: str, index: int, *, done: bool = False) -> Chunk:
    return Chunk(text=text, index=index, done=done)


async def test_replies_are_only_checked_when_check_replies_is_on() -> None:
    off = await plugin(masked=["darn"])
    assert await off.process_chunk(chunk("darn", 0, done=True), CONTEXT) is None
    reply = Message.assistant("darn")
    assert (await off.process_reply(reply, CONTEXT)).unwrap() is reply


async def test_a_new_reply_starts_with_no_held_text() -> None:
    p = await plugin(masked=["darn"], check_replies=True)
    first = await p.process_chunk(chunk("this is held", 0), CONTEXT)
    assert first is not None and first.unwrap().text == "this is"
    # The first reply never finished (its backend failed); the next starts clean.
    second = await p.process_chunk(chunk("darn it", 0, done=True), CONTEXT)
    assert second is not None and second.unwrap().text == "*** it"


async def test_a_reply_whose_stream_lacked_its_last_chunk_is_completed_when_stored() -> None:
    p = await plugin(masked=["darn"], check_replies=True)
    shown = (await p.process_chunk(chunk("well, darn", 0), CONTEXT)).unwrap().text  # type: ignore[union-attr]
    stored = (await p.process_reply(Message.assistant(shown), CONTEXT)).unwrap()
    assert stored.content == "well, ***"
    assert dict(stored.metadata["content_filter"]) == {"masked": {"masked[0]": 1}}

    # A cancelled reply is stored as what the user saw: the held tail never showed.
    shown = (await p.process_chunk(chunk("oh darn", 0), CONTEXT)).unwrap().text  # type: ignore[union-attr]
    partial = Message.assistant(shown, status=MessageStatus.PARTIAL)
    assert (await p.process_reply(partial, CONTEXT)).unwrap().content == shown


async def test_conversations_stream_independently() -> None:
    p = await plugin(masked=["darn"], check_replies=True)
    other = ChatContext(conversation_id="c2", backend="openai")
    a = await p.process_chunk(chunk("it is da", 0), CONTEXT)
    b = await p.process_chunk(chunk("so ", 0), other)
    c = await p.process_chunk(chunk("rn", 1, done=True), CONTEXT)
    d = await p.process_chunk(chunk("darn", 1, done=True), other)
    out = [x.unwrap().text if x is not None else None for x in (a, b, c, d)]
    assert out == ["it ", "", "is ***", "so ***"]
