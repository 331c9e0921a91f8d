"""Requests and bytes: those a block of work moved (counted by the store), and those a listing
or a write will take (asked of the store, for predictions: snapshot/repo/prediction.py).

It must not make a request itself, nor know which operation asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from snapshot.storage import Store


@dataclass
class Measurement:
    """Requests and bytes moved while a :meth:`Repository.measure` block ran (filled at exit)."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0


@contextmanager
def measure(store: Store) -> Iterator[Measurement]:
    """Count the requests and bytes of the block (the figures are set when it ends)."""
    stats = store.stats
    before, up, down = stats.as_dict(), stats.bytes_up, stats.bytes_down
    result = Measurement()
    try:
        yield result
    finally:
        after = stats.as_dict()
        result.requests = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
        result.bytes_up = stats.bytes_up - up
        result.bytes_down = stats.bytes_down - down


def list_requests(store: Store, keys: int) -> int:
    """The requests one listing of ``keys`` keys takes (S3 pages them; a folder does not)."""
    page = getattr(store, "list_page_size", None)
    return 1 if not isinstance(page, int) or page <= 0 else max(1, -(-keys // page))


def put_requests(store: Store, size: int) -> int:
    """The requests writing an object of ``size`` bytes takes (S3 sends big ones in parts)."""
    count = getattr(store, "put_requests", None)
    return 1 if count is None else int(count(size))
