"""Storage benchmark: persisting turns, draining the outbox to Redis, querying a big history.

Run ``python bench/storage.py``; ``--quick`` uses smaller counts (a 100,000-message
history instead of 1,000,000, a 10,000-message drain instead of 100,000). The big
history is built once into ``bench/.cache/`` (ignored by git) and reused. The drain
starts its own ``redis-server`` on a free port (never the machine's Redis) and
compares with ``redis-benchmark`` against that server in the same run. Prints
Markdown tables in the shared format; a missed target prints MISSED and the exit
status stays 0, and only a broken run (rows missing, wrong results) exits 1.

The script is a list of sections run by ``main()``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from _report import Report, Row, Summary, conclude, machine, ms, print_table, ratio

# Run as a script, bench/ leads sys.path, and bench/backends.py would shadow the
# `backends` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from click.testing import CliRunner  # noqa: E402

from chatcore.cli import cli  # noqa: E402
from chatcore.config import load_config  # noqa: E402
from chatcore.messages import Message  # noqa: E402
from chatcore.replication import Replicator  # noqa: E402
from chatcore.store import DB_FILENAME, Store, StoreWriter, TurnRecord  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

CACHE_DIR = Path(__file__).resolve().parent / ".cache"

PERSIST_TARGET = 5_000.0  # messages per second
LIST_TARGET_MS = 20.0
LOAD_TARGET_MS = 5.0
SEARCH_TARGET_MS = 50.0
BIG_CONVERSATION = 1_000
DRAIN_TARGET = 20_000.0  # messages per second
DRAIN_CONVERSATIONS = 1_000
DRAIN_BATCH = 500  # the default [replication] batch_size


@dataclass(frozen=True)
class Sizes:
    persist_turns: int  # turns per persisting run (2 messages each)
    persist_runs: int
    concurrency: int
    history_messages: int
    history_conversations: int
    query_repeats: int
    drain_messages: int
    drain_runs: int


FULL = Sizes(10_000, 5, 100, 1_000_000, 10_000, 200, 100_000, 5)
QUICK = Sizes(2_000, 3, 100, 100_000, 1_000, 50, 10_000, 3)

# A vocabulary with a few very common words, many ordinary ones and rare ones,
# roughly as words in chats are spread.
_SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "pi", "qua", "ne", "zo"]


def _vocabulary(rng: random.Random, size: int = 5_000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _sentence(rng: random.Random, vocabulary: list[str], words: int) -> str:
    # Zipf-like: low indexes are far more frequent.
    n = len(vocabulary)
    return " ".join(vocabulary[min(int(rng.paretovariate(1.1)) - 1, n - 1)] for _ in range(words))


# --- section: persisting turns through the store actor ----------------------------------------


def _turns(count: int, conversations: int, seed: int) -> list[TurnRecord]:
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng, 2_000)
    return [
        TurnRecord(
            f"bench-{i % conversations:04d}-{seed}",
            (
                Message.user(_sentence(rng, vocabulary, 12)),
                Message.assistant(_sentence(rng, vocabulary, 40), model="echo"),
            ),
            backend="echo",
        )
        for i in range(count)
    ]


async def _persist_with_writer(path: Path, records: list[TurnRecord], concurrency: int) -> float:
    """Messages per second through StoreWriter, ``concurrency`` conversations at once."""
    store = Store(path, outbox=True)
    writer = StoreWriter(store)
    lanes: list[list[TurnRecord]] = [records[i::concurrency] for i in range(concurrency)]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)

            async def lane(turns: list[TurnRecord]) -> None:
                for record in turns:
                    await writer.write([record])

            start = time.perf_counter_ns()
            async with trio.open_nursery() as callers:
                for turns in lanes:
                    callers.start_soon(lane, turns)
            elapsed = time.perf_counter_ns() - start
            nursery.cancel_scope.cancel()
        return 2 * len(records) / (elapsed / 1e9)
    finally:
        store.close()


def _persist_plain(path: Path, records: list[TurnRecord], batch: int) -> float:
    """The peer: the same message and outbox rows, executemany, one transaction per batch."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE messages (id TEXT PRIMARY KEY, conversation_id TEXT, role TEXT, "
        "content TEXT, status TEXT, created_at TEXT, model TEXT, metadata TEXT)"
    )
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, change TEXT)")
    start = time.perf_counter_ns()
    for offset in range(0, len(records), batch):
        rows = [
            (
                m.id,
                r.conversation_id,
                m.role.value,
                m.content,
                m.status.value,
                m.created_at.isoformat(),
                m.model,
                "{}",
            )
            for r in records[offset : offset + batch]
            for m in r.messages
        ]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO outbox (change) VALUES (?)", [(row[3],) for row in rows])
        conn.execute("COMMIT")
    elapsed = time.perf_counter_ns() - start
    conn.close()
    return 2 * len(records) / (elapsed / 1e9)


def section_persist(sizes: Sizes, tmp: Path, report: Report) -> None:
    ours: list[float] = []
    peers: list[float] = []
    stored_ok = True
    for run in range(sizes.persist_runs):
        records = _turns(sizes.persist_turns, sizes.concurrency, seed=run)
        path = tmp / f"persist-{run}.db"
        ours.append(trio.run(_persist_with_writer, path, records, sizes.concurrency))
        with Store(path) as check:
            stored_ok &= check.outbox_depth() == 2 * len(records) + sizes.concurrency
        peers.append(_persist_plain(tmp / f"peer-{run}.db", records, sizes.concurrency))
    report.check(
        "persisted rows",
        stored_ok,
        "every run stored each message once with one outbox row each (+1 per conversation)",
    )
    median, peer = sorted(ours)[len(ours) // 2], sorted(peers)[len(peers) // 2]
    worst = min(ours)
    print_table(
        "Persisting turns through the store actor, with outbox",
        [
            Row(
                f"{sizes.concurrency} concurrent conversations, {2 * sizes.persist_turns:,} "
                "messages per run",
                f"{median:,.0f} msg/s",
                f"{worst:,.0f} msg/s (slowest)",
                f"{peer:,.0f} msg/s",
                ratio(median, peer),
                f"≥ {PERSIST_TARGET:,.0f} msg/s",
                report.target("persist throughput", median >= PERSIST_TARGET),
            )
        ],
        [
            f"{sizes.persist_runs} runs. Peer: plain sqlite3 executemany of the same message "
            "and outbox rows, one transaction per batch of "
            f"{sizes.concurrency} turns (no upsert, no titles, no full-text index, no clock)."
        ],
    )
    report.print_checks()


# --- section: draining the outbox to Redis ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(server: str, folder: Path, port: int) -> subprocess.Popen[bytes]:
    """A private redis-server without persistence on ``port``, answering PING."""
    import redis

    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    process = subprocess.Popen(
        [*args, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    with redis.Redis(port=port) as client:
        while True:
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    raise
                time.sleep(0.01)


def _seed_outbox(path: Path, messages: int) -> int:
    """``messages`` messages (turns of two) in DRAIN_CONVERSATIONS conversations, queued."""
    with Store(path, outbox=True) as store:
        records = [
            TurnRecord(
                f"conv-{n % DRAIN_CONVERSATIONS:05d}",
                (Message.user(f"question {n} " * 4), Message.assistant(f"answer {n} " * 12)),
            )
            for n in range(messages // 2)
        ]
        for start in range(0, len(records), 1_000):
            store.write_turns(records[start : start + 1_000])
        store.checkpoint()
        return store.outbox_depth()


def _redis_benchmark(tool: str, port: int) -> float:
    """Pipelined SET throughput (requests/s) as redis-benchmark reports it."""
    output = subprocess.run(
        [tool, "-p", str(port), "-P", "16", "-t", "set", "-n", "100000", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The -q output redraws with \r; the last line reads "SET: 1234567.89 requests per second".
    found = re.findall(r"SET: ([\d.]+) requests per second", output.replace("\r", "\n"))
    if not found:
        raise RuntimeError(f"could not read redis-benchmark's output: {output!r}")
    return float(found[-1])


async def _drain(store: Store, url: str) -> tuple[int, int]:
    """Run one ``push_once`` (what ``chatcore sync push`` does); (changes sent, ns taken)."""
    settings = load_config(replication={"redis_url": url, "batch_size": DRAIN_BATCH}).replication
    replicator = Replicator(store, settings)
    try:
        start = time.perf_counter_ns()
        sent = await replicator.push_once()
        return sent, time.perf_counter_ns() - start
    finally:
        replicator.close()


@dataclass(frozen=True)
class _DrainRun:
    ns: int
    baseline: float  # redis-benchmark SET/s
    script_us: float  # time Redis spent in the apply script, per change
    ok: bool
    detail: str


def _drain_once(
    server: str, tool: str, seeded: Path, folder: Path, rows: int, messages: int
) -> _DrainRun:
    import redis

    folder.mkdir()
    path = folder / DB_FILENAME
    shutil.copyfile(seeded, path)
    os.chmod(path, 0o600)
    port = _free_port()
    process = _start_redis(server, folder, port)
    try:
        with Store(path, outbox=True) as store:
            sent, ns = trio.run(_drain, store, f"redis://127.0.0.1:{port}/0")
            left = store.outbox_depth()
        with redis.Redis(port=port, decode_responses=True) as client:
            stored = sum(client.hlen(k) for k in client.scan_iter(match="chatcore:*:msgs"))
            stream = client.xlen("chatcore:changes")
            stats = client.info("commandstats").get("cmdstat_evalsha", {})
        baseline = _redis_benchmark(tool, port)
    finally:
        process.kill()
        process.wait()
    ok = sent == rows and left == 0 and stored == messages and stream == rows
    detail = f"sent {sent:,}, left {left}, messages in Redis {stored:,}, stream entries {stream:,}"
    return _DrainRun(ns, baseline, float(stats.get("usec", 0)) / max(rows, 1), ok, detail)


def section_drain(sizes: Sizes, tmp: Path, report: Report) -> None:
    title = "Draining the outbox to Redis"
    server, tool = shutil.which("redis-server"), shutil.which("redis-benchmark")
    if server is None or tool is None:
        print(f"\n## {title}\n\nskipped: redis-server and redis-benchmark are not on PATH")
        report.missed.append("drain throughput (no redis-server)")
        return
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    messages = sizes.drain_messages
    seeded = tmp / "drain-seed.db"
    rows = _seed_outbox(seeded, messages)
    runs = [
        _drain_once(server, tool, seeded, tmp / f"drain-{n}", rows, messages)
        for n in range(sizes.drain_runs)
    ]
    for n, run in enumerate(runs):
        report.check(f"drain run {n + 1}", run.ok, run.detail)
    times = Summary.of_ns([r.ns for r in runs])
    median_rate = messages / (times.median / 1e3)
    p95_rate = messages / (times.p95 / 1e3)
    baseline = sorted(r.baseline for r in runs)[len(runs) // 2]
    script = sorted(r.script_us for r in runs)[len(runs) // 2]
    parser = "hiredis" if HIREDIS_AVAILABLE else "pure-Python"
    print_table(
        title,
        [
            Row(
                f"drain {rows:,} outbox rows ({messages:,} messages): Replicator.push_once",
                f"{median_rate:,.0f} msg/s",
                f"{p95_rate:,.0f} msg/s",
                f"{baseline:,.0f} SET/s",
                ratio(median_rate, baseline),
                f"≥ {DRAIN_TARGET:,.0f} msg/s",
                report.target("drain throughput", median_rate >= DRAIN_TARGET),
            ),
            Row("drain time", ms(times.median, 0), ms(times.p95, 0)),
            Row("Redis time in the apply script, per change", f"{script:.1f} µs"),
        ],
        [
            f"{sizes.drain_runs} runs, each on a fresh copy of the same outbox ({messages:,} "
            f"messages + {rows - messages:,} conversation rows in {DRAIN_CONVERSATIONS:,} "
            f"conversations) and a fresh redis-server without persistence; batch_size "
            f"{DRAIN_BATCH}; redis-py {redis.__version__} with the {parser} reply parser. "
            f"Drain times in run order: {', '.join(f'{r.ns / 1e9:.2f} s' for r in runs)}. "
            "p95: the rate of the 95th-percentile drain time (nearest rank: the slowest "
            "run when there are few). Peer: `redis-benchmark -P 16 -t set -n 100000` "
            "against the same server after each drain (median); the ratio compares "
            "messages/s with plain pipelined SETs, each message being a deduplicated, "
            "last-writer-wins apply of several commands plus a stream entry."
        ],
    )
    report.print_checks()


# --- section: queries on a big history -------------------------------------------------------


def _build_history(path: Path, sizes: Sizes) -> None:
    """``history_messages`` messages in ``history_conversations`` conversations, once."""
    rng = random.Random(1)
    vocabulary = _vocabulary(rng)
    per_conversation = sizes.history_messages // sizes.history_conversations
    # The first conversation is the big one the load measurement opens.
    counts = [BIG_CONVERSATION] + [per_conversation] * (sizes.history_conversations - 1)
    counts[-1] += sizes.history_messages - sum(counts)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    tmp = path.with_name(path.name + ".partial")
    for suffix in ("", "-wal", "-shm"):
        tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)
    with Store(tmp) as store:
        batch: list[TurnRecord] = []
        for c, count in enumerate(counts):
            cid = f"conv-{c:06d}"
            when = start + timedelta(minutes=c)
            for t in range(count // 2):
                when += timedelta(seconds=7)
                batch.append(
                    TurnRecord(
                        cid,
                        (
                            Message.user(_sentence(rng, vocabulary, 10), created_at=when),
                            Message.assistant(
                                _sentence(rng, vocabulary, 30),
                                created_at=when + timedelta(seconds=2),
                                model="echo",
                            ),
                        ),
                        backend="echo",
                    )
                )
                del t
            if len(batch) >= 5_000:
                store.write_turns(batch)
                batch.clear()
        store.write_turns(batch)
        store.checkpoint()
        store.db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('optimize')")
        store.db.execute("ANALYZE")
    for suffix in ("-wal", "-shm"):
        tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)
    tmp.rename(path)


def _history_db(sizes: Sizes) -> Path:
    CACHE_DIR.mkdir(exist_ok=True)
    # The cache ignores itself, so it never shows up in git.
    (CACHE_DIR / ".gitignore").write_text("*\n")
    path = CACHE_DIR / f"history-{sizes.history_messages}-{sizes.history_conversations}.db"
    if not path.exists():
        print(f"\n(building {path.name} once: {sizes.history_messages:,} messages …)", flush=True)
        began = time.perf_counter()
        _build_history(path, sizes)
        print(f"(built in {time.perf_counter() - began:.0f} s)", flush=True)
    return path


def _measure(fn: Callable[[], object], repeats: int) -> Summary:
    fn()  # warm the page cache and the statement cache
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return Summary.of_ns(samples)


def section_queries(sizes: Sizes, tmp: Path, report: Report) -> None:
    source = _history_db(sizes)
    # Measured on a copy: opening a store may touch the file (WAL, optimize).
    path = tmp / DB_FILENAME
    path.write_bytes(source.read_bytes())
    os.chmod(path, 0o600)
    rows: list[Row] = []
    repeats = sizes.query_repeats

    def row(what: str, summary: Summary, peer: Summary | None, target_ms: float) -> None:
        rows.append(
            Row(
                what,
                ms(summary.median),
                ms(summary.p95),
                ms(peer.median) if peer else "—",
                ratio(summary.median, peer.median) if peer else "—",
                f"≤ {target_ms:g} ms",
                report.target(what, summary.median <= target_ms),
            )
        )

    raw = sqlite3.connect(path)
    with Store(path) as store:
        listed = store.list_conversations(limit=50)
        report.check(
            "history list",
            len(listed) == 50 and listed[0].updated_at >= listed[-1].updated_at,
            "50 newest conversations, newest first",
        )
        peer = _measure(
            lambda: raw.execute(
                "SELECT id, title, updated_at FROM conversations ORDER BY updated_at DESC LIMIT 50"
            ).fetchall(),
            repeats,
        )
        row(
            "history list: Store.list_conversations(limit=50)",
            _measure(lambda: store.list_conversations(limit=50), repeats),
            peer,
            LIST_TARGET_MS,
        )

        big = "conv-000000"
        loaded = store.get_messages(big)
        report.check(
            "load",
            len(loaded) == BIG_CONVERSATION,
            f"{len(loaded):,} messages loaded, {BIG_CONVERSATION:,} expected",
        )
        peer = _measure(
            lambda: raw.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY created_at, id", [big]
            ).fetchall(),
            repeats,
        )
        row(
            f"load a {BIG_CONVERSATION:,}-message conversation: Store.get_messages",
            _measure(lambda: store.get_messages(big), repeats),
            peer,
            LOAD_TARGET_MS,
        )

        vocabulary = _vocabulary(random.Random(1))
        for label, word in (("common word", vocabulary[0]), ("rarer word", vocabulary[400])):
            hits = store.search(word)
            report.check(
                f"search {label}",
                1 <= len(hits) <= 20 and all(word in h.snippet.lower() for h in hits),
                f"{word!r}: {len(hits)} hits, each snippet showing the word",
            )
            row(
                f"history search ({label}): Store.search",
                _measure(lambda word=word: store.search(word), repeats),
                None,
                SEARCH_TARGET_MS,
            )
        two = f"{vocabulary[1]} {vocabulary[30]}"
        row(
            "history search (two words): Store.search",
            _measure(lambda: store.search(two), repeats),
            None,
            SEARCH_TARGET_MS,
        )
    raw.close()

    env = {"CHATCORE_DATA_DIR": str(tmp), "CHATCORE_CONFIG": ""}
    runner = CliRunner(env=env)

    def command(*args: str) -> Callable[[], object]:
        def run() -> object:
            result = runner.invoke(cli, list(args))
            if result.exit_code != 0:
                raise RuntimeError(f"chatcore {' '.join(args)} failed: {result.output}")
            return result

        return run

    cli_repeats = max(10, repeats // 4)
    row(
        "history list: the CLI command (in process, default limit)",
        _measure(command("history", "list"), cli_repeats),
        None,
        LIST_TARGET_MS,
    )
    row(
        "history search: the CLI command (in process)",
        _measure(command("history", "search", vocabulary[400]), cli_repeats),
        None,
        SEARCH_TARGET_MS,
    )
    print_table(
        f"Queries on {sizes.history_messages:,} messages in "
        f"{sizes.history_conversations:,} conversations",
        rows,
        [
            f"{repeats} repetitions after a warm-up (CLI rows: {cli_repeats}); warm page cache. "
            "Peers: the bare SQL on a plain sqlite3 connection (no objects built). "
            "CLI rows run the click command in this process (config lookup, opening the "
            "store, printing), without interpreter start-up."
        ],
    )
    report.print_checks()


# --- main -----------------------------------------------------------------------------------

SECTIONS: list[Callable[[Sizes, Path, Report], None]] = [
    section_persist,
    section_drain,
    section_queries,
]
"""Run in order by main(); a new measurement is one more function here."""


def parse_args(argv: Sequence[str] | None) -> Sizes:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100k-message history, fewer runs")
    parser.add_argument("--persist-turns", type=int, help="turns per persisting run")
    parser.add_argument("--drain-messages", type=int, help="messages in the outbox to drain")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.drain_messages is not None:
        if args.drain_messages < 2:
            parser.error("--drain-messages must be at least 2")
        sizes = replace(sizes, drain_messages=args.drain_messages)
    if args.persist_turns is not None:
        if args.persist_turns < 1:
            parser.error("--persist-turns must be at least 1")
        sizes = replace(sizes, persist_turns=args.persist_turns)
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    sizes = parse_args(argv)
    print("# chatcore storage benchmark\n")
    print(machine("trio", "sqlite", "redis", "chatcore"))
    report = Report()
    with tempfile.TemporaryDirectory(prefix="chatcore-bench-storage-") as name:
        for section in SECTIONS:
            section(sizes, Path(name), report)
    return conclude(report)


if __name__ == "__main__":
    sys.exit(main())
