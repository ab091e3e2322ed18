"""The PII redactor's detectors, checksums, placeholders and restoration, cut anywhere."""

from __future__ import annotations

import string
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore import ChatContext, Chunk, ConfigError, Message
from chatcore.config import validate_settings
from chatcore.plugin import PluginConfig
from processors import redact_with
from processors.pii_redactor import (
    PIIRedactor,
    PIISettings,
    PlaceholderMap,
    PlaceholderRestorer,
    find_pii,
    iban_valid,
    luhn_valid,
    redact,
    restore,
    shannon_entropy,
)

CONTEXT = ChatContext(conversation_id="c1", backend="openai")


def kinds_and_values(text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.value) for f in find_pii(text)]


# -- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to alice@example.com.", [("email", "alice@example.com")]),
        ("a.b+tag@mail.example.co.uk", [("email", "a.b+tag@mail.example.co.uk")]),
        ("card 4111 1111 1111 1111 ok", [("card", "4111 1111 1111 1111")]),
        ("card 4111-1111-1111-1111", [("card", "4111-1111-1111-1111")]),
        ("amex 378282246310005", [("card", "378282246310005")]),
        ("iban DE89 3704 0044 0532 0130 00", [("iban", "DE89 3704 0044 0532 0130 00")]),
        ("iban GB82WEST12345698765432", [("iban", "GB82WEST12345698765432")]),
        ("host 192.168.1.20:8080", [("ip", "192.168.1.20")]),
        ("v6 2001:db8::ff00:42:8329 and ::1", [("ip", "2001:db8::ff00:42:8329"), ("ip", "::1")]),
        ("call +49 30 1234567", [("phone", "+49 30 1234567")]),
        ("call +1 (555) 123-4567", [("phone", "+1 (555) 123-4567")]),
        (
            "call (555) 123-4567 or 555.123.4567",
            [("phone", "(555) 123-4567"), ("phone", "555.123.4567")],
        ),
        ("ruf 030 1234567 an", [("phone", "030 1234567")]),
        ("key sk-proj-Abc123def456GHI789jkl", [("secret", "sk-proj-Abc123def456GHI789jkl")]),
        (
            "key sk-ant-api03-abcdefghijklmnop1234",
            [("secret", "sk-ant-api03-abcdefghijklmnop1234")],
        ),
        (
            "gh ghp_abcdefghijklmnopqrstuvwxyz0123",
            [("secret", "ghp_abcdefghijklmnopqrstuvwxyz0123")],
        ),
        (
            "gh gho_abcdefghijklmnopqrstuvwxyz0123",
            [("secret", "gho_abcdefghijklmnopqrstuvwxyz0123")],
        ),
        (
            "gh github_pat_11ABCDEFG0abcdefghijklmnop",
            [("secret", "github_pat_11ABCDEFG0abcdefghijklmnop")],
        ),
        ("slack xoxb-1234567890-abcdefghij", [("secret", "xoxb-1234567890-abcdefghij")]),
        ("slack xoxp-1234567890-abcdefghij", [("secret", "xoxp-1234567890-abcdefghij")]),
        ("aws AKIAIOSFODNN7EXAMPLE", [("secret", "AKIAIOSFODNN7EXAMPLE")]),
        (
            "gcp AIzaSyA-1234567890abcdefghijklmnopqrstu",
            [("secret", "AIzaSyA-1234567890abcdefghijklmnopqrstu")],
        ),
        ("gitlab glpat-abcdefghij1234567890", [("secret", "glpat-abcdefghij1234567890")]),
        (
            "token Xy7Kp2Qm9Lr4Tz8Wv3Bn6Hj1Fd5Gs0Ac",
            [("secret", "Xy7Kp2Qm9Lr4Tz8Wv3Bn6Hj1Fd5Gs0Ac")],
        ),
    ],
)
def test_detects(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds_and_values(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "in 2024 and 1999",
        "on 2024-01-15 at 12:30:45",
        "order 1234567 and id 12345678",
        "invoice 2024-000123",
        "card 4111 1111 1111 1112",  # fails Luhn
        "ip 999.1.1.1 and 1.2.3",
        "std::vector and a::b::c",
        "sha 3f786850e387550fdab836ed7e6dc881de23001b",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "name ThisIsAVeryLongCamelCaseIdentifierName",
        "snake a_very_long_identifier_in_snake_case_style",
        "not mail: alice@localhost or @handle",
        "sk-short",
    ],
)
def test_leaves_alone(text: str) -> None:
    assert find_pii(text) == []


def test_checksums_decide() -> None:
    assert "iban" not in [f.kind for f in find_pii("iban DE88 3704 0044 0532 0130 00")]
    assert "iban" in [f.kind for f in find_pii("iban DE89 3704 0044 0532 0130 00")]


def test_overlaps_go_to_the_more_specific_detector() -> None:
    # The card's digits would also pass the phone and token checks; the card wins.
    text = "ping 4111-1111-1111-1111 and sk-ant-api03-Abcdefghij1234567890XYZ"
    assert [f.kind for f in find_pii(text)] == ["card", "secret"]


def test_only_the_configured_kinds_are_detected() -> None:
    text = "alice@example.com 4111 1111 1111 1111"
    assert [f.kind for f in find_pii(text, kinds=frozenset({"card"}))] == ["card"]


def test_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


# -- checksums, against generated numbers ----------------------------------------------------


def luhn_digit(body: str) -> str:
    """The check digit that makes ``body + digit`` pass Luhn (computed independently)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


@settings(max_examples=300, deadline=None)
@given(body=st.text(string.digits, min_size=12, max_size=18), data=st.data())
def test_luhn_accepts_valid_numbers_and_rejects_any_single_digit_error(
    body: str, data: st.DataObject
) -> None:
    number = body + luhn_digit(body)
    assert luhn_valid(number)
    position = data.draw(st.integers(0, len(number) - 1))
    wrong = data.draw(st.sampled_from([d for d in string.digits if d != number[position]]))
    assert not luhn_valid(number[:position] + wrong + number[position + 1 :])


@settings(max_examples=100, deadline=None)
@given(body=st.text(string.digits, min_size=12, max_size=18))
def test_valid_cards_are_found_in_text_grouped_or_not(body: str) -> None:
    number = body + luhn_digit(body)
    grouped = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    for shown in (number, grouped):
        assert kinds_and_values(f"pay with {shown} now") == [("card", shown)]


def make_iban(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(ch, 36)) for ch in rearranged))
    return f"{country}{98 - number % 97:02d}{bban}"


COUNTRY = st.text(string.ascii_uppercase, min_size=2, max_size=2)
BBAN = st.text(string.ascii_uppercase + string.digits, min_size=11, max_size=30)


@settings(max_examples=300, deadline=None)
@given(country=COUNTRY, bban=BBAN, data=st.data())
def test_iban_accepts_valid_numbers_and_rejects_a_changed_digit(
    country: str, bban: str, data: st.DataObject
) -> None:
    iban = make_iban(country, bban)
    assert iban_valid(iban)
    assert iban_valid(" ".join(iban[i : i + 4] for i in range(0, len(iban), 4)))
    digits = [i for i, ch in enumerate(iban) if ch.isdigit() and i >= 2]
    position = data.draw(st.sampled_from(digits))
    wrong = data.draw(st.sampled_from([d for d in string.digits if d != iban[position]]))
    assert not iban_valid(iban[:position] + wrong + iban[position + 1 :])


def test_iban_shape_checks() -> None:
    assert not iban_valid("DE89")
    assert not iban_valid("1289370400440532013000")
    assert not iban_valid("DE89370400440532013000" + "0" * 13)


# -- placeholders: redact, restore ------------------------------------------------------------

SAMPLES = [
    "alice@example.com",
    "bob.smith@mail.example.org",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "DE89 3704 0044 0532 0130 00",
    "192.168.0.1",
    "2001:db8::1",
    "+44 20 7946 0958",
    "(555) 123-4567",
    "sk-ant-api03-abcdefghijklmnop1234",
    "AKIAIOSFODNN7EXAMPLE",
]
PLAIN = st.text(string.ascii_letters + " ,.;:!?\n()", max_size=12)


@st.composite
def text_with_pii(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(PLAIN, st.sampled_from(SAMPLES)), min_size=1, max_size=5))
    return "".join(f"{plain} {value} " for plain, value in parts) + draw(PLAIN)


@settings(max_examples=300, deadline=None)
@given(text_with_pii())
def test_restore_of_redact_is_the_original_and_no_value_is_left(text: str) -> None:
    mapping = PlaceholderMap()
    redacted, _ = redact(text, find_pii(text), mapping)
    for placeholder, value in mapping.placeholders.items():
        assert value in text and placeholder in redacted
        assert value not in redacted
    assert restore(redacted, mapping.placeholders) == text
    assert redact_with(text, mapping.placeholders) == redacted


def test_the_same_value_keeps_its_placeholder_and_numbering_continues() -> None:
    mapping = PlaceholderMap()
    first, _ = redact(
        "a@example.com b@example.com", find_pii("a@example.com b@example.com"), mapping
    )
    text = "b@example.com c@example.com 4111 1111 1111 1111"
    second, grew = redact(text, find_pii(text), mapping)
    assert first == "<EMAIL_1> <EMAIL_2>"
    assert (second, grew) == ("<EMAIL_2> <EMAIL_3> <CARD_1>", True)
    reloaded = PlaceholderMap.from_json(dict(mapping.placeholders))
    assert reloaded.placeholder_for("email", "d@example.com") == ("<EMAIL_4>", True)
    assert reloaded.placeholder_for("email", "a@example.com") == ("<EMAIL_1>", False)


def test_restore_leaves_unknown_placeholders() -> None:
    used: set[str] = set()
    text = restore("<EMAIL_1> <EMAIL_9> <email_1> <IP_1>", {"<EMAIL_1>": "a@b.cd"}, used)
    assert text == "a@b.cd <EMAIL_9> <email_1> <IP_1>"
    assert used == {"<EMAIL_1>"}


MAPPING = {
    "<EMAIL_1>": "alice@example.com",
    "<IP_1>": "10.0.0.1",
    "<IP_12>": "10.0.0.12",
    "<SECRET_3>": "sk-ant-api03-abcdefghijklmnop1234",
}
REPLY_PARTS = [*MAPPING, "<", "<EMAIL_", "<IP_1", "<IP_99>", "<<", ">", "a", " ", "x<y", "IP_1>"]


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(st.sampled_from(REPLY_PARTS), max_size=12),
    data=st.data(),
)
def test_restoring_a_stream_cut_anywhere_equals_restoring_it_whole(
    parts: list[str], data: st.DataObject
) -> None:
    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    restorer = PlaceholderRestorer()
    out = [restorer.feed(p, MAPPING, done=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    used: set[str] = set()
    assert "".join(out) == restore(text, MAPPING, used)
    assert restorer.used == used
    assert restorer.held == ""


def test_a_held_start_is_released_as_soon_as_it_cannot_be_a_placeholder() -> None:
    restorer = PlaceholderRestorer()
    assert restorer.feed("a <EM", MAPPING) == "a "
    assert restorer.held == "<EM"
    assert restorer.feed("PTY", MAPPING) == "<EMPTY"
    assert restorer.feed(" 1 <", MAPPING) == " 1 "
    assert restorer.feed("3", MAPPING) == "<3"


# -- settings and the plugin's hooks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"backends": ["openai"], "skip_backends": []}, r"plugins\[0\]\.config"),
        ({"detect": ["email", "dna"]}, r"plugins\[0\]\.config\.detect\[1\]"),
        ({"entropy_threshold": 0}, r"plugins\[0\]\.config\.entropy_threshold"),
        ({"backend": ["openai"]}, r"plugins\[0\]\.config\.backend"),
    ],
)
def test_bad_settings_are_config_errors(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        validate_settings(PIISettings, config, path=Path("c.toml"), key="plugins[0].config")


def test_which_backends_are_redacted_for() -> None:
    default = PIISettings()
    assert [default.redacts_for(b) for b in ("openai", "anthropic", "ollama", "echo")] == [
        True,
        True,
        False,
        False,
    ]
    listed = PIISettings(backends=["claude"])
    assert (listed.redacts_for("claude"), listed.redacts_for("openai")) == (True, False)
    assert PIISettings(skip_backends=[]).redacts_for("ollama")


async def plugin(**config: Any) -> PIIRedactor:
    instance = PIIRedactor()
    await instance.initialize(PluginConfig(name="pii_redactor", config=config))
    return instance


async def test_hooks_change_nothing_for_a_backend_not_redacted_for() -> None:
    p = await plugin()
    local = ChatContext(
        conversation_id="c9",
        backend="ollama",
        messages=(Message.user("mail alice@example.com"),),
    )
    message = local.messages[0]
    assert (await p.process_message(message, local)).unwrap() is message
    assert await p.redact_context(local, local) is None
    assert await p.process_chunk(Chunk(text="<EMAIL_1>", index=0, done=True), local) is None
    reply = Message.assistant("<EMAIL_1>")
    assert (await p.process_reply(reply, local)).unwrap() is reply


async def test_the_whole_context_is_redacted_and_the_stored_reply_restored() -> None:
    p = await plugin()
    context = ChatContext(
        conversation_id="c1",
        backend="openai",
        system="RAG passage: contact bob@example.org",
        messages=(
            Message.assistant("earlier: 10.1.2.3"),
            Message.user("mail alice@example.com"),
        ),
    )
    noted = (await p.process_message(context.messages[-1], context)).unwrap()
    assert noted.content == "mail alice@example.com"
    assert dict(noted.local("pii_redactor")) == {"<EMAIL_1>": "alice@example.com"}
    result = await p.redact_context(context, context)
    assert result is not None
    sent = result.unwrap()
    assert [m.content for m in sent.messages] == ["earlier: <IP_1>", "mail <EMAIL_1>"]
    assert sent.system == "RAG passage: contact <EMAIL_2>"
    assert [m.id for m in sent.messages] == [m.id for m in context.messages]
    # A stream that never sent its last chunk: the held start is completed when stored.
    shown = await p.process_chunk(Chunk(text="to <EMAIL_2> and <IP_", index=0), sent)
    assert shown is not None and shown.unwrap().text == "to bob@example.org and "
    reply = Message.assistant("to bob@example.org and ")
    stored = (await p.process_reply(reply, sent)).unwrap()
    assert stored.content == "to bob@example.org and <IP_"
    assert dict(stored.local("pii_redactor")) == {"<EMAIL_2>": "bob@example.org"}
