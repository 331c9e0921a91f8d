"""Fixed-offset chunks: the chunk size rule, iterating a file's chunks with their hashes, and
reading one chunk back only if it still holds the expected bytes.

Chroma rewrites its files in place, so a chunk is identified by (file, offset = index x chunk
size) and its xxh3-128; every module that cuts, indexes or re-reads chunks does it here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from snapshot.errors import UsageError
from snapshot.format.hashing import FileHasher, digest

DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 1 << 30


def chunk_size_problem(size: object) -> str | None:
    """Why ``size`` is not a usable chunk size, or None."""
    if not isinstance(size, int) or isinstance(size, bool):
        return f"chunk size must be an integer, got {size!r}"
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE or size & (size - 1):
        return f"chunk size must be a power of two between 4 KiB and 1 GiB, got {size}"
    return None


def check_chunk_size(size: int) -> int:
    problem = chunk_size_problem(size)
    if problem:
        raise UsageError(problem)
    return size


@dataclass(frozen=True)
class RawChunk:
    index: int
    offset: int
    data: bytes
    hash: str


class ChunkedFile:
    """Iterate ``path`` in fixed-offset chunks; after the loop, ``size`` and ``hash`` describe
    the whole file as read (one pass, no second read for the file hash)."""

    def __init__(self, path: Path, chunk_size: int) -> None:
        self.path = path
        self.chunk_size = chunk_size
        self.size = 0
        self._hasher = FileHasher()

    def __iter__(self) -> Iterator[RawChunk]:
        with open(self.path, "rb") as fh:
            index = 0
            while data := fh.read(self.chunk_size):
                self._hasher.update(data)
                yield RawChunk(index, self.size, data, digest(data))
                self.size += len(data)
                index += 1

    @property
    def hash(self) -> str:
        return self._hasher.hexdigest()


def read_verified(path: Path, offset: int, size: int, expected: str) -> bytes | None:
    """``size`` bytes at ``offset`` of ``path`` if they hash to ``expected``; None otherwise
    (missing, shorter, changed, unreadable: the caller then gets the chunk elsewhere)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
    except OSError:
        return None
    return data if len(data) == size and digest(data) == expected else None


def chunk_sizes(file_size: int, chunk_size: int) -> Iterator[int]:
    """The raw length of each chunk of a file of ``file_size`` bytes."""
    full, rest = divmod(file_size, chunk_size)
    yield from (chunk_size for _ in range(full))
    if rest:
        yield rest


def is_regular_file(path: Path) -> bool:
    try:
        return os.path.isfile(path) and not os.path.islink(path)
    except OSError:
        return False
