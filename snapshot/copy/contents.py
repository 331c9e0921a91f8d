"""The chunk contents a copy decoded, kept (bounded) as bases for the deltas it copies next.

A delta frame is verified by decoding it against its base's content. When the copy run that
needs it decoded that content itself (copying the parent snapshot a moment ago), taking it from
memory costs nothing; otherwise it is read from the destination, which holds a chain to it.
Only contents whose hash was checked when decoded are put here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

#: Bytes of chunk contents a copy keeps by default: 64 chunks of the default 1 MiB.
DEFAULT_BYTES = 64 << 20


class Contents:
    """Content hash -> content, the least recently used dropped beyond ``limit`` bytes."""

    def __init__(self, limit: int = DEFAULT_BYTES) -> None:
        self.limit = limit
        self._held: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

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
        if len(data) > self.limit:
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
