"""Pipeline benchmark: per-turn overhead, throughput and cold start, printed as Markdown.

Run ``python bench/pipeline.py`` (``make bench``); ``--quick`` shrinks every count so
the run takes a few seconds. It reports and does not judge: a missed target prints
``MISSED`` and the exit status stays 0. Only a broken run (plugins failing, messages
missing from the database) exits 1, because then the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from _report import Report, Row, Summary, conclude, machine, ms, print_table, ratio

from chatcore import open_engine
from chatcore.config import Config, load_config, shipped_config_path
from chatcore.hooks import HookType
from chatcore.messages import ChatContext, Message, Role
from chatcore.plugin import (
    BaseFeatureExtension,
    BaseMessageProcessor,
    BaseMiddleware,
    PluginMetadata,
    PluginType,
    hook,
)
from chatcore.result import PluginResult

# Run as a script, bench/ leads sys.path, and bench/backends.py would shadow the
# `backends` package that holds the echo backend.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

if TYPE_CHECKING:
    from chatcore._engine import Engine
    from chatcore._plugins import BasePlugin
    from chatcore.plugin import BaseBackendProvider, CallNext

PROMPT = "how long does one turn through the pipeline take"
BACKEND = "echo"

OVERHEAD_P50_TARGET_MS = 0.5
OVERHEAD_P95_TARGET_MS = 2.0
THROUGHPUT_TARGET = 2_000.0
COLD_START_TARGET_MS = 150.0


@dataclass(frozen=True)
class Sizes:
    warmup: int
    turns: int
    block: int
    conversations: int
    conversation_turns: int
    throughput_runs: int
    cold_runs: int


FULL = Sizes(
    warmup=200,
    turns=2_000,
    block=100,
    conversations=100,
    conversation_turns=20,
    throughput_runs=3,
    cold_runs=10,
)
QUICK = Sizes(
    warmup=20,
    turns=200,
    block=50,
    conversations=20,
    conversation_turns=5,
    throughput_runs=1,
    cold_runs=3,
)


# --- the no-op plugins: one per kind of pipeline stage -------------------------------------


class NoopMiddleware(BaseMiddleware):
    metadata = PluginMetadata(name="noop_middleware", plugin_type=PluginType.MIDDLEWARE)

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        return await call_next(context)


class NoopProcessor(BaseMessageProcessor):
    metadata = PluginMetadata(name="noop_processor", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)


class NoopReplyProcessor(BaseMessageProcessor):
    """Overrides ``process_reply`` too, so it is also wired in at AFTER_MESSAGE."""

    metadata = PluginMetadata(name="noop_reply_processor", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)

    async def process_reply(self, message: Message, context: ChatContext) -> PluginResult[Message]:
        return PluginResult.ok(message)


class NoopFeature(BaseFeatureExtension):
    metadata = PluginMetadata(name="noop_feature", plugin_type=PluginType.FEATURE_EXTENSION)

    async def enrich(self, context: ChatContext) -> PluginResult[ChatContext]:
        return PluginResult.ok(context)


class NoopHook(BaseMessageProcessor):
    """Only a ``@hook`` method: it joins no stage of its own, just BEFORE_MODEL_LOAD."""

    metadata = PluginMetadata(name="noop_hook", plugin_type=PluginType.MESSAGE_PROCESSOR)

    @hook(HookType.BEFORE_MODEL_LOAD)
    async def before_model_load(self, payload: ChatContext, context: ChatContext) -> None:
        return None


NOOP_PLUGINS: tuple[type[BasePlugin], ...] = (
    NoopMiddleware,
    NoopProcessor,
    NoopReplyProcessor,
    NoopFeature,
    NoopHook,
)


PLUGIN_MODULE = "chatcore_bench_noop_plugins"


def plugin_entries() -> list[dict[str, Any]]:
    # A module of our own in sys.modules, rather than ``__main__``: under
    # ``python -m cProfile`` or a test runner, ``__main__`` is not this file.
    module = sys.modules.get(PLUGIN_MODULE)
    if module is None:
        module = types.ModuleType(PLUGIN_MODULE, "The bench's no-op plugins.")
        for cls in NOOP_PLUGINS:
            setattr(module, cls.__name__, cls)
        sys.modules[PLUGIN_MODULE] = module
    return [
        {"plugin": f"{PLUGIN_MODULE}:{cls.__name__}", "name": cls.metadata.name}
        for cls in NOOP_PLUGINS
    ]


def make_config(data_dir: Path, *, with_plugins: bool) -> Config:
    # The shipped default with an empty environment: a user's $CHATCORE_* or config
    # file must not change what is measured.
    overrides: dict[str, Any] = {"data_dir": str(data_dir), "default_backend": BACKEND}
    if with_plugins:
        overrides["plugins"] = plugin_entries()
    return load_config(shipped_config_path(), env={}, **overrides)


# --- statistics and tables ------------------------------------------------------------------


# --- 1. per-turn overhead -------------------------------------------------------------------

Lane = Callable[[], Awaitable[int]]


def pipeline_lane(engine: Engine) -> Lane:
    conversation = engine.conversation()

    async def turn() -> int:
        start = time.perf_counter_ns()
        await conversation.send(PROMPT)
        return time.perf_counter_ns() - start

    return turn


def direct_lane(provider: BaseBackendProvider, conversation_id: str) -> Lane:
    """The backend alone, on a context shaped like the pipeline's (history included)."""
    history: list[Message] = []

    async def turn() -> int:
        user = Message(role=Role.USER, content=PROMPT)
        context = ChatContext(
            conversation_id=conversation_id,
            messages=(*history, user),
            backend=BACKEND,
            stream=False,
        )
        start = time.perf_counter_ns()
        parts = [chunk.text async for chunk in provider.stream(context)]
        elapsed = time.perf_counter_ns() - start
        history.extend((user, Message(role=Role.ASSISTANT, content="".join(parts))))
        return elapsed

    return turn


async def run_lanes(lanes: Sequence[Lane], sizes: Sizes) -> list[list[int]]:
    """Warm each lane up, then measure them round-robin in blocks so drift hits all alike."""
    for lane in lanes:
        for _ in range(sizes.warmup):
            await lane()
    samples: list[list[int]] = [[] for _ in lanes]
    done = 0
    while done < sizes.turns:
        count = min(sizes.block, sizes.turns - done)
        for lane, sink in zip(lanes, samples, strict=True):
            for _ in range(count):
                sink.append(await lane())
        done += count
    return samples


def check_plugins(engine: Engine, report: Report, turns: int) -> None:
    status = engine.plugins.get_plugin_status()
    names = [cls.metadata.name for cls in NOOP_PLUGINS]
    problems = []
    for name in names:
        s = status.get(name)
        if s is None or s.state != "active":
            problems.append(f"{name} is {s.state if s else 'missing'}")
        elif s.failures or s.calls < turns:
            problems.append(f"{name}: {s.calls} calls, {s.failures} failures")
    detail = "; ".join(problems) or f"{len(names)} active, each called every turn, no failures"
    report.check("no-op plugins", not problems, detail)


def count_messages(db_path: Path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM messages").fetchone()
    return int(count)


def history_row(
    label: str, five_ns: Sequence[int], direct_ns: Sequence[int], start: int, sizes: Sizes
) -> Row:
    """Overhead over a stretch of the run: the history sent each turn grows as it goes."""
    five, direct = Summary.of_ns(five_ns), Summary.of_ns(direct_ns)
    first = 2 * (sizes.warmup + start)
    last = first + 2 * (five.n - 1)
    return Row(
        f"… of which the {label} {five.n} turns (history {first:,}-{last:,} messages)",
        ms(five.median - direct.median),
        ms(five.p95 - direct.p95),
        ms(direct.median),
        ratio(five.median, direct.median),
    )


async def per_turn(sizes: Sizes, tmp: Path, report: Report) -> None:
    zero_config = make_config(tmp / "per-turn-zero", with_plugins=False)
    five_config = make_config(tmp / "per-turn-five", with_plugins=True)
    async with open_engine(zero_config) as zero, open_engine(five_config) as five:
        provider = five.plugins.get_backend_provider(BACKEND)
        lanes = [direct_lane(provider, "direct"), pipeline_lane(zero), pipeline_lane(five)]
        direct_ns, zero_ns, five_ns = await run_lanes(lanes, sizes)
        check_plugins(five, report, sizes.warmup + sizes.turns)
    expected = 2 * (sizes.warmup + sizes.turns)
    for config in (zero_config, five_config):
        stored = count_messages(config.db_path)
        report.check(
            f"messages stored ({config.resolved_data_dir.name})",
            stored == expected,
            f"{stored:,} (expected {expected:,})",
        )

    direct, zero_s, five_s = (Summary.of_ns(s) for s in (direct_ns, zero_ns, five_ns))
    peer = ms(direct.median)
    over_median = five_s.median - direct.median
    over_p95 = five_s.p95 - direct.p95
    edge = min(sizes.block, sizes.turns)
    met_p50 = report.target("per-turn overhead p50", over_median <= OVERHEAD_P50_TARGET_MS)
    met_p95 = report.target("per-turn overhead p95", over_p95 <= OVERHEAD_P95_TARGET_MS)
    rows = [
        Row("echo backend called directly (peer)", ms(direct.median), ms(direct.p95)),
        Row(
            "pipeline, no plugins",
            ms(zero_s.median),
            ms(zero_s.p95),
            peer,
            ratio(zero_s.median, direct.median),
        ),
        Row(
            "pipeline, 5 no-op plugins",
            ms(five_s.median),
            ms(five_s.p95),
            peer,
            ratio(five_s.median, direct.median),
        ),
        Row(
            "overhead, no plugins (pipeline - backend)",
            ms(zero_s.median - direct.median),
            ms(zero_s.p95 - direct.p95),
            peer,
            ratio(zero_s.median, direct.median),
        ),
        Row(
            "**overhead, 5 no-op plugins** (pipeline - backend)",
            ms(over_median),
            ms(over_p95),
            peer,
            ratio(five_s.median, direct.median),
            f"p50 ≤ {OVERHEAD_P50_TARGET_MS} ms, p95 ≤ {OVERHEAD_P95_TARGET_MS:g} ms",
            f"p50 {met_p50}, p95 {met_p95}",
        ),
        *(
            history_row(label, five_ns[part], direct_ns[part], start, sizes)
            for label, part, start in (
                ("first", slice(0, edge), 0),
                ("last", slice(-edge, None), sizes.turns - edge),
            )
        ),
        Row(
            "the 5 plugins' own cost (5 plugins - none)",
            ms(five_s.median - zero_s.median),
            ms(five_s.p95 - zero_s.p95),
            ms(zero_s.median),
            ratio(five_s.median, zero_s.median),
        ),
    ]
    print_table(
        f"Per-turn latency: sequential `send` on one conversation "
        f"({sizes.warmup:,} warm-up + {sizes.turns:,} measured turns per row)",
        rows,
        [
            "Rows were measured interleaved, in blocks of "
            f"{sizes.block} turns. The conversation's history grows by two messages a "
            "turn; the direct backend is given the same history, so backend work "
            "that scales with it cancels out of the overhead."
        ],
    )
    report.print_checks()


# --- 2. throughput --------------------------------------------------------------------------


async def concurrent_turns(
    conversations: int, turns: int, turn_factory: Callable[[], Lane]
) -> tuple[float, list[int]]:
    """``conversations`` tasks, each ``turns`` sequential turns; returns (seconds, latencies)."""
    latencies: list[int] = []
    lanes = [turn_factory() for _ in range(conversations)]

    async def talk(lane: Lane) -> None:
        for _ in range(turns):
            latencies.append(await lane())

    start = time.perf_counter_ns()
    async with trio.open_nursery() as nursery:
        for lane in lanes:
            nursery.start_soon(talk, lane)
    return (time.perf_counter_ns() - start) / 1e9, latencies


def direct_lanes(provider: BaseBackendProvider) -> Callable[[], Lane]:
    """A factory of direct-backend lanes, each with a conversation id of its own."""
    counter = iter(range(1 << 62))
    return lambda: direct_lane(provider, f"direct-{next(counter)}")


async def throughput(sizes: Sizes, tmp: Path, report: Report) -> None:
    n_conv, n_turns = sizes.conversations, sizes.conversation_turns
    total = n_conv * n_turns
    rates: list[float] = []
    latencies: list[int] = []
    peer_rates: list[float] = []
    peer_latencies: list[int] = []
    for run in range(sizes.throughput_runs):
        config = make_config(tmp / f"throughput-{run}", with_plugins=True)
        async with open_engine(config) as engine:
            provider = engine.plugins.get_backend_provider(BACKEND)
            seconds, lat = await concurrent_turns(n_conv, n_turns, lambda: pipeline_lane(engine))
            rates.append(total / seconds)
            latencies += lat
            seconds, lat = await concurrent_turns(n_conv, n_turns, direct_lanes(provider))
            peer_rates.append(total / seconds)
            peer_latencies += lat
            check_plugins(engine, report, total)
        stored = count_messages(config.db_path)
        report.check(
            f"messages stored (run {run + 1})",
            stored == 2 * total,
            f"{stored:,} (expected 2 x {total:,} turns = {2 * total:,})",
        )

    rate = sorted(rates)[len(rates) // 2]
    peer_rate = sorted(peer_rates)[len(peer_rates) // 2]
    lat_s, peer_lat = Summary.of_ns(latencies), Summary.of_ns(peer_latencies)
    rows = [
        Row(
            "**throughput** (turns/s)",
            f"{rate:,.0f}",
            "—",
            f"{peer_rate:,.0f}",
            ratio(rate, peer_rate),
            f"≥ {THROUGHPUT_TARGET:,.0f} turns/s",
            report.target("throughput", rate >= THROUGHPUT_TARGET),
        ),
        Row(
            "per-turn latency under load",
            ms(lat_s.median),
            ms(lat_s.p95),
            ms(peer_lat.median),
            ratio(lat_s.median, peer_lat.median),
        ),
    ]
    runs = sizes.throughput_runs
    print_table(
        f"Throughput: {n_conv} concurrent conversations x {n_turns} sequential turns "
        f"= {total:,} turns, 5 no-op plugins, persisted",
        rows,
        [
            f"Throughput is the median of {runs} run{'s' if runs > 1 else ''}, each on a "
            "fresh database; latencies are pooled over the runs. The peer is the echo "
            "backend called directly by the same number of tasks. Latency under load is "
            "mostly queueing: about conversations / throughput, as every turn waits for "
            "the one Trio thread."
        ],
    )
    report.print_checks()


# --- 3. cold start --------------------------------------------------------------------------


def chatcore_command() -> list[str]:
    script = Path(sys.executable).parent / "chatcore"
    if script.is_file():
        return [str(script)]
    # No console script (not installed with pip -e): the same entry point by hand.
    return [sys.executable, "-c", "from chatcore.cli import main; main()"]


def time_process(argv: Sequence[str], env: dict[str, str]) -> int:
    start = time.perf_counter_ns()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter_ns() - start


def cold_start(sizes: Sizes, tmp: Path, report: Report) -> None:
    # An installed package has its bytecode; with PYTHONDONTWRITEBYTECODE set (as on
    # some CI machines) every run would compile chatcore from source instead.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["CHATCORE_DATA_DIR"] = str(tmp / "cold")
    commands = {
        "peer": [sys.executable, "-c", "pass"],
        "import": [sys.executable, "-c", "import chatcore.cli"],
        "help": [*chatcore_command(), "--help"],
    }
    samples: dict[str, list[int]] = {key: [] for key in commands}
    for argv in commands.values():
        time_process(argv, env)
    for _ in range(sizes.cold_runs):
        for key, argv in commands.items():
            samples[key].append(time_process(argv, env))
    peer, imp, helps = (Summary.of_ns(samples[k]) for k in ("peer", "import", "help"))
    rows = [
        Row("`python -c pass` (peer)", ms(peer.median, 1), ms(peer.p95, 1)),
        Row(
            "`python -c 'import chatcore.cli'`",
            ms(imp.median, 1),
            ms(imp.p95, 1),
            ms(peer.median, 1),
            ratio(imp.median, peer.median),
        ),
        Row(
            "**`chatcore --help`**",
            ms(helps.median, 1),
            ms(helps.p95, 1),
            ms(peer.median, 1),
            ratio(helps.median, peer.median),
            f"≤ {COLD_START_TARGET_MS:g} ms",
            report.target("cold start", helps.median <= COLD_START_TARGET_MS),
        ),
    ]
    print_table(
        f"Cold start: whole process, {sizes.cold_runs} runs after 1 warm-up, interleaved",
        rows,
        [
            f"`chatcore` is `{' '.join(commands['help'])}`. The warm-up run writes "
            "chatcore's bytecode, as installing it does."
        ],
    )


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Sizes:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a few seconds")
    parser.add_argument("--turns", type=int, help="measured sequential turns per row")
    parser.add_argument("--conversations", type=int, help="concurrent conversations")
    parser.add_argument(
        "--conversation-turns", type=int, help="sequential turns of each concurrent conversation"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    chosen = {
        "turns": args.turns,
        "conversations": args.conversations,
        "conversation_turns": args.conversation_turns,
    }
    for key, value in chosen.items():
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return Sizes(**{**vars(sizes), **{k: v for k, v in chosen.items() if v is not None}})


def print_header(sizes: Sizes) -> None:
    print("# chatcore pipeline benchmark\n")
    print(machine("trio", "sqlite", "chatcore"))
    print(
        f"\nSizes: {sizes.warmup:,} warm-up + {sizes.turns:,} measured sequential turns; "
        f"{sizes.conversations} conversations x {sizes.conversation_turns} turns "
        f"x {sizes.throughput_runs} run(s); {sizes.cold_runs} cold starts."
    )


def main(argv: Sequence[str] | None = None) -> int:
    sizes = parse_args(argv)
    print_header(sizes)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="chatcore-bench-") as name:
        tmp = Path(name)
        trio.run(per_turn, sizes, tmp, report)
        trio.run(throughput, sizes, tmp, report)
        cold_start(sizes, tmp, report)
    return conclude(report)


if __name__ == "__main__":
    sys.exit(main())
