"""The ``metrics`` middleware: stage histograms, counters, the saved snapshot, `chatcore
metrics`, and the Prometheus endpoint over real HTTP."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from click.testing import CliRunner

from chatcore import open_engine
from chatcore.cli import cli
from chatcore.middleware.metrics import BUCKETS_S, MetricsMiddleware

WriteConfig = Callable[..., Path]

BASE = """
default_backend = "echo"
[backends.echo]
plugin = "echo"
[backends.slow]
plugin = "echo"
delay_seconds = 0.5
"""
METRICS = '[[plugins]]\nplugin = "metrics"\npriority = 10\n'
SAMPLE_RE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$|^.* \+Inf$')


def metrics_of(engine: Any) -> MetricsMiddleware:
    plugin = engine.plugins.get_plugin("metrics")
    assert isinstance(plugin, MetricsMiddleware)
    return plugin


def bucket_of(seconds: float) -> int:
    return next(i for i, bound in enumerate(BUCKETS_S) if seconds <= bound)


async def test_stage_histograms_measure_virtual_time_exactly(
    write_config: WriteConfig, patient_clock: trio.testing.MockClock
) -> None:
    async with open_engine(write_config(BASE + METRICS)) as engine:
        # "echo: one two" streams as three pieces, each after 0.5 s.
        await engine.conversation().send("one two", backend="slow")
        totals = metrics_of(engine).totals()
    stages = totals.stages
    assert stages["first_chunk"].sum_s == pytest.approx(0.5)
    assert stages["backend"].sum_s == pytest.approx(1.5)
    assert stages["turn"].sum_s == pytest.approx(1.5)
    assert stages["to_backend"].sum_s == pytest.approx(0.0)
    assert stages["first_chunk"].counts[bucket_of(0.5)] == 1
    assert stages["backend"].counts[bucket_of(1.5)] == 1
    assert totals.turns == {("slow", "complete"): 1}
    assert totals.tokens == {"in": 2, "out": 3}


async def test_short_circuits_and_plugin_failures_are_counted(write_config: WriteConfig) -> None:
    config = write_config(
        BASE
        + METRICS
        + '[[plugins]]\nplugin = "engine_plugins:Blocker"\n'
        + '[[plugins]]\nplugin = "middleware_plugins:LeakyProcessor"\n'
    )
    async with open_engine(config) as engine:
        await engine.conversation().send("a forbidden word")
        await engine.conversation().send("fine")
        totals = metrics_of(engine).totals()
    assert totals.answered_by == {"blocker": 1}
    assert totals.plugin_errors["leaky"] >= 1
    assert totals.stages["turn"].count == 2
    # The blocked turn never reached the backend: one backend sample only.
    assert totals.stages["backend"].count == 1


async def test_totals_add_up_across_runs_and_the_command_prints_them(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + METRICS)
    for _ in range(2):
        async with open_engine(config) as engine:
            conversation = engine.conversation()
            await conversation.send("hi")
            await conversation.send("there")
    runner = CliRunner()
    result = runner.invoke(cli, ["metrics", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["turns"] == [{"backend": "echo", "status": "complete", "count": 4}]
    assert report["stages"]["turn"]["count"] == 4
    assert sum(report["stages"]["turn"]["buckets"].values()) == 4
    rows = {row["name"]: row for row in report["plugins"]}
    assert rows["echo"]["calls"] == 4
    assert rows["metrics"]["type"] == "middleware"
    text = runner.invoke(cli, ["metrics", "--config", str(config)])
    assert text.exit_code == 0, text.output
    assert re.search(r"^turn\s+4\s", text.output, re.MULTILINE)
    assert re.search(r"^echo\s+complete\s+4$", text.output, re.MULTILINE)


async def test_the_command_says_when_nothing_is_configured_or_saved(
    write_config: WriteConfig,
) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["metrics", "--config", str(write_config(BASE))])
    assert missing.exit_code == 2
    assert 'add [[plugins]] plugin = "metrics"' in missing.output
    fresh = runner.invoke(cli, ["metrics", "--config", str(write_config(BASE + METRICS, "m.toml"))])
    assert fresh.exit_code == 0
    assert fresh.output.startswith("no metrics yet")


async def test_prometheus_endpoint_serves_the_text_format_on_localhost(
    write_config: WriteConfig,
) -> None:
    config = write_config(BASE + METRICS + "[plugins.config]\nprometheus_port = 0\n")
    async with open_engine(config) as engine:
        conversation = engine.conversation()
        await conversation.send("one")
        await conversation.send("two")
        port = metrics_of(engine).prometheus_port
        assert port
        url = f"http://127.0.0.1:{port}"

        def fetch() -> tuple[httpx.Response, httpx.Response]:
            with httpx.Client(timeout=10) as client:
                return client.get(f"{url}/metrics"), client.get(f"{url}/other")

        response, missing = await trio.to_thread.run_sync(fetch)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert missing.status_code == 404
        assert (await engine.plugins.get_plugin("metrics").health())["url"] == f"{url}/metrics"
    body = response.text
    for line in body.splitlines():
        assert line.startswith("# ") or SAMPLE_RE.match(line), line
    assert 'chatcore_turns_total{backend="echo",status="complete"} 2' in body
    assert 'chatcore_stage_duration_seconds_bucket{stage="turn",le="+Inf"} 2' in body
    assert 'chatcore_stage_duration_seconds_count{stage="turn"} 2' in body
    assert 'chatcore_plugin_calls_total{plugin="echo",type="backend"} 2' in body
    assert "# TYPE chatcore_stage_duration_seconds histogram" in body
    # Closed with the engine.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


async def test_a_taken_port_leaves_the_counting_on(write_config: WriteConfig) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(BASE + METRICS + f"[plugins.config]\nprometheus_port = {port}\n")
        async with open_engine(config) as engine:
            await engine.conversation().send("still counted")
            health = await engine.plugins.get_plugin("metrics").health()
            assert health["ok"] is False
            assert f"127.0.0.1:{port}" in health["detail"]
            assert metrics_of(engine).totals().stages["turn"].count == 1
