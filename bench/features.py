"""Features benchmark: the message processors, memory assembly and RAG, printed as Markdown.

Run ``python bench/features.py``; ``--quick`` shrinks every count (a 1,000-chunk RAG
index instead of 10,000) so the run takes a few seconds. Everything is timed in
process with ``time.perf_counter_ns`` on the plugins' real methods, after a
warm-up. It reports and does not judge: a missed target prints ``MISSED`` and the
exit status stays 0. Only a broken run (a processor not doing its job, the memory
summary not used, retrieval not finding the chunk it must find) exits 1.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from _report import Report, Row, Summary, conclude, machine, ms, print_table, ratio

# Run as a script, bench/ leads sys.path, and bench/backends.py would shadow the
# `backends` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from chatcore.messages import ChatContext, Message, Role  # noqa: E402
from chatcore.plugin import PluginConfig, PluginHost, SharedRecord  # noqa: E402
from chatcore.store import Store  # noqa: E402
from features._rag_index import RagIndex, fts_query  # noqa: E402
from features.memory import KV_SUMMARY_KEY, Memory, MemoryStore  # noqa: E402
from features.rag import Embedder, RagSettings, add_files, embed_missing, retrieve  # noqa: E402
from processors.content_filter import ContentFilter  # noqa: E402
from processors.normalizer import Normalizer  # noqa: E402
from processors.pii_redactor import PIIRedactor  # noqa: E402

if TYPE_CHECKING:
    from chatcore._plugins import BasePlugin

PROCESSOR_TARGET_MS = 0.2
MEMORY_TARGET_MS = 1.0
BM25_TARGET_MS = 5.0
HYBRID_TARGET_MS = 15.0

MESSAGE_CHARS = 2_000
HISTORY_MESSAGES = 1_000
VECTOR_DIM = 384
TOP_K = 4
CLOUD_BACKEND = "openai"
"""A backend the PII redactor redacts for by default."""


@dataclass(frozen=True)
class Sizes:
    warmup: int
    iterations: int  # per processor row
    block: int
    memory_iterations: int
    chunks: int  # RAG index size
    bm25_iterations: int
    hybrid_iterations: int


FULL = Sizes(
    warmup=200,
    iterations=3_000,
    block=100,
    memory_iterations=1_000,
    chunks=10_000,
    bm25_iterations=500,
    hybrid_iterations=60,
)
QUICK = Sizes(
    warmup=20,
    iterations=200,
    block=50,
    memory_iterations=100,
    chunks=1_000,
    bm25_iterations=50,
    hybrid_iterations=10,
)


# --- test data ------------------------------------------------------------------------------

_PROSE_SENTENCES = (
    "The quarterly planning meeting moved to Thursday afternoon because the design review "
    "ran long.",
    "Could you summarise the main arguments of the attached report in plain language?",
    "We compared three approaches to caching and the simplest one held up best under load.",
    "Her notes mention that the migration should wait until the backup has been verified.",
    "Nobody on the team remembered why the old scheduler retried failed jobs twice.",
    "Please rewrite the introduction so that a newcomer understands what problem we solve.",
    "The garden looked different after the rain: greener, quieter and full of snails.",
    "If the library changes its interface again, we will pin the version and move on.",
    "A short walk after lunch helps more than another cup of coffee, or so they say.",
    "The draft still repeats itself in the third section; cut what adds nothing new.",
)

_DENSE_LINES = (
    "Order 48213-77 shipped on 2024-03-18 at 14:05; invoice INV-2024-000318 totals 1,249.90 EUR.",
    "Contact alice.martin@example.com or +44 20 7946 0958, backup bob_smith@mail.example.org.",
    "Card on file 4111 1111 1111 1111 exp 09/27; refund to IBAN DE89 3704 0044 0532 0130 00.",
    "Server 192.168.10.42 and 10.0.0.7 answered; IPv6 2001:db8:85a3::8a2e:370:7334 did not.",
    "Call (555) 123-4567 or 030 1234567 between 09:00 and 17:30, ticket #551023, version 3.11.7.",
    "Readings: 12.5, 13.75, 14.0, 98.6, 101.3 kPa; batch 2024/118/04, lot 7781-A, qty 1500.",
    "Key sk-proj-Abc123def456GHI789jkl012 was rotated; token Xy7Kp2Qm9Lr4Tz8Wv3Bn6Hj1Fd5Gs0Ac.",
    "Account 00012345678, sort code 20-00-00, reference 2024-Q1-0042, amount 3,400.00 USD.",
)


def _fill(lines: Sequence[str], chars: int) -> str:
    """Lines joined with spaces until ``chars`` characters, cut at a space."""
    out: list[str] = []
    size = 0
    i = 0
    while size < chars:
        line = lines[i % len(lines)]
        out.append(line)
        size += len(line) + 1
        i += 1
    text = " ".join(out)[:chars]
    return text[: text.rfind(" ")] if len(text) == chars else text


PROSE = _fill(_PROSE_SENTENCES, MESSAGE_CHARS)
DENSE = _fill(_DENSE_LINES, MESSAGE_CHARS)
TEXTS = {"prose": PROSE, "PII/digit-heavy": DENSE}

FILTER_CONFIG: dict[str, Any] = {
    "blocked": ["bioweapon", "nerve agent", "credit card dump", "ransomware kit", "swatting"],
    "masked": ["damn", "bloody", "crap"],
    "patterns": [
        {"regex": r"(?i)\bpassword\s*[:=]\s*\S+", "action": "mask"},
        {"regex": r"\b[A-Z]{3}-\d{4}-\d{6}\b", "action": "flag"},
    ],
}
PEER_PATTERN = re.compile(r"(?i)\bpassword\b")
"""The peer: one plain ``re.sub`` of a single word pattern over the same text."""


def _ns(start: int) -> int:
    return time.perf_counter_ns() - start


# --- running rows interleaved -----------------------------------------------------------------

Lane = Callable[[], Awaitable[int]]


async def run_lanes(
    lanes: Sequence[Lane], warmup: int, iterations: int, block: int
) -> list[list[int]]:
    """Warm each lane up, then measure them round-robin in blocks so drift hits all alike."""
    for lane in lanes:
        for _ in range(warmup):
            await lane()
    samples: list[list[int]] = [[] for _ in lanes]
    done = 0
    while done < iterations:
        count = min(block, iterations - done)
        for lane, sink in zip(lanes, samples, strict=True):
            for _ in range(count):
                sink.append(await lane())
        done += count
    return samples


def timed(call: Callable[[], Awaitable[object]]) -> Lane:
    async def lane() -> int:
        start = time.perf_counter_ns()
        await call()
        return _ns(start)

    return lane


def timed_sync(call: Callable[[], object]) -> Lane:
    async def lane() -> int:
        start = time.perf_counter_ns()
        call()
        return _ns(start)

    return lane


# --- hosts: what the engine lends a plugin, on a real store ---------------------------------


def _no_spawn(job: Callable[[], Awaitable[None]]) -> bool:
    # The measured turns must not start summary jobs; a call here shows in the checks.
    SPAWNED.append(job)
    return False


SPAWNED: list[Callable[[], Awaitable[None]]] = []


async def _no_backend(name: str) -> Any:
    raise RuntimeError(f"the benchmark lends no backend (asked for {name!r})")


async def _unchanged(record: SharedRecord) -> SharedRecord:
    return record


def make_host(store: Store, name: str) -> PluginHost:
    return PluginHost(
        name=name,
        kv=store.kv(name),
        data_dir=store.path.parent,
        database_path=store.path,
        backend=_no_backend,
        spawn=_no_spawn,
        share=_unchanged,
    )


async def start_plugin(
    plugin: BasePlugin, store: Store, config: dict[str, Any] | None = None
) -> None:
    plugin.host = make_host(store, plugin.metadata.name)
    await plugin.initialize(PluginConfig(name=plugin.metadata.name, config=config or {}))


# --- 1. processors --------------------------------------------------------------------------


async def check_processors(
    report: Report,
    cfilter: ContentFilter,
    pii: PIIRedactor,
    normalizer: Normalizer,
    context: ChatContext,
) -> None:
    """The rows mean something only if the processors really work on these texts."""
    masked = await cfilter.process_message(
        Message.user(PROSE + " damn, password: hunter2"), context
    )
    report.check(
        "content_filter masks",
        "***" in masked.data.content and "hunter2" not in masked.data.content,
        "a masked word and a password pattern appended to the prose are masked",
    )
    found = await pii.process_message(Message.user(DENSE), context)
    noted = found.data.local("pii_redactor") or {}
    kinds = sorted({p[1:].split("_")[0] for p in noted})
    report.check(
        "pii_redactor finds",
        {"EMAIL", "PHONE", "CARD", "IBAN", "IP", "SECRET"} <= set(kinds),
        f"{len(noted)} values of kinds {', '.join(kinds)} in the PII-dense text",
    )
    payload = context.replace(messages=(Message.user(DENSE),))
    redacted = await pii.redact_context(payload, payload)
    assert redacted is not None
    sent = redacted.data.messages[-1].content
    report.check(
        "pii_redactor redacts",
        "alice.martin@example.com" not in sent and "<EMAIL_1>" in sent,
        "the context sent to a cloud backend holds placeholders, not the originals",
    )
    messy = Message.user("  Cafe\u0301\r\n\n\n\x07done  ")
    normal = await normalizer.process_message(messy, context)
    report.check(
        "normalizer normalises",
        normal.data.content == "Caf\u00e9\n\ndone",
        "NFC, control characters, blank lines and trimming applied",
    )


def _tag(i: int) -> str:
    """Seven letters unique to ``i``: no digits, so the prose stays free of digits."""
    letters = []
    for _ in range(7):
        i, r = divmod(i, 26)
        letters.append(chr(97 + r))
    return "".join(letters)


_VARIANT_SERIES = iter(range(1 << 20))


def variants(text: str) -> Callable[[], str]:
    """A new text each call (its first 8 characters replaced by a tag), so no cache helps.

    Each call of ``variants`` starts a series of its own: no two lanes share a text.
    """
    counter = iter(range(next(_VARIANT_SERIES) * 100_000_000, 1 << 40))
    return lambda: f"{_tag(next(counter))} {text[8:]}"


def message_lane(
    method: Callable[[Message, ChatContext], Awaitable[object]],
    next_text: Callable[[], str],
    context: ChatContext,
) -> Lane:
    async def lane() -> int:
        message = Message.user(next_text())
        start = time.perf_counter_ns()
        await method(message, context)
        return _ns(start)

    return lane


def redaction_lane(pii: PIIRedactor, next_text: Callable[[], str], context: ChatContext) -> Lane:
    async def lane() -> int:
        payload = context.replace(messages=(Message.user(next_text()),))
        start = time.perf_counter_ns()
        await pii.redact_context(payload, payload)
        return _ns(start)

    return lane


PROCESSOR_ROWS = (
    "content_filter `process_message`",
    "pii_redactor `process_message`",
    "pii_redactor BEFORE_MODEL_LOAD redaction, text seen by `process_message`",
    "pii_redactor BEFORE_MODEL_LOAD redaction, text not seen before",
    "normalizer `process_message`",
)


async def processors(sizes: Sizes, tmp: Path, report: Report) -> None:
    store = Store(tmp / "processors.db")
    try:
        cfilter, pii, normalizer = ContentFilter(), PIIRedactor(), Normalizer()
        await start_plugin(cfilter, store, FILTER_CONFIG)
        await start_plugin(pii, store)
        await start_plugin(normalizer, store)
        context = ChatContext(conversation_id="bench-processors", backend=CLOUD_BACKEND)
        await check_processors(report, cfilter, pii, normalizer, context)

        lanes: list[Lane] = []
        for text in TEXTS.values():
            lanes.append(timed_sync(functools.partial(PEER_PATTERN.sub, "***", text)))
            lanes.append(message_lane(cfilter.process_message, variants(text), context))
            lanes.append(message_lane(pii.process_message, variants(text), context))
            # In a turn, process_message has just read the same text: the redaction
            # finds what it detected there.
            lanes.append(redaction_lane(pii, lambda text=text: text, context))
            lanes.append(redaction_lane(pii, variants(text), context))
            lanes.append(message_lane(normalizer.process_message, variants(text), context))
        samples = await run_lanes(lanes, sizes.warmup, sizes.iterations, sizes.block)
    finally:
        store.close()

    rows: list[Row] = []
    per_text = 1 + len(PROCESSOR_ROWS)
    for t, kind in enumerate(TEXTS):
        peer = Summary.of_ns(samples[t * per_text])
        rows.append(Row(f"peer: one `re.sub` ({kind})", ms(peer.median), ms(peer.p95)))
        for r, label in enumerate(PROCESSOR_ROWS, start=1):
            s = Summary.of_ns(samples[t * per_text + r])
            name = f"{label} ({kind})"
            rows.append(
                Row(
                    name,
                    ms(s.median),
                    ms(s.p95),
                    ms(peer.median),
                    ratio(s.median, peer.median),
                    f"p50 ≤ {PROCESSOR_TARGET_MS} ms",
                    report.target(name, s.median <= PROCESSOR_TARGET_MS),
                )
            )
    print_table(
        f"Processors on a {MESSAGE_CHARS:,}-character message "
        f"({sizes.warmup:,} warm-up + {sizes.iterations:,} measured calls per row)",
        rows,
        [
            "Each row awaits the plugin's real method, initialised as the engine does it "
            "(settings validated, a plugin host on a real SQLite store). content_filter has "
            "5 blocked words/phrases, 3 masked words and 2 regex patterns (mask, flag); "
            "pii_redactor runs for a cloud backend (`openai`) with every detector on. Every "
            "call gets a text it has not seen (the first 8 characters replaced by a tag), "
            "except the BEFORE_MODEL_LOAD row for a text `process_message` has seen: in a "
            "turn, BEFORE_MESSAGE reads the new message just before, and the redactor "
            "remembers what it found in each text (the history is redacted again every "
            "turn). The prose has no PII and matches no rule; the PII-dense text has "
            "e-mails, phones, a card, an IBAN, IPv4 and IPv6 addresses and API keys "
            "(about 30 values) among many numbers, dates and ids, a third of it digits. "
            f"The peer is one precompiled `re.sub` of `{PEER_PATTERN.pattern}` over the "
            "same text: the ratio is how many plain regex passes a processor costs. Rows "
            f"were measured interleaved, in blocks of {sizes.block} calls.",
        ],
    )
    report.print_checks()


# --- synthetic text ---------------------------------------------------------------------------

_SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "pi", "qua", "ne", "zo", "bri")
_ENGLISH = tuple(
    [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "with",
        "was",
        "on",
        "be",
        "by",
        "this",
        "are",
        "or",
        "from",
        "at",
        "which",
        "have",
        "an",
        "not",
        "but",
        "can",
        "all",
        "were",
        "when",
        "there",
        "been",
        "more",
        "one",
        "their",
        "has",
        "would",
        "what",
        "will",
        "about",
        "if",
        "system",
        "data",
        "file",
        "value",
        "table",
        "process",
        "model",
        "result",
        "method",
        "function",
        "time",
        "user",
        "page",
    ]
)


class Words:
    """A vocabulary with Zipf-like frequencies: a few very common words, many rare ones."""

    def __init__(self, rng: random.Random, size: int = 20_000) -> None:
        made: set[str] = set(_ENGLISH)
        while len(made) < size:
            made.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
        self.words = [*_ENGLISH, *sorted(made - set(_ENGLISH))]
        total = 0.0
        self.cumulative = []
        for rank in range(1, len(self.words) + 1):
            total += 1.0 / rank
            self.cumulative.append(total)
        self.rng = rng

    def sentence(self, count: int) -> str:
        chosen = self.rng.choices(self.words, cum_weights=self.cumulative, k=count)
        return " ".join(chosen).capitalize() + "."

    def paragraph(self, low: int, high: int) -> str:
        words = self.rng.randint(low, high)
        parts = []
        while words > 0:
            n = min(words, self.rng.randint(6, 18))
            parts.append(self.sentence(n))
            words -= n
        return " ".join(parts)


# --- 2. memory --------------------------------------------------------------------------------

MEMORY_FACTS = (
    "my daughter is called Ada and she is seven",
    "I prefer answers with code examples in Python",
    "the production database runs PostgreSQL 16",
    "my team deploys on Fridays only in emergencies",
    "I live in Lisbon and work from home",
    "our style guide wants line length 100",
    "the project codename is Heron",
    "I am allergic to peanuts",
    "my manager is called Priya",
    "I use Neovim with the default keymap",
)


def make_history(words: Words, count: int) -> list[Message]:
    history = []
    for i in range(count):
        role = Role.USER if i % 2 == 0 else Role.ASSISTANT
        text = words.paragraph(15, 60) if role is Role.USER else words.paragraph(40, 160)
        history.append(Message(role=role, content=text))
    return history


async def fitted_summary(memory: Memory, context: ChatContext, kv: Any) -> ChatContext:
    """A conversation whose stored summary covers exactly what falls out of the budget.

    The kept part depends on the room the summary itself takes, so the summary is
    placed, tried on a fresh conversation id (the plugin reads kv once per
    conversation) and moved until the plugin reports it ``used``.
    """
    summary = " ".join(f"Point {i}: the user asked about topic {i} and agreed." for i in range(40))
    covered = 0
    candidate = context
    for attempt in range(6):
        candidate = context.replace(conversation_id=f"bench-memory-{attempt}")
        if covered:
            turns = [m for m in context.messages[:-1] if m.role is not Role.SYSTEM]
            state = {
                "summary": summary,
                "covers_until_message_id": turns[covered - 1].id,
                "updated_at": "2024-01-01T00:00:00+00:00",
            }
            kv.set(KV_SUMMARY_KEY.format(conversation_id=candidate.conversation_id), state)
        result = await memory.enrich(candidate)
        info = result.data.metadata["memory"] if result.data else {}
        if info.get("summary") == "used":
            return candidate
        covered = int(info.get("dropped", 0))
    return candidate


def budget_peer(context: ChatContext, budget: int) -> Callable[[], object]:
    """The least any budgeter does: newest first, summing known token counts, then a slice."""
    history = context.messages[:-1]
    counts = {m.id: len(m.content) // 4 + 4 for m in history}

    def run() -> object:
        total = 0
        index = len(history)
        while index > 0:
            step = counts[history[index - 1].id]
            if total + step > budget:
                break
            total += step
            index -= 1
        return context.replace(messages=(*history[index:], context.messages[-1]))

    return run


async def memory_section(sizes: Sizes, tmp: Path, report: Report) -> None:
    store = Store(tmp / "memory.db")
    SPAWNED.clear()
    try:
        words = Words(random.Random(6))
        history = make_history(words, HISTORY_MESSAGES)
        new = Message.user("Which database does production run on, and should we upgrade it?")
        base = ChatContext(
            conversation_id="bench-memory",
            messages=(*history, new),
            backend="echo",
            system="You are a careful assistant who answers in plain English.",
        )
        with MemoryStore(store.path) as facts:
            for fact in MEMORY_FACTS:
                facts.add(fact)
        full, short = Memory(), Memory()
        await start_plugin(full, store)
        await start_plugin(short, store, {"long_term": False})
        lanes: list[Lane] = []
        infos: list[dict[str, Any]] = []
        for plugin in (full, short):
            context = await fitted_summary(plugin, base, store.kv("memory"))
            result = await plugin.enrich(context)
            infos.append(dict(result.data.metadata["memory"]) if result.data else {})
            lanes.append(timed(functools.partial(plugin.enrich, context)))
        settings = full.settings
        budget = settings.max_context_tokens - settings.reserve_reply_tokens
        lanes.append(timed_sync(budget_peer(base, budget)))
        spawned_before = len(SPAWNED)
        samples = await run_lanes(
            lanes, sizes.warmup, sizes.memory_iterations, min(sizes.block, sizes.memory_iterations)
        )
        for plugin in (full, short):
            await plugin.shutdown()
    finally:
        store.close()

    info = infos[0]
    report.check(
        "memory summary used",
        all(i.get("summary") == "used" for i in infos),
        f"kept {info.get('kept')} of {HISTORY_MESSAGES:,} messages, summary "
        f"{info.get('summary')!r} (covers {info.get('summarized')}), "
        f"{info.get('memories', 0)} facts injected",
    )
    report.check(
        "no summary jobs while measuring",
        len(SPAWNED) == spawned_before,
        f"{len(SPAWNED) - spawned_before} started",
    )
    full_s, short_s, peer = (Summary.of_ns(x) for x in samples)
    name = "memory `enrich`"
    rows = [
        Row("peer: newest-first slice by precomputed counts", ms(peer.median), ms(peer.p95)),
        Row(
            f"**{name}**: budget, summary, long-term facts",
            ms(full_s.median),
            ms(full_s.p95),
            ms(peer.median),
            ratio(full_s.median, peer.median),
            f"≤ {MEMORY_TARGET_MS:g} ms",
            report.target(name, full_s.median <= MEMORY_TARGET_MS),
        ),
        Row(
            f"{name} with `long_term = false`",
            ms(short_s.median),
            ms(short_s.p95),
            ms(peer.median),
            ratio(short_s.median, peer.median),
        ),
    ]
    print_table(
        f"Memory assembly over a {HISTORY_MESSAGES:,}-message history "
        f"({sizes.warmup:,} warm-up + {sizes.memory_iterations:,} measured calls per row)",
        rows,
        [
            "`Memory.enrich` on a context of 1,000 generated messages (user 15-60 words, "
            "assistant 40-160) and a new question, default settings (4,096-token window, "
            "512 reserved), a stored summary that covers exactly what falls out (the "
            "plugin reports it `used`) and 10 stored facts of which the relevant ones are "
            "injected. Token counts are cached after the warm-up, as in a long chat where "
            "the same history comes back every turn. The peer walks the same history "
            "newest first over a dict of precomputed counts and slices it: the least any "
            "budgeter does.",
        ],
    )
    report.print_checks()


# --- 3. RAG -----------------------------------------------------------------------------------

SECTIONS_PER_FILE = 50


def write_corpus(folder: Path, words: Words, chunks: int) -> list[str]:
    """Markdown files of one-chunk sections (two paragraphs under a heading each).

    Returns each section's text in order, to build queries from.
    """
    folder.mkdir()
    sections: list[str] = []
    files = (chunks + SECTIONS_PER_FILE - 1) // SECTIONS_PER_FILE
    for f in range(files):
        parts = [f"# {words.sentence(4)[:-1]}\n"]
        for _ in range(min(SECTIONS_PER_FILE, chunks - len(sections))):
            body = f"{words.paragraph(35, 70)}\n\n{words.paragraph(35, 70)}"
            sections.append(body)
            parts.append(f"## {words.sentence(3)[:-1]}\n\n{body}\n")
        (folder / f"doc{f:04d}.md").write_text("\n".join(parts), encoding="utf-8")
    return sections


class HashEmbedder:
    """Deterministic 384-dimensional vectors from a text's hash: same text, same vector."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]

    @staticmethod
    def vector(text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        rng = random.Random(seed)
        return [rng.random() - 0.5 for _ in range(VECTOR_DIM)]


def make_queries(words: Words, sections: Sequence[str], count: int) -> list[tuple[str, int]]:
    """(query, section number): the section's rarest words, as a user would pick them."""
    rank = {w: i for i, w in enumerate(words.words)}
    rng = random.Random(11)
    queries = []
    for _ in range(count):
        target = rng.randrange(len(sections))
        tokens = {w.strip(".").lower() for w in sections[target].split()}
        rare = sorted(tokens, key=lambda w: -rank.get(w, 0))[:3]
        common = rng.sample(_ENGLISH[20:], 2)
        queries.append((" ".join([common[0], *rare, common[1]]), target))
    return queries


def bare_fts_ingest(db_path: Path, rows: Sequence[tuple[str, str]]) -> float:
    """Seconds to insert the same chunks into a bare table with the same FTS5 index."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, heading TEXT, text TEXT)")
        conn.execute(
            "CREATE VIRTUAL TABLE chunks_fts USING fts5(heading, text, content='chunks', "
            "content_rowid='id', tokenize='porter')"
        )
        conn.execute(
            "CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN INSERT INTO chunks_fts "
            "(rowid, heading, text) VALUES (new.id, new.heading, new.text); END"
        )
        start = time.perf_counter_ns()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO chunks (heading, text) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
        return _ns(start) / 1e9
    finally:
        conn.close()


def profile_hybrid(index: RagIndex, queries: Sequence[tuple[str, list[float]]], model: str) -> str:
    """The functions the hybrid search spends its time in (cProfile, own time)."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for query, vector in queries:
        index.search_hybrid(query, vector, model=model, limit=TOP_K)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(8)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(lines[start : start + 9])


async def rag_section(sizes: Sizes, tmp: Path, report: Report) -> None:
    words = Words(random.Random(7))
    sections = write_corpus(tmp / "corpus", words, sizes.chunks)
    db_path = tmp / "rag.db"
    Store(db_path).close()
    index = RagIndex(db_path)
    settings = RagSettings(top_k=TOP_K)
    try:
        files = sorted((tmp / "corpus").glob("*.md"))
        start = time.perf_counter_ns()
        added = await add_files(index, files, settings=settings)
        ingest_s = _ns(start) / 1e9
        stored = index.chunk_count()
        report.check(
            "RAG corpus ingested",
            added.count("added") == len(files) and not added.failed and stored == len(sections),
            f"{added.count('added')} files, {stored:,} chunks (expected {len(sections):,})",
        )
        embedder = Embedder("bench", "bench:hash-384", HashEmbedder())
        start = time.perf_counter_ns()
        embedded = await embed_missing(index, embedder, batch_size=256)
        embed_s = _ns(start) / 1e9
        conn = sqlite3.connect(db_path)
        rows_for_peer = conn.execute("SELECT heading, text FROM chunks ORDER BY id").fetchall()
        peer_ingest_s = bare_fts_ingest(tmp / "bare.db", rows_for_peer)

        queries = make_queries(words, sections, 50)
        vectors = [HashEmbedder.vector(sections[target]) for _, target in queries]
        # The chunk ids, in the order the sections were written.
        ids = [row[0] for row in conn.execute("SELECT id FROM chunks ORDER BY id")]
        bm25_found = hybrid_found = 0
        for (query, target), vector in zip(queries, vectors, strict=True):
            hits = index.search_bm25(query, limit=TOP_K)
            bm25_found += ids[target] in [h.chunk_id for h in hits]
            fused = index.search_hybrid(query, vector, model=embedder.model, limit=TOP_K)
            hybrid_found += ids[target] in [h.chunk_id for h in fused]

        turn = iter(range(1 << 40))

        def pick() -> int:
            return next(turn) % len(queries)

        def bm25() -> object:
            return index.search_bm25(queries[pick()][0], limit=TOP_K)

        def bm25_peer() -> object:
            match = fts_query(queries[pick()][0])
            return conn.execute(
                "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
                [match, TOP_K],
            ).fetchall()

        async def bm25_retrieve() -> object:
            return await retrieve(index, queries[pick()][0], settings=settings)

        def hybrid() -> object:
            i = pick()
            return index.search_hybrid(queries[i][0], vectors[i], model=embedder.model, limit=TOP_K)

        def vector_only() -> object:
            return index.search_vector(vectors[pick()], model=embedder.model, limit=TOP_K * 5)

        def vector_peer() -> object:
            return conn.execute(
                "SELECT id, embedding FROM chunks WHERE embed_model = ? AND embedding IS NOT NULL",
                [embedder.model],
            ).fetchall()

        warm = max(3, sizes.warmup // 20)
        bm25_samples = await run_lanes(
            [timed_sync(bm25_peer), timed_sync(bm25), timed(bm25_retrieve)],
            warm * 4,
            sizes.bm25_iterations,
            min(50, sizes.bm25_iterations),
        )
        hybrid_samples = await run_lanes(
            [timed_sync(vector_peer), timed_sync(vector_only), timed_sync(hybrid)],
            warm,
            sizes.hybrid_iterations,
            min(10, sizes.hybrid_iterations),
        )
        conn.close()
        profile = profile_hybrid(
            index, list(zip((q for q, _ in queries[:5]), vectors[:5], strict=True)), embedder.model
        )
    finally:
        index.close()

    report.check(
        "BM25 finds the chunk its query was made from",
        bm25_found >= 0.8 * len(queries),
        f"top {TOP_K} for {bm25_found} of {len(queries)} queries",
    )
    report.check(
        "hybrid finds the chunk whose vector is the query's",
        hybrid_found >= 0.9 * len(queries),
        f"top {TOP_K} for {hybrid_found} of {len(queries)} queries",
    )
    peer, bm, via = (Summary.of_ns(x) for x in bm25_samples)
    vpeer, vec, hyb = (Summary.of_ns(x) for x in hybrid_samples)
    n = f"{stored:,}"
    chunk_rate = stored / ingest_s
    peer_rate = stored / peer_ingest_s
    rows = [
        Row("peer: the FTS5 query alone (raw SQL)", ms(peer.median), ms(peer.p95)),
        Row(
            f"**BM25** `RagIndex.search_bm25`, {n} chunks",
            ms(bm.median),
            ms(bm.p95),
            ms(peer.median),
            ratio(bm.median, peer.median),
            f"p50 ≤ {BM25_TARGET_MS:g} ms",
            report.target("BM25 retrieval", bm.median <= BM25_TARGET_MS),
        ),
        Row(
            "BM25 through `retrieve()` (the plugin's path: a worker thread)",
            ms(via.median),
            ms(via.p95),
            ms(peer.median),
            ratio(via.median, peer.median),
        ),
        Row("peer: reading every vector (raw SQL, no arithmetic)", ms(vpeer.median), ms(vpeer.p95)),
        Row(
            f"vectors alone `RagIndex.search_vector` (pool of {TOP_K * 5})",
            ms(vec.median),
            ms(vec.p95),
            ms(vpeer.median),
            ratio(vec.median, vpeer.median),
        ),
        Row(
            f"**hybrid** `RagIndex.search_hybrid`, {VECTOR_DIM}-dim vectors",
            ms(hyb.median),
            ms(hyb.p95),
            ms(vpeer.median),
            ratio(hyb.median, vpeer.median),
            f"p50 ≤ {HYBRID_TARGET_MS:g} ms",
            report.target("hybrid retrieval", hyb.median <= HYBRID_TARGET_MS),
        ),
        Row(
            "ingest (`add_files`: read, parse, chunk, store, index)",
            f"{chunk_rate:,.0f} chunks/s",
            "—",
            f"{peer_rate:,.0f} chunks/s",
            ratio(chunk_rate, peer_rate),
        ),
        Row(
            "storing vectors (`embed_missing`, in-process hash embedder)",
            f"{embedded / embed_s:,.0f} chunks/s",
        ),
    ]
    print_table(
        f"RAG over {n} chunks ({sizes.bm25_iterations:,} BM25 and "
        f"{sizes.hybrid_iterations:,} hybrid queries per row, top {TOP_K})",
        rows,
        [
            f"The corpus is {len(files)} generated Markdown files of {SECTIONS_PER_FILE} "
            "sections each (a heading and two paragraphs of 35-70 words, one chunk per "
            "section, about 800 characters), words drawn Zipf-like from a 20,000-word "
            "vocabulary. It is ingested with the real `add_files` into a temporary SQLite "
            f"file ({ingest_s:.1f} s); the ingest peer inserts the same chunk rows into a "
            "bare table with the same FTS5 (porter) index in one transaction. Vectors are "
            "deterministic (a seeded generator per text) and stored through "
            "`embed_missing`. Queries are 2 common and 3 rare words of one chunk, rotating "
            "over 50; the hybrid query vector is that chunk's own vector. The BM25 peer "
            "runs the same FTS5 MATCH without the joins; the vector peer only reads the "
            "embedding column.",
            "Where the hybrid search spends its time (cProfile over 5 queries, own time; "
            "profiling slows pure-Python code, so compare shares, not totals):\n\n```\n"
            + profile
            + "\n```",
        ],
    )
    report.print_checks()


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Sizes:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a few seconds")
    parser.add_argument("--chunks", type=int, help="chunks in the RAG index")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.chunks is not None:
        if args.chunks < 100:
            parser.error("--chunks must be at least 100")
        sizes = Sizes(**{**vars(sizes), "chunks": args.chunks})
    return sizes


def print_header(sizes: Sizes) -> None:
    print("# chatcore features benchmark\n")
    print(machine("sqlite", "numpy", "chatcore"))
    print(
        f"\nSizes: {sizes.warmup:,} warm-up + {sizes.iterations:,} measured calls per "
        f"processor row; {sizes.memory_iterations:,} memory turns over {HISTORY_MESSAGES:,} "
        f"messages; RAG over {sizes.chunks:,} chunks ({sizes.bm25_iterations:,} BM25 and "
        f"{sizes.hybrid_iterations:,} hybrid queries)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    sizes = parse_args(argv)
    print_header(sizes)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="chatcore-bench-features-") as name:
        tmp = Path(name)
        trio.run(processors, sizes, tmp, report)
        trio.run(memory_section, sizes, tmp, report)
        trio.run(rag_section, sizes, tmp, report)
    return conclude(report)


if __name__ == "__main__":
    sys.exit(main())
