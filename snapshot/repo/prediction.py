"""Predictions: the requests and bytes an operation will take, worked out before it runs.

``--dry-run --json`` of create, restore, prune and copy prints one; the real run's ``--json``
reports it as ``predicted`` beside the ``requests`` and bytes it took. Requests are counted by
the kinds the stores count (get, get_range, put, list, head, delete), as a store counts them
when nothing fails: a retried request, a body re-read after a garbled response and a lock
refreshed during a long run add to what a run takes, never to what is predicted. ``notes``
say what a prediction estimates rather than counts. The cost is priced by the caller from a
price table (snapshot/upkeep/cost.py), which the operations do not see.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from snapshot.format import layout
from snapshot.repo.locks import STALE_AFTER, LockInfo, process_space

if TYPE_CHECKING:
    from snapshot.repo.metering import Measurement
    from snapshot.repo.repository import Repository

#: The DELETEs :meth:`Repository.check_deletes_allowed` sends before a prune or forget.
DELETE_PROBES = len(layout.DELETE_PROBE_KEYS)


@dataclass(frozen=True)
class PredictedCost:
    """What the predicted requests and downloads bill, from a dated price table."""

    prices: str
    currency: str
    #: The storage class the packs are priced in (their requests and retrieval fee).
    pack_class: str
    requests: float
    retrieval: float
    egress: float
    total: float


@dataclass(frozen=True)
class Prediction:
    #: Requests by kind, and their ``total``.
    requests: dict[str, int]
    bytes_up: int
    bytes_down: int
    #: Of those, the requests that read or write packs (billed in the packs' storage class),
    #: and the bytes they read.
    pack_requests: dict[str, int] = field(default_factory=dict)
    pack_bytes_down: int = 0
    notes: tuple[str, ...] = ()
    cost: PredictedCost | None = None


class Tally:
    """Adds up a prediction, request kind by request kind."""

    def __init__(self) -> None:
        self._requests: dict[str, int] = {}
        self._pack: dict[str, int] = {}
        self.bytes_up = self.bytes_down = self._pack_down = 0
        self._notes: list[str] = []

    def add(self, kind: str, count: int = 1, *, up: int = 0, down: int = 0, pack: bool = False) -> None:
        if count <= 0:
            return
        self._requests[kind] = self._requests.get(kind, 0) + count
        self.bytes_up += up
        self.bytes_down += down
        if pack:
            self._pack[kind] = self._pack.get(kind, 0) + count
            self._pack_down += down

    def add_measured(self, m: Measurement) -> None:
        """Add the requests a block was measured to take (:meth:`Repository.measure`), its bytes
        on the first kind."""
        first = True
        for kind, count in m.requests.items():
            if kind != "total":
                self.add(kind, count, up=m.bytes_up if first else 0, down=m.bytes_down if first else 0)
                first = False

    def note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    def result(self) -> Prediction:
        requests = dict(sorted(self._requests.items()))
        requests["total"] = sum(requests.values())
        return Prediction(requests, self.bytes_up, self.bytes_down, dict(sorted(self._pack.items())),
                          self._pack_down, tuple(self._notes))


@dataclass(frozen=True)
class LocksSeen:
    """The other locks a command finds as it takes its own: how many are listed, the sizes of
    the live ones it reads, and how many dead ones (within the stale bound) it removes."""

    listed: int = 0
    read: tuple[int, ...] = ()
    dead: int = 0

    @classmethod
    def now(cls, repo: Repository) -> LocksSeen:
        """What taking a lock on ``repo`` would find now (one listing)."""
        now = repo.now()
        locks = repo.list_locks()
        return cls(len(locks), tuple(obj.size for _info, obj, stale in locks if not stale),
                   sum(1 for _info, obj, stale in locks if stale and now - obj.mtime <= STALE_AFTER))

    def taking(self, repo: Repository, tally: Tally, kind: str, command: str) -> None:
        """Add to ``tally`` what taking a ``kind`` lock for ``command`` costs: the lock written,
        the locks listed and read, the dead ones removed."""
        lock = LockInfo(secrets.token_hex(16), kind, socket.gethostname(), os.getpid(), command, time.time(),
                        time.time(), process_space()).to_json()
        tally.add("put", up=len(lock))
        tally.add("list", repo.list_requests(self.listed + 1))
        for size in self.read:
            tally.add("get", down=size)
        tally.add("delete", self.dead)
