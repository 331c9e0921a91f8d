"""How many reads and uploads a repository keeps in flight: from a folder, fixed counts; from a
remote store, as many as its link's gauge says (snapshot/storage/link.py), in the order planned.

The operations take their read-ahead pools, the bytes they plan ahead and what they report of
the link from here, never from the store.
"""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from snapshot.repo.repository import Repository
from snapshot.storage.link import HIGH, Gauge, LinkReport
from snapshot.util.gate import GatedExecutor

__all__ = ["LinkReport", "LinkWatch", "ahead_bytes", "read_ahead", "reads_gauge", "uploads_gauge", "watch"]

#: Reads in flight from a remote store that has no gauge (the count used before there was one).
_FIXED_READS = 8


def reads_gauge(repo: Repository) -> Gauge | None:
    link = repo.store.capabilities.link
    return None if link is None or repo.local_root is not None else link.down


def uploads_gauge(repo: Repository) -> Gauge | None:
    link = repo.store.capabilities.link
    return None if link is None or repo.local_root is not None else link.up


def read_ahead(repo: Repository) -> Executor | None:
    """The pool that reads ``repo``'s planned ranges ahead, in the order planned, as many at
    once as its link carries; None for a folder (each range is read by the reader needing it)."""
    if repo.local_root is not None:
        return None
    gauge = reads_gauge(repo)
    if gauge is None:
        return ThreadPoolExecutor(max_workers=_FIXED_READS, thread_name_prefix="range")
    return GatedExecutor(lambda: gauge.width, HIGH, thread_name_prefix="range")


def ahead_bytes(repo: Repository, floor: int) -> int:
    """The bytes of ranges to plan ahead of the reader: ``floor`` (what kept the fixed count
    busy), or what keeps the link's width busy, within its memory budget, if that is more."""
    gauge = reads_gauge(repo)
    return floor if gauge is None else max(floor, gauge.ahead_bytes())


@dataclass(frozen=True)
class LinkWatch:
    """The link's gauge of one direction as an operation starts, for :meth:`report` at its end."""

    gauge: Gauge | None
    mark: int

    def report(self) -> LinkReport | None:
        return None if self.gauge is None else self.gauge.report(self.mark)


def watch(repo: Repository, direction: str) -> LinkWatch:
    """Start watching ``repo``'s link for reads (``"down"``) or uploads (``"up"``)."""
    gauge = reads_gauge(repo) if direction == "down" else uploads_gauge(repo)
    return LinkWatch(gauge, gauge.mark() if gauge is not None else 0)
