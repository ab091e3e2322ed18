"""A loopback HTTP server that the fakes of the LLM APIs build on.

It speaks real HTTP/1.1 (keep-alive, Content-Length, chunked streaming) from a
thread, so the official clients under test make real requests over a real
socket. Every request is recorded. Faults are queued and each request takes the
next one: an error status with the API's own error body and headers, a hang, a
delay, or a connection dropped, or a stream stalled, after N streamed chunks.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import TracebackType

__all__ = ["FakeAPIServer", "Fault", "JSONResponse", "RecordedRequest", "StreamResponse"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Fault:
    """What to do to one request instead of (or while) answering it normally."""

    status: int | None = None
    """Answer with this status and the API's error body."""
    message: str = "fake error"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    """Never answer (until the server stops): the client's timeout must fire."""
    delay_s: float = 0.0
    """Wait this long before answering."""
    drop_after_chunks: int | None = None
    """Stream this many chunks, then cut the connection without ending the body."""
    stall_after_chunks: int | None = None
    """Stream this many chunks, then send nothing more (until the server stops)."""


@dataclass
class JSONResponse:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamResponse:
    """A streamed body: each item of ``chunks`` is written and flushed as one HTTP chunk."""

    chunks: Iterable[bytes]
    content_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    close_after: bool = False
    """After the body, keep the connection without ``Connection: close``, take the next
    request sent on it and close without an answer: what a server does that gave up on
    a request it had already answered 200 (llama.cpp's, over its context window)."""


class FakeAPIServer:
    """Base of the API fakes: subclasses implement ``handle`` and ``error_body``.

    Use as a context manager (or ``start``/``stop``); ``url`` is the base URL.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.chunk_delay_s = 0.0
        """Pause between streamed chunks (every request)."""
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what subclasses provide ---------------------------------------------------------

    def handle(self, request: RecordedRequest) -> JSONResponse | StreamResponse:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        raise NotImplementedError

    # -- knobs ---------------------------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        message: str = "fake error",
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        for _ in range(times):
            self._queue(Fault(status=status, message=message, headers=dict(headers or {})))

    def hang(self, *, times: int = 1) -> None:
        for _ in range(times):
            self._queue(Fault(hang=True))

    def delay(self, seconds: float, *, times: int = 1) -> None:
        for _ in range(times):
            self._queue(Fault(delay_s=seconds))

    def drop_after(self, chunks: int, *, times: int = 1) -> None:
        for _ in range(times):
            self._queue(Fault(drop_after_chunks=chunks))

    def stall_after(self, chunks: int, *, times: int = 1) -> None:
        for _ in range(times):
            self._queue(Fault(stall_after_chunks=chunks))

    def _queue(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAPIServer:
        handler = _make_handler(self)
        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # A short poll interval: stop() waits for one, and every test stops a server.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAPIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers for subclasses ----------------------------------------------------------

    @staticmethod
    def sse(events: Iterable[tuple[str | None, Any]]) -> Iterator[bytes]:
        """Server-sent events: ``(event name or None, data)``; str data is sent as is."""
        for name, data in events:
            payload = data if isinstance(data, str) else json.dumps(data)
            head = f"event: {name}\n" if name else ""
            yield f"{head}data: {payload}\n\n".encode()

    @staticmethod
    def ndjson(objects: Iterable[Any]) -> Iterator[bytes]:
        for obj in objects:
            yield (json.dumps(obj) + "\n").encode()


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client leaving mid-stream is a normal event in these tests, not a traceback."""


def _make_handler(server: FakeAPIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Small streamed writes must leave at once, not wait for a delayed ACK.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read ``server.requests`` instead."""

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = RecordedRequest(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            with server._lock:
                server.requests.append(request)
            fault = server._next_fault()
            if fault is not None and fault.delay_s:
                server._stopping.wait(fault.delay_s)
            if fault is not None and fault.hang:
                server._stopping.wait()
                self.close_connection = True
                return
            if fault is not None and fault.status is not None:
                self._send_json(
                    JSONResponse(
                        server.error_body(fault.status, fault.message),
                        status=fault.status,
                        headers=fault.headers,
                    )
                )
                return
            response = server.handle(request)
            if isinstance(response, JSONResponse):
                self._send_json(response)
            else:
                drop = fault.drop_after_chunks if fault is not None else None
                stall = fault.stall_after_chunks if fault is not None else None
                self._send_stream(response, drop, stall)

        def _send_json(self, response: JSONResponse) -> None:
            data = json.dumps(response.body).encode()
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _send_stream(
            self, response: StreamResponse, drop_after: int | None, stall_after: int | None
        ) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            for sent, chunk in enumerate(response.chunks):
                if stall_after is not None and sent >= stall_after:
                    server._stopping.wait()
                    self.close_connection = True
                    return
                if drop_after is not None and sent >= drop_after:
                    # Cut the connection mid-body: no terminating chunk.
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if sent and server.chunk_delay_s:
                    server._stopping.wait(server.chunk_delay_s)
                self.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            if response.close_after:
                self.connection.settimeout(5)
                with contextlib.suppress(OSError):
                    self.rfile.readline()
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

    return Handler
