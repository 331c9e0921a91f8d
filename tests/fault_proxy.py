"""A fault-injecting HTTP reverse proxy for the S3 tests, in front of the moto server.

``FaultProxy(upstream, seed=1, error=0.10, reset=0.05, truncate=0.05, corrupt=0.05)`` listens on 127.0.0.1,
port 0, and forwards every request to ``upstream`` (one fresh upstream connection per request).
For each request it draws once from a ``random.Random(seed)`` and, at the given rates, instead
of a plain answer it:

* ``error``: answers 503 SlowDown or 500 InternalError (S3's XML) without forwarding;
* ``reset``: cuts the connection with a TCP reset at one of ``reset_points``: ``"before"``
  forwarding, ``"after"`` forwarding with no response (a lost response), or ``"mid-body"``
  after the headers and part of the body (for a response without a body: ``"after"``);
* ``truncate``: forwards, sends the full ``Content-Length`` but only part of the body, then
  closes cleanly (a response without a body, e.g. HEAD or a PUT, passes through untouched);
* ``corrupt``: forwards and sends the whole body, headers unchanged, with one byte flipped (a
  response without a body passes through untouched): the right length, the wrong bytes.

The part of a body sent (and the byte flipped) is a random fraction, or ``keep`` (0.0: none of it). ``limit`` stops
injecting after that many faults; ``enabled = False`` switches faults off;
``drop_response_for(predicate)`` forwards the next matching request and drops its response;
``corrupt_for(predicate)`` garbles the next matching response with a body.
``counts`` says what was injected (``"requests"``: every request seen).

The proxy keeps client connections alive, accepts ``Transfer-Encoding: chunked`` request
bodies (forwarded de-chunked, with any ``Content-Encoding: aws-chunked`` left for moto to
decode), answers ``Expect: 100-continue`` itself, and sends no body for HEAD.

Which request gets which fault follows arrival order: with parallel clients a seed fixes the
sequence of faults, not which key each one hits.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "ProxiedRequest"]

#: Not forwarded: hop-by-hop headers, and those the proxy sets itself.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "expect", "content-length", "host",
}
_ERRORS = (
    (503, "Service Unavailable", "SlowDown", "Please reduce your request rate."),
    (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
)


@dataclass(frozen=True)
class ProxiedRequest:
    """What a ``drop_response_for`` predicate sees of a request."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names


@dataclass(frozen=True)
class _Upstream:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.aborted: set[int] = set()
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.sockets_lock:
                self.open_sockets.discard(request)

    def shutdown_request(self, request: Any) -> None:
        if id(request) in self.aborted:
            # No FIN first: with SO_LINGER 0 the close sends a bare RST.
            self.aborted.discard(id(request))
            request.close()
            return
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and Expect: 100-continue is answered for us
    server: _Server
    timeout = 60  # an idle keep-alive connection does not hold a thread forever
    disable_nagle_algorithm = True  # else small responses wait out the client's delayed ACK

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    # -- the request --------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> _Upstream:
        target = urlsplit(self.server.proxy.upstream)
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            # Host names the upstream, as nginx's proxy_pass does by default (moto does not
            # check signatures, but refuses unsigned requests for another host).
            conn.putrequest(self.command, self.path, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return _Upstream(resp.status, resp.reason, resp.getheaders(), data)
        finally:
            conn.close()

    # -- the response -------------------------------------------------------------------

    def _head(self, up: _Upstream) -> bytes:
        lines = [f"HTTP/1.1 {up.status} {up.reason}"]
        length = None
        for name, value in up.headers:
            if name.lower() == "content-length":
                length = value
            if name.lower() not in _HOP_BY_HOP:
                lines.append(f"{name}: {value}")
        if self.command != "HEAD":
            length = str(len(up.body))
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, up: _Upstream, body_bytes: int | None = None) -> None:
        body = b"" if self.command == "HEAD" else up.body if body_bytes is None else up.body[:body_bytes]
        self.wfile.write(self._head(up) + body)  # one write: no segment waits for an ACK
        self.wfile.flush()

    def _send_error(self, status: int, reason: str, code: str, message: str) -> None:
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        self._send(_Upstream(status, reason, [("Content-Type", "application/xml")], xml))

    def _abort(self) -> None:
        """Cut the connection with a TCP reset (whatever was written is flushed first)."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.aborted.add(id(self.connection))
        self.close_connection = True

    def _proxy(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        request = ProxiedRequest(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
        )
        fault, rng, targeted = proxy._decide(request)
        if fault == "error":
            self._send_error(*_ERRORS[int(rng.random() * len(_ERRORS))])
            return
        point = proxy.reset_points[int(rng.random() * len(proxy.reset_points))]
        if fault == "reset" and point == "before":
            self._abort()  # nothing forwarded, nothing answered
            return
        up = self._forward(body)
        has_body = self.command != "HEAD" and len(up.body) > 0
        keep = int((rng.random() if proxy.keep is None else proxy.keep) * len(up.body))
        if fault == "drop" or (fault == "reset" and (point == "after" or not has_body)):
            self._abort()  # forwarded, answer lost
        elif fault == "reset":
            self._send(up, body_bytes=min(keep, len(up.body) - 1))
            self._abort()
        elif fault == "truncate" and has_body:
            self._send(up, body_bytes=min(keep, len(up.body) - 1))
            self.close_connection = True  # FIN after the partial body
        elif fault == "corrupt" and has_body:
            at = min(keep, len(up.body) - 1)
            flipped = up.body[:at] + bytes([up.body[at] ^ 0xFF]) + up.body[at + 1 :]
            self._send(_Upstream(up.status, up.reason, up.headers, flipped))
        else:
            if fault in ("truncate", "corrupt") and not targeted:
                proxy._uncount(fault)  # no body: passed through untouched
            self._send(up)


class Serving:
    """The lifecycle both test proxies share: a server in its own thread, stopped (every client
    connection cut, every thread joined) by :meth:`stop` or on leaving a ``with`` block."""

    _server: _Server
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop serving, cut the client connections still open and join every thread."""
        self._server.shutdown()
        with self._server.sockets_lock:
            for sock in list(self._server.open_sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class FaultProxy(Serving):
    """See the module docstring. Use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 1,
        error: float = 0.0,
        reset: float = 0.0,
        truncate: float = 0.0,
        corrupt: float = 0.0,
        limit: int | None = None,
        reset_points: tuple[str, ...] = ("before", "after", "mid-body"),
        keep: float | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.enabled = True
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._targeted: list[tuple[str, Callable[[ProxiedRequest], bool], int]] = []
        self.set_rates(
            error=error, reset=reset, truncate=truncate, corrupt=corrupt, limit=limit,
            reset_points=reset_points, keep=keep,
        )
        self._server = _Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
        )
        self._thread.start()

    def set_rates(
        self,
        *,
        error: float = 0.0,
        reset: float = 0.0,
        truncate: float = 0.0,
        corrupt: float = 0.0,
        limit: int | None = None,
        reset_points: tuple[str, ...] = ("before", "after", "mid-body"),
        keep: float | None = None,
    ) -> None:
        """New fault rates (each a probability per request) and details (module docstring);
        ``limit`` caps the faults injected from now on (None: no cap). Switches faults on."""
        if min(error, reset, truncate, corrupt) < 0 or error + reset + truncate + corrupt > 1:
            raise ValueError("fault rates must be >= 0 and add up to at most 1")
        if not reset_points or not set(reset_points) <= {"before", "after", "mid-body"}:
            raise ValueError(f"reset points must be among before, after, mid-body: {reset_points}")
        if keep is not None and not 0.0 <= keep < 1.0:
            raise ValueError("keep must be in [0, 1)")
        with self._lock:
            self.error, self.reset, self.truncate, self.corrupt = error, reset, truncate, corrupt
            self.reset_points, self.keep = reset_points, keep
            self._left = limit
            self.enabled = True

    def drop_response_for(self, predicate: Callable[[ProxiedRequest], bool], times: int = 1) -> None:
        """Forward the next ``times`` requests matching ``predicate`` but drop their responses
        (the connection is reset): the write happened, the client never hears of it. This
        applies even when faults are switched off."""
        with self._lock:
            self._targeted.append(("drop", predicate, times))

    def corrupt_for(self, predicate: Callable[[ProxiedRequest], bool], times: int = 1) -> None:
        """Flip a byte of the body of the next ``times`` responses to requests matching
        ``predicate`` (the ``corrupt`` fault), even when faults are switched off. A matching
        request whose response has no body is passed through and still counts as one."""
        with self._lock:
            self._targeted.append(("corrupt", predicate, times))

    @property
    def injected(self) -> int:
        """Faults injected so far (errors, resets, truncations, corruptions, dropped responses)."""
        with self._lock:
            return sum(v for k, v in self.counts.items() if k != "requests")

    def _decide(self, request: ProxiedRequest) -> tuple[str | None, random.Random, bool]:
        """The fault for one request, a generator seeded from the shared one for its details, and
        whether the fault was asked for this request (``drop_response_for``, ``corrupt_for``)."""
        with self._lock:
            self.counts["requests"] += 1
            fault: str | None = None
            targeted = False
            for i, (kind, predicate, times) in enumerate(self._targeted):
                if predicate(request):
                    self._targeted[i] = (kind, predicate, times - 1)
                    self._targeted = [t for t in self._targeted if t[2] > 0]
                    fault, targeted = kind, True
                    break
            draw = self._rng.random()
            detail = random.Random(self._rng.getrandbits(64))
            if fault is None and self.enabled and (self._left is None or self._left > 0):
                if draw < self.error:
                    fault = "error"
                elif draw < self.error + self.reset:
                    fault = "reset"
                elif draw < self.error + self.reset + self.truncate:
                    fault = "truncate"
                elif draw < self.error + self.reset + self.truncate + self.corrupt:
                    fault = "corrupt"
                if fault is not None and self._left is not None:
                    self._left -= 1
            if fault is not None:
                self.counts[fault] += 1
            return fault, detail, targeted

    def _uncount(self, fault: str) -> None:
        with self._lock:
            self.counts[fault] -= 1
            if self._left is not None:
                self._left += 1

    def __enter__(self) -> FaultProxy:
        return self
