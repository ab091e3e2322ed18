"""``chatcore metrics``: the totals the metrics middleware saved, as tables or JSON.

Read from the middleware's key-value namespace in the store, so it shows every
finished run; nothing here runs an engine.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ..cli import config_option, json_option, load_command_config, print_json, run_guarded
from .metrics import BUCKETS_S, SNAPSHOT_KEY, MetricsMiddleware, MetricsState, number_text

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["metrics_command"]


def metrics_command() -> click.Command:
    """Latency histograms and counters of the metrics middleware.

    The ``chatcore.commands`` entry point ``metrics`` (see pyproject.toml).
    """

    @click.command(name="metrics")
    @click.option("--name", "instance", default=None, help="Metrics plugin instance to show.")
    @config_option
    @json_option
    def metrics(instance: str | None, config_path: Path | None, as_json: bool) -> None:
        """Latency histograms and counters of the metrics middleware.

        The totals are saved each time an engine with the metrics middleware
        shuts down, so this shows every finished run (``ask``, the chat app …).
        """
        from chatcore.errors import ConfigError
        from chatcore.store import Store

        config = load_command_config(config_path)
        names = [
            entry.name or MetricsMiddleware.metadata.name
            for entry in config.plugins
            if entry.plugin in ("metrics", f"{MetricsMiddleware.__module__}:MetricsMiddleware")
        ]
        if instance is not None:
            names = [n for n in names if n == instance] or [instance]
        if not names:
            missing = ConfigError(
                config.source,
                "plugins",
                'no metrics middleware is configured; add [[plugins]] plugin = "metrics"',
            )
            run_guarded(lambda: _raise(missing))

        def read() -> Any:
            store = Store(config.db_path)
            try:
                return store.kv_get(names[0], SNAPSHOT_KEY)
            finally:
                store.close()

        snapshot = run_guarded(read)
        report = _report(snapshot)
        if as_json:
            print_json(report)
        else:
            _print_report(report, click.echo)

    return metrics


def _raise(error: Exception) -> None:
    raise error


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _report(snapshot: Any) -> dict[str, Any]:
    """What ``chatcore metrics --json`` prints: estimates in ms, raw buckets in s."""
    if not isinstance(snapshot, dict):
        return {
            "saved_at": None,
            "stages": {},
            "turns": [],
            "answered_by": {},
            "tokens": {},
            "plugin_errors": {},
            "plugins": [],
        }
    state = MetricsState.from_json(snapshot.get("metrics"))
    stages = {}
    for name, h in state.stages.items():
        buckets = {number_text(b): n for b, n in zip(BUCKETS_S, h.counts, strict=False)}
        buckets["+Inf"] = h.counts[-1]
        stages[name] = {
            "count": h.count,
            "mean_ms": _ms(h.sum_s / h.count) if h.count else None,
            "p50_ms": _ms(h.quantile(0.5)),
            "p95_ms": _ms(h.quantile(0.95)),
            "sum_s": h.sum_s,
            "buckets": buckets,
        }
    saved_at = snapshot.get("saved_at")
    return {
        "saved_at": (
            datetime.fromtimestamp(float(saved_at), UTC).isoformat(timespec="seconds")
            if isinstance(saved_at, int | float)
            else None
        ),
        "stages": stages,
        "turns": [
            {"backend": b, "status": s, "count": n} for (b, s), n in sorted(state.turns.items())
        ],
        "answered_by": dict(state.answered_by),
        "tokens": {"in": state.tokens.get("in", 0), "out": state.tokens.get("out", 0)},
        "plugin_errors": dict(state.plugin_errors),
        "plugins": list(snapshot.get("plugins") or []),
    }


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    cells = [["-" if r.get(c) is None else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return lines


def _print_report(report: dict[str, Any], echo: Any) -> None:
    if report["saved_at"] is None:
        echo("no metrics yet: they are saved when an engine with the metrics middleware stops")
        return
    echo(f"saved at {report['saved_at']}")
    echo("")
    stage_rows = [{"stage": name, **values} for name, values in report["stages"].items()]
    for line in _table(stage_rows, ["stage", "count", "mean_ms", "p50_ms", "p95_ms"]):
        echo(line)
    echo("")
    turn_lines = _table(report["turns"], ["backend", "status", "count"])
    for line in turn_lines if report["turns"] else ["(no turns)"]:
        echo(line)
    tokens = report["tokens"]
    echo("")
    echo(f"tokens: in {tokens['in']}, out {tokens['out']}")
    if report["answered_by"]:
        answered = ", ".join(f"{k} {v}" for k, v in sorted(report["answered_by"].items()))
        echo(f"answered by plugins: {answered}")
    if report["plugin_errors"]:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(report["plugin_errors"].items()))
        echo(f"plugin errors: {errors}")
    if report["plugins"]:
        echo("")
        columns = ["name", "type", "calls", "failures", "timeouts", "p50_ms", "p95_ms", "circuit"]
        for line in _table(report["plugins"], columns):
            echo(line)
