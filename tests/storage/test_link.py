"""The link gauge (snapshot/storage/link.py) fed a simulated link, deterministically: requests
are kept in flight as wide as the gauge says, each taking the latency to its first byte and its
size over its connection's share of the link; the times are the simulation's, not the clock's."""

from __future__ import annotations

import pytest

from snapshot.storage.link import BUDGET, HIGH, Gauge, Timing

KiB, MiB = 1 << 10, 1 << 20


class Clock:
    """The simulation's clock, for the gauge to read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def new_gauge(start: int) -> Gauge:
    return Gauge(start, clock=Clock())


def simulate(
    gauge: Gauge, *, latency: float, rate: float, total: float | None = None, size: int = 256 * KiB,
    requests: int = 400, spike_every: int = 0, spike: float = 20.0,
) -> None:
    """Run ``requests`` requests of ``size`` bytes, as many at once as the gauge says, through a
    link of ``latency`` to the first byte, ``rate`` bytes/s per connection and ``total`` for all
    together (shared evenly by the bodies being sent), on the gauge's clock (a :class:`Clock`);
    every ``spike_every``-th request waits ``spike`` times the latency."""
    clock = gauge.clock
    assert isinstance(clock, Clock)
    issued = 0
    flying: list[list[float | Timing]] = []  # [its first byte's time, bytes left, its timing]
    while issued < requests or flying:
        while issued < requests and len(flying) < gauge.width:
            wait = latency * (spike if spike_every and issued % spike_every == spike_every - 1 else 1)
            timing = gauge.begin()
            timing.first = clock.now + wait
            flying.append([timing.first, float(size), timing])
            issued += 1
        sending = [f for f in flying if f[0] <= clock.now]  # type: ignore[operator]
        each = rate if total is None or not sending else min(rate, total / len(sending))
        # the next event: a body ends, or an answer starts (and the link is shared anew)
        step = min([f[1] / each for f in sending] + [f[0] - clock.now for f in flying if f not in sending])  # type: ignore[operator]
        clock.now += step
        for f in sending:
            f[1] -= each * step  # type: ignore[operator]
        for f in [f for f in sending if f[1] <= 1e-6]:  # type: ignore[operator]
            flying.remove(f)
            gauge.finish(f[2], size)  # type: ignore[arg-type]


def test_a_link_that_each_connection_only_shares_in_gets_the_widest_width() -> None:
    """60 ms to the first byte, 2 MB/s per connection, no cap on the whole: every doubling of
    the requests in flight doubles what they move, so the gauge goes from 8 to its bound."""
    gauge = new_gauge(8)
    simulate(gauge, latency=0.06, rate=2e6, requests=200)
    report = gauge.report()
    assert gauge.width == report.width_final == report.width_max == HIGH
    assert report.latency_ms == pytest.approx(60.0)
    assert report.connection_mb_s == pytest.approx(2.0)
    # 32 connections of 256 KiB requests, each 60 ms + 131 ms: 32 * 262144 / 0.191 s
    assert report.aggregate_mb_s == pytest.approx(43.9, rel=0.02)


def test_a_capped_link_settles_at_the_few_requests_that_fill_it() -> None:
    """A cap of one connection's rate on the whole link: wider gains nothing, so the gauge steps
    back after one probe, then tries the fewest requests that carry the cap by Little's law
    (3 of 1 MiB with 60 ms to the first byte at 2 MB/s) and keeps them."""
    gauge = new_gauge(8)
    simulate(gauge, latency=0.06, rate=2e6, total=2e6, size=MiB, requests=120)
    report = gauge.report()
    assert report.width_max == 16  # the one probe upward
    assert gauge.width == report.width_final == 3
    assert report.aggregate_mb_s == pytest.approx(2.0, rel=0.05)


def test_latency_spikes_do_not_move_the_latency_nor_the_width() -> None:
    """Every 7th request waits 20x the latency: the latency is a median and a spike is left out
    of its window's aggregate, so the gauge finds the same widths as without spikes."""
    wide = new_gauge(8)
    simulate(wide, latency=0.06, rate=2e6, requests=400, spike_every=7)
    assert wide.width == HIGH
    assert wide.report().latency_ms == pytest.approx(60.0)
    capped = new_gauge(8)
    simulate(capped, latency=0.06, rate=2e6, total=2e6, size=MiB, requests=160, spike_every=7)
    assert capped.width <= 4


def test_the_width_probes_again_when_the_link_changes() -> None:
    gauge = new_gauge(8)
    simulate(gauge, latency=0.06, rate=2e6, total=2e6, size=MiB, requests=120)
    assert gauge.width == 3
    simulate(gauge, latency=0.06, rate=2e6, size=MiB, requests=1500)  # the cap lifted
    assert gauge.width == HIGH


def test_a_window_the_caller_did_not_fill_is_not_judged() -> None:
    """Requests one at a time (the caller had no more work) say nothing of the width."""
    gauge = new_gauge(8)
    simulate(gauge, latency=0.06, rate=2e6, requests=1)
    for _ in range(200):
        simulate(gauge, latency=0.06, rate=2e6, requests=1)
    assert gauge.width == 8 and gauge.report().width_max == 8


def test_the_memory_budget_bounds_the_width_and_what_is_planned_ahead() -> None:
    """16 MiB uploads: 4 at once hold the 64 MiB budget, so a link that would carry more gets 4."""
    gauge = new_gauge(4)
    simulate(gauge, latency=0.06, rate=2e6, size=16 * MiB, requests=60)
    assert gauge.width == BUDGET // (16 * MiB) == 4
    assert gauge.ahead_bytes() == BUDGET
    small = new_gauge(8)
    assert small.ahead_bytes() == 0  # nothing measured yet
    simulate(small, latency=0.06, rate=2e6, size=256 * KiB, requests=400)
    assert small.ahead_bytes() == HIGH * 256 * KiB


def test_a_report_since_a_mark_covers_only_what_came_after() -> None:
    gauge = new_gauge(8)
    simulate(gauge, latency=0.06, rate=2e6, total=2e6, size=MiB, requests=120)
    mark = gauge.mark()
    assert gauge.report(mark).width_max == 3 < gauge.report().width_max


def test_requests_that_fail_are_not_recorded() -> None:
    gauge = Gauge(8)
    with pytest.raises(OSError), gauge.timing() as t:
        t.first_byte()
        raise OSError("cut off")
    assert gauge.report().latency_ms is None
    with gauge.timing() as t:
        t.first_byte()
        t.done(1000)
    assert gauge.begin().level == 1  # both ended
    report = gauge.report()
    assert report.latency_ms is not None and report.connection_mb_s is None  # too small to say
