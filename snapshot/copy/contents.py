"""The chunk contents a copy decoded, kept (bounded) as bases for the deltas it copies next.

A delta frame is verified by decoding it against its base's content. When the copy run that
needs it decoded that content itself (copying the parent snapshot a moment ago), taking it from
here costs nothing; otherwise it comes from the copy's image of the source's last snapshot
(snapshot/copy/image.py) or is read from the destination, which holds a chain to it.
Only contents whose hash was checked when decoded are put here, and only those the snapshots
about to be copied build on (:meth:`Contents.want`: the copy reads the next snapshot's chunk
tables before it copies the current one), so a full copy's contents do not push out the few
the next snapshot's deltas need.

Contents are held in memory up to ``limit`` bytes; the least recently used beyond it go to a
private spill folder on local disk (made on first use, owned by the run, removed by
:meth:`Contents.close` or, after a kill, by the next copy's sweep), up to ``spill_bytes``;
beyond that the least recently spilled are dropped. Every content read back from the spill is
hash-checked (a damaged one is a miss). Which contents are held where is decided by
:class:`Ledger` alone, which the copy's prediction (snapshot/copy/predict.py) runs too.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

from snapshot.format.chunking import read_verified
from snapshot.util.tempdirs import owned_dir, remove_tree, sweep

#: Bytes of chunk contents a copy keeps in memory by default: 128 chunks of the default 1 MiB.
DEFAULT_BYTES = 128 << 20
#: Prefix of the spill folders (in the destination's base cache area).
SPILL_PREFIX = ".copy-spill-"
_HASH = re.compile(r"[0-9a-f]{32}")


def spill_budget(snapshot_bytes: list[int]) -> int:
    """The default disk budget of the spill: twice the logical size of the largest snapshot
    copied (the contents the snapshot being copied and the next one build on)."""
    return 2 * max(snapshot_bytes, default=0)


class Ledger:
    """Which contents are held, in memory or spilled, by size; the rules without the data."""

    def __init__(self, memory: int, disk: int = 0) -> None:
        self.memory, self.disk = memory, disk
        self.in_memory: OrderedDict[str, int] = OrderedDict()
        self.on_disk: OrderedDict[str, int] = OrderedDict()
        self.memory_bytes = self.disk_bytes = 0
        self.wanted: frozenset[str] = frozenset()

    def __contains__(self, content: object) -> bool:
        return content in self.in_memory or content in self.on_disk

    def want(self, contents: frozenset[str]) -> list[str]:
        """Put from now on only ``contents``; drop what neither they nor the contents wanted
        before name (the snapshot being copied is verified against those). Returns the
        contents dropped from the spill."""
        keep, self.wanted = self.wanted | contents, contents
        for h in [h for h in self.in_memory if h not in keep]:
            self.memory_bytes -= self.in_memory.pop(h)
        gone = [h for h in self.on_disk if h not in keep]
        for h in gone:
            self.disk_bytes -= self.on_disk.pop(h)
        return gone

    def touch(self, content: str) -> bool:
        """Whether ``content`` is held (it becomes the most recently used)."""
        for tier in (self.in_memory, self.on_disk):
            if content in tier:
                tier.move_to_end(content)
                return True
        return False

    def forget(self, content: str) -> None:
        self.memory_bytes -= self.in_memory.pop(content, 0)
        self.disk_bytes -= self.on_disk.pop(content, 0)

    def put(self, content: str, size: int) -> tuple[list[str], list[str]] | None:
        """Hold ``content`` (None: not wanted, not held). Returns the contents to move from
        memory to the spill, and those to remove from the spill, in that order."""
        if content not in self.wanted or size > max(self.memory, self.disk):
            return None
        self.forget(content)
        to_disk: list[str] = []
        dropped: list[str] = []
        if size > self.memory:
            self._spill(content, size, to_disk, dropped)
            return to_disk, dropped
        self.in_memory[content] = size
        self.memory_bytes += size
        while self.memory_bytes > self.memory:
            old, n = self.in_memory.popitem(last=False)
            self.memory_bytes -= n
            self._spill(old, n, to_disk, dropped)
        return to_disk, dropped

    def _spill(self, content: str, size: int, to_disk: list[str], dropped: list[str]) -> None:
        if size > self.disk:
            return
        while self.disk_bytes + size > self.disk:
            old, n = self.on_disk.popitem(last=False)
            self.disk_bytes -= n
            dropped.append(old)
        self.on_disk[content] = size
        self.disk_bytes += size
        to_disk.append(content)


class Contents:
    """Content hash -> content, of the contents wanted (see the module docstring). With no
    ``spill_parent`` nothing is spilled."""

    def __init__(self, limit: int = DEFAULT_BYTES, spill_bytes: int = 0,
                 spill_parent: Path | None = None) -> None:
        self.limit = limit
        self.ledger = Ledger(limit, spill_bytes if spill_parent is not None else 0)
        self._held: dict[str, bytes] = {}
        self._parent = spill_parent
        self._dir: Path | None = None
        self._lock = threading.Lock()
        #: Bytes written to the spill, and read back from it (figures).
        self.spilled = self.unspilled = 0

    def want(self, contents: frozenset[str]) -> None:
        with self._lock:
            for h in self.ledger.want(contents):
                self._unlink(h)
            for h in [h for h in self._held if h not in self.ledger.in_memory]:
                del self._held[h]

    def __contains__(self, content: object) -> bool:
        with self._lock:
            return content in self.ledger

    def get(self, content: str) -> bytes | None:
        with self._lock:
            if not self.ledger.touch(content):
                return None
            data = self._held.get(content)
            size = self.ledger.on_disk.get(content)
            spill = self._dir
        if data is not None or size is None or spill is None:
            return data
        data = read_verified(spill / content, 0, size, content)
        with self._lock:
            if data is None:
                self.ledger.forget(content)
            else:
                self.unspilled += size
        return data

    def put(self, content: str, data: bytes) -> None:
        with self._lock:
            was_spilled = content in self.ledger.on_disk
            moves = self.ledger.put(content, len(data))
            if moves is None:
                return
            to_disk, dropped = moves
            if was_spilled and content not in to_disk:
                dropped.append(content)
            for h in dropped:
                self._unlink(h)
            for h in to_disk:
                if h in self.ledger.on_disk:  # (not spilled and dropped again by the same put)
                    self._write(h, data if h == content else self._held[h])
            for h in to_disk:
                self._held.pop(h, None)
            if content in self.ledger.in_memory:
                self._held[content] = data

    def _write(self, content: str, data: bytes) -> None:
        """Spill ``content`` (held by the lock); a failure (a full disk) only drops it."""
        try:
            if not _HASH.fullmatch(content):
                raise ValueError(content)
            if self._dir is None:
                assert self._parent is not None  # no spill budget without it
                self._parent.mkdir(parents=True, exist_ok=True)
                sweep(self._parent, SPILL_PREFIX)  # what killed copies left behind
                self._dir = owned_dir(self._parent, SPILL_PREFIX)
            with open(self._dir / content, "wb") as fh:
                fh.write(data)
            self.spilled += len(data)
        except (OSError, ValueError):
            self.ledger.forget(content)

    def _unlink(self, content: str) -> None:
        if self._dir is not None and _HASH.fullmatch(content):
            with contextlib.suppress(OSError):
                os.unlink(self._dir / content)

    def close(self) -> None:
        """Remove the spill."""
        with self._lock:
            spill, self._dir = self._dir, None
            self._held.clear()
        if spill is not None:
            remove_tree(spill)
