"""A real ``redis-server`` per test, on a free port, that a test can kill and restart.

The default server keeps nothing on disk (``--save "" --appendonly no``): a kill loses
its data, as a crashed cache would. ``persistent=True`` runs it with an fsync-always
append-only file in the test's folder, so what Redis acknowledged survives a kill and a
restart on the same port (the flapping and partition tests need that).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from helpers import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"


class RedisServer:
    """One redis-server process on a fixed port; ``start``/``kill``/``restart`` it at will."""

    def __init__(
        self,
        folder: Path,
        *,
        password: str | None = None,
        persistent: bool = False,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.persistent = persistent
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", ""]
        if self.tls:
            cert, key, ca = self.tls
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra_args

    def start(self) -> None:
        """Start the server and wait until it answers PING (and has loaded its data)."""
        assert self.process is None, "already running"
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(self._args(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                output = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start:\n{output}")
            try:
                with self.client() as client:
                    client.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, connections drop mid-command."""
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        """A plain client for assertions (decoded strings)."""
        if self.tls:
            _, _, ca = self.tls
            return redis.Redis(
                host="127.0.0.1",
                port=self.port,
                password=self.password,
                decode_responses=True,
                ssl=True,
                ssl_ca_certs=str(ca),
            )
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, decode_responses=True
        )


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Make RedisServer objects (not started); every one is killed at the end."""
    servers: list[RedisServer] = []

    def make(**kwargs: object) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """A running, throwaway redis-server on a free port."""
    server = redis_factory()
    server.start()
    return server


@pytest.fixture
def machine_redis() -> Iterator[tuple[str, str]]:
    """The machine's shared Redis (127.0.0.1:6379) and a unique key prefix, cleaned up after.

    Skips when that Redis is not there, except under CI=true, where it fails.
    """
    client = redis.Redis.from_url(
        MACHINE_REDIS_URL, socket_connect_timeout=1, decode_responses=True
    )
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        client.close()
        message = f"no Redis at {MACHINE_REDIS_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    prefix = f"chatcore-test-{uuid.uuid4().hex[:12]}"
    try:
        yield MACHINE_REDIS_URL, prefix
    finally:
        # Only this test's keys: never FLUSHALL a shared server.
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 (needs ``openssl``)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subject = ["-subj", "/CN=127.0.0.1"]
    run = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
         "-out", str(ca), "-days", "2", "-subj", "/CN=chatcore test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(csr), *subject],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
    ]  # fmt: skip
    for command in run:
        subprocess.run(command, check=True, capture_output=True)
    return cert, key, ca
