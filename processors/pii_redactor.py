"""The ``pii_redactor`` processor: personal data leaves as placeholders and comes back restored.

Before a turn goes to a backend that redaction applies to (every backend but
``ollama`` and ``echo`` by default), each e-mail address, phone number, payment
card, IBAN, IP address and API-key-shaped secret in what is sent is replaced by
a placeholder such as ``<EMAIL_1>``, the same one for the same value for the
whole conversation. The reply is restored before the user sees it, also when a
placeholder is split across streamed chunks.

What stays local: the stored user message keeps what the user typed, and the
placeholder → original mapping lives in this plugin's own key-value namespace
(``map:<conversation id>``) and in the plugin-local metadata of the messages
(``message.local("pii_redactor")``). Whatever leaves the machine (replication to
Redis, log lines) passes this plugin's ``BEFORE_SHARE`` hook, which puts the
placeholders back in, so personal data that went to the model redacted never leaves
unredacted. Messages stored by chatcore 0.1 kept the mapping under a top-level
``pii`` key; the plugin's migration set moves it when it first opens a database.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatcore.plugin import (
    LOCAL_METADATA,
    BaseMessageProcessor,
    HookType,
    MessageStatus,
    MigrationSet,
    PluginMetadata,
    PluginResult,
    SharedRecord,
    connect_database,
    hook,
)

from ._streaming import StreamStates

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from pathlib import Path

    from sqlite_utils import Database

    from chatcore.plugin import ChatContext, Chunk, Message

__all__ = [
    "DEFAULT_ENTROPY_THRESHOLD",
    "DEFAULT_SKIP_BACKENDS",
    "KINDS",
    "MIGRATIONS",
    "PLUGIN_NAME",
    "Found",
    "PIIRedactor",
    "PIISettings",
    "PlaceholderMap",
    "PlaceholderRestorer",
    "find_pii",
    "iban_valid",
    "luhn_valid",
    "redact_with",
    "restore",
    "shannon_entropy",
]

Kind = Literal["email", "phone", "card", "iban", "ip", "secret"]
KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban", "ip", "secret")
DEFAULT_SKIP_BACKENDS = ("ollama", "echo")
DEFAULT_ENTROPY_THRESHOLD = 4.0
"""Bits per character; random base62 tokens of 32+ characters measure about 4.5-5."""
PLUGIN_NAME = "pii_redactor"
"""The key of this plugin's data in a message's plugin-local metadata."""
LEGACY_KEY = "pii"
"""Where chatcore 0.1 kept the mapping: a top-level key of the message's metadata."""
MAPS_CACHED = 256
"""Conversations whose placeholder maps stay in memory (the rest are reread from kv)."""
FINDINGS_CACHED = 2048
"""Message texts whose detected personal data is remembered: every turn redacts the
whole history again, and detection costs far more than a lookup."""

_LABEL = {
    "email": "EMAIL",
    "phone": "PHONE",
    "card": "CARD",
    "iban": "IBAN",
    "ip": "IP",
    "secret": "SECRET",
}
PLACEHOLDER_RE = re.compile(r"<(?:EMAIL|PHONE|CARD|IBAN|IP|SECRET)_[1-9][0-9]*>")

# -- detectors --------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?![A-Za-z0-9-])"
)
_EMAIL_LOCAL_MAX = 64
_EMAIL_DOMAIN_MAX = 255
# Provider prefixes of API keys and tokens; each with the shape the provider issues.
_KEY_RE = re.compile(
    r"(?<![\w-])(?:"
    r"sk-ant-[A-Za-z0-9_\-]{16,}"
    r"|sk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"
    r")(?![\w-])"
)
_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-](?<![\w-][A-Za-z0-9_\-])[A-Za-z0-9_\-]{31,}(?![\w-])")
_KEY_HINTS = ("sk-", "_", "xox", "AKIA", "ASIA", "AIza", "glpat-")
_CARD_RE = re.compile(r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?!\d)")
# Groups of four as IBANs are printed (or none); letters upper case.
_IBAN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
# Where an IBAN can start. Unlike _IBAN_RE (which opens with a lookbehind), this starts
# with a character class, so the regex engine skips to the capitals instead of trying
# every position; heads never overlap, so finditer sees them all.
_IBAN_HEAD_RE = re.compile(r"[A-Z][A-Z]\d\d")
_IPV4_RE = re.compile(r"\d(?<![\d.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\d|\.\d)")
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:])"
)
# Phone-like shapes only, so years, dates and plain ids don't match: international
# (+CC ...), North American (555) 123-4567, or national with a trunk 0 and a separator.
_PHONE_RE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,5}){1,6}"
    r"|(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"|\(0\d{1,4}\)[ /.-]?\d{3,8}(?:[ .-]\d{2,5}){0,2}"
    r"|0\d{1,4}[ /.-]\d{3,8}(?:[ .-]\d{2,5}){0,2}"
    r")(?![\w])"
)


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of a digit string (payment cards)."""
    if not number.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: 15 to 34 characters, country letters, and the rearranged number mod 97 is 1."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


@functools.lru_cache(maxsize=4096)
def _looks_random(token: str, threshold: float) -> bool:
    upper = sum(ch.isupper() for ch in token)
    lower = sum(ch.islower() for ch in token)
    digits = sum(ch.isdigit() for ch in token)
    # Mixed classes keep long identifiers, hex digests and UUIDs out.
    return upper >= 2 and lower >= 2 and digits >= 2 and shannon_entropy(token) >= threshold


@functools.lru_cache(maxsize=4096)
def _valid_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _valid_ipv6(text: str) -> bool:
    if not any(ch not in ":." for ch in text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Found:
    """One piece of personal data in a text."""

    start: int
    end: int
    kind: Kind
    value: str


def _emails(text: str) -> Iterator[Found]:
    # Searched only around each "@": scanning every word of a long text for a local
    # part that then meets no "@" costs most of the time otherwise.
    at = text.find("@")
    resume = 0
    while at != -1:
        lo = max(resume, at - _EMAIL_LOCAL_MAX)
        m = _EMAIL_RE.search(text, lo, min(len(text), at + _EMAIL_DOMAIN_MAX + 1))
        while m is not None and m.end() <= at:
            m = _EMAIL_RE.search(text, m.end(), min(len(text), at + _EMAIL_DOMAIN_MAX + 1))
        if m is not None and m.start() < at:
            yield Found(m.start(), m.end(), "email", m.group())
            resume = m.end()
        at = text.find("@", max(at + 1, resume))


_KEY_MIN_CHARS = 15
"""The shortest text _KEY_RE matches (``xoxb-`` and ten characters)."""
_TOKEN_MIN_CHARS = 32


def _word_spans(text: str, words: Iterable[str]) -> list[tuple[int, int]]:
    """Where each of ``words`` (whitespace-free) stands in ``text`` as a whole word, in order."""
    spans = []
    end_of_text = len(text)
    for word in words:
        size = len(word)
        at = text.find(word)
        while at != -1:
            end = at + size
            if (at == 0 or text[at - 1].isspace()) and (end == end_of_text or text[end].isspace()):
                spans.append((at, end))
            at = text.find(word, at + 1)
    spans.sort()
    return spans


def _in_words(
    pattern: re.Pattern[str], text: str, spans: Sequence[tuple[int, int]]
) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` for a pattern whose matches never contain whitespace.

    Only the given whole words are searched (the caller picks every word a match
    could lie in). Lookbehinds still see the text before a word, and a lookahead
    at a word's end sees the end of the search, which is the same as seeing the
    whitespace after it for the negative lookaheads used here.
    """
    for start, end in spans:
        yield from pattern.finditer(text, start, end)


def _candidates(text: str, kinds: frozenset[str], entropy: float) -> Iterator[Found]:
    # Yielded in precedence order: where two overlap, the earlier detector wins. Each
    # detector is skipped when the text lacks what it needs (an "@", enough digits),
    # and the detectors whose matches never contain whitespace (API keys, tokens,
    # IP addresses) search only the words that could hold one: a regex pass over a
    # long message costs far more than these counts.
    digits = sum(map(text.count, "0123456789"))
    words: set[str] | None = None
    if ("secret" in kinds and any(prefix in text for prefix in _KEY_HINTS)) or (
        "ip" in kinds and (digits >= 4 or text.count(":") >= 2)
    ):
        words = set(text.split())
    if "secret" in kinds and words is not None and any(prefix in text for prefix in _KEY_HINTS):
        spans = _word_spans(text, (w for w in words if len(w) >= _KEY_MIN_CHARS))
        for m in _in_words(_KEY_RE, text, spans):
            yield Found(m.start(), m.end(), "secret", m.group())
    if "email" in kinds and "@" in text:
        yield from _emails(text)
    if "iban" in kinds and digits >= 2:
        resume = 0
        for head in _IBAN_HEAD_RE.finditer(text):
            if head.start() < resume:
                continue
            iban = _IBAN_RE.match(text, head.start())
            if iban is not None:
                resume = iban.end()
                if iban_valid(iban.group()):
                    yield Found(iban.start(), iban.end(), "iban", iban.group())
    if "card" in kinds and digits >= 13:
        for m in _CARD_RE.finditer(text):
            number = m.group().replace(" ", "").replace("-", "")
            if 13 <= len(number) <= 19 and luhn_valid(number):
                yield Found(m.start(), m.end(), "card", m.group())
    if "ip" in kinds and words is not None:
        if text.count(":") >= 2:
            spans = _word_spans(text, (w for w in words if w.count(":") >= 2))
            for m in _in_words(_IPV6_RE, text, spans):
                if _valid_ipv6(m.group()):
                    yield Found(m.start(), m.end(), "ip", m.group())
        if digits >= 4 and "." in text:
            spans = _word_spans(text, (w for w in words if w.count(".") >= 3))
            for m in _in_words(_IPV4_RE, text, spans):
                if _valid_ipv4(m.group()):
                    yield Found(m.start(), m.end(), "ip", m.group())
    if "phone" in kinds and digits >= 7:
        for m in _PHONE_RE.finditer(text):
            if 7 <= sum(ch.isdigit() for ch in m.group()) <= 15:
                yield Found(m.start(), m.end(), "phone", m.group())
    if "secret" in kinds and digits >= 2:
        long_words = [w for w in (words or text.split()) if len(w) >= _TOKEN_MIN_CHARS]
        if long_words:
            for m in _in_words(_TOKEN_RE, text, _word_spans(text, long_words)):
                if _looks_random(m.group(), entropy):
                    yield Found(m.start(), m.end(), "secret", m.group())


def find_pii(
    text: str,
    *,
    kinds: frozenset[str] | None = None,
    entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD,
) -> list[Found]:
    """The personal data in ``text``, in order, without overlaps."""
    if not text:
        return []
    accepted: list[Found] = []
    for found in _candidates(text, kinds or frozenset(KINDS), entropy_threshold):
        if all(found.end <= a.start or found.start >= a.end for a in accepted):
            accepted.append(found)
    accepted.sort(key=lambda f: f.start)
    return accepted


def redact_with(text: str, mapping: Mapping[str, str]) -> str:
    """Replace every original in ``mapping`` ({placeholder: original}) by its placeholder.

    Pure text replacement, longest original first, for turning stored messages
    into their redacted form (the ``BEFORE_SHARE`` hook does this with the notes of
    the messages a shared text comes from).
    """
    if not mapping or not text:
        return text
    by_original = {original: placeholder for placeholder, original in mapping.items() if original}
    pattern = re.compile("|".join(re.escape(o) for o in sorted(by_original, key=len, reverse=True)))
    return pattern.sub(lambda m: by_original[m.group()], text)


def restore(text: str, mapping: Mapping[str, str], used: set[str] | None = None) -> str:
    """Replace every known placeholder in ``text`` by its original; unknown ones stay.

    ``used`` (when given) collects the placeholders that were replaced.
    """
    if not mapping or "<" not in text:
        return text

    def back(m: re.Match[str]) -> str:
        original = mapping.get(m.group())
        if original is None:
            return m.group()
        if used is not None:
            used.add(m.group())
        return original

    return PLACEHOLDER_RE.sub(back, text)


@dataclass(slots=True)
class PlaceholderMap:
    """One conversation's placeholders, both ways; numbering continues per kind."""

    placeholders: dict[str, str] = field(default_factory=dict)
    """placeholder → original"""
    _by_value: dict[str, str] = field(default_factory=dict)
    _counts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_json(cls, data: Any) -> PlaceholderMap:
        mapping = cls()
        if isinstance(data, dict):
            for placeholder, original in data.items():
                if isinstance(original, str) and PLACEHOLDER_RE.fullmatch(str(placeholder)):
                    mapping._add(str(placeholder), original)
        return mapping

    def _add(self, placeholder: str, original: str) -> None:
        self.placeholders[placeholder] = original
        self._by_value[original] = placeholder
        label, _, number = placeholder[1:-1].rpartition("_")
        self._counts[label] = max(self._counts[label], int(number))

    def placeholder_for(self, kind: Kind, value: str) -> tuple[str, bool]:
        """The placeholder of ``value`` and whether it is new."""
        known = self._by_value.get(value)
        if known is not None:
            return known, False
        label = _LABEL[kind]
        placeholder = f"<{label}_{self._counts[label] + 1}>"
        self._add(placeholder, value)
        return placeholder, True

    @property
    def longest(self) -> int:
        return max(map(len, self.placeholders), default=0)


def redact(text: str, found: Sequence[Found], mapping: PlaceholderMap) -> tuple[str, bool]:
    """``text`` with each found value replaced by its placeholder; whether the map grew."""
    if not found:
        return text, False
    out: list[str] = []
    cursor = 0
    grew = False
    for item in found:
        placeholder, new = mapping.placeholder_for(item.kind, item.value)
        grew = grew or new
        out.append(text[cursor : item.start])
        out.append(placeholder)
        cursor = item.end
    out.append(text[cursor:])
    return "".join(out), grew


class PlaceholderRestorer:
    """Restores placeholders in a streamed reply, also when one is cut across chunks.

    A trailing ``<`` that could still become a known placeholder is held back
    until the next chunk decides it (or the last one flushes it).
    """

    __slots__ = ("_held", "used")

    def __init__(self) -> None:
        self._held = ""
        self.used: set[str] = set()

    @property
    def held(self) -> str:
        return self._held

    def feed(self, text: str, mapping: Mapping[str, str], *, done: bool = False) -> str:
        """Take the next piece; return it restored, minus a possible placeholder start."""
        text = self._held + text
        self._held = ""
        if not done:
            start = text.rfind("<")
            if start != -1:
                tail = text[start:]
                if ">" not in tail and any(p.startswith(tail) for p in mapping):
                    self._held = tail
                    text = text[:start]
        return restore(text, mapping, self.used)


class PIISettings(BaseModel):
    """The ``[plugins.config]`` table of ``pii_redactor``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    backends: list[str] | None = None
    """Backend names (``[backends.NAME]``) to redact for; when set, only these."""
    skip_backends: list[str] = Field(default_factory=lambda: list(DEFAULT_SKIP_BACKENDS))
    """Backend names not to redact for, when ``backends`` is not set (local ones)."""
    detect: list[Kind] = Field(default_factory=lambda: list(KINDS))
    """What to detect: email, phone, card, iban, ip, secret."""
    entropy_threshold: float = Field(default=DEFAULT_ENTROPY_THRESHOLD, gt=0, le=8)
    """Bits per character above which a long token counts as a secret."""

    @model_validator(mode="after")
    def _one_list(self) -> PIISettings:
        if self.backends is not None and "skip_backends" in self.model_fields_set:
            raise ValueError("set either backends (redact only for these) or skip_backends")
        return self

    def redacts_for(self, backend: str) -> bool:
        if self.backends is not None:
            return backend in self.backends
        return backend not in self.skip_backends


MIGRATIONS = MigrationSet(PLUGIN_NAME)
"""This plugin's schema changes of the engine's database (data only: it owns no table)."""


@MIGRATIONS
def m001_local_notes(db: Database) -> None:
    """0.1's top-level ``pii`` notes move under the plugin-local key, in messages and outbox."""
    local = f"$.{LOCAL_METADATA}.{PLUGIN_NAME}"
    db.conn.execute(
        f"UPDATE messages SET metadata = json_set(json_remove(metadata, '$.{LEGACY_KEY}'), "
        f"'{local}', json_extract(metadata, '$.{LEGACY_KEY}')) "
        f"WHERE json_type(metadata, '$.{LEGACY_KEY}') = 'object'"
    )
    if db["outbox"].exists():
        legacy = f"$.data.metadata.{LEGACY_KEY}"
        db.conn.execute(
            f"UPDATE outbox SET change = json_set(json_remove(change, '{legacy}'), "
            f"'$.data.metadata.{LOCAL_METADATA}.{PLUGIN_NAME}', json_extract(change, '{legacy}')) "
            f"WHERE json_type(change, '{legacy}') = 'object'"
        )


def _migrate(path: Path) -> None:
    conn = connect_database(path)
    try:
        MIGRATIONS.apply(conn)
    finally:
        conn.close()


@dataclass(slots=True)
class _TurnState:
    """The reply being streamed for a redacted turn."""

    restorer: PlaceholderRestorer = field(default_factory=PlaceholderRestorer)


class PIIRedactor(BaseMessageProcessor):
    """Sends placeholders instead of personal data to cloud backends; restores them in replies."""

    metadata: ClassVar[PluginMetadata] = PluginMetadata(
        name="pii_redactor",
        version="1.0.0",
        description="Reversible redaction of e-mails, phones, cards, IBANs, IPs and secrets "
        "for cloud backends",
        tags=("privacy", "redaction"),
        # The store: its migration set moves the notes chatcore 0.1 wrote.
        permissions=("store",),
    )
    settings_model: ClassVar[type[BaseModel]] = PIISettings
    settings: PIISettings

    def __init__(self) -> None:
        super().__init__()
        self.settings = PIISettings()
        self._maps: OrderedDict[str, PlaceholderMap] = OrderedDict()
        self._redacting: set[str] = set()
        """Conversations whose current turn went out redacted."""
        self._streams: StreamStates[PlaceholderRestorer] = StreamStates(PlaceholderRestorer)
        self._kinds = frozenset(KINDS)
        self._findings: OrderedDict[str, tuple[Found, ...]] = OrderedDict()
        """Detection results by text (for the current settings), least recently used first."""

    async def _do_initialize(self) -> None:
        self._kinds = frozenset(self.settings.detect)
        self._findings.clear()
        if self.host is not None and self.host.database_path is not None:
            await trio.to_thread.run_sync(_migrate, self.host.database_path)

    # -- the mapping --

    def mapping(self, conversation_id: str) -> PlaceholderMap:
        """The conversation's placeholders (from memory, else from kv)."""
        mapping = self._maps.get(conversation_id)
        if mapping is None:
            stored = self.host.kv.get(f"map:{conversation_id}") if self.host else None
            mapping = PlaceholderMap.from_json(stored)
            self._maps[conversation_id] = mapping
            while len(self._maps) > MAPS_CACHED:
                self._maps.popitem(last=False)
        self._maps.move_to_end(conversation_id)
        return mapping

    def _save(self, conversation_id: str, mapping: PlaceholderMap) -> None:
        # Local only: plugin kv is never replicated.
        if self.host is not None:
            self.host.kv.set(f"map:{conversation_id}", dict(mapping.placeholders))

    def _find(self, text: str) -> tuple[Found, ...]:
        found = self._findings.get(text)
        if found is not None:
            self._findings.move_to_end(text)
            return found
        found = tuple(
            find_pii(text, kinds=self._kinds, entropy_threshold=self.settings.entropy_threshold)
        )
        self._findings[text] = found
        if len(self._findings) > FINDINGS_CACHED:
            self._findings.popitem(last=False)
        return found

    # -- hooks --

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        """Number the personal data of the user's message; note it locally, text unchanged.

        The stored message keeps what the user typed; its local note tells the
        ``BEFORE_SHARE`` hook what to replace before it leaves the machine.
        """
        if not self.settings.redacts_for(context.backend):
            return PluginResult.ok(message)
        found = self._find(message.content)
        if not found:
            return PluginResult.ok(message)
        mapping = self.mapping(context.conversation_id)
        _, grew = redact(message.content, found, mapping)
        if grew:
            self._save(context.conversation_id, mapping)
        noted = {mapping.placeholder_for(f.kind, f.value)[0]: f.value for f in found}
        return PluginResult.ok(message.with_local(PLUGIN_NAME, noted))

    @hook(HookType.BEFORE_MODEL_LOAD)
    async def redact_context(
        self, payload: ChatContext, context: ChatContext
    ) -> PluginResult[ChatContext] | None:
        """Replace personal data by placeholders in everything the backend will see."""
        conversation_id = payload.conversation_id
        self._redacting.discard(conversation_id)
        self._streams.pop(conversation_id)
        if not self.settings.redacts_for(payload.backend):
            return None
        self._redacting.add(conversation_id)
        mapping = self.mapping(conversation_id)
        grew = False
        messages = []
        for message in payload.messages:
            text, new = redact(message.content, self._find(message.content), mapping)
            grew = grew or new
            messages.append(message if text == message.content else message.replace(content=text))
        system = payload.system
        if system:
            system, new = redact(system, self._find(system), mapping)
            grew = grew or new
        if grew:
            self._save(conversation_id, mapping)
        redacted = payload.replace(messages=tuple(messages), system=system)
        # What the placeholders stand for travels locally with the context (the response
        # cache keys on it: the same placeholder text means another thing elsewhere).
        kept = dict(payload.metadata.get(LOCAL_METADATA) or {})
        kept[PLUGIN_NAME] = dict(mapping.placeholders)
        return PluginResult.ok(redacted.with_metadata(**{LOCAL_METADATA: kept}))

    async def process_chunk(self, chunk: Chunk, context: ChatContext) -> PluginResult[Chunk] | None:
        """Restore placeholders in a streamed piece, holding back one cut at the end."""
        conversation_id = context.conversation_id
        if conversation_id not in self._redacting:
            return None
        restorer = self._streams.for_chunk(conversation_id, chunk)
        mapping = self.mapping(conversation_id).placeholders
        text = restorer.feed(chunk.text, mapping, done=chunk.done)
        if text == chunk.text:
            return None
        return PluginResult.ok(chunk.replace(text=text))

    async def process_reply(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        """Restore the whole reply (safety net) and note which placeholders it used."""
        conversation_id = context.conversation_id
        restorer = self._streams.pop(conversation_id)
        if conversation_id not in self._redacting:
            return PluginResult.ok(message)
        self._redacting.discard(conversation_id)
        mapping = self.mapping(conversation_id).placeholders
        used = set(restorer.used) if restorer is not None else set()
        content = message.content
        if restorer is not None and restorer.held and message.status is MessageStatus.COMPLETE:
            # The stream ended without its last chunk: keep the held end of a whole reply.
            content += restorer.feed("", mapping, done=True)
            used |= restorer.used
        content = restore(content, mapping, used)
        if not used:
            return PluginResult.ok(
                message if content == message.content else message.replace(content=content)
            )
        noted = {p: mapping[p] for p in sorted(used) if p in mapping}
        return PluginResult.ok(message.replace(content=content).with_local(PLUGIN_NAME, noted))

    @hook(HookType.BEFORE_SHARE)
    async def share(self, record: SharedRecord, context: ChatContext) -> SharedRecord:
        """Texts leaving the machine carry placeholders where the user typed personal data."""
        mapping: dict[str, str] = {}
        for noted in record.local_of(PLUGIN_NAME):
            if isinstance(noted, Mapping):
                mapping.update({str(p): str(o) for p, o in noted.items() if o})
        if not mapping:
            return record
        return record.with_texts(
            **{name: redact_with(text, mapping) for name, text in record.texts.items()}
        )
