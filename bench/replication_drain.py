"""Replication benchmark: drain 100,000 outbox rows into a local Redis, printed as Markdown.

Run ``python bench/replication_drain.py`` (``--quick`` drains 10,000). It starts its own
``redis-server`` on a free port (no persistence), fills a fresh store through the real
write path (turns with outbox rows), times ``Replicator.push_once()`` and compares the
rate with ``redis-benchmark -P 16 -t set -n 100000 -q`` against the same server in the
same run. It reports and does not judge: a missed target prints ``MISSED``, exit 0.
Exit 1 only when the run is broken (Redis does not hold every message exactly once).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import trio

from chatcore.config import load_config
from chatcore.messages import Message
from chatcore.replication import Replicator
from chatcore.store import Store, TurnRecord

TARGET_PER_S = 20_000
CONVERSATIONS = 1_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(folder: Path, port: int) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    process = subprocess.Popen(
        [*args, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def seed(path: Path, messages: int) -> int:
    """Write ``messages`` messages (as turns of two) in CONVERSATIONS conversations."""
    with Store(path, outbox=True) as store:
        turns = messages // 2
        records = [
            TurnRecord(
                f"conv-{n % CONVERSATIONS:05d}",
                (Message.user(f"question {n} " * 4), Message.assistant(f"answer {n} " * 12)),
            )
            for n in range(turns)
        ]
        for start in range(0, len(records), 1000):
            store.write_turns(records[start : start + 1000])
        return store.outbox_depth()


def redis_benchmark(port: int) -> float:
    """Pipelined SET throughput (requests/s) as redis-benchmark reports it."""
    tool = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    output = subprocess.run(
        [tool, "-p", str(port), "-P", "16", "-t", "set", "-n", "100000", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The -q output redraws with \r; the final line reads "SET: 1234567.89 requests per second".
    found = re.findall(r"SET: ([\d.]+) requests per second", output.replace("\r", "\n"))
    if not found:
        raise RuntimeError(f"could not read redis-benchmark's output: {output!r}")
    return float(found[-1])


async def drain(store: Store, url: str, batch_size: int) -> tuple[int, float]:
    settings = load_config(replication={"redis_url": url, "batch_size": batch_size}).replication
    replicator = Replicator(store, settings)
    try:
        started = time.perf_counter()
        sent = await replicator.push_once()
        return sent, time.perf_counter() - started
    finally:
        replicator.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="drain 10,000 rows, not 100,000")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    messages = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="chatcore-bench-") as tmp:
        folder = Path(tmp)
        port = free_port()
        server = start_redis(folder, port)
        try:
            rows = seed(folder / "chatcore.db", messages)
            with Store(folder / "chatcore.db", outbox=True) as store:
                sent, seconds = trio.run(
                    drain, store, f"redis://127.0.0.1:{port}/0", args.batch_size
                )
                left = store.outbox_depth()
            client = redis.Redis(port=port, decode_responses=True)
            stored = sum(client.hlen(k) for k in client.scan_iter(match="chatcore:*:msgs"))
            stream = client.xlen("chatcore:changes")
            baseline = redis_benchmark(port)
        finally:
            server.kill()
            server.wait()
    per_s = sent / seconds
    messages_per_s = messages / seconds
    print("## Draining the outbox to Redis\n")
    print(f"{rows:,} outbox rows ({messages:,} messages + {rows - messages:,} conversation rows),")
    print(f"batch_size {args.batch_size}, Python {sys.version.split()[0]}\n")
    print("| what | value | target | met? |")
    print("|---|---|---|---|")
    met = "yes" if messages_per_s >= TARGET_PER_S else "MISSED"
    print(f"| drain time | {seconds:.2f} s | — | — |")
    print(f"| messages/s | {messages_per_s:,.0f} | ≥ {TARGET_PER_S:,} | {met} |")
    print(f"| changes/s (all rows) | {per_s:,.0f} | — | — |")
    print(f"| redis-benchmark -P 16 SET/s | {baseline:,.0f} | — | — |")
    print(f"| ratio changes/s ÷ SET/s | {per_s / baseline:.3f} | — | — |")
    broken = sent != rows or left != 0 or stored != messages or stream != rows
    if broken:
        print(f"\nBROKEN: sent {sent}, left {left}, stored {stored}, stream entries {stream}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
