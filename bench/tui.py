"""TUI benchmark: first paint, streaming render latency, opening a long conversation.

Run ``python bench/tui.py``; ``--quick`` shrinks every count for a smoke run. It prints
Markdown tables and does not judge: a missed target prints ``MISSED`` and the exit
status stays 0. Only a broken run (the reply on screen is not the text streamed, a
conversation opens with the wrong number of messages) exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import random
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from _report import Report, Row, Summary, conclude, machine, ms, print_table, ratio
from textual.app import App, ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message as UIMessage
from textual.widgets import Markdown, Static

from chatcore import open_engine
from chatcore.config import Config, load_config, shipped_config_path
from chatcore.messages import ChatContext, Chunk, Usage
from chatcore.plugin import BaseBackendProvider, PluginMetadata, PluginType

# Run as a script, bench/ leads sys.path: bench/backends.py would shadow the `backends`
# package (the echo backend) and this very file the `tui` package, so `tui` is only
# imported after this line, inside the functions that need it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

    from textual.pilot import Pilot

    from tui.app import ChatcoreApp

COLS, ROWS = 120, 40
FRAME_MS = 1000 / 60  # Textual paints at most 60 frames a second (TEXTUAL_FPS)

FIRST_PAINT_TARGET_MS = 1_000.0
STREAM_P95_TARGET_MS = 50.0
STREAM_RATE = 200.0  # chunks per second
TOKENS_PER_CHUNK = 4
OPEN_TARGET_MS = 300.0
SWEEP_RUNS = 3

STATUS_MARKER = b"backend echo"  # the status bar: painted with the first full frame
PEER_MARKER = b"textual peer ready"
CTRL_Q = b"\x11"


@dataclass(frozen=True)
class Sizes:
    paint_runs: int
    stream_tokens: int
    stream_runs: int
    open_turns: int
    open_runs: int
    open_all_runs: int
    open_sweep: tuple[int, ...]
    """Other MESSAGES_SHOWN values to try (patched), 3 runs each."""


FULL = Sizes(
    paint_runs=10,
    stream_tokens=4_000,
    stream_runs=3,
    open_turns=500,
    open_runs=10,
    open_all_runs=1,
    open_sweep=(10, 25, 50, 100),
)
QUICK = Sizes(
    paint_runs=2,
    stream_tokens=800,
    stream_runs=1,
    open_turns=110,
    open_runs=1,
    open_all_runs=0,
    open_sweep=(),
)


# --- report ----------------------------------------------------------------------------------


def plural(n: int, word: str = "run") -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def summary(samples_ns: Sequence[int]) -> Summary | None:
    return Summary.of_ns(samples_ns) if samples_ns else None


def cell(s: Summary | None, attr: str = "median", digits: int = 1) -> str:
    return ms(getattr(s, attr), digits) if s is not None else "—"


def cell_ratio(s: Summary | None, peer: Summary | None) -> str:
    return ratio(s.median, peer.median) if s is not None and peer is not None else "—"


# --- generated Markdown ------------------------------------------------------------------------

_VOCABULARY = """
actor pipeline stream backend plugin message reply turn history conversation middleware
circuit store chunk latency frame screen widget render token model request queue nursery
cancel retry channel config router fallback status offline
"""
WORDS = tuple(_VOCABULARY.split())


def markdown_tokens(count: int, seed: int) -> list[str]:
    """``count`` word-sized tokens of a reply shaped like an LLM's: headings, prose, lists, code."""
    rng = random.Random(seed)
    out: list[str] = []
    block = 0
    while len(out) < count:
        kind = ("heading", "prose", "list", "prose", "code", "prose")[block % 6]
        block += 1
        if kind == "heading":
            out += ["## ", f"{rng.choice(WORDS).capitalize()} ", f"{rng.choice(WORDS)}\n\n"]
        elif kind == "prose":
            words = [rng.choice(WORDS) for _ in range(rng.randint(40, 90))]
            words[0] = words[0].capitalize()
            out += [f"{w} " for w in words[:-1]] + [f"{words[-1]}.\n\n"]
        elif kind == "list":
            for _ in range(rng.randint(3, 5)):
                item = [rng.choice(WORDS) for _ in range(rng.randint(6, 12))]
                out += [f"- {item[0]} "] + [f"{w} " for w in item[1:-1]] + [f"{item[-1]}\n"]
            out[-1] += "\n"
        else:
            out.append("```python\n")
            for _ in range(rng.randint(3, 6)):
                a, b = rng.choice(WORDS), rng.choice(WORDS)
                out += [f"{a} ", "= ", f"{b}({a}, ", f"{rng.randint(0, 99)})\n"]
            out.append("```\n\n")
    return out[:count]


def reply_chunks(tokens: int) -> list[str]:
    words = markdown_tokens(tokens, seed=4_000)
    return [
        "".join(words[i : i + TOKENS_PER_CHUNK]) for i in range(0, len(words), TOKENS_PER_CHUNK)
    ]


def history_prompts(turns: int) -> list[str]:
    """Chat-sized messages: mostly one paragraph, some with a short list or a code block."""
    rng = random.Random(1_000)
    prompts = []
    for _ in range(turns):
        words = [rng.choice(WORDS) for _ in range(rng.randint(10, 80))]
        words[0] = words[0].capitalize()
        text = " ".join(words) + "."
        shape = rng.random()
        if shape > 0.85:
            a, b = rng.choice(WORDS), rng.choice(WORDS)
            text += f"\n\n```python\n{a} = {b}({a})\nreturn {a}\n```"
        elif shape > 0.6:
            items = (" ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for _ in range(3))
            text += "\n\n" + "\n".join(f"- {item}" for item in items)
        prompts.append(text)
    return prompts


# --- the paced backend -------------------------------------------------------------------------


@dataclass
class Feed:
    """What the paced backend streams next, and when each chunk was due and created."""

    texts: list[str]
    interval_s: float
    due_ns: list[int] = field(default_factory=list)
    created_ns: list[int] = field(default_factory=list)

    def reset(self) -> None:
        self.due_ns = [0] * len(self.texts)
        self.created_ns = [0] * len(self.texts)

    @property
    def text(self) -> str:
        return "".join(self.texts)


FEED = Feed([], 1 / STREAM_RATE)


class PacedBackend(BaseBackendProvider):
    """Streams ``FEED.texts`` on a fixed schedule, stamping each chunk as it is made."""

    metadata = PluginMetadata(
        name="paced",
        plugin_type=PluginType.BACKEND_PROVIDER,
        description="bench: a reply streamed at a fixed chunk rate",
    )

    async def stream(self, context: ChatContext) -> AsyncIterator[Chunk]:
        feed = FEED
        feed.reset()
        last = len(feed.texts) - 1
        # An absolute schedule, so a slow consumer cannot slow the producer down with it.
        start = trio.current_time()
        start_ns = time.perf_counter_ns()
        for index, text in enumerate(feed.texts):
            await trio.sleep_until(start + index * feed.interval_s)
            feed.due_ns[index] = start_ns + round(index * feed.interval_s * 1e9)
            feed.created_ns[index] = time.perf_counter_ns()
            done = index == last
            yield Chunk(
                text=text,
                index=index,
                done=done,
                usage=Usage(1, len(feed.texts) * TOKENS_PER_CHUNK) if done else None,
                model="paced" if done else None,
            )


PLUGIN_MODULE = "chatcore_bench_tui_plugins"


def paced_spec() -> str:
    # A module of our own in sys.modules rather than ``__main__``, which is not this
    # file under ``python -m cProfile`` or a test runner.
    if PLUGIN_MODULE not in sys.modules:
        module = types.ModuleType(PLUGIN_MODULE, "The TUI bench's paced backend.")
        module.PacedBackend = PacedBackend  # type: ignore[attr-defined]
        sys.modules[PLUGIN_MODULE] = module
    return f"{PLUGIN_MODULE}:PacedBackend"


def make_config(data_dir: Path, *, backend: str = "echo") -> Config:
    # The shipped default with an empty environment: a user's $CHATCORE_* or config
    # file must not change what is measured.
    backends = {"echo": {"plugin": "echo"}, "paced": {"plugin": paced_spec()}}
    return load_config(
        shipped_config_path(),
        env={},
        data_dir=str(data_dir),
        default_backend=backend,
        backends=backends,
    )


# --- instrumentation ---------------------------------------------------------------------------


class Probe:
    """Receives the hooks below; each section subclasses it."""

    def frame(self, app: App[Any], now: int) -> None:
        """A frame was painted (headless: rendered to terminal bytes, then dropped)."""

    def handed(self, fragment: str, now: int) -> None:
        """The chat screen handed ``fragment`` to a MessageView."""

    def appended(self, widget: Any, fragment: str, now: int) -> None:
        """``widget`` (a Markdown, or the chat's streaming body) finished showing ``fragment``."""

    def retarget(self, widget: Any) -> None:
        """``widget`` now shows the reply instead of the one ``appended`` reported."""


@contextmanager
def instrumented(probe: Probe) -> Iterator[None]:
    """Patch Textual (and MessageView, when it streams with ``append``) to report to ``probe``."""
    from textual._compositor import CompositorUpdate
    from textual.await_complete import AwaitComplete

    from tui.screens import chat

    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, replacement: Any) -> None:
        patches.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, replacement)

    display = App._display

    def display_frame(app: App[Any], screen: Any, renderable: Any) -> None:
        display(app, screen, renderable)
        if renderable is None or app._batch_count:
            return
        if isinstance(renderable, CompositorUpdate) and app.is_headless:
            # What a real driver does before writing; headless Textual skips it.
            renderable.render_segments(app.console)
        probe.frame(app, time.perf_counter_ns())

    patch(App, "_display", display_frame)

    markdown_append = Markdown.append

    def append_markdown(widget: Markdown, markdown: str) -> AwaitComplete:
        inner = markdown_append(widget, markdown)

        async def appended() -> None:
            await inner
            probe.appended(widget, markdown, time.perf_counter_ns())

        return AwaitComplete(appended())

    patch(Markdown, "append", append_markdown)

    from tui.widgets import message

    body_append = getattr(message, "StreamingBody", None) and message.StreamingBody.append
    if body_append is not None:
        # The chat streams into its own body widget, not through Markdown.append.

        async def append_body(body: Any, fragment: str) -> None:
            await body_append(body, fragment)
            probe.appended(body, fragment, time.perf_counter_ns())

        patch(message.StreamingBody, "append", append_body)

    view_swap = chat.MessageView._show_as_markdown

    async def swap_view(view: Any, streaming: Any) -> None:
        await view_swap(view, streaming)
        # The streaming body gave way to a Markdown widget holding the same text.
        for widget in view.query(Markdown):
            probe.retarget(widget)

    patch(chat.MessageView, "_show_as_markdown", swap_view)

    view_append = getattr(chat.MessageView, "append", None)
    if view_append is not None:

        async def append_view(view: Any, fragment: str) -> None:
            probe.handed(fragment, time.perf_counter_ns())
            await view_append(view, fragment)

        patch(chat.MessageView, "append", append_view)
    try:
        yield
    finally:
        for owner, name, original in reversed(patches):
            if original is None:  # it was inherited
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def at_end(log: VerticalScroll) -> bool:
    return log.scroll_y >= log.max_scroll_y - 0.5


async def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def engine_ready(app: ChatcoreApp, pilot: Pilot[Any]) -> None:
    if not await wait_for(lambda: app.bridge.engine is not None, 30):
        raise RuntimeError("the engine did not start in 30 s")
    await pilot.pause()


# --- 1. first paint ----------------------------------------------------------------------------

_ESCAPES = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")

PEER_APP = f"""
from textual.app import App
from textual.widgets import Footer, Static

class Peer(App):
    def compose(self):
        yield Static("{PEER_MARKER.decode()}")
        yield Footer()

Peer().run()
"""


@dataclass
class PtyRun:
    first_output_ns: int | None = None
    first_paint_ns: int | None = None
    exit_ns: int | None = None
    quit_ns: int | None = None
    returncode: int | None = None


def run_in_pty(
    argv: Sequence[str], env: dict[str, str], marker: bytes | None, timeout: float = 20.0
) -> PtyRun:
    """Spawn ``argv`` on a fresh pseudo-terminal; time first output, ``marker`` and exit.

    With a marker, ctrl+q is sent once it has appeared and the process is reaped.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    run = PtyRun()
    buffer = b""
    start = time.perf_counter_ns()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    quit_at: int | None = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every process on the terminal has gone
                    data = b""
                now = time.perf_counter_ns()
                if data:
                    if run.first_output_ns is None:
                        run.first_output_ns = now - start
                    if marker is not None and run.first_paint_ns is None:
                        buffer += data
                        if marker in _ESCAPES.sub(b"", buffer):
                            run.first_paint_ns = now - start
                            os.write(master, CTRL_Q)
                            quit_at = now
                    continue
            if proc.poll() is not None:
                now = time.perf_counter_ns()
                run.exit_ns = now - start
                run.quit_ns = now - quit_at if quit_at is not None else None
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        run.returncode = proc.wait()
        os.close(master)
    return run


def chatcore_command() -> list[str]:
    script = Path(sys.executable).parent / "chatcore"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from chatcore.cli import main; main()"]


def first_paint(sizes: Sizes, tmp: Path, report: Report) -> None:
    config = tmp / "paint.toml"
    config.write_text(
        f'default_backend = "echo"\ndata_dir = "{tmp / "paint-data"}"\n'
        '[backends.echo]\nplugin = "echo"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATCORE_", "TEXTUAL"))}
    env["TERM"] = "xterm-256color"
    commands: dict[str, tuple[list[str], bytes | None]] = {
        "pass": ([sys.executable, "-c", "pass"], None),
        "import": ([sys.executable, "-c", "import tui.app"], None),
        "peer": ([sys.executable, "-c", PEER_APP], PEER_MARKER),
        "tui": ([*chatcore_command(), "tui", "--config", str(config)], STATUS_MARKER),
    }
    runs: dict[str, list[PtyRun]] = {key: [] for key in commands}
    for argv, marker in commands.values():  # warm-up: page cache, .pyc files
        run_in_pty(argv, env, marker)
    for _ in range(sizes.paint_runs):
        for key, (argv, marker) in commands.items():
            runs[key].append(run_in_pty(argv, env, marker))

    def pick(key: str, attr: str) -> Summary | None:
        return summary([v for r in runs[key] if (v := getattr(r, attr)) is not None])

    passed, imported = pick("pass", "exit_ns"), pick("import", "exit_ns")
    peer, peer_output = pick("peer", "first_paint_ns"), pick("peer", "first_output_ns")
    paint, output = pick("tui", "first_paint_ns"), pick("tui", "first_output_ns")
    quit_ = pick("tui", "quit_ns")
    unpainted = sum(r.first_paint_ns is None for r in runs["tui"])
    bad_exit = [r.returncode for r in runs["tui"] if r.returncode != 0]
    report.check(
        "chatcore tui painted and quit",
        not unpainted and not bad_exit,
        f"{len(runs['tui']) - unpainted}/{len(runs['tui'])} runs painted the status bar; "
        f"exit codes {', '.join(sorted({str(r.returncode) for r in runs['tui']}))}",
    )
    met = report.target("first paint", paint is not None and paint.median <= FIRST_PAINT_TARGET_MS)
    rows = [
        Row("`python -c pass`: start to exit", cell(passed), cell(passed, "p95")),
        Row(
            "`python -c 'import tui.app'`: start to exit",
            cell(imported),
            cell(imported, "p95"),
            cell(passed),
            cell_ratio(imported, passed),
        ),
        Row(
            "bare Textual app: start to first frame (peer)",
            cell(peer),
            cell(peer, "p95"),
            cell(passed),
            cell_ratio(peer, passed),
        ),
        Row(
            "`chatcore tui`: start to first output (alternate screen)",
            cell(output),
            cell(output, "p95"),
            cell(peer_output),
            cell_ratio(output, peer_output),
        ),
        Row(
            "**`chatcore tui`: start to first paint** (status bar on screen)",
            cell(paint),
            cell(paint, "p95"),
            cell(peer),
            cell_ratio(paint, peer),
            f"≤ {FIRST_PAINT_TARGET_MS:,.0f} ms",
            met,
        ),
        Row("`chatcore tui`: ctrl+q to exit", cell(quit_), cell(quit_, "p95")),
    ]
    print_table(
        f"First paint: a real process on a {COLS}x{ROWS} pseudo-terminal "
        f"({plural(sizes.paint_runs)} after 1 warm-up, interleaved)",
        rows,
        [
            f"`chatcore tui` is `{' '.join(commands['tui'][0][:-2])} --config <echo config>` "
            "with TERM=xterm-256color and a fresh data folder. First paint is the first "
            "read from the terminal after which the output, escape sequences removed, "
            f"contains the status bar's `{STATUS_MARKER.decode()}`; the bare Textual app "
            "(a Static and a Footer) is timed the same way to its own text."
        ],
    )
    report.print_checks()


# --- 2. streaming --------------------------------------------------------------------------------


class StreamProbe(Probe):
    """Stamps, per chunk, when it reached the screen, the Markdown widget and a frame."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        ends: list[int] = []
        total = 0
        for text in feed.texts:
            total += len(text)
            ends.append(total)
        self.ends = ends
        n = len(ends)
        self.handed_ns = [0] * n
        self.in_widget_ns = [0] * n
        self.painted_ns = [0] * n
        self.log: VerticalScroll | None = None
        self.target: Any = None
        self._handed = self._in_widget = self._painted = 0
        self._handed_len = self._widget_len = 0
        self.frames: list[int] = []
        self.frames_behind = 0

    def _stamp(self, stamps: list[int], done: int, length: int, now: int) -> int:
        while done < len(self.ends) and self.ends[done] <= length:
            stamps[done] = now
            done += 1
        return done

    def handed(self, fragment: str, now: int) -> None:
        self._handed_len += len(fragment)
        self._handed = self._stamp(self.handed_ns, self._handed, self._handed_len, now)

    def appended(self, widget: Any, fragment: str, now: int) -> None:
        if self.target is None:
            self.target = widget
        if widget is self.target:
            self._widget_len += len(fragment)
            self._in_widget = self._stamp(self.in_widget_ns, self._in_widget, self._widget_len, now)

    def frame(self, app: App[Any], now: int) -> None:
        if self.log is None or self._painted == len(self.ends) or not self._widget_len:
            return
        self.frames.append(now)
        # Text only grows at the end of the target widget, so everything in it is on
        # screen once the widget's last row is inside the visible part of the log.
        placement = app.screen._compositor.visible_widgets.get(self.target)
        if placement is None or placement[0].bottom > placement[1].bottom:
            self.frames_behind += 1
            return
        self._painted = self._stamp(self.painted_ns, self._painted, self._widget_len, now)

    def retarget(self, widget: Any) -> None:
        self.target = widget

    @property
    def all_painted(self) -> bool:
        return self._painted == len(self.ends)


class PeerStreamApp(App[None]):
    """Textual alone: one Markdown in a scrolling log, fed by MarkdownStream on the schedule."""

    CSS = "#log { height: 1fr; padding: 0 1; }"

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="log"):
            yield Markdown()

    async def feed(self, feed: Feed, probe: StreamProbe) -> None:
        log = self.query_one("#log", VerticalScroll)
        stream = Markdown.get_stream(self.query_one(Markdown))
        feed.reset()
        loop = asyncio.get_running_loop()
        start, start_ns = loop.time(), time.perf_counter_ns()
        for index, text in enumerate(feed.texts):
            await asyncio.sleep(max(0.0, start + index * feed.interval_s - loop.time()))
            feed.due_ns[index] = start_ns + round(index * feed.interval_s * 1e9)
            feed.created_ns[index] = now = time.perf_counter_ns()
            probe.handed(text, now)
            await stream.write(text)
            log.scroll_end(animate=False)
        await stream.stop()


@dataclass
class StreamRun:
    due: list[int]
    created: list[int]
    handed: list[int]
    in_widget: list[int]
    painted: list[int]
    frames: list[int]
    frames_behind: int
    unpainted: int
    text_ok: bool

    def lags(self, stamps: list[int], origin: list[int] | None = None) -> list[int]:
        origin = self.created if origin is None else origin
        return [s - o for s, o in zip(stamps, origin, strict=True) if s and o]

    @property
    def rate(self) -> float:
        span = (self.created[-1] - self.created[0]) / 1e9
        return (len(self.created) - 1) / span if span > 0 else 0.0


def stream_result(feed: Feed, probe: StreamProbe, text_ok: bool) -> StreamRun:
    return StreamRun(
        due=list(feed.due_ns),
        created=list(feed.created_ns),
        handed=probe.handed_ns,
        in_widget=probe.in_widget_ns,
        painted=probe.painted_ns,
        frames=probe.frames,
        frames_behind=probe.frames_behind,
        unpainted=sum(1 for p in probe.painted_ns if not p),
        text_ok=text_ok,
    )


async def chat_stream(config: Config, feed: Feed) -> StreamRun:
    from tui.app import ChatcoreApp
    from tui.screens.chat import MessageView

    probe = StreamProbe(feed)
    app = ChatcoreApp(config)
    seconds = len(feed.texts) * feed.interval_s
    with instrumented(probe):
        async with app.run_test(size=(COLS, ROWS)) as pilot:
            await engine_ready(app, pilot)
            probe.log = app.screen.query_one("#log", VerticalScroll)
            app.screen.query_one("#prompt").focus()
            await pilot.press(*"go", "enter")
            await wait_for(lambda: bool(feed.created_ns) and feed.created_ns[-1] > 0, seconds + 30)
            await wait_for(lambda: app.last_reply is not None, 30)
            await wait_for(lambda: probe.all_painted, 5)
            views = list(app.screen.query(MessageView))
            text_ok = bool(views) and views[-1].text == feed.text
            await pilot.press("ctrl+q")
    return stream_result(feed, probe, text_ok)


async def peer_stream(feed: Feed) -> StreamRun:
    probe = StreamProbe(feed)
    app = PeerStreamApp()
    with instrumented(probe):
        async with app.run_test(size=(COLS, ROWS)) as pilot:
            await pilot.pause()
            probe.log = app.query_one("#log", VerticalScroll)
            await app.feed(feed, probe)
            await wait_for(lambda: probe.all_painted, 5)
            text_ok = app.query_one(Markdown).source == feed.text
    return stream_result(feed, probe, text_ok)


def decile(run: StreamRun, first: bool) -> list[int]:
    k = max(1, len(run.created) // 10)
    part = slice(0, k) if first else slice(-k, None)
    return [p - c for p, c in zip(run.painted[part], run.created[part], strict=True) if p and c]


def pooled(runs: Sequence[StreamRun], fn: Callable[[StreamRun], list[int]]) -> Summary | None:
    return summary([v for run in runs for v in fn(run)])


def streaming(sizes: Sizes, tmp: Path, report: Report) -> None:
    texts = reply_chunks(sizes.stream_tokens)
    feed = FEED
    config = make_config(tmp / "stream", backend="paced")
    # Warm-up: imports, CSS, Markdown parser and the code highlighter, in both apps.
    feed.texts = texts[: max(1, len(texts) // 10)]
    asyncio.run(chat_stream(config, feed))
    asyncio.run(peer_stream(feed))
    feed.texts = texts
    chats: list[StreamRun] = []
    peers: list[StreamRun] = []
    for _ in range(sizes.stream_runs):
        chats.append(asyncio.run(chat_stream(make_config(tmp / "stream", backend="paced"), feed)))
        peers.append(asyncio.run(peer_stream(feed)))

    handed = pooled(chats, lambda r: r.lags(r.handed))
    widget, peer_widget = (pooled(rs, lambda r: r.lags(r.in_widget)) for rs in (chats, peers))
    screen, peer_screen = (pooled(rs, lambda r: r.lags(r.painted)) for rs in (chats, peers))
    due, peer_due = (pooled(rs, lambda r: r.lags(r.painted, r.due)) for rs in (chats, peers))
    late = pooled(chats, lambda r: r.lags(r.created, r.due))
    first, peer_first = (pooled(rs, lambda r: decile(r, True)) for rs in (chats, peers))
    last, peer_last = (pooled(rs, lambda r: decile(r, False)) for rs in (chats, peers))
    growth = last.median - first.median if last and first else None
    rates = sorted(r.rate for r in chats)
    peer_rates = sorted(r.rate for r in peers)
    fps = sorted(frame_rate(r) for r in chats)
    peer_fps = sorted(frame_rate(r) for r in peers)
    unpainted = sum(r.unpainted for r in chats)
    behind = sum(r.frames_behind for r in chats)
    frames = sum(len(r.frames) for r in chats)

    report.check(
        "the streamed reply",
        all(r.text_ok for r in chats) and all(r.text_ok for r in peers),
        "the chat's last MessageView (and the peer's Markdown) holds exactly the text streamed"
        if all(r.text_ok for r in chats + peers)
        else "the text on screen differs from the text streamed",
    )
    report.check(
        "every chunk reached the widget",
        all(all(r.in_widget) for r in chats + peers),
        f"{sum(sum(1 for s in r.in_widget if s) for r in chats):,} of "
        f"{len(texts) * len(chats):,} chunks",
    )
    met_p95 = report.target(
        "streaming p95", screen is not None and screen.p95 <= STREAM_P95_TARGET_MS
    )
    met_backlog = report.target("no growing backlog", growth is not None and growth <= FRAME_MS)
    n = len(texts)
    k = max(1, n // 10)
    rows = [
        Row(
            "chunk made → chat screen hands it to its MessageView",
            cell(handed),
            cell(handed, "p95"),
        ),
        Row(
            "chunk made → in the widget showing the reply",
            cell(widget),
            cell(widget, "p95"),
            cell(peer_widget),
            cell_ratio(widget, peer_widget),
        ),
        Row(
            "**chunk made → on screen** (a frame painted with it, log scrolled to it)",
            cell(screen),
            cell(screen, "p95"),
            cell(peer_screen),
            cell_ratio(screen, peer_screen),
            f"p95 ≤ {STREAM_P95_TARGET_MS:g} ms",
            met_p95,
        ),
        Row(
            "chunk due by the schedule → on screen",
            cell(due),
            cell(due, "p95"),
            cell(peer_due),
            cell_ratio(due, peer_due),
        ),
        Row("chunk due → made (backend late on its schedule)", cell(late), cell(late, "p95")),
        Row(
            f"made → on screen, first {k:,} chunks",
            cell(first),
            cell(first, "p95"),
            cell(peer_first),
            cell_ratio(first, peer_first),
        ),
        Row(
            f"made → on screen, last {k:,} chunks",
            cell(last),
            cell(last, "p95"),
            cell(peer_last),
            cell_ratio(last, peer_last),
        ),
        Row(
            "**backlog growth** (last - first, medians)",
            ms(growth, 1) if growth is not None else "—",
            "—",
            ms(peer_last.median - peer_first.median, 1) if peer_last and peer_first else "—",
            "—",
            f"≤ one frame ({FRAME_MS:.1f} ms)",
            met_backlog,
        ),
        Row(
            "chunks made per second",
            f"{median(rates):,.0f}",
            "—",
            f"{median(peer_rates):,.0f}",
            ratio(median(rates), median(peer_rates)),
            f"{STREAM_RATE:g} (the schedule)",
        ),
        Row(
            "frames painted per second while streaming",
            f"{median(fps):,.0f}",
            "—",
            f"{median(peer_fps):,.0f}",
            ratio(median(fps), median(peer_fps)),
        ),
    ]
    print_table(
        f"Streaming: a {sizes.stream_tokens:,}-token reply, {n:,} chunks of "
        f"{TOKENS_PER_CHUNK} tokens at {STREAM_RATE:g} chunks/s, {COLS}x{ROWS} "
        f"({plural(sizes.stream_runs)} after 1 warm-up, pooled)",
        rows,
        [
            "In-process with `app.run_test()` on the real engine (Trio in guest mode), "
            "persistence on. A bench backend streams generated Markdown (headings, prose, "
            "lists, code blocks) on an absolute schedule and stamps each chunk when made. "
            "*On screen* is the first frame painted once the chunk is in the widget showing "
            "the reply (the chat's streaming body; the peer's Markdown) with that widget's "
            "last row inside the visible part of the log; headless Textual skips turning a "
            "frame into terminal bytes, so the bench does that step itself. The chat streams "
            "into a body that renders finished blocks once and re-renders only the open one, "
            "and swaps in a Markdown widget when the reply ends. The peer is Textual alone: "
            "one Markdown in "
            "a VerticalScroll fed through MarkdownStream with `scroll_end` after each write, "
            "on the same schedule and text.",
            f"Frames painted while the newest text was below the visible part of the log: "
            f"{behind:,} of {frames:,}. Chunks never seen on screen (the log stopped above "
            f"the end of the reply): {unpainted:,} of {n * len(chats):,}, left out of the "
            "latencies.",
        ],
    )
    report.print_checks()


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def frame_rate(run: StreamRun) -> float:
    frames = [f for f in run.frames if run.created[0] <= f <= run.created[-1]]
    span = (run.created[-1] - run.created[0]) / 1e9
    return len(frames) / span if span > 0 else 0.0


# --- 3. opening a long conversation ------------------------------------------------------------


class OpenProbe(Probe):
    """Stamps the end of one opening: every message mounted and parsed, then a frame painted."""

    def __init__(self) -> None:
        self.log: VerticalScroll | None = None
        self.expected = 0
        self.mounted_ns = 0
        self.painted_ns = 0
        self._pending: list[Markdown] | None = None

    def arm(self, log: VerticalScroll, expected: int) -> None:
        self.log, self.expected = log, expected
        self.mounted_ns = self.painted_ns = 0
        self._pending = None

    def frame(self, app: App[Any], now: int) -> None:
        log = self.log
        if log is None or self.painted_ns or not self.mounted_ns:
            return
        if self._pending is None:
            views = list(log.query(Markdown))
            if len(views) < self.expected:
                return
            self._pending = views
        # Blocks are parsed after mount; a Markdown with text and no blocks is still blank.
        self._pending = [md for md in self._pending if md.source and not md.children]
        if not self._pending:
            self.painted_ns = now


@dataclass
class OpenRun:
    loaded: int
    mounted: int
    painted: int
    shown: int
    summary_line: str
    rows_short: int
    """How far above its end the log was left (0: the newest message fully in view)."""
    widgets: int = 0


async def make_history(config: Config, prompts: Sequence[str]) -> str:
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        for prompt in prompts:
            await conversation.send(prompt)
        return conversation.id


async def chat_open(config: Config, conversation_id: str, runs: int) -> list[OpenRun]:
    from tui.app import ChatcoreApp
    from tui.screens.chat import ChatScreen, MessageView

    probe = OpenProbe()
    loaded_at = [0]
    handler = ChatScreen.__dict__.get("on_conversation_opened")
    results: list[OpenRun] = []
    app = ChatcoreApp(config)
    with instrumented(probe):
        if handler is not None:

            async def opened(screen: ChatScreen, event: Any) -> None:
                loaded_at[0] = time.perf_counter_ns()
                await handler(screen, event)
                probe.mounted_ns = time.perf_counter_ns()

            setattr(ChatScreen, "on_conversation_opened", opened)  # noqa: B010
        try:
            async with app.run_test(size=(COLS, ROWS)) as pilot:
                await engine_ready(app, pilot)
                screen = app.screen
                assert isinstance(screen, ChatScreen)
                log = screen.query_one("#log", VerticalScroll)
                for _ in range(runs + 1):  # the first is a warm-up
                    await screen.new_chat()
                    await pilot.pause()
                    await asyncio.sleep(0.1)
                    probe.arm(log, 1)
                    start = time.perf_counter_ns()
                    screen.open_conversation(conversation_id)
                    if handler is None:  # no hook to split the time: count it all as settling
                        loaded_at[0] = probe.mounted_ns = start
                    if not await wait_for(lambda: bool(probe.painted_ns), 60):
                        raise RuntimeError("the conversation did not open in 60 s")
                    await asyncio.sleep(0.2)  # let any late scroll land
                    notices = [str(s.render()) for s in log.query(".notice")]
                    results.append(
                        OpenRun(
                            loaded=loaded_at[0] - start,
                            mounted=probe.mounted_ns - start,
                            painted=probe.painted_ns - start,
                            shown=len(log.query(MessageView)),
                            summary_line=notices[0] if notices else "",
                            rows_short=round(log.max_scroll_y - log.scroll_y),
                            widgets=sum(1 for _ in log.walk_children()),
                        )
                    )
                await pilot.press("ctrl+q")
        finally:
            if handler is not None:
                setattr(ChatScreen, "on_conversation_opened", handler)  # noqa: B010
    return results[1:]


class PeerMessage(Vertical):
    DEFAULT_CSS = """
    PeerMessage { height: auto; margin: 0 0 1 0; }
    PeerMessage > Markdown { margin: 0; padding: 0 0 0 2; }
    """

    def __init__(self, role: str, text: str, *, plain: bool = False) -> None:
        super().__init__()
        self.role, self.text, self.plain = role, text, plain

    def compose(self) -> ComposeResult:
        yield Static(self.role)
        yield Static(self.text, markup=False) if self.plain else Markdown(self.text)


@dataclass
class PeerOpen(UIMessage):
    messages: Sequence[tuple[str, str]]
    hidden: int
    plain: bool


class PeerOpenApp(App[None]):
    """Textual alone: mount the same messages into a scrolling log and scroll to its end."""

    CSS = "#log { height: 1fr; padding: 0 1; }"

    def __init__(self, probe: OpenProbe) -> None:
        super().__init__()
        self.probe = probe

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="log")

    async def on_peer_open(self, event: PeerOpen) -> None:
        # In a message handler, as the chat screen does: awaiting mounts from the test
        # task instead is slower, and not what an app does.
        log = self.query_one("#log", VerticalScroll)
        views: list[Any] = [Static(f"… {event.hidden} earlier messages")] if event.hidden else []
        views += [PeerMessage(role, text, plain=event.plain) for role, text in event.messages]
        await log.mount_all(views)
        log.scroll_end(animate=False)
        self.probe.mounted_ns = time.perf_counter_ns()


async def peer_open(
    messages: Sequence[tuple[str, str]], hidden: int, runs: int, *, plain: bool = False
) -> list[OpenRun]:
    probe = OpenProbe()
    results: list[OpenRun] = []
    app = PeerOpenApp(probe)
    with instrumented(probe):
        async with app.run_test(size=(COLS, ROWS)) as pilot:
            await pilot.pause()
            log = app.query_one("#log", VerticalScroll)
            for _ in range(runs + 1):
                await log.remove_children()
                await pilot.pause()
                await asyncio.sleep(0.1)
                probe.arm(log, 0 if plain else len(messages))
                start = time.perf_counter_ns()
                app.post_message(PeerOpen(messages, hidden, plain))
                if not await wait_for(lambda: bool(probe.painted_ns), 60):
                    raise RuntimeError("the peer did not finish in 60 s")
                await asyncio.sleep(0.2)
                results.append(
                    OpenRun(
                        0,
                        probe.mounted_ns - start,
                        probe.painted_ns - start,
                        len(log.children),
                        "",
                        round(log.max_scroll_y - log.scroll_y),
                    )
                )
    return results[1:]


def opening(sizes: Sizes, tmp: Path, report: Report) -> None:
    from tui.screens import chat

    config = make_config(tmp / "open")
    prompts = history_prompts(sizes.open_turns)
    conversation_id = trio.run(make_history, config, prompts)
    total = 2 * len(prompts)
    shown_limit = getattr(chat, "MESSAGES_SHOWN", total)
    shown = min(total, shown_limit)
    chats = asyncio.run(chat_open(config, conversation_id, sizes.open_runs))
    stored: list[tuple[str, str]] = []
    for prompt in prompts:
        stored += [("you", prompt), ("assistant", f"echo: {prompt}")]
    last = stored[-shown:]
    peers = asyncio.run(peer_open(last, total - shown, sizes.open_runs))
    plains = asyncio.run(peer_open(last, total - shown, sizes.open_runs, plain=True))

    # The same opening with other MESSAGES_SHOWN values: what the summarising buys.
    variants: dict[int, list[OpenRun]] = {}
    tries = [(n, SWEEP_RUNS) for n in sizes.open_sweep if n < shown]
    if sizes.open_all_runs and shown < total:
        tries.append((total, sizes.open_all_runs))
    if hasattr(chat, "MESSAGES_SHOWN"):
        for count, runs in tries:
            chat.MESSAGES_SHOWN = count
            try:
                found = asyncio.run(chat_open(config, conversation_id, runs))
            finally:
                chat.MESSAGES_SHOWN = shown_limit
            variants[count] = [r for r in found if r.shown == count]  # the patch took effect

    report.check(
        "messages shown",
        all(r.shown == shown for r in chats),
        f"{sorted({r.shown for r in chats})} MessageViews for {total:,} stored messages "
        f"(expected {shown:,}); summary line: {chats[0].summary_line or 'none'!r}",
    )
    loaded = summary([r.loaded for r in chats])
    mounted = summary([r.mounted - r.loaded for r in chats])
    settled = summary([r.painted - r.mounted for r in chats])
    painted = summary([r.painted for r in chats])
    peer_mounted = summary([r.mounted for r in peers])
    peer_settled = summary([r.painted - r.mounted for r in peers])
    peer_painted = summary([r.painted for r in peers])
    plain_painted = summary([r.painted for r in plains])
    met = report.target(
        "open conversation", painted is not None and painted.median <= OPEN_TARGET_MS
    )
    rows = [
        Row(
            f"open → its {total:,} messages reach the UI (SQLite read in a thread, posted)",
            cell(loaded),
            cell(loaded, "p95"),
        ),
        Row(
            f"… → {shown:,} MessageViews mounted (the screen's handler returns)",
            cell(mounted),
            cell(mounted, "p95"),
            cell(peer_mounted),
            cell_ratio(mounted, peer_mounted),
        ),
        Row(
            "… → every Markdown parsed into blocks, next frame painted",
            cell(settled),
            cell(settled, "p95"),
            cell(peer_settled),
            cell_ratio(settled, peer_settled),
        ),
        Row(
            f"**open → on screen** ({shown:,} of {total:,} messages rendered)",
            cell(painted),
            cell(painted, "p95"),
            cell(peer_painted),
            cell_ratio(painted, peer_painted),
            f"≤ {OPEN_TARGET_MS:g} ms",
            met,
        ),
        Row(
            f"Textual alone, the same {shown:,} messages as plain Static text (no Markdown)",
            cell(plain_painted),
            cell(plain_painted, "p95"),
            cell(peer_painted),
            cell_ratio(plain_painted, peer_painted),
        ),
    ]
    for count, found in variants.items():
        variant = summary([r.painted for r in found])
        if variant is None:
            continue
        label = f"all {total:,}" if count == total else f"the last {count:,}"
        rows.append(
            Row(
                f"open → on screen, {label} rendered "
                f"(MESSAGES_SHOWN patched, {plural(len(found))})",
                cell(variant),
                cell(variant, "p95"),
                cell(painted),
                cell_ratio(variant, painted),
                f"≤ {OPEN_TARGET_MS:g} ms",
                "would meet" if variant.median <= OPEN_TARGET_MS else "would miss",
            )
        )
    widgets = median([r.widgets for r in chats])
    short = sorted({r.rows_short for r in chats})
    print_table(
        f"Opening a {total:,}-message conversation ({sizes.open_turns:,} turns on echo), "
        f"{COLS}x{ROWS}, {plural(sizes.open_runs)} after 1 warm-up",
        rows,
        [
            "In-process with `app.run_test()`: each run starts from an empty log (new chat) "
            "and calls `ChatScreen.open_conversation(id)`; it ends with the first frame "
            "painted once every shown message's Markdown has parsed its text into blocks "
            "(Textual parses after mounting). The chat renders the last MESSAGES_SHOWN = "
            f"{shown_limit:,} messages and one line for the older ones. The peer is Textual "
            "alone mounting the same messages (a Static and a Markdown each, the same "
            "summary line) into a VerticalScroll, from memory. Messages are generated: "
            "one paragraph of 10 to 80 words, a quarter with a short list and one in seven "
            "with a code block (the echo replies repeat the prompts).",
            f"Widgets in the log once open: {widgets:,.0f} (about "
            f"{widgets / max(1, shown):.0f} per message). Rows between the log's scroll "
            f"position and its end 0.2 s after opening: {short} (0: the newest message "
            "is fully in view).",
        ],
    )
    report.print_checks()


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, set[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--only",
        choices=("paint", "stream", "open"),
        action="append",
        help="run only this section (repeatable)",
    )
    args = parser.parse_args(argv)
    return (QUICK if args.quick else FULL), set(args.only or ("paint", "stream", "open"))


def print_header(sizes: Sizes) -> None:
    print("# chatcore TUI benchmark\n")
    print(machine("textual", "trio", "chatcore"))
    print(
        f"\nSizes: {sizes.paint_runs} first paints; {sizes.stream_runs} x "
        f"{sizes.stream_tokens:,}-token replies; a {2 * sizes.open_turns:,}-message "
        f"conversation opened {plural(sizes.open_runs, 'time')}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    sizes, only = parse_args(argv)
    print_header(sizes)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="chatcore-bench-tui-") as name:
        tmp = Path(name)
        if "paint" in only:
            first_paint(sizes, tmp, report)
        if "stream" in only:
            streaming(sizes, tmp, report)
        if "open" in only:
            opening(sizes, tmp, report)
    return conclude(report)


if __name__ == "__main__":
    sys.exit(main())
