"""A traffic-shaping HTTP reverse proxy for the S3 tests and bench/s3.py, in front of moto.

``ShapingProxy(upstream, latency=0.03, rate=25e6, total_rate=None)`` listens on 127.0.0.1,
port 0, and forwards every request to ``upstream`` the way :mod:`fault_proxy` does (it reuses
its handler: HTTP/1.1 keep-alive, chunked request bodies, ``Expect: 100-continue``, no body for
HEAD), shaped like a slow link to S3:

* ``latency`` seconds are waited before the first byte of every response, the interim
  ``100 Continue`` included (a round trip the client waits out before sending a body);
* ``rate`` (bytes per second) caps each connection's body bytes, a token bucket per connection
  and direction (request bodies are read that slowly, so the client's sends back up; response
  bodies are written that slowly), bursting at most ``burst`` bytes;
* ``total_rate``, if set, caps the body bytes of all connections together (one more bucket
  per direction, shared).

It measures what crossed it, for tests to assert on instead of their own wall clock:
``stats()`` gives the requests and connections seen, the most requests in flight at once (from
the request's headers to the last byte of its response) and the body bytes each way, and
``exchanges`` one :class:`Exchange` per request with its own times. ``reset()`` zeroes them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fault_proxy import Serving, _Handler, _Server, _Upstream

__all__ = ["Exchange", "ShapingProxy", "TrafficStats"]

_SLICE = 64 << 10


class TokenBucket:
    """``rate`` bytes per second, at most ``burst`` ahead; :meth:`take` waits for its bytes.
    A taker may go into debt (a slice bigger than what is left): the next one waits it out, so
    several threads sharing a bucket get ``rate`` between them."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0:
            raise ValueError("a rate must be > 0 bytes per second")
        self.rate, self.burst = float(rate), float(burst)
        self._tokens, self._last = float(burst), time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate) - n
            self._last = now
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


@dataclass
class Exchange:
    """One request through the proxy; times are ``time.monotonic()``."""

    method: str
    path: str
    connection: int
    started: float  # its headers were read
    received: float = 0.0  # its body was read
    first_byte: float = 0.0  # its response started (the latency waited out)
    finished: float = 0.0  # the last one was
    up: int = 0  # request body bytes
    down: int = 0  # response body bytes
    status: int = 0

    @property
    def body_seconds(self) -> float:
        """How long sending the response (its headers and body) took."""
        return self.finished - self.first_byte


@dataclass(frozen=True)
class TrafficStats:
    requests: int
    connections: int
    max_in_flight: int
    bytes_up: int
    bytes_down: int
    by_method: dict[str, int] = field(default_factory=dict)


class _Buckets:
    """A connection's buckets, one per direction, each with the shared one if there is one."""

    def __init__(self, proxy: ShapingProxy) -> None:
        self.shaping = proxy.shaping
        self.up = [TokenBucket(proxy.rate, proxy.burst)] if proxy.rate else []
        self.down = [TokenBucket(proxy.rate, proxy.burst)] if proxy.rate else []
        if proxy.total_up is not None and proxy.total_down is not None:
            self.up.append(proxy.total_up)
            self.down.append(proxy.total_down)


class _ThrottledReader:
    """``rfile`` whose ``read`` (request bodies) goes no faster than the buckets allow."""

    def __init__(self, raw: BinaryIO, buckets: list[TokenBucket], exchange: Exchange) -> None:
        self._raw, self._buckets, self._exchange = raw, buckets, exchange

    def read(self, n: int) -> bytes:
        parts = []
        while n > 0:
            want = min(n, _SLICE)
            for bucket in self._buckets:
                bucket.take(want)
            part = self._raw.read(want)
            if not part:
                break
            parts.append(part)
            self._exchange.up += len(part)
            n -= len(part)
        return b"".join(parts)

    def readline(self, *args: Any) -> bytes:
        return self._raw.readline(*args)  # chunk sizes and trailers: not body bytes


class _ShapingServer(_Server):
    proxy: ShapingProxy  # type: ignore[assignment]


class _ShapingHandler(_Handler):
    server: _ShapingServer  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        self.buckets = _Buckets(self.server.proxy)
        self.connection_no = self.server.proxy._connection_no()

    def handle_expect_100(self) -> bool:
        time.sleep(self.server.proxy.latency)
        return super().handle_expect_100()

    def _proxy(self) -> None:
        proxy = self.server.proxy
        ex = proxy._begin(self.command, self.path, self.connection_no)
        if self.buckets.shaping != proxy.shaping:  # shaped anew since this connection opened
            self.buckets = _Buckets(proxy)
        try:
            raw, self.rfile = self.rfile, _ThrottledReader(self.rfile, self.buckets.up, ex)  # type: ignore[assignment]
            try:
                body = self._read_body()
            finally:
                self.rfile = raw
            ex.received = time.monotonic()
            up = self._forward(body)
            ex.status = up.status
            time.sleep(proxy.latency)
            self._send_shaped(up, ex)
        finally:
            proxy._end(ex)

    def _send_shaped(self, up: _Upstream, ex: Exchange) -> None:
        body = b"" if self.command == "HEAD" else up.body
        head = self._head(up)
        view = memoryview(body)
        ex.first_byte = time.monotonic()
        first = True
        while first or view:
            part = view[:_SLICE]
            for bucket in self.buckets.down:
                bucket.take(len(part))
            self.wfile.write(head + part if first else part)
            first = False
            ex.down += len(part)
            view = view[len(part):]
        self.wfile.flush()
        ex.finished = time.monotonic()


class ShapingProxy(Serving):
    """See the module docstring. Use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        upstream: str,
        *,
        latency: float = 0.0,
        rate: float | None = None,
        total_rate: float | None = None,
        burst: int = 2 * _SLICE,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.burst = burst
        self.shape(latency=latency, rate=rate, total_rate=total_rate)
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = self._max_in_flight = self._connections = self._opened = 0
        self._server = _ShapingServer(self)  # type: ignore[arg-type]
        self._server.RequestHandlerClass = _ShapingHandler
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="shaping-proxy",
            daemon=True,
        )
        self._thread.start()

    def shape(
        self, *, latency: float = 0.0, rate: float | None = None, total_rate: float | None = None
    ) -> None:
        """New shaping (see the module docstring), from the next request on (on connections
        already open too)."""
        if latency < 0 or (rate is not None and rate <= 0) or (total_rate is not None and total_rate <= 0):
            raise ValueError("latency must be >= 0 and rates > 0")
        self.latency, self.rate, self.total_rate = latency, rate, total_rate
        self.total_up = TokenBucket(total_rate, self.burst) if total_rate else None
        self.total_down = TokenBucket(total_rate, self.burst) if total_rate else None
        self.shaping = getattr(self, "shaping", 0) + 1

    # -- bookkeeping (called by the handler threads) ----------------------------------------

    def _connection_no(self) -> int:
        with self._lock:
            self._opened += 1
            self._connections += 1
            return self._connections

    def _begin(self, method: str, path: str, connection: int) -> Exchange:
        ex = Exchange(method, path, connection, started=time.monotonic())
        with self._lock:
            self._exchanges.append(ex)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        return ex

    def _end(self, ex: Exchange) -> None:
        if not ex.finished:
            ex.finished = time.monotonic()
        with self._lock:
            self._in_flight -= 1
            self._idle.notify_all()

    # -- what tests and the bench read ------------------------------------------------------

    def _settle(self) -> None:
        """Wait (a little) for the requests in flight: a client may hold a whole response while
        the proxy has yet to note that it sent it."""
        self._idle.wait_for(lambda: self._in_flight == 0, timeout=5.0)

    @property
    def exchanges(self) -> list[Exchange]:
        """Every request so far, in the order they arrived (once none is in flight)."""
        with self._lock:
            self._settle()
            return list(self._exchanges)

    def stats(self) -> TrafficStats:
        with self._lock:
            self._settle()
            exchanges = list(self._exchanges)
            by_method: dict[str, int] = {}
            for ex in exchanges:
                by_method[ex.method] = by_method.get(ex.method, 0) + 1
            return TrafficStats(
                requests=len(exchanges),
                connections=self._opened,
                max_in_flight=self._max_in_flight,
                bytes_up=sum(ex.up for ex in exchanges),
                bytes_down=sum(ex.down for ex in exchanges),
                by_method=by_method,
            )

    def in_flight_over(self, exchanges: list[Exchange] | None = None) -> Iterator[tuple[float, int]]:
        """(time, requests in flight from then on) at every start and end among ``exchanges``
        (all by default): the profile a test or the bench reads the overlap from."""
        chosen = self.exchanges if exchanges is None else exchanges
        starts = [(ex.started, 1) for ex in chosen]
        events = sorted(starts + [(ex.finished, -1) for ex in chosen if ex.finished])
        level = 0
        for at, step in events:
            level += step
            yield at, level

    def reset(self) -> None:
        """Forget the requests and connections counted so far (the open ones count on)."""
        with self._lock:
            self._exchanges = []
            self._max_in_flight = self._in_flight
            self._opened = 0

    def __enter__(self) -> ShapingProxy:
        return self
