"""Checking a repository: is everything every snapshot needs present and intact?

Structure (always): the config parses; every manifest parses and validates; every object a
frame lives in exists and is long enough for the frame (``offset + length <= size``). Objects
are known from one listing of ``data/``, not a request per object.

Data (``read_data``): file by file (one path across every snapshot at a time), chunk index by
chunk index, the chains of all versions at that index form a small forest (a delta frame's base
is the frame before it in its chain), walked depth first so that each distinct frame there is
read and decoded once while only the bases on the current branch stay in memory. The chunk
tables of a path are taken a window of indexes at a time (snapshot/upkeep/table_windows.py), so
memory does not grow with versions x chunks of the largest file. Every decoded
frame is checked against its hash, and every distinct version of the file is hashed in chunk
order against its whole-file hash (which catches a manifest whose chunks were reordered or whose
file hash was altered). Each snapshot's segment folders also get the structural checks a
restore runs on its result (snapshot/chroma/segments.py: header, file sizes, the id map read as
restore reads it), from the manifest's sizes and the bytes gathered as they are verified. A
subset (``10%`` or restic's ``N/M``) limits the walk to the frames in a deterministic part of
the objects (plus the bases those need); whole-file hashes need every chunk, so a subset checks
frames only (and no segment folder).

A frame that could not be fetched (network, store) is a ``storage`` problem (exit 5), not a
``data`` one: only bytes that arrived and failed their hash are integrity problems (exit 4).

Problems are collected, never raised one by one: the result names each (snapshot, file, object)
and :meth:`CheckResult.raise_if_failed` turns them into an :class:`IntegrityError`. Objects no
manifest references are reported for information (prune collects them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

from snapshot.chroma.segments import Fact, judge, segment_problems, spool, watched
from snapshot.errors import IntegrityError, SnapshotError, StorageError, UsageError
from snapshot.format.hashing import FileHasher
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest, TableRef
from snapshot.repo.archive import RestoreRequest, require_readable, tables_of
from snapshot.repo.links import read_ahead
from snapshot.repo.packs import ChunkReader
from snapshot.repo.repository import Repository
from snapshot.repo.usage import Usage
from snapshot.storage.base import ARCHIVE_CLASSES
from snapshot.upkeep.table_windows import BUDGET, TableWindows

_READERS = 4
#: From a remote store: what one path's planned reads hold at most (_READERS paths at once hold
#: the link's memory budget, snapshot/storage/link.py); how many run at once, its gauge says.
_AHEAD_BYTES = 16 << 20
#: Chunk-versions of one path held at once by each reader (snapshot/upkeep/table_windows.py).
_TABLE_BUDGET = BUDGET


@dataclass(frozen=True)
class Problem:
    kind: str  # config, manifest, missing-object, short-object, data, file-hash, consistency, storage
    message: str
    snapshot: str | None = None
    path: str | None = None
    object: str | None = None


@dataclass(frozen=True)
class Subset:
    text: str
    percent: float | None = None
    part: int = 0
    parts: int = 0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    snapshots: int
    objects: int
    objects_referenced: int
    read_data: bool
    subset: str | None
    objects_selected: int
    frames_verified: int
    bytes_read: int
    files_verified: int
    problems: tuple[Problem, ...]
    unreferenced: tuple[str, ...]
    unreferenced_bytes: int
    notes: tuple[str, ...] = ()

    def raise_if_failed(self, *, reported: bool = False) -> None:
        """IntegrityError (exit 4) for damage; StorageError (exit 5) when the only problems
        were failures to read (the data may be fine: run check again). ``reported``: the
        caller has already shown this result (the CLI prints no second JSON document)."""
        if self.problems:
            first = self.problems[0].message
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            text = f"check found {len(self.problems)} problem(s): {first}{more}"
            storage_only = all(p.kind == "storage" for p in self.problems)
            exc = StorageError(text) if storage_only else IntegrityError(text)
            exc.reported = reported
            raise exc


def parse_subset(text: str) -> Subset:
    """``10%`` / ``2.5%`` (that share of the objects) or ``N/M`` (the Nth of M parts)."""
    s = text.strip()
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)%", s):
        pct = float(m.group(1))
        if 0 < pct <= 100:
            return Subset(s, percent=pct)
    elif m := re.fullmatch(r"(\d+)/(\d+)", s):
        part, parts = int(m.group(1)), int(m.group(2))
        if 1 <= part <= parts:
            return Subset(s, part=part, parts=parts)
    raise UsageError(f"bad --read-data-subset {text!r}: use a share like 10% or a part like 1/5")


def select_objects(object_ids: Iterable[str], subset: Subset | None) -> set[str]:
    """The objects a subset reads: deterministic, by object id. ``N/M`` parts are disjoint and
    together cover every object; a percentage takes that share (at least one object) of the
    ids in sorted order."""
    ids = sorted(set(object_ids))
    if subset is None:
        return set(ids)
    if subset.percent is not None:
        return set(ids[: math.ceil(len(ids) * subset.percent / 100)])
    return {i for i in ids if int(i[:8], 16) % subset.parts == subset.part - 1}


# ------------------------------------------------------------------ structure


class _Checker:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.problems: dict[tuple[str, str | None, str | None, str | None], Problem] = {}
        self.notes: list[str] = []
        self.manifests: list[Manifest] = []
        self.objects: dict[str, int] = {}
        #: Packs listed in an archive class (S3 GLACIER, DEEP_ARCHIVE), and their sizes.
        self.cold: dict[str, int] = {}

    def problem(self, p: Problem) -> None:
        self.problems.setdefault((p.kind, p.snapshot, p.path, p.object), p)

    def check_config(self) -> None:
        try:
            self.repo.verify_config()
        except SnapshotError as exc:
            kind = "storage" if isinstance(exc, StorageError) else "config"
            self.problem(Problem(kind, f"repository config: {exc}"))

    def load_manifests(self) -> int:
        count = 0
        for scan in self.repo.scan_manifests():
            if scan.id is None:
                self.notes.append(f"unexpected key {scan.key} (not a manifest; ignored)")
                continue
            count += 1
            if scan.error is not None:
                kind = "manifest" if isinstance(scan.error, IntegrityError) or not isinstance(
                    scan.error, StorageError) else "storage"
                self.problem(Problem(kind, str(scan.error), snapshot=scan.id))
            elif scan.manifest is not None:
                self.manifests.append(scan.manifest)
        return count

    def list_objects(self) -> None:
        for oid, info in self.repo.list_objects():
            if oid is None:
                self.notes.append(f"unexpected key {info.key} (not an object; ignored)")
            else:
                self.objects[oid] = info.size
                if info.storage_class in ARCHIVE_CLASSES:
                    self.cold[oid] = info.size

    def check_frames(self) -> set[str]:
        """Every chunk table and every frame's object exists and is long enough (a table
        shared by many snapshots is read once: the walk of snapshot/repo/usage.py); returns
        the referenced objects. A table that cannot be read is a problem of its file."""
        referenced: set[str] = set()
        unreadable: set[Frame] = set()  # reported for the first file naming it

        def readable(m: Manifest, f: FileEntry, table: TableRef) -> bool:
            return self._check_frame(m.id, f.path, table.frame())

        for ref in Usage(self.repo).walk(self.manifests, readable):
            sid, path = ref.manifest.id, ref.entry.path
            referenced |= ref.objects
            if ref.error is not None and ref.table is not None and ref.table.frame() not in unreadable:
                unreadable.add(ref.table.frame())
                kind = "storage" if isinstance(ref.error, StorageError) else "table"
                self.problem(Problem(kind, str(ref.error), sid, path, ref.table.object))
            for c in ref.chunks or ():
                for fr in c.frames:
                    self._check_frame(sid, path, fr)
        return referenced

    def _check_frame(self, sid: str, path: str, fr: Frame) -> bool:
        size = self.objects.get(fr.object)
        if size is None:
            self.problem(Problem("missing-object", f"snapshot {sid}: {path}: object {fr.object} is missing",
                                 sid, path, fr.object))
        elif fr.offset + fr.length > size:
            self.problem(Problem(
                "short-object",
                f"snapshot {sid}: {path}: object {fr.object} is {size} bytes, shorter than a frame "
                f"at {fr.offset}+{fr.length} (truncated?)", sid, path, fr.object))
        else:
            return True
        return False


# ------------------------------------------------------------------ data


@dataclass
class _Version:
    """One distinct content of a file (shared by every snapshot that recorded it); its
    chunks are read when its path is verified."""

    entry: FileEntry
    manifest: Manifest
    snapshots: list[str]
    hasher: FileHasher = field(default_factory=FileHasher)
    broken: bool = False
    chunks: tuple[Chunk, ...] = ()
    #: The bytes of a watched file (snapshot/chroma/segments.py), gathered as its chunks are verified.
    content: IO[bytes] | None = None


@dataclass
class _Node:
    frame: Frame
    children: dict[Frame, _Node] = field(default_factory=dict)
    #: Versions whose chunk at this index is this node's content.
    ends: list[_Version] = field(default_factory=list)
    wanted: bool = True


@dataclass
class _Tally:
    problems: list[Problem] = field(default_factory=list)
    #: The frames verified, by hash (a count of distinct frames that holds no Frame).
    frames: set[int] = field(default_factory=set)
    files: int = 0
    #: snapshot -> path -> what segcheck found of a watched file.
    facts: dict[str, dict[str, Fact]] = field(default_factory=dict)


def _forest(versions: Iterable[_Version], index: int) -> dict[Frame, _Node]:
    roots: dict[Frame, _Node] = {}
    for v in versions:
        if v.broken or index >= len(v.chunks):
            continue
        level, node = roots, None
        for fr in v.chunks[index].frames:
            node = level.get(fr) or level.setdefault(fr, _Node(fr))
            level = node.children
        assert node is not None
        node.ends.append(v)
    return roots


def _mark_wanted(roots: Iterable[_Node], selected: set[str] | None) -> None:
    """A node is wanted if its object is selected or a descendant is (post-order, iterative)."""
    if selected is None:
        return
    stack: list[tuple[_Node, bool]] = [(r, False) for r in roots]
    while stack:
        node, expanded = stack.pop()
        if not expanded:
            stack.append((node, True))
            stack.extend((c, False) for c in node.children.values())
        else:
            node.wanted = node.frame.object in selected or any(c.wanted for c in node.children.values())


def _subtree_versions(node: _Node) -> list[_Version]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out += n.ends
        stack.extend(n.children.values())
    return out


def _fail(tally: _Tally, node: _Node, path: str, exc: SnapshotError) -> None:
    versions = _subtree_versions(node)
    for v in versions:
        v.broken = True
    sid = versions[0].snapshots[0] if versions else None
    kind = "data" if isinstance(exc, IntegrityError) else "storage"
    deps = len(versions)
    tail = f"; {deps} file version(s) built on it not verified" if deps > 1 else ""
    tally.problems.append(Problem(kind, f"snapshot {sid}: {path}: {exc}{tail}", sid, path, node.frame.object))


def _walk_index(
    reader: ChunkReader, roots: dict[Frame, _Node], path: str, sizes: dict[str, int], tally: _Tally,
    hash_files: bool,
) -> None:
    stack: list[tuple[_Node, bytes | None]] = [(r, None) for r in roots.values()]
    while stack:
        node, base = stack.pop()
        fr = node.frame
        if not node.wanted:
            continue
        if fr.offset + fr.length > sizes.get(fr.object, -1):  # missing or short: reported already
            for v in _subtree_versions(node):
                v.broken = True
            continue
        try:
            content = reader.decode(fr, base)
        except SnapshotError as exc:
            _fail(tally, node, path, exc)
            continue
        tally.frames.add(hash(fr))
        if hash_files:
            for v in node.ends:
                v.hasher.update(content)
                if v.content is not None:
                    v.content.write(content)
        stack.extend((child, content) for child in node.children.values())


def _next_group(versions: Sequence[_Version], start: int, count: int,
                sizes: Mapping[str, int]) -> tuple[int, list[Frame]]:
    """From a remote store, the chunk indexes from ``start`` whose frames make up to
    :data:`_AHEAD_BYTES`, and those frames: planned as ranges of packs and read ahead, several at
    once, as restore reads (a request per frame costs a round trip each: 2,700 of them for a
    200k snapshot)."""
    frames: set[Frame] = set()
    planned, stop = 0, start
    while stop < count and (stop == start or planned < _AHEAD_BYTES):
        for v in versions:
            if v.broken or stop >= len(v.chunks):
                continue
            for fr in v.chunks[stop].frames:
                if fr not in frames and fr.offset + fr.length <= sizes.get(fr.object, -1):
                    frames.add(fr)
                    planned += fr.length
        stop += 1
    return stop, list(frames)


def _verify_path(
    reader: ChunkReader, path: str, versions: list[_Version], sizes: dict[str, int],
    selected: set[str] | None,
) -> _Tally:
    """Every frame of every version of one file, index by index; then the file hashes. Only
    a window of this one path's chunk indexes is held meanwhile (snapshot/upkeep/table_windows.py)."""
    tally = _Tally()
    for v in versions:
        if selected is None and watched(path, v.entry.role):
            v.content = spool()
    windows = TableWindows(reader.repo, path, [(v.manifest, v.entry) for v in versions], _TABLE_BUDGET)
    try:
        for start in windows.starts():
            for v, chunks in zip(versions, windows.window(start), strict=True):
                v.broken = v.broken or chunks is None  # an unreadable table: reported by the structure pass
                v.chunks = chunks or ()
            count, index = max(len(v.chunks) for v in versions), 0
            while index < count:
                stop, spans = index + 1, []
                if reader.reads_ahead and selected is None:
                    stop, frames = _next_group(versions, index, count, sizes)
                    spans = reader.prefetch(frames)
                try:
                    for i in range(index, stop):
                        roots = _forest(versions, i)
                        _mark_wanted(roots.values(), selected)
                        _walk_index(reader, roots, path, sizes, tally, hash_files=selected is None)
                finally:
                    reader.release(spans)
                index = stop
    finally:
        windows.close()
        for v in versions:
            v.chunks = ()
    if selected is not None:
        return tally
    for v in versions:
        content, v.content = v.content, None
        sound = not v.broken and v.hasher.hexdigest() == v.entry.hash
        if not v.broken:
            tally.files += 1
        if not v.broken and not sound:
            sid = v.snapshots[0]
            tally.problems.append(Problem(
                "file-hash", f"snapshot {sid}: {path}: its chunks, in the manifest's order, do not hash "
                f"to the file's hash (chunks reordered or file hash altered)", sid, path))
        if content is not None and not sound:
            content.close()
        elif content is not None:
            fact = judge(path, content)
            for sid in v.snapshots:
                tally.facts.setdefault(sid, {})[path] = fact
    return tally


def _versions_by_path(manifests: Iterable[Manifest]) -> dict[str, list[_Version]]:
    by_path: dict[str, dict[tuple[str, str, tuple[str, ...]], _Version]] = {}
    for m in manifests:
        for f in m.files:
            key = (f.hash, f.table.hash if f.table else "", tuple(c.hash for c in f.chunks))
            versions = by_path.setdefault(f.path, {})
            if key in versions:
                versions[key].snapshots.append(m.id)
            else:
                versions[key] = _Version(f, m, [m.id])
    return {p: list(v.values()) for p, v in sorted(by_path.items())}


def check_repository(
    repo: Repository, *, read_data: bool = False, subset: Subset | None = None,
    request_restore: RestoreRequest | None = None,
) -> CheckResult:
    """Check ``repo`` (see the module docstring); ``subset`` implies ``read_data``. Reading
    data stops before it starts (exit 17) when packs to read are in an archive class and not
    restored; ``request_restore`` asks S3 for them first."""
    read_data = read_data or subset is not None
    ck = _Checker(repo)
    ck.check_config()
    count = ck.load_manifests()
    ck.list_objects()
    # archived packs stop the check before it reads anything: the chunk tables' (which packs
    # hold data is known only from them), and with --read-data every pack
    require_readable(repo, None if read_data else tables_of(ck.manifests),
                     "check --read-data" if read_data else "check", request_restore, listed=ck.cold)
    referenced = ck.check_frames()
    ahead = read_ahead(repo) if read_data else None
    reader = ChunkReader(repo, ahead)
    try:
        result = _read_data(ck, reader, count, read_data, subset, referenced)
    finally:
        if ahead is not None:
            ahead.shutdown(wait=True, cancel_futures=True)
    return result


def _read_data(ck: _Checker, reader: ChunkReader, count: int, read_data: bool, subset: Subset | None,
               referenced: set[str]) -> CheckResult:
    """With ``read_data``, every referenced frame read, decoded and verified, then every file's
    hash and the structural checks of each snapshot's segment folders; the result."""
    selected: set[str] | None = None
    frames: set[int] = set()
    files = 0
    facts: dict[str, dict[str, Fact]] = {}
    if read_data:
        present = referenced & ck.objects.keys()
        selected = select_objects(present, subset) if subset is not None else None
        by_path = _versions_by_path(ck.manifests)
        with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="check") as pool:
            work = list(by_path.items())
            for tally in pool.map(lambda pv: _verify_path(reader, pv[0], pv[1], ck.objects, selected), work):
                for p in tally.problems:
                    ck.problem(p)
                frames |= tally.frames
                files += tally.files
                for sid, found in tally.facts.items():
                    facts.setdefault(sid, {}).update(found)
        for m in ck.manifests if subset is None else ():
            for path, message in segment_problems(m, facts.get(m.id, {})):
                ck.problem(Problem("consistency", f"snapshot {m.id}: {message}", m.id, path))
    unreferenced = sorted(ck.objects.keys() - referenced)
    if unreferenced and any(p.kind == "manifest" for p in ck.problems.values()):
        ck.notes.append("objects of unreadable manifests count as unreferenced here")
    problems = tuple(ck.problems.values())
    return CheckResult(
        ok=not problems,
        snapshots=count,
        objects=len(ck.objects),
        objects_referenced=len(referenced),
        read_data=read_data,
        subset=subset.text if subset else None,
        objects_selected=len(selected if selected is not None else referenced & ck.objects.keys())
        if read_data else 0,
        frames_verified=len(frames),
        bytes_read=reader.bytes_fetched,
        files_verified=files,
        problems=problems,
        unreferenced=tuple(unreferenced),
        unreferenced_bytes=sum(ck.objects[o] for o in unreferenced),
        notes=tuple(ck.notes),
    )
