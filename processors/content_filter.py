"""The ``content_filter`` processor: word lists and regular expressions with an action each.

``block`` answers the turn with a refusal (the backend is never called),
``mask`` replaces the match with ``***``, ``flag`` only records the rule in
metadata. It checks the user's message and, with ``check_replies``, the reply,
also while it streams: the end of the stream is held back until no rule can
match across the next chunk boundary.

Metadata names rules (``blocked[0]``, ``masked[2]``, ``patterns[1]``: the key and
index in the config) and counts, never the matched text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatcore.messages import Message, MessageStatus
from chatcore.plugin import BaseMessageProcessor, PluginMetadata
from chatcore.result import PluginResult

from ._streaming import StreamStates

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from chatcore.messages import ChatContext, Chunk

__all__ = [
    "DEFAULT_MAX_MATCH_CHARS",
    "DEFAULT_REFUSAL",
    "MASK",
    "ContentFilter",
    "ContentFilterSettings",
    "PatternRule",
    "Rules",
    "StreamScanner",
    "Verdict",
]

DEFAULT_REFUSAL = "I can't help with that."
DEFAULT_MAX_MATCH_CHARS = 200
MASK = "***"
METADATA_KEY = "content_filter"
PHRASE_GAP_MAX = 3
"""Words of a phrase match with 1 to this many whitespace characters between them."""

Action = Literal["block", "mask", "flag"]


class PatternRule(BaseModel):
    """One regular expression and what to do when it matches."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    regex: str
    """A Python regular expression (case-sensitive unless it says ``(?i)``)."""
    action: Action
    """``block``, ``mask`` or ``flag``."""

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"regular expression {value!r} does not compile: {exc}") from None
        if compiled.fullmatch("") is not None:
            raise ValueError(f"regular expression {value!r} matches empty text")
        return value


class ContentFilterSettings(BaseModel):
    """The ``[plugins.config]`` table of ``content_filter``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    blocked: list[str] = Field(default_factory=list)
    """Words and phrases (case-insensitive, whole words) that block the turn."""
    masked: list[str] = Field(default_factory=list)
    """Words and phrases (case-insensitive, whole words) replaced by ``***``."""
    patterns: list[PatternRule] = Field(default_factory=list)
    """Regular expressions, each with an action: block, mask or flag."""
    refusal: str = Field(default=DEFAULT_REFUSAL, min_length=1)
    """The reply to a blocked message."""
    check_replies: bool = False
    """Also check the backend's replies, streamed ones included."""
    max_match_chars: int = Field(default=DEFAULT_MAX_MATCH_CHARS, ge=1, le=100_000)
    """Longest text a pattern can match; a streamed reply holds back this much."""

    @field_validator("blocked", "masked")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        for index, word in enumerate(values):
            if not word.strip():
                raise ValueError(f"entry {index} is blank; give a word or a phrase")
        return values


@dataclass(frozen=True, slots=True)
class Hit:
    start: int
    end: int
    rule: str
    action: Action


@dataclass(slots=True)
class Verdict:
    """What the rules did to one text."""

    text: str
    blocked: list[str] = field(default_factory=list)
    masked: Counter[str] = field(default_factory=Counter)
    flagged: list[str] = field(default_factory=list)

    def merge(self, other: Verdict) -> None:
        self.blocked.extend(r for r in other.blocked if r not in self.blocked)
        self.masked.update(other.masked)
        self.flagged.extend(r for r in other.flagged if r not in self.flagged)

    def metadata(self) -> dict[str, Any]:
        """Rule ids and counts only: the matched text may be what the rule is there to hide."""
        out: dict[str, Any] = {}
        if self.blocked:
            out["blocked"] = list(self.blocked)
        if self.masked:
            out["masked"] = dict(self.masked)
        if self.flagged:
            out["flagged"] = list(self.flagged)
        return out


def _word_regex(words: Sequence[str]) -> tuple[re.Pattern[str] | None, dict[str, int], int]:
    """One case-insensitive whole-word regex for a word list, a lookup back to the entry,
    and the longest text it can match."""
    if not words:
        return None, {}, 0
    index: dict[str, int] = {}
    alternatives: list[tuple[int, str]] = []
    longest = 0
    for i, word in enumerate(words):
        parts = word.split()
        key = " ".join(parts).casefold()
        index.setdefault(key, i)
        gap = rf"\s{{1,{PHRASE_GAP_MAX}}}"
        alternatives.append((len(key), gap.join(re.escape(p) for p in parts)))
        longest = max(longest, sum(map(len, parts)) + PHRASE_GAP_MAX * (len(parts) - 1))
    # Longest first, so "bad word" wins over "bad" where both match.
    body = "|".join(a for _, a in sorted(alternatives, key=lambda a: -a[0]))
    # Lookarounds rather than \b: entries may start or end with punctuation ("c++").
    pattern = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)
    return pattern, index, longest


def _needles(words: Sequence[str]) -> tuple[str, ...] | None:
    """Lower-cased first words of a word list, one of which ASCII text must contain to match.

    None when an entry is not ASCII: case-insensitive matching then has Unicode
    equivalences (the long s, U+017F, matches ``s``) that a substring test would miss.
    """
    if not all(word.isascii() for word in words):
        return None
    return tuple(dict.fromkeys(word.split()[0].lower() for word in words))


class Rules:
    """The compiled rules of one configuration."""

    def __init__(self, settings: ContentFilterSettings) -> None:
        self._word_rules: list[
            tuple[re.Pattern[str], dict[str, int], str, Action, tuple[str, ...] | None]
        ] = []
        longest = 0
        for key, action in (("blocked", "block"), ("masked", "mask")):
            words = getattr(settings, key)
            regex, lookup, size = _word_regex(words)
            if regex is not None:
                rule = (regex, lookup, key, action, _needles(words))
                self._word_rules.append(rule)  # type: ignore[arg-type]
                longest = max(longest, size)
        self._patterns = [
            (re.compile(rule.regex), f"patterns[{i}]", rule.action)
            for i, rule in enumerate(settings.patterns)
        ]
        if self._patterns:
            longest = max(longest, settings.max_match_chars)
        self.longest_match = longest
        """No match is longer than this (for patterns: by ``max_match_chars``)."""

    @property
    def empty(self) -> bool:
        return not self._word_rules and not self._patterns

    def scan(self, text: str, pos: int = 0) -> list[Hit]:
        """Every non-empty match at or after ``pos``; text before ``pos`` is context only."""
        hits: list[Hit] = []
        # A substring test on the lower-cased text is far cheaper than a regex pass
        # (which tries every position): no entry's first word, no match.
        lowered = text.lower() if self._word_rules and text.isascii() else None
        for regex, lookup, key, action, needles in self._word_rules:
            if (
                lowered is not None
                and needles is not None
                and not any(needle in lowered for needle in needles)
            ):
                continue
            for m in regex.finditer(text, pos):
                entry = lookup.get(" ".join(m.group().split()).casefold(), 0)
                hits.append(Hit(m.start(), m.end(), f"{key}[{entry}]", action))
        for regex, rule, action in self._patterns:
            for m in regex.finditer(text, pos):
                if m.end() > m.start():
                    hits.append(Hit(m.start(), m.end(), rule, action))
        return hits

    def apply(self, text: str) -> Verdict:
        """Check a whole text: masks applied, blocking and flagging rules recorded."""
        return _judge(text, 0, len(text), self.scan(text))


def _judge(text: str, start: int, end: int, hits: Iterable[Hit]) -> Verdict:
    """``text[start:end]`` with the mask hits inside it masked (overlapping hits merge)."""
    verdict = Verdict("")
    spans: list[tuple[int, int]] = []
    for hit in sorted(hits, key=lambda h: (h.start, h.end)):
        if hit.action == "block":
            if hit.rule not in verdict.blocked:
                verdict.blocked.append(hit.rule)
        elif hit.action == "flag":
            if hit.rule not in verdict.flagged:
                verdict.flagged.append(hit.rule)
        else:
            verdict.masked[hit.rule] += 1
            if spans and hit.start < spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], hit.end))
            else:
                spans.append((hit.start, hit.end))
    out: list[str] = []
    cursor = start
    for s, e in spans:
        out.append(text[cursor:s])
        out.append(MASK)
        cursor = e
    out.append(text[cursor:end])
    verdict.text = "".join(out)
    return verdict


class StreamScanner:
    """Applies the rules to a reply that arrives in pieces.

    Text is released only once no rule can still match it together with text
    yet to come: the last ``longest_match + 1`` characters are held (the extra
    one decides a whole-word boundary), and a match that reaches into the held
    part holds back from where it starts. So masking a stream gives the same
    text as masking the whole reply, however it was cut.
    """

    __slots__ = ("_context", "_hold", "_pending", "_rules", "blocked", "released", "verdict")

    def __init__(self, rules: Rules) -> None:
        self._rules = rules
        self._hold = rules.longest_match + 1
        self._context = ""
        """The end of the released text, as received: lookbehinds and word boundaries see it."""
        self._pending = ""
        self.verdict = Verdict("")
        self.blocked = False
        self.released = False
        """Whether any text has gone out."""

    @property
    def pending(self) -> str:
        return self._pending

    def feed(self, text: str, *, done: bool = False) -> str:
        """Take the next piece; return what may be shown now (masked)."""
        if self.blocked:
            return ""
        buf = self._context + self._pending + text
        base = len(self._context)
        limit = len(buf) if done else len(buf) - self._hold
        if limit <= base:
            self._pending += text
            return ""
        hits = self._rules.scan(buf, base)
        # Matches starting before `limit` are final: no later text can change them.
        final = [h for h in hits if h.start < limit]
        blocking = [h for h in final if h.action == "block"]
        if blocking:
            self.blocked = True
            self._pending = ""
            for hit in blocking:
                if hit.rule not in self.verdict.blocked:
                    self.verdict.blocked.append(hit.rule)
            return ""
        cut = limit
        changed = True
        while changed:
            # Never cut through a mask: hold back from where it starts instead.
            changed = False
            for hit in final:
                if hit.action == "mask" and hit.start < cut < hit.end:
                    cut = hit.start
                    changed = True
        if cut <= base:
            self._pending += text
            return ""
        released = [h for h in final if h.start < cut]
        part = _judge(buf, base, cut, released)
        self.verdict.masked.update(part.masked)
        for rule in part.flagged:
            if rule not in self.verdict.flagged:
                self.verdict.flagged.append(rule)
        self._context = buf[max(0, cut - self._hold) : cut]
        self._pending = buf[cut:]
        if part.text:
            self.released = True
        return part.text


class ContentFilter(BaseMessageProcessor):
    """Blocks, masks or flags user messages (and optionally replies) by word lists and regexes."""

    metadata: ClassVar[PluginMetadata] = PluginMetadata(
        name="content_filter",
        version="1.0.0",
        description="Word lists and regular expressions: block with a refusal, mask, or flag",
        tags=("filter", "safety"),
    )
    settings_model: ClassVar[type[BaseModel]] = ContentFilterSettings
    settings: ContentFilterSettings

    def __init__(self) -> None:
        super().__init__()
        self.settings = ContentFilterSettings()
        self._rules = Rules(self.settings)
        self._streams: StreamStates[StreamScanner] = StreamStates(self._new_scanner)

    async def _do_initialize(self) -> None:
        self._rules = Rules(self.settings)

    def _new_scanner(self) -> StreamScanner:
        return StreamScanner(self._rules)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        """Block the turn, mask, or flag the user's message; the metadata names the rules."""
        if self._rules.empty:
            return PluginResult.ok(message)
        verdict = self._rules.apply(message.content)
        found = verdict.metadata()
        if not found:
            return PluginResult.ok(message)
        if verdict.blocked:
            # The user's words are kept as typed (they are the user's own data);
            # only the refusal answers, and the backend never sees them.
            noted = message.with_metadata(**{METADATA_KEY: found})
            refusal = Message.assistant(
                self.settings.refusal, metadata={METADATA_KEY: {"blocked": verdict.blocked}}
            )
            return PluginResult.short_circuit(refusal, data=noted)
        return PluginResult.ok(
            message.replace(content=verdict.text).with_metadata(**{METADATA_KEY: found})
        )

    async def process_chunk(self, chunk: Chunk, context: ChatContext) -> PluginResult[Chunk] | None:
        """Mask a streamed reply, holding back text a rule might still match across chunks.

        After a blocking match the rest of the stream is suppressed and the refusal
        is shown in its place.
        """
        if not self.settings.check_replies or self._rules.empty:
            return None
        scanner = self._streams.for_chunk(context.conversation_id, chunk)
        if scanner.blocked:
            return PluginResult.ok(chunk.replace(text="")) if chunk.text else None
        shown_before = scanner.released
        text = scanner.feed(chunk.text, done=chunk.done)
        if scanner.blocked:
            text = ("\n\n" if shown_before else "") + self.settings.refusal
        if text == chunk.text:
            return None
        return PluginResult.ok(chunk.replace(text=text))

    async def process_reply(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        """Check the whole reply as stored: a blocked reply is replaced by the refusal.

        The reply's content is what the stream showed; if the stream ended without
        its last chunk, the text held back is added when the reply is complete.
        """
        scanner = self._streams.pop(context.conversation_id)
        if not self.settings.check_replies or self._rules.empty:
            return PluginResult.ok(message)
        content = message.content
        verdict = Verdict("")
        if scanner is not None:
            if scanner.pending and message.status is MessageStatus.COMPLETE:
                content += scanner.feed("", done=True)
            verdict.merge(scanner.verdict)
        whole = self._rules.apply(content)
        verdict.merge(whole)
        found = verdict.metadata()
        if not found:
            if content == message.content:
                return PluginResult.ok(message)
            return PluginResult.ok(message.replace(content=content))
        text = self.settings.refusal if verdict.blocked else whole.text
        return PluginResult.ok(message.replace(content=text).with_metadata(**{METADATA_KEY: found}))
