"""A gauge of the link to a remote store, and how many requests to keep in flight on it.

A remote store feeds a :class:`Gauge` every GET, range GET and PUT it makes (:meth:`Gauge.timing`):
the bytes, when the request started, when its first byte arrived (a GET: when ``get_object``
returned, before its body was read) and when its last byte did, and how many requests were in
flight meanwhile (the gauge's own count, averaged over the request's time). From them it knows
the latency (the median time to the first byte of recent requests: a few slow answers do not
move it), a connection's rate (the median rate of the bodies of recent big transfers) and the
width, the requests the layers above keep in flight (:attr:`Gauge.width`, read by a
:class:`snapshot.util.gate.GatedExecutor`).

Why the width follows latency x bandwidth: a connection spends ``L + S/r`` on a request of ``S``
bytes, of which only ``S/r`` moves data, so a link whose rate one connection does not reach is
filled only by several. By Little's law ``w`` requests in flight move ``w * S / (L + S/r)``
bytes a second; the gauge measures that over windows of at least ``w`` requests (a window's
"aggregate") and probes: it doubles the width while the aggregate rose by more than
:data:`RISE` with the last doubling, and steps back once it did not. Having found the link's
cap ``A`` it tries the fewest requests that would still carry nearly all of it by the same law
(``w * S / (L0 + S * w / A) >= KEEP * A``) and keeps them if the next window says so. ``L0`` is
the round trip without queueing: the least time to a first byte of the last :data:`LONG`
requests of at least half the typical size (on a full link every answer also waits for the
bytes queued ahead of it, so recent ones overstate it, which is why TCP's BBR keeps its minimum
round trip; and a store may take longer to start a bigger answer). It probes upward again every
:data:`REPROBE` windows. A window whose requests had less than :data:`STARVED` of the width in
flight says nothing of the width (the caller had no more work) and is not judged; a request
answered after more than :data:`SPIKE` times the latency is left out of its window's aggregate.

The width stays within [:data:`LOW`, :data:`HIGH`] and within the memory budget: the bytes held
ahead (width x the mean size of recent requests) at most :data:`BUDGET`. It starts from the
fixed counts used before; it goes below them only where the link's cap was measured and a
window at the fewer requests carried it.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOW, HIGH = 2, 32
#: What the requests in flight may hold at most (a request's bytes are held until used).
BUDGET = 64 << 20
#: A step up is kept when the aggregate rose by more than this factor.
RISE = 1.10
#: A step down goes to the fewest requests that by Little's law carry this share of the best
#: aggregate, and is kept when the aggregate measured stays at least :data:`ACCEPT` of it (the
#: law's estimate and one window's measure each miss by a few percent).
KEEP, ACCEPT = 0.95, 0.90
#: A window whose requests found less than this share of the width in flight is not judged.
STARVED = 0.75
#: A request whose first byte took more than this many times the latency is a spike.
SPIKE = 4.0
#: Settled windows before the next probe upward (the link may have changed).
REPROBE = 16
#: Recent requests the latency, rate and typical size are taken from.
RECENT = 64
#: Requests the round trip without queueing is the least time to a first byte of.
LONG = 512
#: Smallest body whose rate says something of a connection's (smaller: latency dominates).
BIG = 64 << 10


@dataclass(frozen=True)
class Sample:
    """One request: ``nbytes`` moved; times in seconds by the gauge's clock; ``first_byte`` None
    where the store cannot tell it (a PUT's answer comes after its body); ``sharing`` the mean
    number of requests in flight on the gauge while it ran, itself included."""

    nbytes: int
    started: float
    first_byte: float | None
    finished: float
    sharing: float

    @property
    def ttfb(self) -> float | None:
        return None if self.first_byte is None else self.first_byte - self.started


@dataclass(frozen=True)
class LinkReport:
    """What an operation saw of the link (``--json``'s ``link``): the width it used at most
    and last, the latency (ms), a connection's rate and the best aggregate rate (MB/s)."""

    width_max: int
    width_final: int
    latency_ms: float | None
    connection_mb_s: float | None
    aggregate_mb_s: float | None


class Timing:
    """One request being timed (:meth:`Gauge.begin`): call :meth:`first_byte` when its answer
    starts and :meth:`Gauge.finish` once its body is read (or :meth:`Gauge.fail`)."""

    def __init__(self, gauge: Gauge, started: float, area: float, level: int) -> None:
        self._gauge = gauge
        self.started, self.area, self.level = started, area, level
        self.first: float | None = None

    def first_byte(self) -> None:
        self.first = self._gauge.clock()


class Gauge:
    """One direction of a link (see the module docstring). Thread-safe."""

    def __init__(self, start: int, *, low: int = LOW, high: int = HIGH, budget: int = BUDGET,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.low, self.high, self.budget = low, high, budget
        self.clock = clock
        self._lock = threading.Lock()
        self._width = max(low, min(high, start))
        self._in_flight = 0
        #: The integral of the requests in flight over time, up to ``_last``: a request's mean
        #: sharing is its growth over the request's duration.
        self._area, self._last = 0.0, clock()
        self._recent: deque[Sample] = deque(maxlen=RECENT)
        self._ttfbs: deque[tuple[int, float]] = deque(maxlen=LONG)  # (bytes, time to first byte)
        self._window: list[Sample] = []
        #: Requests that started before this ran at an older width: not judged.
        self._epoch = -math.inf
        self._state = "probe"
        self._prev: tuple[int, float] | None = None  # (width, aggregate) before the last step up
        self._best: tuple[int, float] | None = None
        self._settled = 0
        self._peak: float | None = None
        #: Every width in effect, in order (for :meth:`report`'s maximum since a mark).
        self._history = [self._width]

    # -- fed by the store ----------------------------------------------------------------

    def _advance(self) -> float:
        now = self.clock()
        self._area += self._in_flight * max(0.0, now - self._last)
        self._last = max(now, self._last)
        return now

    def begin(self) -> Timing:
        """A request starts."""
        with self._lock:
            now = self._advance()
            self._in_flight += 1
            return Timing(self, now, self._area, self._in_flight)

    def _end(self, t: Timing) -> tuple[float, float]:
        with self._lock:
            now = self._advance()
            self._in_flight -= 1
            seconds = now - t.started
            return now, (self._area - t.area) / seconds if seconds > 0 else float(t.level)

    def finish(self, t: Timing, nbytes: int) -> None:
        """The request ``t`` moved ``nbytes`` and is over."""
        now, sharing = self._end(t)
        self.record(Sample(nbytes, t.started, t.first, now, sharing))

    def fail(self, t: Timing) -> None:
        """The request ``t`` failed: it is not recorded."""
        self._end(t)

    @contextmanager
    def timing(self) -> Iterator[_Done]:
        """Time the block's request: it calls ``first_byte()`` when the answer starts and
        ``done(nbytes)`` once its body is read; without ``done`` it is not recorded."""
        done = _Done(self.begin())
        try:
            yield done
        finally:
            if done.nbytes is None:
                self.fail(done.timing)
            else:
                self.finish(done.timing, done.nbytes)

    def record(self, s: Sample) -> None:
        with self._lock:
            self._recent.append(s)
            if s.ttfb is not None:
                self._ttfbs.append((s.nbytes, s.ttfb))
            if s.started < self._epoch:
                return
            self._window.append(s)
            if len(self._window) >= max(4, self._width):
                window, self._window = self._window, []
                self._judge(window)

    # -- read by the layers above ----------------------------------------------------------

    @property
    def width(self) -> int:
        """The requests to keep in flight now."""
        with self._lock:
            return min(self._width, self._ceiling())

    def ahead_bytes(self) -> int:
        """The bytes to plan ahead so that :attr:`width` requests of a typical size are in
        flight (within :data:`BUDGET`); 0 before anything was measured."""
        with self._lock:
            typical = self._typical()
            return min(self.budget, min(self._width, self._ceiling()) * typical) if typical else 0

    def mark(self) -> int:
        """Where an operation starts, for :meth:`report`."""
        with self._lock:
            return len(self._history) - 1

    def report(self, since: int = 0) -> LinkReport:
        with self._lock:
            latency, rate = self._latency(), self._rate()
            return LinkReport(
                width_max=max(self._history[since:]),
                width_final=min(self._width, self._ceiling()),
                latency_ms=None if latency is None else round(latency * 1000, 1),
                connection_mb_s=None if rate is None else round(rate / 1e6, 2),
                aggregate_mb_s=None if self._peak is None else round(self._peak / 1e6, 2),
            )

    # -- measures (the lock held) ----------------------------------------------------------

    def _latency(self) -> float | None:
        ttfbs = [t for s in self._recent if (t := s.ttfb) is not None]
        return statistics.median(ttfbs) if ttfbs else None

    def _rate(self) -> float | None:
        rates = [s.nbytes / (s.finished - s.first_byte) for s in self._recent
                 if s.first_byte is not None and s.nbytes >= BIG and s.finished > s.first_byte]
        return statistics.median(rates) if rates else None

    def _typical(self) -> int:
        """The bytes of a request, on average: what each of ``width`` requests holds (a few big
        ranges among many small reads weigh as they do in memory)."""
        return int(statistics.fmean(s.nbytes for s in self._recent)) if self._recent else 0

    def _ceiling(self) -> int:
        typical = self._typical()
        cap = self.budget // typical if typical else self.high
        return max(self.low, min(self.high, cap))

    def _aggregate(self, window: list[Sample]) -> float | None:
        """What the window's requests moved a second together: the mean requests in flight
        times bytes over seconds per request (Little's law), spikes left out."""
        latency = self._latency()
        kept = [s for s in window
                if latency is None or s.ttfb is None or s.ttfb <= SPIKE * max(latency, 1e-3)]
        seconds = sum(s.finished - s.started for s in kept)
        if not kept or seconds <= 0:
            return None
        sharing = statistics.fmean(s.sharing for s in window)
        return sharing * sum(s.nbytes for s in kept) / seconds

    def _fewest(self, aggregate: float) -> int:
        """The fewest requests in flight that carry :data:`KEEP` of ``aggregate`` by
        Little's law, were the link's cap all that slowed a connection."""
        typical = self._typical()
        similar = [t for n, t in self._ttfbs if 2 * n >= typical]
        if not similar or not typical:
            return self.high
        return max(self.low, math.ceil(KEEP * aggregate * min(similar) / (typical * (1 - KEEP))))

    # -- the controller (the lock held) ----------------------------------------------------

    def _set(self, width: int, now: float) -> None:
        width = max(self.low, min(width, self._ceiling()))
        if width != self._width:
            self._width = width
            self._epoch = now
            self._window = []
            self._history.append(width)

    def _judge(self, window: list[Sample]) -> None:
        width = min(self._width, self._ceiling())
        if statistics.fmean(s.sharing for s in window) < STARVED * width:
            return
        aggregate = self._aggregate(window)
        if aggregate is None:
            return
        self._peak = max(self._peak or 0.0, aggregate)
        now = window[-1].finished
        if self._state == "probe":
            if self._prev is not None and aggregate <= RISE * self._prev[1]:
                self._best, self._prev = self._prev, None
                fewest = self._fewest(self._best[1])
                if fewest < self._best[0]:
                    self._state = "trial"
                    self._set(fewest, now)
                else:
                    self._settle(self._best[0], now)
            elif width < self._ceiling():
                self._prev = (width, aggregate)
                self._set(width * 2, now)
            else:
                self._best, self._prev = (width, aggregate), None
                self._settle(width, now)
        elif self._state == "trial":
            assert self._best is not None
            self._settle(width if aggregate >= ACCEPT * self._best[1] else self._best[0], now)
        else:
            self._settled += 1
            if self._settled >= REPROBE and width < self._ceiling():
                self._state, self._prev = "probe", (width, aggregate)
                self._set(width * 2, now)

    def _settle(self, width: int, now: float) -> None:
        self._state, self._settled = "settled", 0
        self._set(width, now)


class _Done:
    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.nbytes: int | None = None

    def first_byte(self) -> None:
        self.timing.first_byte()

    def done(self, nbytes: int) -> None:
        self.nbytes = nbytes


#: What reads in flight may hold, and how many at most: a restore holds them beside its
#: decoding and writing. With 32 reads and 64 MiB a 200k restore from a fast link peaked at
#: 257-275 MiB of RSS (233-240 with 8 fixed reads, 244-251 with at most 8 here).
READ_BUDGET, READ_HIGH = 32 << 20, 16


class Link:
    """A remote store's link: a gauge per direction (an uplink is often the slower), starting
    from the fixed counts used before: 8 reads, 4 uploads at once; reads go up to
    :data:`READ_HIGH` holding at most :data:`READ_BUDGET`, uploads up to :data:`HIGH` holding at
    most :data:`BUDGET` (4 packs of 16 MiB, as before)."""

    def __init__(self, *, reads: int = 8, uploads: int = 4) -> None:
        self.down = Gauge(reads, budget=READ_BUDGET, high=READ_HIGH)
        self.up = Gauge(uploads)
