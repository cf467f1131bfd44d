"""An HTTP proxy on a loopback port that passes requests to a real server (the registry, the S3 server, a webhook
receiver, the Prefect API) and injects faults into the ones a rule matches: error statuses (with ``Retry-After``),
connection resets, bodies cut short, delays, slow bodies, hangs and altered bodies.

    with FaultProxy(upstream="127.0.0.1:5000") as proxy:
        proxy.add(Fault.status(503, times=3, path=r"/manifests/"))
        ... talk to proxy.host ...
        assert proxy.hits(...) ...

A request is forwarded as it came (its Host header too, so the registry's upload locations name the proxy).
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Fault:
    """What to do to requests matching `method` and the `path` regex, for the first `times` of them (None: all)."""

    kind: str
    method: str | None = None
    path: str = ""
    times: int | None = 1
    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    after: int = 0  # let this many matching requests through first
    count: int = 0  # flood: how many times to send `body`
    seen: int = 0
    applied: int = 0
    sent: int = 0  # flood: body bytes that went out before the client stopped reading

    @classmethod
    def status_code(cls, status: int, *, retry_after: str | None = None, body: bytes = b"", **match: object) -> Fault:
        """Answer `status` (with a ``Retry-After`` when given) instead of forwarding."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls("status", status=status, body=body, headers=headers, **match)  # type: ignore[arg-type]

    @classmethod
    def fail_after(cls, status: int, **match: object) -> Fault:
        """Forward (so the server does the work), then answer `status` instead of the server's answer."""
        return cls("fail_after", status=status, **match)  # type: ignore[arg-type]

    @classmethod
    def reset(cls, **match: object) -> Fault:
        """Reset the connection (RST) without answering."""
        return cls("reset", **match)  # type: ignore[arg-type]

    @classmethod
    def cut(cls, **match: object) -> Fault:
        """Forward, then send the answer's headers and half its body, and close the connection cleanly."""
        return cls("cut", **match)  # type: ignore[arg-type]

    @classmethod
    def delay(cls, seconds: float, **match: object) -> Fault:
        """Wait `seconds`, then forward."""
        return cls("delay", seconds=seconds, **match)  # type: ignore[arg-type]

    @classmethod
    def slow_body(cls, seconds: float, **match: object) -> Fault:
        """Forward, then send the body one small piece every `seconds`."""
        return cls("slow", seconds=seconds, **match)  # type: ignore[arg-type]

    @classmethod
    def hang(cls, seconds: float = 600.0, **match: object) -> Fault:
        """Take the request and answer nothing for `seconds` (then close)."""
        return cls("hang", seconds=seconds, **match)  # type: ignore[arg-type]

    @classmethod
    def alter(cls, old: bytes, new: bytes, **match: object) -> Fault:
        """Forward, and replace `old` with `new` in the answer's body."""
        return cls("alter", body=old, headers={"new": new.decode()}, **match)  # type: ignore[arg-type]

    @classmethod
    def flood(cls, chunk: bytes, count: int, *, headers: dict[str, str] | None = None, seconds: float = 0.0,
              **match: object) -> Fault:
        """Answer 200 with `chunk` sent `count` times, `seconds` apart, as a hostile server does: the body ends when
        the connection closes unless `headers` declare a length (which may lie); `sent` counts what went out."""
        return cls("flood", body=chunk, count=count, headers=headers or {}, seconds=seconds,  # type: ignore[arg-type]
                   **match)

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault takes the request now (and count it)."""
        if (self.method is not None and method != self.method) or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.applied >= self.times):
            return False
        self.applied += 1
        return True


class FaultProxy:
    """A threaded HTTP/1.1 proxy to `upstream` (``host:port``) that applies the first matching `Fault`."""

    def __init__(self, upstream: str, *, upstream_timeout: float = 120.0) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.times: list[tuple[float, str, str]] = []  # when each request came, for Retry-After checks
        self.down = False  # when set, every connection is reset, as a host that went away
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._upstream_timeout = upstream_timeout

    def add(self, *faults: Fault) -> None:
        """Apply `faults` from now on (the first that matches a request takes it)."""
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        """No faults from now on."""
        with self._lock:
            self.faults.clear()

    def count(self, method: str | None = None, path: str = "") -> int:
        """How many requests matched `method` and the `path` regex so far."""
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and re.search(path, p))

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            self.times.append((time.monotonic(), method, path))
            return next((fault for fault in self.faults if fault.matches(method, path)), None)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None: ...

            def handle_one_request(self) -> None:
                if proxy.down:
                    _reset(self.connection)
                    self.close_connection = True
                    return
                super().handle_one_request()

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._fault_for(self.command, self.path)
                kind = fault.kind if fault else None
                if fault is not None and kind == "status":
                    self._answer(fault.status, {**fault.headers, "Content-Type": "application/json"}, fault.body)
                    return
                if kind == "reset":
                    _reset(self.connection)
                    self.close_connection = True
                    return
                if fault is not None and kind == "flood":
                    self._flood(fault)
                    return
                if fault is not None and kind == "hang":
                    time.sleep(fault.seconds)
                    self.close_connection = True
                    return
                if fault is not None and kind == "delay":
                    time.sleep(fault.seconds)
                status, headers, answer = self._forward(body)
                if fault is not None and kind == "fail_after":
                    self._answer(fault.status, {"Content-Type": "application/json"}, b'{"errors":[]}')
                    return
                if fault is not None and kind == "alter":
                    answer = answer.replace(fault.body, fault.headers["new"].encode())
                if kind == "cut":
                    self._answer(status, headers, answer[: len(answer) // 2], length=len(answer))
                    self.close_connection = True
                    return
                if fault is not None and kind == "slow":
                    self._answer(status, headers, answer, pace=fault.seconds)
                    return
                self._answer(status, headers, answer)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                host, _, port = proxy.upstream.partition(":")
                upstream = http.client.HTTPConnection(host, int(port or 80), timeout=proxy._upstream_timeout)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    answer = response.read()
                    # a HEAD answer keeps the length of the body it describes; other lengths are set when sent
                    dropped = _HOP_BY_HOP if self.command == "HEAD" else _HOP_BY_HOP | {"content-length"}
                    kept = [(k, v) for k, v in response.getheaders() if k.lower() not in dropped]
                    return response.status, kept, answer
                finally:
                    upstream.close()

            def _flood(self, fault: Fault) -> None:
                self.send_response(200)
                for key, value in fault.headers.items():
                    self.send_header(key, value)
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for _ in range(fault.count):
                        self.wfile.write(fault.body)
                        self.wfile.flush()
                        fault.sent += len(fault.body)
                        time.sleep(fault.seconds)
                except OSError:  # the client stopped reading and closed: what a bounded client does
                    pass

            def _answer(self, status: int, headers: list[tuple[str, str]] | dict[str, str], body: bytes, *,
                        length: int | None = None, pace: float = 0.0) -> None:
                self.send_response(status)
                pairs = list(headers.items()) if isinstance(headers, dict) else headers
                for key, value in pairs:
                    self.send_header(key, value)
                if not any(key.lower() == "content-length" for key, _ in pairs):
                    self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if pace:
                    for start in range(0, len(body), 64):
                        self.wfile.write(body[start:start + 64])
                        self.wfile.flush()
                        time.sleep(pace)
                else:
                    self.wfile.write(body)

        return Handler


class _QuietServer(ThreadingHTTPServer):
    """A client that goes away mid-answer (it gave up, or was killed) is what faults are about: no traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _reset(connection: socket.socket) -> None:
    """Close with RST rather than FIN, as a crashed peer or a middlebox does."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


class TcpProxy:
    """Forwards TCP connections to `upstream` byte for byte (websockets included) until `cut` is called: then
    every open connection is reset and new ones are reset as they come, as a host that went away."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._down = False
        self._closed = False

    def cut(self) -> None:
        """Reset every connection, now and from now on."""
        with self._lock:
            self._down = True
            sockets, self._open = self._open, set()
        for sock in sockets:
            _reset(sock)

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
