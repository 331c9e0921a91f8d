"""What a repository holds, and what each snapshot costs in it (the ``stats`` command).

Stored bytes are counted per *frame* (a range of a pack: a compressed chunk, a delta, a chunk
table), so that a pack shared by many snapshots is shared in the figures too:

* a snapshot *references* its root object, its chunk tables' frames and every frame of every
  chunk's chain (a delta needs the frames before it);
* its *unique* bytes are those frames no other snapshot references, plus its root: what
  forgetting it alone frees once a prune has run (a prune deletes whole packs, and copies what
  is still needed out of a pack it empties: the freed bytes arrive at the next prune or two);
* the repository's *unused* bytes are the bytes of packs that no snapshot references, neither
  condemned (in packs that are partly needed, or left by an interrupted command); its
  *condemned* bytes, those of packs a prune has condemned (deleted by a later prune);
* in a versioned bucket, the *noncurrent versions* of the repository's keys (what deletes and
  overwrites left behind, billed until a lifecycle rule expires them) and the delete markers.

The walk holds one snapshot's frames and the chunk tables of the snapshot before it (files that
did not change name the same table): memory grows with the repository's distinct frames (one
small int each), not with snapshots x chunks. Read-only: it takes no lock.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from snapshot.errors import AccessDeniedError
from snapshot.format.manifest import Chunk, Frame, Manifest
from snapshot.repo import versions
from snapshot.repo.repository import Repository
from snapshot.repo.selection import SnapshotFacts, SnapshotFilter
from snapshot.storage.base import ObjectInfo

#: A frame's key: its pack's index (in the order packs were met) and its offset.
_OFFSET_BITS = 40
#: A frame's entry: its stored length, the index of the first snapshot that referenced it, and
#: how many did (counted up to 2: unique or shared is all that is asked).
_COUNT_BITS = 2
_SNAP_BITS = 30
#: A frame met: (stored length, raw bytes it decodes to, kind: 0 full, 1 delta, 2 chunk table).
_Entry = tuple[int, int, int]
_FULL, _DELTA, _TABLE = 0, 1, 2
#: The snapshots whose chunk tables are kept for the next ones (files that did not change name
#: the same table; several sources may take turns).
_RECENT = 4


@dataclass(frozen=True)
class SnapshotStats:
    id: str
    created_at: str
    host: str
    path: str
    tags: tuple[str, ...]
    #: What a restore writes: files and bytes.
    files: int
    logical_bytes: int
    #: Records per collection, as the snapshot verified them at capture.
    records: dict[str, int]
    #: Stored bytes it needs: its root, its chunk tables, every frame of its chunks' chains.
    referenced_bytes: int
    #: Of those, what no other snapshot needs (forgetting it alone frees this, after a prune).
    unique_bytes: int
    #: Compressed bytes its create stored as new frames.
    added_bytes: int
    root_bytes: int
    #: How many packs hold what it needs (a restore reads at least one range of each).
    packs: int
    #: What this snapshot and every older one of the repository need together (the
    #: repository's size over time, had nothing been pruned since).
    stored_to_date: int = 0


@dataclass(frozen=True)
class KindStats:
    objects: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class RepoStats:
    repository: str
    encrypted: bool
    snapshots: tuple[SnapshotStats, ...]
    #: Every object of the repository, by kind (data, snapshots, keys, locks, condemned, config).
    by_kind: dict[str, KindStats]
    #: Packs and roots by storage class ("local" for a local folder).
    by_storage_class: dict[str, KindStats]
    total_bytes: int
    objects: int
    packs: int
    #: Distinct stored frames any snapshot references (data and chunk tables), and their bytes.
    frames: int
    referenced_bytes: int
    #: Bytes of packs no snapshot needs and no prune condemned yet (what ``prune`` would free).
    unused_bytes: int
    #: Bytes of condemned packs still present (a later prune deletes them).
    condemned_bytes: int
    condemned_packs: int
    #: Full frames: raw bytes they decode to, stored bytes.
    full_raw_bytes: int
    full_stored_bytes: int
    #: Delta frames: raw bytes of the chunks they rebuild, stored bytes.
    delta_raw_bytes: int
    delta_stored_bytes: int
    #: Chunk tables' stored bytes.
    table_stored_bytes: int
    #: Sum of every snapshot's restore size (what storing each whole would take, uncompressed).
    logical_bytes: int
    unreadable: tuple[str, ...] = field(default=())
    #: The bucket's versioning: "Enabled", "Suspended", "denied" (the credentials may not ask:
    #: s3:GetBucketVersioning, s3:ListBucketVersions), or None (never versioned, or a folder).
    versioning: str | None = None
    #: With versioning: versions of the repository's keys that are not current, their bytes, and
    #: delete markers (None without).
    noncurrent_versions: int | None = None
    noncurrent_bytes: int | None = None
    delete_markers: int | None = None

    @property
    def compression_ratio(self) -> float | None:
        """Raw over stored bytes of the full frames."""
        return self.full_raw_bytes / self.full_stored_bytes if self.full_stored_bytes else None

    @property
    def delta_ratio(self) -> float | None:
        """Raw bytes the delta frames rebuild over their stored bytes."""
        return self.delta_raw_bytes / self.delta_stored_bytes if self.delta_stored_bytes else None

    @property
    def dedup_ratio(self) -> float | None:
        """Every snapshot's restore size over the bytes stored for them all."""
        return self.logical_bytes / self.referenced_bytes if self.referenced_bytes else None


class _Frames:
    """Every distinct frame met: key -> packed (length, first snapshot, count up to 2)."""

    def __init__(self) -> None:
        self.packs: dict[str, int] = {}
        self.entries: dict[int, int] = {}
        #: Per kind (full, delta, table): raw bytes, stored bytes.
        self.sums = [[0, 0], [0, 0], [0, 0]]

    def key(self, fr: Frame) -> int:
        idx = self.packs.setdefault(fr.object, len(self.packs))
        return (idx << _OFFSET_BITS) | fr.offset

    def add(self, keys: dict[int, _Entry], snap: int) -> tuple[int, int, int]:
        """Count one snapshot's frames: the bytes they take, the packs they are in, and the
        bytes of those met for the first time."""
        total = fresh = 0
        packs = set()
        for k, (length, raw, kind) in keys.items():
            total += length
            packs.add(k >> _OFFSET_BITS)
            old = self.entries.get(k)
            if old is None:
                self.entries[k] = (length << (_SNAP_BITS + _COUNT_BITS)) | (snap << _COUNT_BITS) | 1
                fresh += length
                self.sums[kind][0] += raw
                self.sums[kind][1] += length
            elif old & 3 == 1:
                self.entries[k] = old + 1
        return total, len(packs), fresh

    def unique(self) -> Counter[int]:
        """Stored bytes per snapshot index of the frames only that snapshot references."""
        out: Counter[int] = Counter()
        mask = (1 << _SNAP_BITS) - 1
        for v in self.entries.values():
            if v & 3 == 1:
                out[(v >> _COUNT_BITS) & mask] += v >> (_SNAP_BITS + _COUNT_BITS)
        return out

    def bytes_in(self) -> dict[str, int]:
        """Referenced bytes per pack."""
        by_index = {i: oid for oid, i in self.packs.items()}
        out: Counter[str] = Counter()
        for k, v in self.entries.items():
            out[by_index[k >> _OFFSET_BITS]] += v >> (_SNAP_BITS + _COUNT_BITS)
        return dict(out)


def _chain_keys(frames: _Frames, chunks: Iterable[Chunk]) -> dict[int, _Entry]:
    out: dict[int, _Entry] = {}
    for c in chunks:
        for i, fr in enumerate(c.frames):
            out[frames.key(fr)] = (fr.length, fr.size, _DELTA if i else _FULL)
    return out


def _snapshot_frames(repo: Repository, m: Manifest, frames: _Frames,
                     recent: Iterable[dict[str, dict[int, _Entry]]],
                     current: dict[str, dict[int, _Entry]]) -> dict[int, _Entry]:
    """Every frame ``m`` needs, keyed; a chunk table read for a recent snapshot is not read
    again (every table of ``m`` is left in ``current``)."""
    out: dict[int, _Entry] = {}
    for f in m.files:
        if f.table is None:
            out.update(_chain_keys(frames, f.chunks))
            continue
        tkey = f.table.hash
        keys = current.get(tkey)
        for tables in recent:
            if keys is not None:
                break
            keys = tables.get(tkey)
        if keys is None:
            keys = _chain_keys(frames, repo.chunks(m, f))
        current[tkey] = keys
        out.update(keys)
        t = f.table.frame()
        out[frames.key(t)] = (t.length, 0, _TABLE)
    return out


def repository_stats(repo: Repository, ids: Sequence[str] | None = None) -> RepoStats:
    """Figures for ``repo`` and for the snapshots ``ids`` (every snapshot when None). Shared and
    unique bytes are always counted against every snapshot of the repository. A root that
    cannot be read is named in ``unreadable`` (its frames then count as nobody's)."""
    return collect(repo, ids)[0]


Listing = list[tuple[str, ObjectInfo]]


def collect(repo: Repository, ids: Sequence[str] | None = None,
            filters: SnapshotFilter | None = None) -> tuple[RepoStats, Listing]:
    """:func:`repository_stats`, and every object listed as (kind, listing). With ``filters``,
    the snapshots reported are those of ``ids`` (or all) that pass them."""
    listing = [(kind, oid, info) for kind, oid, info in repo.inventory()]
    by_kind: dict[str, list[int]] = {}
    by_class: dict[str, list[int]] = {}
    roots: dict[str, int] = {}
    data: dict[str, ObjectInfo] = {}
    for kind, oid, info in listing:
        _bump(by_kind, kind, info.size)
        if kind in ("data", "snapshots"):
            _bump(by_class, info.storage_class or "local", info.size)
        if oid is not None and kind == "snapshots":
            roots[oid] = info.size
        elif oid is not None and kind == "data":
            data[oid] = info
    frames = _Frames()
    wanted = set(ids) if ids is not None else None
    partial: list[tuple[int, SnapshotStats]] = []
    unreadable: list[str] = []
    recent: deque[dict[str, dict[int, _Entry]]] = deque(maxlen=_RECENT)
    logical = idx = to_date = 0
    for scan in repo.scan_manifests():
        if scan.manifest is None:
            if scan.id is not None:
                unreadable.append(scan.id)
            continue
        m = scan.manifest
        current: dict[str, dict[int, _Entry]] = {}
        referenced, packs, fresh = frames.add(_snapshot_frames(repo, m, frames, recent, current), idx)
        to_date += fresh + roots.get(m.id, 0)
        recent.appendleft(current)
        logical += sum(f.size for f in m.files)
        facts = SnapshotFacts(m.id, m.tags, m.source_host, m.source_path)
        if (wanted is None or m.id in wanted) and (not filters or filters.matches(facts)):
            partial.append((idx, _snapshot(m, referenced + roots.get(m.id, 0), roots.get(m.id, 0), packs,
                                           to_date)))
        idx += 1
    unique = frames.unique()
    snaps = tuple(replace(s, unique_bytes=unique.get(i, 0) + s.root_bytes) for i, s in partial)
    used = frames.bytes_in()
    condemned = repo.condemned()
    held = {oid for oid in data if oid in condemned and oid not in used}
    return RepoStats(
        repository=repo.url,
        encrypted=repo.encrypted,
        snapshots=tuple(sorted(snaps, key=lambda s: (s.created_at, s.id))),
        by_kind={k: KindStats(v[0], v[1]) for k, v in sorted(by_kind.items())},
        by_storage_class={k: KindStats(v[0], v[1]) for k, v in sorted(by_class.items())},
        total_bytes=sum(i.size for _, _, i in listing),
        objects=len(listing),
        packs=len(data),
        frames=len(frames.entries),
        referenced_bytes=sum(used.values()) + sum(roots.values()),
        unused_bytes=sum(info.size - used.get(oid, 0) for oid, info in data.items() if oid not in held),
        condemned_bytes=sum(data[oid].size for oid in held),
        condemned_packs=len(held),
        full_raw_bytes=frames.sums[_FULL][0], full_stored_bytes=frames.sums[_FULL][1],
        delta_raw_bytes=frames.sums[_DELTA][0], delta_stored_bytes=frames.sums[_DELTA][1],
        table_stored_bytes=frames.sums[_TABLE][1],
        logical_bytes=logical,
        unreadable=tuple(unreadable),
        **_versions(repo),
    ), [(kind, info) for kind, _, info in listing]


def _versions(repo: Repository) -> dict[str, Any]:
    """The versioning fields of :class:`RepoStats` (one request, and one listing of versions on
    a versioned bucket; none on a folder)."""
    try:
        status, found = versions.noncurrent(repo)
    except AccessDeniedError:  # a backup or restore-only policy need not grant it
        return {"versioning": "denied"}
    if found is None:
        return {"versioning": status}
    return {"versioning": status, "noncurrent_versions": found.versions, "noncurrent_bytes": found.bytes,
            "delete_markers": found.delete_markers}


def _bump(table: dict[str, list[int]], key: str, size: int) -> None:
    row = table.setdefault(key, [0, 0])
    row[0] += 1
    row[1] += size


def _snapshot(m: Manifest, referenced: int, root: int, packs: int, to_date: int) -> SnapshotStats:
    return SnapshotStats(
        id=m.id, created_at=m.created_at, host=m.source_host, path=m.source_path, tags=m.tags,
        files=len(m.files), logical_bytes=sum(f.size for f in m.files),
        records={c.name: c.records for c in m.collections},
        referenced_bytes=referenced, unique_bytes=0, added_bytes=m.totals.bytes_new, root_bytes=root,
        packs=packs, stored_to_date=to_date,
    )
