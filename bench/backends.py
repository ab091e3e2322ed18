"""Backend benchmark: chatcore on ``openai`` against the raw client and LiteLLM, as Markdown.

Run ``python bench/backends.py``; ``--quick`` shrinks the counts. Every client
streams the same conversation from the loopback OpenAI fake of ``tests/support/fakes``:
the raw ``openai.AsyncOpenAI`` client (under Trio and under asyncio), chatcore's
default pipeline with persistence, and LiteLLM's ``acompletion``. LiteLLM is not
a chatcore dependency: the first run installs it into ``bench/.venv-litellm``.
Like ``bench/pipeline.py`` this reports and does not judge: a missed target
prints ``MISSED`` and the exit status stays 0; only a broken run (a wrong or
missing reply, a message not stored, a client that could not run) exits 1.

The fake serves from this process; each client runs in a worker process of its
own (this file again, with ``--worker``), so no client shares its GIL with the
server's thread. The LiteLLM worker runs on that venv's Python, so nothing is
imported at the top of this file that the venv lacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from _report import Report, Row, Summary, machine, ms, print_table, ratio

if TYPE_CHECKING:
    from collections.abc import Sequence

    from chatcore import Conversation, Engine

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LITELLM_VENV = BENCH_DIR / ".venv-litellm"

MODEL = "gpt-4o-mini"
# 20 streamed pieces: a short reply, about what a chat model sends for one sentence.
REPLY_CHUNKS = (
    "Sure",
    ",",
    " one",
    " turn",
    " takes",
    " as",
    " long",
    " as",
    " the",
    " model",
    " needs",
    ",",
    " plus",
    " whatever",
    " the",
    " middleware",
    " adds",
    " on",
    " top",
    ".",
)
REPLY_TEXT = "".join(REPLY_CHUNKS)
CONVERSATION_TURNS = 20
"""Every lane starts a fresh conversation this often, so the history sent stays realistic."""

# A key per lane: the fake records the bearer token, which tells whose request it got.
LANE_KEYS = {
    "raw_trio": "bench-raw-trio",
    "chatcore": "bench-chatcore",
    "raw_asyncio": "bench-raw-asyncio",
    "ll_raw": "bench-litellm-raw",
    "litellm": "bench-litellm",
}
WORKER_LANES = {
    "trio": ("raw_trio", "chatcore"),
    "asyncio": ("raw_asyncio",),
    "litellm": ("ll_raw", "litellm"),
}

ADDED_P50_TARGET_MS = 1.0
WORKER_TIMEOUT_S = 900


@dataclass(frozen=True)
class Sizes:
    warmup: int
    requests: int


FULL = Sizes(warmup=50, requests=300)
QUICK = Sizes(warmup=5, requests=40)


def prompt(n: int) -> str:
    return f"question {n}: how long does one streamed request take?"


# --- lanes: one client each, measured the same way ------------------------------------------


@dataclass
class Samples:
    """Raw timings of one lane, in nanoseconds, and the replies that came back wrong."""

    ttfc_ns: list[int] = field(default_factory=list)
    total_ns: list[int] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"ttfc_ns": self.ttfc_ns, "total_ns": self.total_ns, "wrong": self.wrong}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Samples:
        return cls(list(data["ttfc_ns"]), list(data["total_ns"]), list(data["wrong"]))


class Lane(Protocol):
    def new_conversation(self) -> None: ...

    async def turn(self, text: str) -> tuple[int, int, str]:
        """One streamed request: (ns to the first text, ns to the end, the reply)."""
        ...


class RawOpenAILane:
    """``AsyncOpenAI`` as an application would call it, keeping its own history."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.history: list[dict[str, str]] = []

    def new_conversation(self) -> None:
        self.history = []

    async def turn(self, text: str) -> tuple[int, int, str]:
        messages = [*self.history, {"role": "user", "content": text}]
        parts: list[str] = []
        first = 0
        start = time.perf_counter_ns()
        stream = await self.client.chat.completions.create(
            model=MODEL,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for event in stream:
                for choice in event.choices:
                    if choice.delta.content:
                        if not first:
                            first = time.perf_counter_ns()
                        parts.append(choice.delta.content)
        end = time.perf_counter_ns()
        reply = "".join(parts)
        self.history = [*messages, {"role": "assistant", "content": reply}]
        return first - start, end - start, reply


class LiteLLMLane:
    """``litellm.acompletion`` with the provider prefix, as LiteLLM's docs call a server."""

    def __init__(self, litellm: Any, api_base: str, api_key: str) -> None:
        self.litellm = litellm
        self.api_base = api_base
        self.api_key = api_key
        self.history: list[dict[str, str]] = []

    def new_conversation(self) -> None:
        self.history = []

    async def turn(self, text: str) -> tuple[int, int, str]:
        messages = [*self.history, {"role": "user", "content": text}]
        parts: list[str] = []
        first = 0
        start = time.perf_counter_ns()
        response = await self.litellm.acompletion(
            model=f"openai/{MODEL}",
            api_base=self.api_base,
            api_key=self.api_key,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in response:
            for choice in chunk.choices:
                if choice.delta.content:
                    if not first:
                        first = time.perf_counter_ns()
                    parts.append(choice.delta.content)
        end = time.perf_counter_ns()
        reply = "".join(parts)
        self.history = [*messages, {"role": "assistant", "content": reply}]
        return first - start, end - start, reply


class ChatcoreLane:
    """``conversation.stream`` on an engine; the stream ends once the reply is stored."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conversation: Conversation = engine.conversation()

    def new_conversation(self) -> None:
        self.conversation = self.engine.conversation()

    async def turn(self, text: str) -> tuple[int, int, str]:
        parts: list[str] = []
        first = 0
        start = time.perf_counter_ns()
        async for chunk in self.conversation.stream(text):
            if chunk.text:
                if not first:
                    first = time.perf_counter_ns()
                parts.append(chunk.text)
        end = time.perf_counter_ns()
        return first - start, end - start, "".join(parts)


async def drive(lanes: dict[str, Lane], sizes: Sizes) -> dict[str, Samples]:
    """Warm each lane up, then measure them interleaved, a conversation at a time.

    Loop-agnostic (it only awaits the lanes), so Trio and asyncio share it. Every
    lane sends the same prompts in the same order.
    """
    samples = {name: Samples() for name in lanes}
    for name, lane in lanes.items():
        for i in range(sizes.warmup):
            if i % CONVERSATION_TURNS == 0:
                lane.new_conversation()
            *_, reply = await lane.turn(prompt(i))
            if reply != REPLY_TEXT:
                samples[name].wrong.append(reply)
    done = 0
    while done < sizes.requests:
        count = min(CONVERSATION_TURNS, sizes.requests - done)
        for name, lane in lanes.items():
            lane.new_conversation()
            sink = samples[name]
            for i in range(count):
                ttfc, total, reply = await lane.turn(prompt(sizes.warmup + done + i))
                sink.ttfc_ns.append(ttfc)
                sink.total_ns.append(total)
                if reply != REPLY_TEXT:
                    sink.wrong.append(reply)
        done += count
    return samples


# --- workers: one process per event loop / environment --------------------------------------


async def trio_lanes(spec: dict[str, Any], sizes: Sizes) -> dict[str, Samples]:
    import openai

    from chatcore import open_engine
    from chatcore.config import load_config

    # An empty environment: a user's $CHATCORE_* must not change what is measured.
    config = load_config(spec["config"], env={})
    client = openai.AsyncOpenAI(
        base_url=spec["api_base"], api_key=LANE_KEYS["raw_trio"], max_retries=0
    )
    try:
        async with open_engine(config, backend="openai") as engine:
            lanes: dict[str, Lane] = {
                "raw_trio": RawOpenAILane(client),
                "chatcore": ChatcoreLane(engine),
            }
            return await drive(lanes, sizes)
    finally:
        await client.close()


async def asyncio_lanes(spec: dict[str, Any], sizes: Sizes) -> dict[str, Samples]:
    import openai

    client = openai.AsyncOpenAI(
        base_url=spec["api_base"], api_key=LANE_KEYS["raw_asyncio"], max_retries=0
    )
    try:
        return await drive({"raw_asyncio": RawOpenAILane(client)}, sizes)
    finally:
        await client.close()


def litellm_lanes(spec: dict[str, Any], sizes: Sizes) -> dict[str, Samples]:
    """LiteLLM beside a raw client of the same process, loop and openai version."""
    # Before the import: no download of the model cost map, no logging chatter.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm  # type: ignore[import-not-found]
    import openai

    litellm.telemetry = False  # gone from recent versions; harmless where it is
    litellm.suppress_debug_info = True
    litellm.callbacks = []
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.input_callback = []

    async def run() -> dict[str, Samples]:
        client = openai.AsyncOpenAI(
            base_url=spec["api_base"], api_key=LANE_KEYS["ll_raw"], max_retries=0
        )
        try:
            lanes: dict[str, Lane] = {
                "ll_raw": RawOpenAILane(client),
                "litellm": LiteLLMLane(litellm, spec["api_base"], LANE_KEYS["litellm"]),
            }
            return await drive(lanes, sizes)
        finally:
            await client.close()

    return asyncio.run(run())


def worker(kind: str, spec_json: str) -> int:
    """Run one worker's lanes and print their timings (and versions) as one JSON line."""
    from importlib.metadata import version

    spec = json.loads(spec_json)
    sizes = Sizes(spec["warmup"], spec["requests"])
    out = sys.stdout
    # A library may print banners; only the JSON goes to the real stdout.
    with contextlib.redirect_stdout(sys.stderr):
        if kind == "trio":
            import trio

            samples = trio.run(trio_lanes, spec, sizes)
        elif kind == "asyncio":
            samples = asyncio.run(asyncio_lanes(spec, sizes))
        else:
            samples = litellm_lanes(spec, sizes)
    packages = ("litellm", "openai", "httpx", "aiohttp") if kind == "litellm" else ()
    result = {
        "versions": {name: version(name) for name in packages},
        "samples": {name: s.as_json() for name, s in samples.items()},
    }
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


@dataclass
class WorkerRun:
    samples: dict[str, Samples] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None
    """Why nothing was measured (no network for the install...): not a broken run."""
    failed: str | None = None
    """The worker ran and failed: the run is broken."""


def run_worker(python: Path | str, kind: str, spec: dict[str, Any]) -> WorkerRun:
    argv = [str(python), str(Path(__file__).resolve()), "--worker", kind, json.dumps(spec)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return WorkerRun(failed=f"the {kind} worker timed out after {WORKER_TIMEOUT_S} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        last = errors[-1] if errors else "no output"
        return WorkerRun(failed=f"the {kind} worker exited {done.returncode}: {last}")
    data = json.loads(lines[-1])
    samples = {name: Samples.from_json(s) for name, s in data["samples"].items()}
    return WorkerRun(samples=samples, versions=data["versions"])


def litellm_python() -> tuple[Path | None, str]:
    """The venv's Python with LiteLLM in it, installing it on first use; else (None, why)."""
    python = LITELLM_VENV / "bin" / "python"
    probe = [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"]
    if python.is_file():
        found = subprocess.run(probe, capture_output=True, text=True)
        if found.returncode == 0:
            return python, found.stdout.strip()
    print(
        f"Installing LiteLLM into {LITELLM_VENV.relative_to(REPO_ROOT)} (first run only)...",
        file=sys.stderr,
        flush=True,
    )
    try:
        if not python.is_file():
            shutil.rmtree(LITELLM_VENV, ignore_errors=True)
            subprocess.run(
                [sys.executable, "-m", "venv", str(LITELLM_VENV)],
                check=True,
                capture_output=True,
                text=True,
            )
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "litellm"],
            check=True,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    except subprocess.CalledProcessError as exc:
        lines = [line for line in (exc.stderr or "").splitlines() if line.strip()]
        return None, f"install failed: {lines[-1] if lines else f'exit {exc.returncode}'}"
    except subprocess.TimeoutExpired:
        return None, "install timed out"
    found = subprocess.run(probe, capture_output=True, text=True)
    if found.returncode != 0:
        return None, "LiteLLM installed but not importable"
    return python, found.stdout.strip()


def write_config(tmp: Path, api_base: str) -> Path:
    path = tmp / "chatcore.toml"
    # json.dumps gives a valid TOML basic string for any path.
    path.write_text(
        f'default_backend = "openai"\n'
        f"data_dir = {json.dumps(str(tmp / 'data'))}\n\n"
        f"[backends.openai]\n"
        f'plugin = "openai"\n'
        f"base_url = {json.dumps(api_base)}\n"
        f"api_key = {json.dumps(LANE_KEYS['chatcore'])}\n"
        f"model = {json.dumps(MODEL)}\n",
        encoding="utf-8",
    )
    return path


def count_messages(config_file: Path) -> dict[str, int]:
    import sqlite3

    from chatcore.config import load_config

    db_path = load_config(config_file, env={}).db_path
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall()
    return {str(status): int(count) for status, count in rows}


# --- statistics and tables (the style of bench/pipeline.py) ---------------------------------


def signed_ms(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f} ms"


LABELS = {
    "raw_trio": "raw `AsyncOpenAI`, Trio (peer)",
    "raw_asyncio": "raw `AsyncOpenAI`, asyncio",
    "chatcore": "chatcore `conversation.stream`, default pipeline, persisted",
    "ll_raw": "raw `AsyncOpenAI`, asyncio, LiteLLM's venv (its peer)",
    "litellm": "LiteLLM `acompletion`, asyncio",
}


def comparison_table(
    title: str,
    metric: str,
    summaries: dict[str, Summary],
    missing: dict[str, str],
    report: Report,
) -> None:
    """One metric for every lane, then the added-cost rows that carry the targets."""
    raw, core = summaries["raw_trio"], summaries["chatcore"]
    rows = [Row(LABELS["raw_trio"], ms(raw.median), ms(raw.p95))]
    for key, peer in (("raw_asyncio", raw), ("chatcore", raw), ("ll_raw", None)):
        s = summaries.get(key)
        if s is None:
            rows.append(Row(LABELS[key], f"not measured: {missing[key]}"))
        elif peer is None:
            rows.append(Row(LABELS[key], ms(s.median), ms(s.p95)))
        else:
            rows.append(
                Row(
                    LABELS[key],
                    ms(s.median),
                    ms(s.p95),
                    ms(peer.median),
                    ratio(s.median, peer.median),
                )
            )
    ll_raw, ll = summaries.get("ll_raw"), summaries.get("litellm")
    if ll_raw is not None and ll is not None:
        rows.append(
            Row(
                LABELS["litellm"],
                ms(ll.median),
                ms(ll.p95),
                ms(ll_raw.median),
                ratio(ll.median, ll_raw.median),
            )
        )
    else:
        rows.append(Row(LABELS["litellm"], f"not measured: {missing['litellm']}"))
    added = core.median - raw.median
    rows.append(
        Row(
            "**chatcore added** (chatcore - raw, Trio)",
            signed_ms(added),
            signed_ms(core.p95 - raw.p95),
            ms(raw.median),
            ratio(core.median, raw.median),
            f"p50 ≤ {ADDED_P50_TARGET_MS:g} ms",
            report.target(f"{metric}: chatcore added p50", added <= ADDED_P50_TARGET_MS),
        )
    )
    if ll_raw is not None and ll is not None:
        ll_added = ll.median - ll_raw.median
        rows.append(
            Row(
                "LiteLLM added (LiteLLM - raw, asyncio, its venv)",
                signed_ms(ll_added),
                signed_ms(ll.p95 - ll_raw.p95),
                ms(ll_raw.median),
                ratio(ll.median, ll_raw.median),
            )
        )
        rows.append(
            Row(
                "**chatcore added vs LiteLLM added**",
                signed_ms(added),
                signed_ms(core.p95 - raw.p95),
                signed_ms(ll_added),
                ratio(added, ll_added) if added > 0 and ll_added > 0 else "—",
                "chatcore < LiteLLM (p50)",
                report.target(f"{metric}: chatcore added < LiteLLM added", added < ll_added),
            )
        )
    else:
        rows.append(
            Row(
                "**chatcore added vs LiteLLM added**",
                signed_ms(added),
                signed_ms(core.p95 - raw.p95),
                "not measured",
                target="chatcore < LiteLLM (p50)",
                met="not judged",
            )
        )
    print_table(title, rows)


# --- checks on what the fake received -------------------------------------------------------


def check_requests(
    report: Report, requests: Sequence[Any], lanes: Sequence[str], per_lane: int
) -> None:
    by_lane: dict[str, list[Any]] = defaultdict(list)
    keys = {f"Bearer {key}": lane for lane, key in LANE_KEYS.items()}
    strangers = 0
    for request in requests:
        lane = keys.get(request.headers.get("authorization", ""))
        if lane is None or request.path != "/v1/chat/completions":
            strangers += 1
        else:
            by_lane[lane].append(request.json)
    counts = {lane: len(by_lane[lane]) for lane in lanes}
    ok = strangers == 0 and all(n == per_lane for n in counts.values())
    report.check(
        "requests served by the fake",
        ok,
        f"{per_lane:,} per client expected, got "
        + ", ".join(f"{lane} {n:,}" for lane, n in counts.items())
        + (f", and {strangers} other requests" if strangers else "")
        + " (no retries, no extra calls)",
    )
    raw, core = by_lane["raw_trio"], by_lane["chatcore"]
    same = sum(a == b for a, b in zip(raw, core, strict=False))
    report.check(
        "request bodies, raw client vs chatcore",
        same == per_lane and len(raw) == len(core),
        f"{same:,} of {per_lane:,} identical JSON, turn by turn",
    )


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a few seconds")
    parser.add_argument("--requests", type=int, help="measured requests per client")
    parser.add_argument("--warmup", type=int, help="warm-up requests per client")
    parser.add_argument(
        "--no-litellm", action="store_true", help="skip LiteLLM (no venv, no install)"
    )
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests is not None and args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    return Sizes(
        warmup=base.warmup if args.warmup is None else args.warmup,
        requests=base.requests if args.requests is None else args.requests,
    )


def print_header(sizes: Sizes, litellm_versions: dict[str, str]) -> None:
    print("# chatcore backend benchmark\n")
    print(machine("trio", "openai", "httpx", "chatcore"))
    if litellm_versions:
        listed = " · ".join(f"{k} {v}" for k, v in litellm_versions.items())
        print(f"\nLiteLLM's venv (`bench/.venv-litellm`): {listed}")
    print(
        f"\nSizes: {sizes.warmup:,} warm-up + {sizes.requests:,} measured streamed requests "
        f"per client, one at a time, a new conversation every {CONVERSATION_TURNS} turns; "
        f"the fake streams {len(REPLY_CHUNKS)} text chunks per reply, with no delay."
    )


def orchestrate(sizes: Sizes, skip_litellm: bool) -> int:
    sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
    from fakes.openai import FakeOpenAI  # type: ignore[import-not-found]

    ll_python, reason = (None, "skipped (--no-litellm)") if skip_litellm else litellm_python()
    report = Report()
    runs: dict[str, WorkerRun] = {}
    stored: dict[str, int] = {}
    with FakeOpenAI(reply_chunks=REPLY_CHUNKS, leading_role_chunk=True) as fake:
        # The fake's handler keeps Nagle's algorithm on, so every streamed reply would
        # stall ~40 ms on a delayed ACK and drown what is measured; real API servers
        # send with TCP_NODELAY. Set before the first connection is accepted.
        fake._httpd.RequestHandlerClass.disable_nagle_algorithm = True
        spec: dict[str, Any] = {
            "api_base": f"{fake.url}/v1",
            "warmup": sizes.warmup,
            "requests": sizes.requests,
        }
        with tempfile.TemporaryDirectory(prefix="chatcore-bench-backends-") as name:
            config = write_config(Path(name), spec["api_base"])
            runs["trio"] = run_worker(sys.executable, "trio", {**spec, "config": str(config)})
            if runs["trio"].failed is None:
                stored = count_messages(config)
        runs["asyncio"] = run_worker(sys.executable, "asyncio", spec)
        if ll_python is None:
            runs["litellm"] = WorkerRun(skipped=reason)
        else:
            runs["litellm"] = run_worker(ll_python, "litellm", spec)
        requests = list(fake.requests)

    print_header(sizes, runs["litellm"].versions)
    samples: dict[str, Samples] = {}
    missing: dict[str, str] = {}
    for kind, run in runs.items():
        samples.update(run.samples)
        if run.failed is not None:
            report.check(f"{kind} worker", False, run.failed)
        for lane in WORKER_LANES[kind]:
            if lane not in run.samples:
                missing[lane] = run.skipped or run.failed or "no samples"
    per_lane = sizes.warmup + sizes.requests
    for key, s in samples.items():
        report.check(
            f"replies ({key})",
            not s.wrong and len(s.total_ns) == sizes.requests,
            f"{len(s.total_ns):,} measured, {len(s.wrong)} not the fake's reply"
            + (f" (first: {s.wrong[0][:60]!r})" if s.wrong else ""),
        )
    if "chatcore" in samples:
        complete = stored.get("complete", 0)
        report.check(
            "chatcore messages stored",
            complete == 2 * per_lane and sum(stored.values()) == complete,
            f"{stored} (expected {2 * per_lane:,} complete)",
        )
        check_requests(report, requests, list(samples), per_lane)
        for title, metric, attr in (
            ("Latency per request: call to end of stream", "latency", "total_ns"),
            ("Time to first chunk: call to the first text chunk", "first chunk", "ttfc_ns"),
        ):
            summaries = {key: Summary.of_ns(getattr(s, attr)) for key, s in samples.items()}
            comparison_table(title, metric, summaries, missing, report)
        print(
            "\nThe fake serves from the benchmark's own process; each worker (Trio: raw "
            "client and chatcore, measured interleaved a conversation at a time; asyncio: raw "
            "client; LiteLLM's venv: its raw client and LiteLLM, interleaved the same way) is "
            "a process of its own. LiteLLM's added cost is taken against the raw client of "
            "its own process, so the event loop and the openai version cancel out. chatcore's "
            "stream ends after the user message and the reply are committed to SQLite."
        )
    report.print_checks()
    print()
    if report.broken:
        print(f"BROKEN RUN (numbers not trustworthy): {', '.join(report.broken)}")
    if report.missed:
        print(f"Targets MISSED: {', '.join(report.missed)}")
    elif "litellm" in missing:
        print(f"LiteLLM not measured ({missing['litellm']}): that target was not judged.")
    elif not report.broken:
        print("All targets met.")
    return 1 if report.broken else 0


def main(argv: Sequence[str] | None = None) -> int:
    # Run as a script, this file's folder leads sys.path and this very file would
    # shadow the ``backends`` package that chatcore loads its backends from.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
    args = parse_args(argv)
    if args.worker is not None:
        kind, spec = args.worker
        if kind not in WORKER_LANES:
            raise SystemExit(f"unknown worker {kind!r}")
        return worker(kind, spec)
    return orchestrate(sizes_from(args), args.no_litellm)


if __name__ == "__main__":
    sys.exit(main())
