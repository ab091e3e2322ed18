"""The ``metrics`` middleware: latency histograms per stage, counters, and per-plugin stats.

What it measures, all from where a middleware can see (Trio's clock):

- ``turn``: from this middleware's ``handle`` to the reply coming back, i.e.
  everything downstream of it (inner middleware, processors, features, the
  backend, AFTER_MESSAGE processors and storing the turn);
- ``to_backend``: from ``handle`` to the ``BEFORE_MODEL_LOAD`` hook point
  (processors and features; other BEFORE_MODEL_LOAD hooks of lower priority too);
- ``first_chunk``: from ``handle`` to the first streamed piece of the reply;
- ``backend``: from ``BEFORE_MODEL_LOAD`` to the last streamed piece (retries and
  fallbacks included). Turns answered without the backend have no such sample.

Histograms have fixed buckets (Prometheus style, in seconds). Counters: turns by
backend and status, turns answered by a plugin, tokens, plugin failures. Per
plugin, the hook registry's own statistics (calls, failures, timeouts, p50/p95
of recent calls, circuit) are exposed as they are.

The totals are kept across runs: at shutdown this run's counts are added to the
snapshot in the plugin's key-value namespace, which ``chatcore metrics`` prints.
With ``prometheus_port`` set, ``http://127.0.0.1:PORT/metrics`` serves the text
exposition format 0.0.4 while the engine runs.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import trio
from pydantic import BaseModel, ConfigDict, Field

from chatcore.errors import PluginError
from chatcore.hooks import HookType
from chatcore.plugin import BaseMiddleware, PluginMetadata, hook

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from chatcore.hooks import HookFailure
    from chatcore.messages import ChatContext, Chunk, Message
    from chatcore.plugin import CallNext

__all__ = [
    "BUCKETS_S",
    "STAGES",
    "Histogram",
    "MetricsMiddleware",
    "MetricsSettings",
    "MetricsState",
    "exposition",
]

logger = logging.getLogger(__name__)

BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds of the histogram buckets, in seconds (a last +Inf bucket is implied)."""
STAGES = ("turn", "to_backend", "first_chunk", "backend")
SNAPSHOT_KEY = "snapshot"
SNAPSHOT_VERSION = 1
PROMETHEUS_HOST = "127.0.0.1"
"""The endpoint is for a local scraper only; it is never bound to other interfaces."""
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# --- data --------------------------------------------------------------------------------


@dataclass(slots=True)
class Histogram:
    """Counts per fixed bucket (not cumulative here; the exposition makes them so)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    sum_s: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.sum_s += seconds
        self.count += 1

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum_s += other.sum_s
        self.count += other.count

    def quantile(self, q: float) -> float | None:
        """Estimate as Prometheus' ``histogram_quantile`` does: linear within the bucket."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for index, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if index == len(BUCKETS_S):
                    return BUCKETS_S[-1]  # past the last bound: all we know is "more than"
                lower = BUCKETS_S[index - 1] if index else 0.0
                return lower + (BUCKETS_S[index] - lower) * (rank - seen) / n
            seen += n
        return BUCKETS_S[-1]

    def as_json(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum_s": self.sum_s, "count": self.count}

    @classmethod
    def from_json(cls, data: Any) -> Histogram:
        histogram = cls()
        if isinstance(data, dict):
            counts = data.get("counts")
            # A snapshot from other buckets can't be merged honestly: it starts over.
            if isinstance(counts, list) and len(counts) == len(BUCKETS_S) + 1:
                histogram.counts = [int(c) for c in counts]
                histogram.sum_s = float(data.get("sum_s", 0.0))
                histogram.count = int(data.get("count", 0))
        return histogram


@dataclass(slots=True)
class MetricsState:
    """Everything the middleware counts; additive, so runs and processes can be summed."""

    stages: dict[str, Histogram] = field(default_factory=lambda: {s: Histogram() for s in STAGES})
    turns: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(backend, status) → turns."""
    answered_by: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)
    plugin_errors: Counter[str] = field(default_factory=Counter)

    def merge(self, other: MetricsState) -> MetricsState:
        for stage, histogram in other.stages.items():
            self.stages.setdefault(stage, Histogram()).merge(histogram)
        self.turns.update(other.turns)
        self.answered_by.update(other.answered_by)
        self.tokens.update(other.tokens)
        self.plugin_errors.update(other.plugin_errors)
        return self

    def as_json(self) -> dict[str, Any]:
        return {
            "stages": {name: h.as_json() for name, h in self.stages.items()},
            "turns": [[b, s, n] for (b, s), n in sorted(self.turns.items())],
            "answered_by": dict(self.answered_by),
            "tokens": dict(self.tokens),
            "plugin_errors": dict(self.plugin_errors),
        }

    @classmethod
    def from_json(cls, data: Any) -> MetricsState:
        state = cls()
        if not isinstance(data, dict):
            return state
        for name, histogram in (data.get("stages") or {}).items():
            state.stages[str(name)] = Histogram.from_json(histogram)
        for row in data.get("turns") or []:
            if isinstance(row, list) and len(row) == 3:
                state.turns[(str(row[0]), str(row[1]))] += int(row[2])
        for name in ("answered_by", "tokens", "plugin_errors"):
            counter: Counter[str] = getattr(state, name)
            for key, n in (data.get(name) or {}).items():
                counter[str(key)] += int(n)
        return state


PLUGIN_KEYS = ("name", "type", "state", "calls", "failures", "timeouts", "p50_ms", "p95_ms")


def _plugin_rows(statuses: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for status in statuses.values():
        row = status.as_dict()
        rows.append({**{k: row[k] for k in PLUGIN_KEYS}, "circuit": row["circuit"]})
    return rows


# --- Prometheus text format ----------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def number_text(value: float) -> str:
    """A sample value as the exposition format writes it (``+Inf``, no float noise)."""
    if isinstance(value, int):
        return str(value)
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


def exposition(state: MetricsState, plugins: Iterable[Mapping[str, Any]]) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``state`` and the plugin rows."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    name = "chatcore_stage_duration_seconds"
    family(name, "histogram", "Duration of the turn stages the metrics middleware can see.")
    for stage, histogram in state.stages.items():
        cumulative = 0
        for bound, n in zip((*BUCKETS_S, float("inf")), histogram.counts, strict=True):
            cumulative += n
            le = number_text(bound) if bound != float("inf") else "+Inf"
            out.append(f"{name}_bucket{_labels(stage=stage, le=le)} {cumulative}")
        out.append(f"{name}_sum{_labels(stage=stage)} {number_text(histogram.sum_s)}")
        out.append(f"{name}_count{_labels(stage=stage)} {histogram.count}")
    family("chatcore_turns_total", "counter", "Turns by the backend that answered and status.")
    for (backend, status), n in sorted(state.turns.items()):
        out.append(f"chatcore_turns_total{_labels(backend=backend, status=status)} {n}")
    family("chatcore_turns_answered_total", "counter", "Turns a plugin answered itself.")
    for plugin, n in sorted(state.answered_by.items()):
        out.append(f"chatcore_turns_answered_total{_labels(plugin=plugin)} {n}")
    family("chatcore_tokens_total", "counter", "Tokens reported by backends.")
    for direction, n in sorted(state.tokens.items()):
        out.append(f"chatcore_tokens_total{_labels(direction=direction)} {n}")
    family("chatcore_plugin_errors_total", "counter", "Plugin failures reported to ON_ERROR.")
    for plugin, n in sorted(state.plugin_errors.items()):
        out.append(f"chatcore_plugin_errors_total{_labels(plugin=plugin)} {n}")
    rows = list(plugins)
    for metric, key, help_text in (
        ("chatcore_plugin_calls_total", "calls", "Calls into a plugin or backend."),
        ("chatcore_plugin_failures_total", "failures", "Failed calls into a plugin or backend."),
        ("chatcore_plugin_timeouts_total", "timeouts", "Calls that exceeded their timeout."),
    ):
        family(metric, "counter", help_text)
        for row in rows:
            out.append(f"{metric}{_labels(plugin=row['name'], type=row['type'])} {row[key]}")
    family(
        "chatcore_plugin_latency_seconds",
        "gauge",
        "Nearest-rank percentile of a plugin's recent call durations.",
    )
    for row in rows:
        for quantile, key in (("0.5", "p50_ms"), ("0.95", "p95_ms")):
            if row[key] is not None:
                labels = _labels(plugin=row["name"], quantile=quantile)
                out.append(
                    f"chatcore_plugin_latency_seconds{labels} {number_text(row[key] / 1000)}"
                )
    family("chatcore_plugin_circuit_open", "gauge", "1 while a plugin's circuit is open.")
    for row in rows:
        is_open = 0 if row["circuit"] == "closed" else 1
        out.append(f"chatcore_plugin_circuit_open{_labels(plugin=row['name'])} {is_open}")
    return "\n".join(out) + "\n"


# --- the middleware ------------------------------------------------------------------------


class MetricsSettings(BaseModel):
    """The ``[plugins.config]`` table of ``metrics``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    prometheus_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve http://127.0.0.1:PORT/metrics while the engine runs (0: any free port)."""


@dataclass(slots=True)
class _Timing:
    started: float
    backend_started: float | None = None
    first_chunk: bool = False
    last_chunk: float | None = None


class MetricsMiddleware(BaseMiddleware):
    """Counts turns and times their stages; keeps the totals across runs."""

    metadata: ClassVar[PluginMetadata] = PluginMetadata(
        name="metrics",
        version="1.0.0",
        description="Latency histograms and counters per stage and plugin; Prometheus endpoint",
        tags=("observability",),
        # Only to listen on 127.0.0.1 for the optional Prometheus endpoint.
        permissions=("network",),
    )
    settings_model: ClassVar[type[BaseModel]] = MetricsSettings
    settings: MetricsSettings

    def __init__(self) -> None:
        super().__init__()
        self.settings = MetricsSettings()
        self.run = MetricsState()
        """What this run counted (added to the stored totals at shutdown)."""
        self._base = MetricsState()
        self._timings: dict[str, _Timing] = {}
        self._listener: trio.SocketListener | None = None
        self._server_scope = trio.CancelScope()
        self.prometheus_port: int | None = None
        """The port actually bound (useful with ``prometheus_port = 0``)."""
        self.endpoint_error: str | None = None

    async def _do_initialize(self) -> None:
        if self.host is not None:
            stored = self.host.kv.get(SNAPSHOT_KEY)
            self._base = MetricsState.from_json(
                stored.get("metrics") if isinstance(stored, dict) else None
            )
        if self.settings.prometheus_port is not None:
            await self._start_endpoint(self.settings.prometheus_port)

    async def _do_shutdown(self) -> None:
        self._server_scope.cancel()
        if self._listener is not None:
            with contextlib.suppress(trio.ClosedResourceError):
                await self._listener.aclose()
            self._listener = None
        if self.host is None:
            return
        # Reread: another process may have saved its own run since this one started.
        stored = self.host.kv.get(SNAPSHOT_KEY)
        total = MetricsState.from_json(stored.get("metrics") if isinstance(stored, dict) else None)
        total.merge(self.run)
        self.host.kv.set(
            SNAPSHOT_KEY,
            {
                "version": SNAPSHOT_VERSION,
                "saved_at": time.time(),
                "metrics": total.as_json(),
                "plugins": _plugin_rows(self.host.plugin_status()),
            },
        )

    async def health(self) -> Mapping[str, Any]:
        report: dict[str, Any] = {"ok": self.endpoint_error is None}
        if self.prometheus_port is not None:
            report["url"] = f"http://{PROMETHEUS_HOST}:{self.prometheus_port}/metrics"
        if self.endpoint_error is not None:
            report["detail"] = self.endpoint_error
        return report

    def totals(self) -> MetricsState:
        """The stored totals from before this run plus this run's counts."""
        return MetricsState().merge(self._base).merge(self.run)

    def plugin_rows(self) -> list[dict[str, Any]]:
        return _plugin_rows(self.host.plugin_status()) if self.host is not None else []

    # -- measuring --

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        conversation_id = context.conversation_id
        timing = self._timings[conversation_id] = _Timing(trio.current_time())
        run = self.run
        try:
            reply = await call_next(context)
        except Exception:
            run.turns[(context.backend, "error")] += 1
            raise
        finally:
            self._timings.pop(conversation_id, None)
            run.stages["turn"].observe(trio.current_time() - timing.started)
            if timing.backend_started is not None and timing.last_chunk is not None:
                run.stages["backend"].observe(timing.last_chunk - timing.backend_started)
        backend = str(reply.metadata.get("backend") or context.backend)
        run.turns[(backend, str(reply.status))] += 1
        answered_by = reply.metadata.get("answered_by")
        if answered_by:
            run.answered_by[str(answered_by)] += 1
        if reply.tokens_in:
            run.tokens["in"] += reply.tokens_in
        if reply.tokens_out:
            run.tokens["out"] += reply.tokens_out
        return reply

    @hook(HookType.BEFORE_MODEL_LOAD)
    async def backend_starts(self, payload: ChatContext, context: ChatContext) -> None:
        timing = self._timings.get(payload.conversation_id)
        if timing is not None and timing.backend_started is None:
            timing.backend_started = now = trio.current_time()
            self.run.stages["to_backend"].observe(now - timing.started)

    @hook(HookType.ON_STREAM_CHUNK)
    async def chunk_arrives(self, chunk: Chunk, context: ChatContext) -> None:
        timing = self._timings.get(context.conversation_id)
        if timing is None:
            return
        now = timing.last_chunk = trio.current_time()
        if not timing.first_chunk:
            timing.first_chunk = True
            self.run.stages["first_chunk"].observe(now - timing.started)

    @hook(HookType.ON_ERROR)
    async def plugin_failed(self, failure: HookFailure, context: ChatContext) -> None:
        self.run.plugin_errors[failure.name] += 1

    # -- the Prometheus endpoint --

    async def _start_endpoint(self, port: int) -> None:
        if self.host is None:
            raise PluginError("metrics: the Prometheus endpoint needs a running engine")
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            await sock.bind((PROMETHEUS_HOST, port))
            sock.listen(16)
        except OSError as exc:
            sock.close()
            # Metrics are still counted and saved; only the live endpoint is missing
            # (typically another engine already serves that port).
            self.endpoint_error = f"cannot listen on {PROMETHEUS_HOST}:{port}: {exc.strerror}"
            logger.warning("metrics: %s", self.endpoint_error)
            return
        self._listener = trio.SocketListener(sock)
        self.prometheus_port = int(sock.getsockname()[1])
        if not self.host.spawn(self._serve):
            await self._listener.aclose()
            self._listener = None
            raise PluginError(
                "metrics: the engine's background queue is full; endpoint not started"
            )

    async def _serve(self) -> None:
        listener = self._listener
        if listener is None:
            return
        with self._server_scope:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        stream = await listener.accept()
                    except (trio.ClosedResourceError, OSError):
                        return
                    nursery.start_soon(self._respond, stream)

    async def _respond(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                try:
                    request = await _read_request(stream)
                    await stream.send_all(self._response(request))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return

    def _response(self, request: bytes) -> bytes:
        parts = request.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) < 2:
            return _http(400, "Bad Request", "malformed request\n")
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return _http(405, "Method Not Allowed", "only GET\n", allow=True)
        if target not in ("/metrics", "/"):
            return _http(404, "Not Found", "metrics are at /metrics\n")
        body = exposition(self.totals(), self.plugin_rows())
        return _http(200, "OK", body, content_type=CONTENT_TYPE, head=method == "HEAD")


async def _read_request(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST_BYTES:
        piece = await stream.receive_some(4096)
        if not piece:
            break
        data += piece
    return data


def _http(
    code: int,
    reason: str,
    body: str,
    *,
    content_type: str = "text/plain; charset=utf-8",
    allow: bool = False,
    head: bool = False,
) -> bytes:
    payload = body.encode("utf-8")
    headers = [
        f"HTTP/1.1 {code} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    if allow:
        headers.append("Allow: GET, HEAD")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + (b"" if head else payload)
