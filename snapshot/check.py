"""Checking a repository: is everything every snapshot needs present and intact?

Structure (always): the config parses; every manifest parses and validates; every object a
frame lives in exists and is long enough for the frame (``offset + length <= size``). Objects
are known from one listing of ``data/``, not a request per object.

Data (``read_data``): every referenced frame is read and decoded, and the content of each is
checked against its hash. Frames form a forest (a delta frame's base is the frame before it in
its chain), walked depth first so that each distinct frame is read and decoded once while only
the bases on the current path stay in memory. A subset (``10%`` or restic's ``N/M``) limits the
walk to the frames in a deterministic part of the objects (plus the bases those need).

Problems are collected, never raised one by one: the result names each (snapshot, file, object)
and :meth:`CheckResult.raise_if_failed` turns them into an :class:`IntegrityError`. Objects no
manifest references are reported for information (prune collects them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from snapshot import layout
from snapshot.errors import IntegrityError, SnapshotError, UsageError
from snapshot.manifest import Frame, Manifest, parse_config, parse_manifest
from snapshot.packs import ChunkReader
from snapshot.repository import Repository

_READERS = 4


@dataclass(frozen=True)
class Problem:
    kind: str  # config, manifest, missing-object, short-object, data
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
    problems: tuple[Problem, ...]
    unreferenced: tuple[str, ...]
    unreferenced_bytes: int
    notes: tuple[str, ...] = ()

    def raise_if_failed(self) -> None:
        if self.problems:
            first = self.problems[0].message
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise IntegrityError(f"check found {len(self.problems)} problem(s): {first}{more}")


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


@dataclass
class _Node:
    """A distinct frame in its chain position: its decoded content is the base of its children."""

    frame: Frame
    snapshot: str
    path: str
    children: dict[Frame, _Node] = field(default_factory=dict)
    wanted: bool = True


class _Checker:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.problems: dict[tuple[str, str | None, str | None, str | None], Problem] = {}
        self.notes: list[str] = []
        self.manifests: list[Manifest] = []
        self.objects: dict[str, int] = {}
        self.roots: dict[Frame, _Node] = {}

    def problem(self, p: Problem) -> None:
        self.problems.setdefault((p.kind, p.snapshot, p.path, p.object), p)

    def check_config(self) -> None:
        try:
            cfg = parse_config(self.repo.store.get(layout.CONFIG_KEY))
        except SnapshotError as exc:
            self.problem(Problem("config", f"repository config: {exc}"))
            return
        if cfg.chunk_size & (cfg.chunk_size - 1):
            msg = f"repository config: chunk size {cfg.chunk_size} is not a power of two"
            self.problem(Problem("config", msg))

    def load_manifests(self) -> int:
        count = 0
        for info in self.repo.store.list(layout.SNAPSHOTS_PREFIX):
            sid = layout.snapshot_id_from_key(info.key)
            if sid is None:
                self.notes.append(f"unexpected key {info.key} (not a manifest; ignored)")
                continue
            count += 1
            try:
                m = parse_manifest(self.repo.store.get(info.key), f"manifest {sid}")
            except SnapshotError as exc:
                self.problem(Problem("manifest", str(exc), snapshot=sid))
                continue
            if m.id != sid:
                msg = f"manifest {sid} claims to be snapshot {m.id}"
                self.problem(Problem("manifest", msg, snapshot=sid))
                continue
            self.manifests.append(m)
        return count

    def list_objects(self) -> None:
        for info in self.repo.store.list(layout.DATA_PREFIX):
            oid = layout.object_id_from_key(info.key)
            if oid is None:
                self.notes.append(f"unexpected key {info.key} (not an object; ignored)")
            else:
                self.objects[oid] = info.size

    def check_frames(self) -> None:
        """Every frame's object exists and is long enough; builds the frame forest."""
        for m in self.manifests:
            for f in m.files:
                for c in f.chunks:
                    level = self.roots
                    for fr in c.frames:
                        node = level.get(fr)
                        if node is None:
                            node = level[fr] = _Node(fr, m.id, f.path)
                        level = node.children
                        self._check_frame(m.id, f.path, fr)

    def _check_frame(self, sid: str, path: str, fr: Frame) -> None:
        size = self.objects.get(fr.object)
        if size is None:
            self.problem(Problem("missing-object", f"snapshot {sid}: {path}: object {fr.object} is missing",
                                 sid, path, fr.object))
        elif fr.offset + fr.length > size:
            self.problem(Problem(
                "short-object",
                f"snapshot {sid}: {path}: object {fr.object} is {size} bytes, shorter than a frame "
                f"at {fr.offset}+{fr.length} (truncated?)", sid, path, fr.object))


# ------------------------------------------------------------------ data


def _mark_wanted(roots: Iterable[_Node], selected: set[str]) -> None:
    """A node is wanted if its object is selected or a descendant is (post-order, iterative)."""
    stack: list[tuple[_Node, bool]] = [(r, False) for r in roots]
    while stack:
        node, expanded = stack.pop()
        if not expanded:
            stack.append((node, True))
            stack.extend((c, False) for c in node.children.values())
        else:
            node.wanted = node.frame.object in selected or any(c.wanted for c in node.children.values())


def _count(node: _Node) -> int:
    n, stack = 0, list(node.children.values())
    while stack:
        child = stack.pop()
        n += 1
        stack.extend(child.children.values())
    return n


def _verify_tree(reader: ChunkReader, root: _Node, sizes: dict[str, int]) -> tuple[list[Problem], int, int]:
    """Decode ``root`` and every wanted frame built on it, each once (depth first)."""
    problems: list[Problem] = []
    frames = nbytes = 0
    stack: list[tuple[_Node, bytes | None]] = [(root, None)]
    while stack:
        node, base = stack.pop()
        fr = node.frame
        if not node.wanted or fr.offset + fr.length > sizes.get(fr.object, -1):
            continue  # a missing or short object is already reported
        try:
            content = reader.decode(fr, base)
        except SnapshotError as exc:
            deps = _count(node)
            tail = f"; {deps} frame(s) built on it not verified" if deps else ""
            problems.append(Problem("data", f"snapshot {node.snapshot}: {node.path}: {exc}{tail}",
                                    node.snapshot, node.path, fr.object))
            continue
        frames += 1
        nbytes += fr.length
        stack.extend((child, content) for child in node.children.values())
    return problems, frames, nbytes


def check_repository(
    repo: Repository, *, read_data: bool = False, subset: Subset | None = None
) -> CheckResult:
    """Check ``repo`` (see the module docstring); ``subset`` implies ``read_data``."""
    read_data = read_data or subset is not None
    ck = _Checker(repo)
    ck.check_config()
    count = ck.load_manifests()
    ck.list_objects()
    ck.check_frames()
    referenced = {fr.object for fr in _all_frames(ck.roots.values())}
    selected: set[str] = set()
    frames = nbytes = 0
    if read_data:
        selected = select_objects(referenced & ck.objects.keys(), subset)
        _mark_wanted(ck.roots.values(), selected)
        roots = sorted(
            (r for r in ck.roots.values() if r.wanted), key=lambda r: (r.frame.object, r.frame.offset)
        )
        reader = ChunkReader(repo.store)
        with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="check") as pool:
            for found, n, b in pool.map(lambda r: _verify_tree(reader, r, ck.objects), roots):
                for p in found:
                    ck.problem(p)
                frames, nbytes = frames + n, nbytes + b
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
        objects_selected=len(selected),
        frames_verified=frames,
        bytes_read=nbytes,
        problems=problems,
        unreferenced=tuple(unreferenced),
        unreferenced_bytes=sum(ck.objects[o] for o in unreferenced),
        notes=tuple(ck.notes),
    )


def _all_frames(roots: Iterable[_Node]) -> Iterable[Frame]:
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node.frame
        stack.extend(node.children.values())
