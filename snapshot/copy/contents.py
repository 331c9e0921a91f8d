"""The chunk contents a copy decoded, kept (bounded) as bases for the deltas it copies next.

A delta frame is verified by decoding it against its base's content. When the copy run that
needs it decoded that content itself (copying the parent snapshot a moment ago), taking it from
memory costs nothing; otherwise it is read from the destination, which holds a chain to it.
Only contents whose hash was checked when decoded are put here, and only those the snapshots
about to be copied build on (:meth:`Contents.want`: the copy reads the next snapshot's chunk
tables before it copies the current one), so a full copy's contents do not push out the few
the next snapshot's deltas need.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

#: Bytes of chunk contents a copy keeps by default: 128 chunks of the default 1 MiB.
DEFAULT_BYTES = 128 << 20


class Contents:
    """Content hash -> content, of the contents wanted, the least recently used dropped beyond
    ``limit`` bytes."""

    def __init__(self, limit: int = DEFAULT_BYTES) -> None:
        self.limit = limit
        self._held: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._wanted: frozenset[str] = frozenset()

    def want(self, contents: frozenset[str]) -> None:
        """Put from now on only ``contents``; drop what neither they nor the contents wanted
        before name (the snapshot being copied is verified against those)."""
        with self._lock:
            keep = self._wanted | contents
            self._wanted = contents
            for h in [h for h in self._held if h not in keep]:
                self._bytes -= len(self._held.pop(h))

    def __contains__(self, content: object) -> bool:
        with self._lock:
            return content in self._held

    def get(self, content: str) -> bytes | None:
        with self._lock:
            data = self._held.get(content)
            if data is not None:
                self._held.move_to_end(content)
            return data

    def put(self, content: str, data: bytes) -> None:
        if len(data) > self.limit or content not in self._wanted:
            return
        with self._lock:
            old = self._held.pop(content, None)
            if old is not None:
                self._bytes -= len(old)
            self._held[content] = data
            self._bytes += len(data)
            while self._bytes > self.limit:
                _, dropped = self._held.popitem(last=False)
                self._bytes -= len(dropped)
