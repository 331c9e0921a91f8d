"""Diffs: what changed between two snapshots, or between a snapshot and a live Chroma dir.

* Files added, removed and changed (sizes), the segment folders (collections) that changed,
  per-collection record counts, and the chunks (raw bytes) the newer side holds that the older
  one does not: pure functions over :class:`Tree` values, built from a manifest or from a
  capture of a live dir (staged in a temp folder and hashed; nothing is uploaded).
* ``records=True``: ids added, removed and changed per collection, from the two sides'
  chroma.sqlite3. Only that file of a snapshot is materialised (streamed chunk by chunk through
  :class:`ChunkReader` into a temp file, its hash checked); both sides are then merge-joined
  ordered by id with cursors, so memory stays bounded whatever the size of a collection.

A record is *changed* when its ``seq_id`` differs (Chroma gives a record a new seq_id on every
write of its embedding, document or metadata — also an update that writes the same values, or
a delete and re-add) or when its metadata/document rows differ (which also catches two unrelated
DBs whose seq_ids coincide). Embeddings live in the HNSW files, not in chroma.sqlite3.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from snapshot.chroma.capture import Capture, capture
from snapshot.chroma.schema import DB_NAME, RecordRow, iter_records, metadata_segments, open_readonly
from snapshot.errors import IntegrityError, NotFoundError
from snapshot.format.chunking import ChunkedFile, read_verified
from snapshot.format.hashing import FileHasher
from snapshot.format.manifest import CollectionInfo, Manifest
from snapshot.repo.packs import ChunkReader
from snapshot.repo.repository import Repository
from snapshot.util.tempdirs import TEMP_PREFIX, owned_dir, sweep


@dataclass(frozen=True)
class TreeFile:
    path: str
    size: int
    hash: str
    role: str
    #: (hash, size) per fixed-offset chunk.
    chunks: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Tree:
    """One side of a diff: a snapshot, or what a create of a live dir would record."""

    label: str
    files: tuple[TreeFile, ...]
    collections: tuple[CollectionInfo, ...]


@dataclass(frozen=True)
class FileSize:
    path: str
    size: int


@dataclass(frozen=True)
class FileChange:
    path: str
    size_before: int
    size_after: int
    chunks_changed: int


@dataclass(frozen=True)
class FileChanges:
    added: tuple[FileSize, ...]
    removed: tuple[FileSize, ...]
    changed: tuple[FileChange, ...]
    unchanged: int


@dataclass(frozen=True)
class CountChange:
    before: int | None
    after: int | None


@dataclass(frozen=True)
class SegmentChange:
    segment: str
    collection: str | None
    change: str  # "added", "removed" or "changed"


@dataclass(frozen=True)
class RecordDiff:
    """Ids per kind, ascending; the lists hold at most the limit asked for, the counts all."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    added_count: int
    removed_count: int
    changed_count: int


@dataclass(frozen=True)
class SnapshotDiff:
    before: str
    after: str
    after_is_path: bool
    collections: dict[str, CountChange]
    files: FileChanges
    changed_segments: tuple[SegmentChange, ...]
    bytes_before: int
    bytes_after: int
    #: Distinct chunks of ``after`` absent from ``before``: what a create would store anew.
    chunks_new: int
    bytes_new: int
    records: dict[str, RecordDiff] | None = None


# ------------------------------------------------------------------ trees (pure)


def tree_of_manifest(repo: Repository, m: Manifest) -> Tree:
    """A snapshot's side of a diff: per file only (hash, size) of each chunk, its chunk table
    read and dropped one file at a time."""
    files = tuple(
        TreeFile(f.path, f.size, f.hash, f.role, tuple((c.hash, c.size) for c in repo.chunks(m, f)))
        for f in m.files
    )
    return Tree(m.id, files, m.collections)


def _segment_of(f: TreeFile) -> str | None:
    if f.role in ("segment", "orphan") and "/" in f.path:
        return f.path.split("/", 1)[0]
    return None


def _segment_changes(before: Tree, after: Tree, touched: set[str]) -> tuple[SegmentChange, ...]:
    owner = {s: c.name for t in (before, after) for c in t.collections for s in c.segments}
    segs_before = {s for f in before.files if (s := _segment_of(f))}
    segs_after = {s for f in after.files if (s := _segment_of(f))}
    out = []
    for seg in sorted(segs_before | segs_after):
        if seg not in segs_before:
            change = "added"
        elif seg not in segs_after:
            change = "removed"
        elif seg in touched:
            change = "changed"
        else:
            continue
        out.append(SegmentChange(seg, owner.get(seg), change))
    return tuple(out)


def restrict(before: Tree, after: Tree, name: str) -> tuple[Tree, Tree]:
    """Both sides cut down to collection ``name``: its record count and the files of its segment
    folders (chroma.sqlite3 holds every collection, so it is left out). NotFoundError naming
    the collections there are when neither side has it."""
    segments = {s for t in (before, after) for c in t.collections if c.name == name for s in c.segments}
    if not any(c.name == name for t in (before, after) for c in t.collections):
        names = ", ".join(sorted({c.name for t in (before, after) for c in t.collections})) or "none"
        raise NotFoundError(f"neither {before.label} nor {after.label} has a collection {name!r}; "
                            f"collections: {names}")

    def cut(t: Tree) -> Tree:
        files = tuple(f for f in t.files if _segment_of(f) in segments)
        return Tree(t.label, files, tuple(c for c in t.collections if c.name == name))

    return cut(before), cut(after)


def diff_trees(before: Tree, after: Tree, after_is_path: bool = False) -> SnapshotDiff:
    """Files, segments, collection counts and new chunks from ``before`` to ``after``."""
    old = {f.path: f for f in before.files}
    new = {f.path: f for f in after.files}
    added = tuple(FileSize(p, new[p].size) for p in sorted(new.keys() - old.keys()))
    removed = tuple(FileSize(p, old[p].size) for p in sorted(old.keys() - new.keys()))
    changed = []
    for p in sorted(old.keys() & new.keys()):
        a, b = old[p], new[p]
        if a.hash != b.hash or a.size != b.size:
            moved = sum(1 for x, y in itertools.zip_longest(a.chunks, b.chunks) if x != y)
            changed.append(FileChange(p, a.size, b.size, moved))
    touched = {s for p in [*(f.path for f in added), *(f.path for f in removed), *(c.path for c in changed)]
               if (s := _segment_of(old.get(p) or new[p]))}
    counts_before = {c.name: c.records for c in before.collections}
    counts_after = {c.name: c.records for c in after.collections}
    collections = {
        name: CountChange(counts_before.get(name), counts_after.get(name))
        for name in sorted(counts_before.keys() | counts_after.keys())
    }
    known = {h for f in before.files for h, _ in f.chunks}
    fresh: dict[str, int] = {}
    for f in after.files:
        for h, size in f.chunks:
            if h not in known:
                fresh[h] = size
    return SnapshotDiff(
        before=before.label,
        after=after.label,
        after_is_path=after_is_path,
        collections=collections,
        files=FileChanges(added, removed, tuple(changed), len(old.keys() & new.keys()) - len(changed)),
        changed_segments=_segment_changes(before, after, touched),
        bytes_before=sum(f.size for f in before.files),
        bytes_after=sum(f.size for f in after.files),
        chunks_new=len(fresh),
        bytes_new=sum(fresh.values()),
    )


# ------------------------------------------------------------------ records (pure merge)


class _Ids:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.ids: list[str] = []
        self.count = 0

    def add(self, rid: str) -> None:
        self.count += 1
        if self.limit is None or len(self.ids) < self.limit:
            self.ids.append(rid)


def _ascending(rows: Iterable[RecordRow], side: str) -> Iterator[RecordRow]:
    prev: str | None = None
    for row in rows:
        if prev is not None and row[0] <= prev:
            raise IntegrityError(f"{side}: record ids are not in ascending order at {row[0]!r}")
        prev = row[0]
        yield row


def merge_records(
    before: Iterable[RecordRow], after: Iterable[RecordRow], limit: int | None = None
) -> RecordDiff:
    """Merge-join two id-ordered record streams (one pass, constant memory besides the
    ``limit`` ids kept per kind)."""
    added, removed, changed = _Ids(limit), _Ids(limit), _Ids(limit)
    it_a, it_b = _ascending(before, "before"), _ascending(after, "after")
    a, b = next(it_a, None), next(it_b, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            removed.add(a[0])
            a = next(it_a, None)
        elif a is None or b[0] < a[0]:
            added.add(b[0])
            b = next(it_b, None)
        else:
            if a[1] != b[1]:
                changed.add(a[0])
            a, b = next(it_a, None), next(it_b, None)
    return RecordDiff(
        tuple(added.ids), tuple(removed.ids), tuple(changed.ids), added.count, removed.count, changed.count
    )


# ------------------------------------------------------------------ records (sqlite I/O)


def diff_record_dbs(
    before: Path | None, after: Path | None, limit: int | None = None, only: str | None = None
) -> dict[str, RecordDiff]:
    """Record-level diff of two chroma.sqlite3 files (None: a side without one), per collection
    (``only``: of that collection alone)."""
    conns: list[sqlite3.Connection | None] = []
    try:
        conns = [open_readonly(p, immutable=True) if p is not None else None for p in (before, after)]
        segs = [metadata_segments(c) if c is not None else {} for c in conns]
        out = {}
        for name in sorted(segs[0].keys() | segs[1].keys()):
            if only is not None and name != only:
                continue
            sides: list[Iterable[RecordRow]] = []
            for conn, s in zip(conns, segs, strict=True):
                sides.append(iter_records(conn, s[name]) if conn is not None and name in s else ())
            out[name] = merge_records(sides[0], sides[1], limit)
        return out
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"cannot read records from {DB_NAME}: {exc}") from exc
    finally:
        for c in conns:
            if c is not None:
                c.close()


# ------------------------------------------------------------------ materialising and orchestration


def materialise_file(
    repo: Repository, m: Manifest, path: str, dest: Path, reuse: tuple[Manifest, Path | None] | None = None
) -> Path | None:
    """Write file ``path`` of snapshot ``m`` to ``dest``, chunk by chunk, verified; chunks that
    ``reuse`` (another snapshot and its copy of the same file) holds are copied from that copy.
    None if ``m`` has no such file."""
    entry = m.file(path)
    if entry is None:
        return None
    local: dict[str, tuple[Path, int]] = {}
    if reuse is not None and reuse[1] is not None and (other := reuse[0].file(path)) is not None:
        theirs = repo.chunks(reuse[0], other)
        local = {c.hash: (reuse[1], i * reuse[0].chunk_size) for i, c in enumerate(theirs)}
    reader = ChunkReader(repo)
    hasher = FileHasher()
    with open(dest, "wb") as out:
        for chunk in repo.chunks(m, entry):
            data = None
            if chunk.hash in local:
                data = read_verified(*local[chunk.hash], chunk.size, chunk.hash)
            if data is None:
                data = reader.read_chunk(chunk)  # checks every frame; the last one's hash is the chunk's
            hasher.update(data)
            out.write(data)
    if hasher.hexdigest() != entry.hash:
        raise IntegrityError(f"snapshot {m.id}: {path} does not match its hash in the manifest")
    return dest


def tree_of_capture(label: str, cap: Capture, chunk_size: int) -> Tree:
    """What a create would record for a capture: every staged file hashed chunk by chunk."""
    files = []
    for sf in cap.files:
        chunked = ChunkedFile(sf.staged, chunk_size)
        chunks = tuple((c.hash, len(c.data)) for c in chunked)
        files.append(TreeFile(sf.rel, chunked.size, chunked.hash, sf.role, chunks))
    return Tree(label, tuple(files), cap.collections)


def diff_snapshots(
    repo: Repository,
    before: str,
    after: str | os.PathLike[str],
    *,
    records: bool = False,
    record_limit: int | None = None,
    tmp_dir: str | Path | None = None,
    collection: str | None = None,
) -> SnapshotDiff:
    """Diff snapshot ``before`` (id, prefix, ``latest``) with snapshot ``after``, or with the
    live Chroma dir ``after`` when that is an existing directory (captured to a temp folder,
    nothing uploaded). ``records`` adds the record-level diff (``record_limit`` ids per kind).
    ``collection``: only that collection (see :func:`restrict`)."""
    ma = repo.get(before)
    live = Path(after).expanduser()
    is_live = live.is_dir()
    parent = Path(tmp_dir) if tmp_dir else Path(tempfile.gettempdir())
    sweep(parent, TEMP_PREFIX)
    work = owned_dir(parent, TEMP_PREFIX)
    try:
        if is_live:
            cap = capture(live.absolute(), work / "capture")
            now = tree_of_capture(str(live), cap, repo.config.chunk_size)
            db_b = next((f.staged for f in cap.files if f.rel == DB_NAME), None)
        else:
            mb = repo.get(os.fspath(after))
            now = tree_of_manifest(repo, mb)
        then = tree_of_manifest(repo, ma)
        if collection is not None:
            then, now = restrict(then, now, collection)
        result = diff_trees(then, now, after_is_path=is_live)
        if not records:
            return result
        db_a = materialise_file(repo, ma, DB_NAME, work / "before.sqlite3")
        if not is_live:
            db_b = materialise_file(repo, mb, DB_NAME, work / "after.sqlite3", reuse=(ma, db_a))
        return replace(result, records=diff_record_dbs(db_a, db_b, record_limit, only=collection))
    finally:
        shutil.rmtree(work, ignore_errors=True)
