"""Proving a captured Chroma directory consistent without loading any index.

For every collection, the records Chroma will report once it opens the directory (the metadata
segment plus the queue entries it has not applied) must be exactly the records its HNSW index
will hold (the ids of ``index_metadata.pickle`` plus the queue entries past the vector
segment's max_seq_id): same count, same order-free digest of the ids. The HNSW files must
agree with their header (``header.bin`` whole, ``length.bin`` and ``data_level0.bin`` sized
for its element count), a segment that has applied queue entries must have its folder, and
``chroma.sqlite3`` must pass SQLite's ``PRAGMA quick_check``.

These checks run on the consistent copy at create (and are recorded in the manifest) and again
on a restored directory before it is swapped in. Memory is bounded by the largest collection
(its id map), never the sum; nothing of chromadb is imported.
"""

from __future__ import annotations

import io
import sqlite3
import struct
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapshot.chroma.idmap import PICKLE, read_id_map
from snapshot.chroma.schema import (
    DB_NAME,
    Queue,
    SegmentRow,
    id_digest,
    ids_digest,
    metadata_ids,
    min_segment_seq,
    open_readonly,
    quick_check,
    replay,
    schema_levels,
    segment_seq,
    segments,
)
from snapshot.errors import SnapshotError

HEADER = "header.bin"
SEGMENT_FILES = (HEADER, "data_level0.bin", "length.bin", "link_lists.bin")
#: hnswlib's persisted header: version, offsetLevel0, max_elements, cur_element_count,
#: size_data_per_element, label_offset, offsetData, maxlevel, enterpoint_node, maxM, maxM0, M,
#: mult, ef_construction.
_HEADER = struct.Struct("<iQQQQQQiIQQQdQ")
_MASK = (1 << 64) - 1
CHECKS = ("sqlite-quick-check", "segment-files", "hnsw-header", "hnsw-sizes", "ids-match")


@dataclass(frozen=True)
class Verification:
    """What the checks found: per collection the record count; ``problems`` empty if sound."""

    checks: tuple[str, ...]
    schema: dict[str, tuple[int, str]]
    collections: dict[str, int]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class HnswHeader:
    max_elements: int
    count: int
    size_per_element: int


def read_header(path: Path) -> HnswHeader:
    with open(path, "rb") as fh:
        return parse_header(fh.read(_HEADER.size))


def parse_header(data: bytes) -> HnswHeader:
    """The header from the first bytes of a ``header.bin``; ValueError if it is not one."""
    if len(data) < _HEADER.size:
        raise ValueError(f"{HEADER} is {len(data)} bytes, shorter than hnswlib's {_HEADER.size}")
    f = _HEADER.unpack_from(data)
    header = HnswHeader(max_elements=f[2], count=f[3], size_per_element=f[4])
    if not 0 <= header.count <= header.max_elements or header.size_per_element <= 0:
        raise ValueError(f"{HEADER} holds impossible values (count {header.count}, capacity "
                         f"{header.max_elements}, element size {header.size_per_element})")
    return header


def segment_problem(sizes: Mapping[str, int], header: HnswHeader | str) -> str | None:
    """What is wrong with a segment folder whose files have ``sizes`` (name -> bytes) and
    whose header.bin reads as ``header`` (a string: why it does not): every file present,
    length.bin and data_level0.bin sized for the header's element count, and a pickle if it
    holds elements. None if sound."""
    missing = [n for n in SEGMENT_FILES if n not in sizes]
    if missing:
        return f"segment folder lacks {', '.join(missing)}"
    if isinstance(header, str):
        return header
    allowed = {header.count, header.max_elements}
    if sizes["length.bin"] // 4 not in allowed or sizes["length.bin"] % 4:
        return f"length.bin is {sizes['length.bin']} bytes, not 4 per element of the header's {header.count}"
    if sizes["data_level0.bin"] not in {n * header.size_per_element for n in allowed}:
        return (f"data_level0.bin is {sizes['data_level0.bin']} bytes, not {header.count} elements of "
                f"{header.size_per_element}")
    if header.count and PICKLE not in sizes:
        return f"{header.count} elements in the index but no {PICKLE}"
    return None


def _hnsw_header(folder: Path, problems: list[str], where: str) -> HnswHeader | None:
    """:func:`segment_problem` of a folder; its header, or None after a problem was recorded."""
    sizes = {n: (folder / n).stat().st_size for n in (*SEGMENT_FILES, PICKLE) if (folder / n).is_file()}
    header: HnswHeader | str = "no header"
    if HEADER in sizes:
        try:
            header = read_header(folder / HEADER)
        except (OSError, ValueError) as exc:
            header = str(exc)
    problem = segment_problem(sizes, header)
    if problem is not None or isinstance(header, str):
        problems.append(f"{where}: {problem}")
        return None
    return header


@dataclass(frozen=True)
class IndexIds:
    """A vector segment's persisted ids against chroma.sqlite3's queue: how many ids its
    pickle maps, and the records (count, order-free digest of the ids) its index will hold
    once Chroma replays the queue entries past the segment's max_seq_id."""

    pickled: int
    count: int
    digest: int


@dataclass(frozen=True)
class _Expected:
    """What chroma.sqlite3 says of one collection: its records (count and order-free digest of
    the ids, queue entries not yet applied included) and, per vector segment, the last queue
    entry it applied."""

    name: str
    collection_id: str
    has_metadata: bool
    count: int
    digest: int
    vectors: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class SqliteSide:
    """Everything the checks need from chroma.sqlite3, read before the segment files are
    looked at (a restore reads it while the segment files are still being written)."""

    checks: tuple[str, ...]
    schema: dict[str, tuple[int, str]]
    collections: tuple[_Expected, ...]
    queue: Queue | None
    problems: tuple[str, ...]


def _expected(conn: sqlite3.Connection, queue: Queue, name: str, rows: list[SegmentRow]) -> _Expected:
    cid = rows[0].collection_id
    meta = [r.segment for r in rows if r.scope == "METADATA"]
    count, digest = 0, 0
    for seg in meta:
        c, d = metadata_ids(conn, cid, seg, queue)
        count, digest = count + c, (digest + d) & _MASK
    vectors = tuple((r.segment, segment_seq(conn, r.segment)) for r in rows if r.scope == "VECTOR")
    return _Expected(name, cid, bool(meta), count, digest, vectors)


def read_sqlite_side(root: Path, *, sqlite_check: bool = True) -> SqliteSide:
    """The SQLite half of :func:`verify_dir`: only ``root``'s chroma.sqlite3 is read."""
    checks = CHECKS if sqlite_check else tuple(c for c in CHECKS if c != "sqlite-quick-check")
    try:
        conn = open_readonly(root / DB_NAME, immutable=True)
    except sqlite3.Error as exc:
        return SqliteSide(checks, {}, (), None, (f"{DB_NAME} does not open: {exc}",))
    problems: list[str] = []
    expected: list[_Expected] = []
    queue = None
    try:
        if sqlite_check and (trouble := quick_check(conn)):
            problems.append(f"{DB_NAME} fails SQLite's quick_check: {trouble}")
        schema = schema_levels(conn)
        by_collection: dict[str, list[SegmentRow]] = {}
        for row in segments(conn):
            by_collection.setdefault(row.collection, []).append(row)
        queue = Queue(conn, min_segment_seq(conn))
        expected = [_expected(conn, queue, name, rows) for name, rows in sorted(by_collection.items())]
    except sqlite3.Error as exc:
        problems.append(f"{DB_NAME} cannot be read: {exc}")
        schema = {}
    finally:
        conn.close()
    return SqliteSide(checks, schema, tuple(expected), queue, tuple(problems))


def _where(e: _Expected, segment: str) -> str:
    return f"collection {e.name!r} (segment {segment})"


def _index_ids(folder: Path, queue: Queue, e: _Expected, applied: int) -> IndexIds | str:
    """The costly half of a vector segment's checks (unpickling its id map, digesting every
    id); a problem as a string. A missing folder or pickle holds no ids."""
    ids: Collection[str] = ()
    seen = applied
    if (folder / PICKLE).is_file():
        try:
            id_map, pickled_seq = read_id_map(folder / PICKLE, f"{folder.name}/{PICKLE}")
        except (OSError, SnapshotError) as exc:
            return f"{_where(e, folder.name)}: {exc}"
        ids = id_map  # the unpickled map itself: no second copy of the ids
        seen = max(seen, pickled_seq)  # chromadb < 1.0 kept it in the pickle
    n = len(ids)
    d = ids_digest(map(str, ids))
    for rid, sign in replay(ids.__contains__, queue.ops(e.collection_id, seen)):
        n += sign
        d = (d + sign * id_digest(rid)) & _MASK
    return IndexIds(len(ids), n, d)


def segment_ids(root: Path, side: SqliteSide, segment: str) -> IndexIds | str | None:
    """:func:`check_segments`' costly half for one vector segment, to run as soon as its
    ``index_metadata.pickle`` is in place (a restore runs it while other files are still
    being written); None if ``segment`` is no collection's vector segment."""
    if side.queue is not None:
        for e in side.collections:
            for seg, applied in e.vectors:
                if seg == segment:
                    return _index_ids(root / segment, side.queue, e, applied)
    return None


def _check_vectors(root: Path, queue: Queue, e: _Expected, problems: list[str],
                   ready: Mapping[str, IndexIds | str | None]) -> None:
    for segment, applied in e.vectors:
        where = _where(e, segment)
        folder = root / segment
        header = None
        if folder.is_dir():
            header = _hnsw_header(folder, problems, where)
            if header is None:
                continue
        elif applied:
            problems.append(f"{where}: segment folder missing, though the segment applied queue "
                            f"entries up to {applied}")
            continue
        found = ready.get(segment) or _index_ids(folder, queue, e, applied)
        if isinstance(found, str):
            problems.append(found)
            continue
        if header is not None and found.pickled > header.count:
            problems.append(f"{where}: {PICKLE} maps {found.pickled} ids, the index holds {header.count}")
            continue
        if e.has_metadata and (found.count, found.digest) != (e.count, e.digest):
            what = f"{found.count} records" if found.count != e.count else "other record ids"
            problems.append(f"{where}: the HNSW index holds {what} than chroma.sqlite3 ({e.count})")


def check_segments(root: Path, side: SqliteSide,
                   ready: Mapping[str, IndexIds | str | None] | None = None) -> Verification:
    """The segment half of :func:`verify_dir`: every vector segment's files against what
    chroma.sqlite3 says (``side``, from :func:`read_sqlite_side` on the same directory).
    ``ready``: :func:`segment_ids` of segments already read, by segment id."""
    problems = list(side.problems)
    if side.queue is not None:
        for e in side.collections:
            _check_vectors(root, side.queue, e, problems, ready or {})
    counts = {e.name: e.count for e in side.collections}
    return Verification(side.checks, side.schema, counts, tuple(problems))


def replayed_segments(side: SqliteSide) -> set[str]:
    """The vector segments chromadb applies queue entries to when it opens the directory, and
    so rewrites the index files of: those with entries past the last one they applied (a
    segment whose pickle records a later one is counted too: more, never fewer)."""
    if side.queue is None:
        return set()
    queue = side.queue
    return {segment for e in side.collections for segment, applied in e.vectors
            if next(queue.ops(e.collection_id, applied), None) is not None}


def verify_dir(root: Path, *, sqlite_check: bool = True, segments: Path | None = None) -> Verification:
    """Run every check on the Chroma directory ``root`` (a private copy: opened immutable);
    ``segments``: where its segment folders are, if not in ``root`` (a capture read in place)."""
    return check_segments(segments or root, read_sqlite_side(root, sqlite_check=sqlite_check))


# ------------------------------------------------------------------ what the installed chromadb reads


def _chromadb_files() -> Iterable[Path]:
    """The installed chromadb's migration sources: its Python migrations folder and the
    compiled Rust bindings that embed them (chromadb >= 1.0). Found without importing it."""
    import importlib.util

    for name in ("chromadb", "chromadb_rust_bindings"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for loc in (spec.submodule_search_locations or []) if spec else []:
            base = Path(loc)
            yield from base.glob("migrations/*/*.sql")
            yield from base.glob("*.so")
            yield from base.glob("*.pyd")


def known_migrations(files: Callable[[], Iterable[Path]] = _chromadb_files) -> Callable[[str], bool] | None:
    """A test "does the installed chromadb know this migration file name"; None if chromadb
    is not installed."""
    names: set[str] = set()
    blobs: list[Path] = []
    for f in files():
        (names.add(f.name) if f.suffix == ".sql" else blobs.append(f))
    if not names and not blobs:
        return None

    def knows(filename: str) -> bool:
        if filename in names:
            return True
        needle = filename.encode()
        for blob in blobs:
            try:
                with open(blob, "rb") as fh:
                    if _contains(fh, needle):
                        return True
            except OSError:
                continue
        return False

    return knows


def _contains(fh: io.BufferedReader | Any, needle: bytes, block: int = 8 << 20) -> bool:
    tail = b""
    while data := fh.read(block):
        if needle in tail + data:
            return True
        tail = data[-len(needle):]
    return False


def unknown_schema(schema: dict[str, tuple[int, str]], knows: Callable[[str], bool]) -> list[str]:
    """The migrations of ``schema`` (dir -> (version, file)) that the installed chromadb lacks."""
    return [f"{d} {filename}" for d, (_v, filename) in sorted(schema.items()) if not knows(filename)]

