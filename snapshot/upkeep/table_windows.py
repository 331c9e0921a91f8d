"""The chunks of every version of one file path, a window of chunk indexes at a time: what
``check --read-data`` walks (snapshot/upkeep/verify.py), with memory bounded by the window
rather than by versions x chunks. Parsed, a chunk of a table takes about 840 bytes: 30 versions
of a 20 GiB file (20,000 chunks each) held at once took about 450 MiB.

When every version fits in one window (:data:`BUDGET` chunk-versions), the tables are parsed
whole, as any reader does. Otherwise each version's table is read once (hash-checked, as
:meth:`Repository.chunks` reads it) into a temporary file, and each window parses only its
lines; a table's lines are validated one by one as they are parsed, and whether they add up to
the file (fixed offsets, the file's size) is checked as the windows go by. A table that cannot
be read or fails a check makes its version broken (``None``): the structure pass names it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import IO

from snapshot.errors import SnapshotError
from snapshot.format.chunk_tables import parse_lines
from snapshot.format.manifest import Chunk, FileEntry, Manifest
from snapshot.repo.repository import Repository

#: Chunk-versions held at once by one walk (about 13 MiB parsed); a window is this divided by
#: the number of versions, at least one index.
BUDGET = 16384


class TableWindows:
    """The chunks of ``entries`` (one per version of ``path``) by windows of :attr:`size`
    indexes: :meth:`window` for each start in :meth:`starts`, in order; then :meth:`close`."""

    def __init__(self, repo: Repository, path: str, entries: Sequence[tuple[Manifest, FileEntry]],
                 budget: int = BUDGET) -> None:
        self.repo, self.path, self.entries = repo, path, entries
        self.count = max((f.chunk_count for _, f in entries), default=0)
        self.size = max(1, min(self.count, budget // max(1, len(entries))))
        self._whole: list[tuple[Chunk, ...] | None] = []
        #: Per version: the spool offsets of each window's first line, then of its end.
        self._bounds: list[list[int] | None] = []
        self._seen = [0] * len(entries)
        self._spool: IO[bytes] | None = None
        if self.size >= self.count:
            self._whole = [self._read_whole(m, f) for m, f in entries]
        else:
            self._spool = tempfile.TemporaryFile(prefix="chroma-snapshot-check-")  # noqa: SIM115 (closed by close)
            try:
                self._bounds = [self._write(m, f) for m, f in entries]
            except BaseException:
                self.close()
                raise

    def starts(self) -> range:
        return range(0, self.count, self.size)

    def window(self, start: int) -> list[tuple[Chunk, ...] | None]:
        """Each version's chunks ``start`` to ``start + size`` (fewer, or none, for a shorter
        file); None for a version whose table could not be read or is invalid."""
        if self._spool is None:
            return [None if c is None else c[start:start + self.size] for c in self._whole]
        out: list[tuple[Chunk, ...] | None] = []
        for i, ((m, f), bounds) in enumerate(zip(self.entries, self._bounds, strict=True)):
            chunks = None if bounds is None else self._parse(i, m, f, bounds, start)
            if chunks is None:
                self._bounds[i] = None
            out.append(chunks)
        return out

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

    def _read_whole(self, m: Manifest, f: FileEntry) -> tuple[Chunk, ...] | None:
        try:
            return self.repo.chunks(m, f)
        except SnapshotError:
            return None

    def _write(self, m: Manifest, f: FileEntry) -> list[int] | None:
        """Spool ``f``'s table lines; the offsets where its windows start (and its end)."""
        if f.table is None:
            return []  # inline chunks (format 1): the manifest holds them already
        try:
            content = self.repo.table_content(m, f)
        except SnapshotError:
            return None
        if content.count(b"\n") != f.chunk_count or (content and not content.endswith(b"\n")):
            return None
        assert self._spool is not None
        base = self._spool.seek(0, 2)
        bounds, pos = [base], 0
        for _ in range(0, f.chunk_count, self.size):
            for _ in range(self.size):
                pos = content.find(b"\n", pos) + 1
                if pos == 0:
                    pos = len(content)
                    break
            bounds.append(base + pos)
        self._spool.write(content)
        return bounds

    def _parse(
        self, i: int, m: Manifest, f: FileEntry, bounds: list[int], start: int
    ) -> tuple[Chunk, ...] | None:
        k = start // self.size
        if f.table is None:
            chunks = f.chunks[start:start + self.size]
        elif k + 1 >= len(bounds):
            return ()
        else:
            assert self._spool is not None
            self._spool.seek(bounds[k])
            lines = self._spool.read(bounds[k + 1] - bounds[k]).splitlines()
            try:
                chunks = parse_lines(lines, start, m.chunk_size, f"snapshot {m.id}: chunk table of {f.path}")
            except SnapshotError:
                return None
        last = f.chunk_count - 1
        for index, c in enumerate(chunks, start):
            if not 0 < c.size <= m.chunk_size or (index < last and c.size != m.chunk_size):
                return None  # not at fixed offsets
        self._seen[i] += sum(c.size for c in chunks)
        if start + len(chunks) > last and self._seen[i] != f.size:
            return None
        return chunks
