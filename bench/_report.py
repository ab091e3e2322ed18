"""Statistics and Markdown tables shared by the benchmark scripts."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "COLUMNS",
    "Report",
    "Row",
    "Summary",
    "conclude",
    "machine",
    "ms",
    "print_table",
    "ratio",
]


@dataclass(frozen=True)
class Summary:
    """Median and nearest-rank p95 of a sample, in milliseconds."""

    median: float
    p95: float
    n: int

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int]) -> Summary:
        if not samples_ns:
            raise ValueError("no samples")
        ordered = sorted(samples_ns)
        n = len(ordered)
        mid = n // 2
        median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        p95 = ordered[max(1, math.ceil(0.95 * n)) - 1]
        return cls(median / 1e6, p95 / 1e6, n)


@dataclass(frozen=True)
class Row:
    what: str
    median: str
    p95: str = "—"
    peer: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: str = "—"


COLUMNS = ("what", "median", "p95", "peer median", "ratio", "target", "met?")


def print_table(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        cells = (r.what, r.median, r.p95, r.peer, r.ratio, r.target, r.met)
        print("| " + " | ".join(cells) + " |")
    for note in notes:
        print(f"\n{note}")


def ms(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f} ms"


def ratio(value: float, peer: float) -> str:
    if peer <= 0:
        return "—"
    r = value / peer
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


@dataclass
class Report:
    """Missed targets and broken checks, collected across a benchmark's sections."""

    missed: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def target(self, name: str, ok: bool) -> str:
        if not ok:
            self.missed.append(name)
        return "yes" if ok else "**MISSED**"

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.pending.append(f"- {name}: {detail} — {'OK' if ok else 'BROKEN'}")
        if not ok:
            self.broken.append(name)

    def print_checks(self) -> None:
        if self.pending:
            print("\nChecks:\n")
            print("\n".join(self.pending))
            self.pending.clear()


def conclude(report: Report) -> int:
    """Print the verdict line; exit status 1 only when the run itself was broken."""
    print()
    if report.broken:
        print(f"BROKEN RUN (numbers not trustworthy): {', '.join(report.broken)}")
    if report.missed:
        print(f"Targets MISSED: {', '.join(report.missed)}")
    else:
        print("All targets met.")
    return 1 if report.broken else 0


def machine(*packages: str) -> str:
    """One line naming what the numbers were measured on: Python, the given packages'
    versions ("sqlite" for SQLite's), the CPUs this process may use, the platform."""
    from importlib.metadata import version

    def named(package: str) -> str:
        if package == "sqlite":
            return f"SQLite {sqlite3.sqlite_version}"
        return f"{package} {version(package)}"

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus = f"{os.cpu_count()} CPUs" + (f" ({affinity} usable)" if affinity else "")
    parts = [
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        *map(named, packages),
        cpus,
        platform.platform(),
    ]
    return " · ".join(parts)
