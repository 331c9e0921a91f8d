"""Reading the chunk tables of format 2 (a file's chunks, stored as a frame of a pack).

Holds how a table is read (one range read, re-read when it fails its check, decoded bounded by
its declared size, hash-checked), how many tables are read at once (a pack holding many of a
snapshot's tables is read whole) and the requests that takes. Everything is read through a
:class:`TableSource` (the Repository), so that its reads, decryption and error wording stay
the repository's. It must not write, build storage keys, or read manifests.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from snapshot.errors import IntegrityError, SnapshotError
from snapshot.format.chunk_tables import parse_table
from snapshot.format.codecs import decompress
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest
from snapshot.repo.objects import checked_read

#: A pack holding the chunk tables of at least this many files of a snapshot is read whole.
WHOLE_TABLE_PACK = 8
_T = TypeVar("_T")


class TableSource(Protocol):
    """What reading tables needs of a repository (snapshot/repo/repository.py)."""

    def read_object(self, object_id: str) -> bytes: ...

    def read_range(self, object_id: str, offset: int, length: int) -> bytes: ...

    def read_frame(self, frame: Frame, *, table: bool = False, scratch: bytearray | None = None,
                   fetched: bytes | memoryview | None = None) -> bytes | memoryview: ...

    def chunks(self, m: Manifest, f: FileEntry) -> tuple[Chunk, ...]: ...


def read_chunks(source: TableSource, m: Manifest, f: FileEntry) -> tuple[Chunk, ...]:
    """The chunks of file ``f`` of snapshot ``m``: inline (format 1) or read from its
    table (format 2: one range read, decoded bounded by its declared size, hash-checked)."""
    if f.table is None:
        return f.chunks
    return checked_read(*_table_read(source, m, f, lambda raw: _parse_table(m, f, raw)))


def read_table_content(source: TableSource, m: Manifest, f: FileEntry) -> bytes:
    """The bytes of file ``f``'s chunk table (format 2), read and checked as :func:`read_chunks`
    reads them, not parsed: a reader that wants a part of a long table at a time parses
    those lines itself (snapshot/format/chunk_tables.py ``parse_lines``)."""
    return checked_read(*_table_read(source, m, f, lambda raw: _table_bytes(m, f, raw)))


def _table_read(
    source: TableSource, m: Manifest, f: FileEntry, check: Callable[[bytes | memoryview], _T]
) -> tuple[bytes, Callable[[], bytes], Callable[[bytes | memoryview], _T]]:
    assert f.table is not None
    frame = f.table.frame()

    def read() -> bytes:
        try:
            return source.read_range(frame.object, frame.offset, frame.length)
        except SnapshotError as exc:
            raise type(exc)(f"snapshot {m.id}: chunk table of {f.path}: {exc}") from exc

    def parse(raw: bytes | memoryview) -> _T:
        try:
            opened = source.read_frame(frame, table=True, fetched=raw)
        except SnapshotError as exc:
            raise type(exc)(f"snapshot {m.id}: chunk table of {f.path}: {exc}") from exc
        return check(opened)

    return read(), read, parse


def read_tables(
    source: TableSource, m: Manifest, files: Sequence[FileEntry] | None = None
) -> Iterator[tuple[FileEntry, tuple[Chunk, ...]]]:
    """Each of ``files`` (default: all of ``m``'s) with its chunks, in order. A pack holding
    the tables of many of them is read whole, once (a DB with 500 collections has 2,000
    files: 2,000 range reads, on S3 as many requests, become one or two), and at most two
    such packs are held at a time."""
    files = m.files if files is None else files
    uses = Counter(f.table.object for f in files if f.table is not None)
    packs: OrderedDict[str, bytes] = OrderedDict()
    damaged: set[str] = set()
    for f in files:
        ref = f.table
        if ref is None or uses[ref.object] < WHOLE_TABLE_PACK or ref.object in damaged:
            yield f, source.chunks(m, f)
            continue
        pack = packs.get(ref.object)
        if pack is None:
            try:
                pack = packs[ref.object] = source.read_object(ref.object)
            except IntegrityError:  # damaged elsewhere, maybe: read this snapshot's tables alone
                damaged.add(ref.object)
                yield f, source.chunks(m, f)
                continue
            except SnapshotError as exc:
                raise type(exc)(f"snapshot {m.id}: chunk table of {f.path}: {exc}") from exc
            while len(packs) > 2:
                packs.popitem(last=False)
        if ref.offset + ref.length > len(pack):
            raise IntegrityError(f"snapshot {m.id}: chunk table of {f.path}: object {ref.object} is "
                                 f"shorter than its frame at {ref.offset}+{ref.length}")
        raw = source.read_frame(ref.frame(), table=True, fetched=pack[ref.offset : ref.offset + ref.length])
        yield f, _parse_table(m, f, raw)


def plan_table_reads(files: Sequence[FileEntry]) -> list[tuple[str, int]]:
    """The requests :func:`read_tables` makes for ``files`` when nothing fails, as (kind, bytes):
    a "get" per pack it reads whole (its size taken as the end of the last of these tables
    in it: a pack holding tables of other snapshots too is bigger), a "get_range" per table
    read alone."""
    uses = Counter(f.table.object for f in files if f.table is not None)
    ends: dict[str, int] = {}
    for f in files:
        if f.table is not None:
            ends[f.table.object] = max(ends.get(f.table.object, 0), f.table.offset + f.table.length)
    held: OrderedDict[str, None] = OrderedDict()
    out = []
    for f in files:
        ref = f.table
        if ref is None:
            continue
        if uses[ref.object] < WHOLE_TABLE_PACK:
            out.append(("get_range", ref.length))
        elif ref.object not in held:
            held[ref.object] = None
            out.append(("get", ends[ref.object]))
            while len(held) > 2:
                held.popitem(last=False)
    return out


def _parse_table(m: Manifest, f: FileEntry, raw: bytes | memoryview) -> tuple[Chunk, ...]:
    return parse_table(_table_bytes(m, f, raw), f, m.chunk_size, f"snapshot {m.id}")


def _table_bytes(m: Manifest, f: FileEntry, raw: bytes | memoryview) -> bytes:
    assert f.table is not None
    ref = f.table
    what = f"snapshot {m.id}: chunk table of {f.path} (object {ref.object})"
    try:
        content = decompress(raw, ref.codec, ref.size)
    except IntegrityError as exc:
        raise IntegrityError(f"{what}: {exc}") from exc
    if digest(content) != ref.hash:
        raise IntegrityError(f"{what} does not match its hash")
    return content
