"""Content hashes: xxh3-128, hex encoded (32 lowercase hex digits), for chunks, files and packs."""

from __future__ import annotations

import xxhash


def digest(data: bytes | bytearray | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


class FileHasher:
    """Incremental whole-file hash fed chunk by chunk."""

    def __init__(self) -> None:
        self._h = xxhash.xxh3_128()

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()
