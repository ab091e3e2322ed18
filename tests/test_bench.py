"""The benchmark script still runs and checks its own results (numbers are not judged here)."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO_ROOT, subprocess_env


def test_quick_benchmark_runs_and_its_self_checks_pass() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "pipeline.py"), "--quick"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=240,
    )
    # Exit 1 means the run itself was broken (a plugin not called, messages missing).
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for table in ("## Per-turn latency", "## Throughput", "## Cold start"):
        assert table in result.stdout
    assert "| what | median | p95 | peer median | ratio | target | met? |" in result.stdout


def test_quick_backend_benchmark_runs_against_the_fake() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "backends.py"), "--quick", "--no-litellm"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "## Latency per request" in result.stdout
    assert "## Time to first chunk" in result.stdout
    assert "identical JSON" in result.stdout


def test_quick_features_benchmark_runs_and_its_self_checks_pass() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "features.py"), "--quick", "--chunks", "300"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=240,
    )
    # Exit 1 means the run itself was broken (a processor not working, the summary not
    # used, retrieval not finding the chunk its query was made from).
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for table in (
        "## Processors on a 2,000-character message",
        "## Memory assembly",
        "## RAG over",
    ):
        assert table in result.stdout
    assert "RAG corpus ingested: 6 files, 300 chunks (expected 300) — OK" in result.stdout
    assert "BROKEN" not in result.stdout


def test_quick_plugins_benchmark_runs_and_its_self_checks_pass() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "plugins.py"), "--quick"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=240,
    )
    # Exit 1 means the run itself was broken (a plugin failing, a child restarted).
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "## Per call: one processor" in result.stdout
    assert "## Turns/s:" in result.stdout
    assert "BROKEN" not in result.stdout
