"""Plugin isolation benchmark: what running a plugin in a child process costs.

Run ``python bench/plugins.py``; ``--quick`` shrinks every count so the run takes a
few seconds. Two sections: the overhead of one call to a process-isolated
processor over the same processor inline (through the hook registry, as the
pipeline calls it), and turns/s with three process plugins against three inline.
It reports and does not judge: a missed target prints ``MISSED`` and the exit
status stays 0; a broken run (a plugin failing, a child restarted, turns lost)
exits 1.

The no-op processor below is loaded by the engine from this very file (a
``path.py:Class`` spec), so the child process imports it the same way; module
level therefore imports nothing from ``bench/``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from chatcore import open_engine
from chatcore.config import Config, load_config, shipped_config_path
from chatcore.messages import ChatContext, Message, Role
from chatcore.plugin import BaseMessageProcessor, PluginMetadata, PluginType
from chatcore.result import PluginResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from _report import Report

    from chatcore._engine import Engine

BACKEND = "echo"
CALL_OVERHEAD_P50_TARGET_MS = 0.3
HISTORY_MESSAGES = 10
"""Messages of earlier turns in the context each measured call carries."""


class BenchNoop(BaseMessageProcessor):
    """Returns the message unchanged: all that is measured is how the call gets there."""

    metadata = PluginMetadata(name="bench_noop", plugin_type=PluginType.MESSAGE_PROCESSOR)

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        return PluginResult.ok(message)


SPEC = f"{Path(__file__).resolve()}:BenchNoop"


@dataclass(frozen=True)
class Sizes:
    warmup: int
    calls: int
    block: int
    conversations: int
    conversation_turns: int


FULL = Sizes(warmup=500, calls=5_000, block=250, conversations=50, conversation_turns=20)
QUICK = Sizes(warmup=50, calls=300, block=50, conversations=10, conversation_turns=5)


def make_config(data_dir: Path, *, isolation: str, count: int) -> Config:
    # The shipped default with an empty environment, so a user's settings change nothing.
    plugins = [
        {"plugin": SPEC, "name": f"noop_{n}", "isolation": isolation} for n in range(1, count + 1)
    ]
    return load_config(
        shipped_config_path(),
        env={},
        data_dir=str(data_dir),
        default_backend=BACKEND,
        plugins=plugins,
    )


def count_messages(db_path: Path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM messages").fetchone()
    return int(count)


def sample_context() -> tuple[Message, ChatContext]:
    history = [
        Message(
            role=Role.USER if n % 2 == 0 else Role.ASSISTANT,
            content=f"message {n} of the history, " + "some words of conversation " * 6,
        )
        for n in range(HISTORY_MESSAGES)
    ]
    user = Message(role=Role.USER, content="how much does one plugin call cost")
    context = ChatContext(
        conversation_id="bench", messages=(*history, user), backend=BACKEND, model=BACKEND
    )
    return user, context


def check_plugins(engine: Engine, report: Report, label: str, calls: int, *, process: bool) -> None:
    problems = []
    for name, status in engine.plugins.get_plugin_status().items():
        if not name.startswith("noop_"):
            continue
        if status.state != "active" or status.failures or status.calls < calls:
            problems.append(f"{name}: {status.state}, {status.calls} calls, {status.failures} fail")
        elif process and (status.process is None or status.process["restarts"]):
            problems.append(f"{name}: process {status.process}")
        elif not process and status.process is not None:
            problems.append(f"{name} runs in a process but should be inline")
    report.check(label, not problems, "; ".join(problems) or f"every call ok ({calls:,}+ each)")


async def per_call(sizes: Sizes, tmp: Path, report: Report) -> None:
    from _report import Row, Summary, ms, print_table, ratio

    message, context = sample_context()
    inline_config = make_config(tmp / "call-inline", isolation="inline", count=1)
    process_config = make_config(tmp / "call-process", isolation="process", count=1)
    async with open_engine(inline_config) as inline, open_engine(process_config) as isolated:
        engines = (inline, isolated)
        samples: list[list[int]] = [[], []]

        async def one(engine: Engine) -> int:
            start = time.perf_counter_ns()
            outcome = await engine.plugins.execute_message_processors(message, context)
            elapsed = time.perf_counter_ns() - start
            if outcome.failures:
                raise RuntimeError(f"the no-op failed: {outcome.failures[0].error}")
            return elapsed

        for engine in engines:
            for _ in range(sizes.warmup):
                await one(engine)
        done = 0
        while done < sizes.calls:
            count = min(sizes.block, sizes.calls - done)
            for engine, sink in zip(engines, samples, strict=True):
                for _ in range(count):
                    sink.append(await one(engine))
            done += count
        total = sizes.warmup + sizes.calls
        check_plugins(inline, report, "inline no-op calls", total, process=False)
        check_plugins(isolated, report, "process no-op calls", total, process=True)
        pid = isolated.status().plugins["noop_1"].process["pid"]  # type: ignore[index]

    inline_s, process_s = Summary.of_ns(samples[0]), Summary.of_ns(samples[1])
    overhead = process_s.median - inline_s.median
    met = report.target("per-call overhead p50", overhead <= CALL_OVERHEAD_P50_TARGET_MS)
    peer = ms(inline_s.median)
    print_table(
        f"Per call: one processor, context of {HISTORY_MESSAGES + 1} messages",
        [
            Row("inline processor (peer)", ms(inline_s.median), ms(inline_s.p95)),
            Row(
                f"process-isolated processor (child pid {pid})",
                ms(process_s.median),
                ms(process_s.p95),
                peer,
                ratio(process_s.median, inline_s.median),
            ),
            Row(
                "**overhead of the process boundary** (process - inline)",
                ms(overhead),
                ms(process_s.p95 - inline_s.p95),
                peer,
                ratio(process_s.median, inline_s.median),
                f"p50 ≤ {CALL_OVERHEAD_P50_TARGET_MS} ms",
                met,
            ),
        ],
        [
            "Each call goes through the hook registry (breaker, timeout, stats) as in a turn; "
            "the process call is one JSON line each way over the child's warm pipes."
        ],
    )


async def turns_per_second(sizes: Sizes, tmp: Path, report: Report) -> None:
    from _report import Row, print_table, ratio

    n_conv, n_turns = sizes.conversations, sizes.conversation_turns
    total = n_conv * n_turns
    rates: dict[str, float] = {}
    for isolation in ("inline", "process"):
        config = make_config(tmp / f"turns-{isolation}", isolation=isolation, count=3)
        async with open_engine(config) as engine:
            # One warm-up turn, so the first child round trips don't count.
            await engine.conversation().send("warm up")

            async def talk(engine: Engine = engine) -> None:
                conversation = engine.conversation()
                for n in range(n_turns):
                    await conversation.send(f"turn {n}")

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(n_conv):
                    nursery.start_soon(talk)
            rates[isolation] = total / (time.perf_counter() - start)
            label = f"{isolation} plugins in turns"
            check_plugins(engine, report, label, total + 1, process=isolation == "process")
        stored = count_messages(config.db_path)
        expected = 2 * (total + 1)
        report.check(
            f"messages stored ({isolation})", stored == expected, f"{stored:,} of {expected:,}"
        )
    print_table(
        f"Turns/s: {n_conv} conversations x {n_turns} turns at once, three no-op processors",
        [
            Row("three inline processors (peer)", f"{rates['inline']:,.0f}"),
            Row(
                "three process-isolated processors",
                f"{rates['process']:,.0f}",
                "—",
                f"{rates['inline']:,.0f}",
                ratio(rates["process"], rates["inline"]),
            ),
        ],
    )


def parse_args(argv: Sequence[str] | None) -> Sizes:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a few seconds")
    parser.add_argument("--calls", type=int, help="measured calls per lane")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.calls:
        sizes = Sizes(sizes.warmup, args.calls, sizes.block, *_turn_sizes(sizes))
    return sizes


def _turn_sizes(sizes: Sizes) -> tuple[int, int]:
    return sizes.conversations, sizes.conversation_turns


def main(argv: Sequence[str] | None = None) -> int:
    from _report import Report, conclude, machine

    sizes = parse_args(argv)
    print("# chatcore plugin isolation benchmark\n")
    print(machine("trio", "chatcore"))
    print(
        f"\nSizes: {sizes.calls:,} measured calls per lane (after {sizes.warmup} warm-up), "
        f"{sizes.conversations} x {sizes.conversation_turns} turns."
    )
    report = Report()
    with tempfile.TemporaryDirectory(prefix="chatcore-bench-plugins-") as name:
        tmp = Path(name)
        trio.run(per_call, sizes, tmp, report)
        report.print_checks()
        trio.run(turns_per_second, sizes, tmp, report)
        report.print_checks()
    return conclude(report)


if __name__ == "__main__":
    # Run as a script, bench/ leads sys.path, and bench/backends.py would shadow the
    # `backends` package that holds the echo backend; _report is imported first.
    import _report  # noqa: F401

    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.exit(main())
