"""The snapshots' manifests (roots): listing, resolving a reference, reading (cached), writing.

Holds the keys under snapshots/: their ids, the resolution of ``latest`` or a prefix (with
filters), reads of roots in parallel with a bounded cache, the scan that reports a broken root
instead of stopping at it, summaries for ``list``, and the create-only commit, rewrite and
deletion of a root (sealed and opened here in an encrypted repository). It must not read chunk
tables or packs, nor decide which snapshots to keep: :class:`snapshot.repo.repository.Repository`
is what the operations call, and it delegates here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from snapshot.errors import AlreadyExistsError, IntegrityError, NotFoundError, SnapshotError
from snapshot.format import crypto, layout
from snapshot.format.manifest import Manifest, dumps, parse_manifest
from snapshot.repo import selection
from snapshot.repo.selection import SnapshotFacts, SnapshotFilter
from snapshot.storage import ObjectKind, Store

#: Roots read at once.
FETCHERS = 8
#: Roots held by the cache (bounded: listing thousands of snapshots must not hold them all).
CACHED = 64


@dataclass(frozen=True)
class SnapshotSummary:
    id: str
    parent: str | None
    created_at: str
    tags: tuple[str, ...]
    message: str
    source_path: str
    source_host: str
    bytes_total: int
    bytes_new: int
    collections: dict[str, int]
    #: Set when the manifest could not be read; the other fields are then empty.
    error: str | None = None

    @classmethod
    def unreadable(cls, snapshot_id: str, error: SnapshotError) -> SnapshotSummary:
        return cls(snapshot_id, None, "", (), "", "", "", 0, 0, {}, str(error))

    @classmethod
    def of(cls, m: Manifest) -> SnapshotSummary:
        return cls(
            id=m.id,
            parent=m.parent,
            created_at=m.created_at,
            tags=m.tags,
            message=m.message,
            source_path=m.source_path,
            source_host=m.source_host,
            bytes_total=m.totals.bytes,
            bytes_new=m.totals.bytes_new,
            collections={c.name: c.records for c in m.collections},
        )


@dataclass(frozen=True)
class ManifestScan:
    """One key under snapshots/: its id (None for a stray key) and the manifest or why not."""

    key: str
    id: str | None
    manifest: Manifest | None
    error: SnapshotError | None


class Manifests:
    """The roots of one repository on ``store``; ``cipher`` seals and opens an encrypted one's."""

    def __init__(self, store: Store, cipher: crypto.Cipher | None) -> None:
        self.store = store
        self._cipher = cipher
        #: Recently read manifests, oldest first.
        self._cache: OrderedDict[str, Manifest] = OrderedDict()
        self._cache_lock = threading.Lock()

    def ids(self) -> list[str]:
        """Every snapshot id, oldest first (ids sort by creation time)."""
        ids = []
        for info in self.store.list(layout.SNAPSHOTS_PREFIX):
            sid = layout.snapshot_id_from_key(info.key)
            if sid is not None:
                ids.append(sid)
        return sorted(ids)

    def resolve(self, ref: str, ids: Sequence[str] | None = None,
                filters: SnapshotFilter | None = None) -> str:
        """An id from ``latest``, a full id or any unique prefix; with ``filters``, among the
        snapshots that pass them (``latest``: the newest that does; a prefix must match
        exactly one that does). See snapshot/repo/selection.py."""
        ids = list(ids) if ids is not None else self.ids()
        found = selection.candidates(ref, ids)
        filters = filters or SnapshotFilter()
        facts = self._facts(found) if filters else (SnapshotFacts(i) for i in found)
        return selection.choose(ref, facts, filters, self.store.url)

    def _facts(self, ids: Sequence[str]) -> Iterator[SnapshotFacts]:
        """The filters' facts of ``ids``, in order, read a few roots at a time (so that the
        newest match of ``latest`` does not wait for every root)."""
        for start in range(0, len(ids), FETCHERS):
            for m in self.many(ids[start : start + FETCHERS]):
                yield SnapshotFacts(m.id, m.tags, m.source_host, m.source_path)

    def _parse(self, raw: bytes, snapshot_id: str) -> Manifest:
        if self._cipher is not None:  # bound to its id: a root renamed or copied in does not open
            raw = self._cipher.open_root(raw, snapshot_id)
        m = parse_manifest(raw, f"manifest {snapshot_id}")
        if m.id != snapshot_id:
            raise IntegrityError(f"manifest {snapshot_id} claims to be snapshot {m.id}")
        return m

    def get(self, snapshot_id: str, *, fresh: bool = False) -> Manifest:
        """The parsed, validated manifest of an exact id (cached; ``fresh``: read again, for a
        reader that outlives a prune's rewrite of the root)."""
        with self._cache_lock:
            cached = None if fresh else self._cache.get(snapshot_id)
            if cached is not None:
                self._cache.move_to_end(snapshot_id)
                return cached
        try:
            raw = self.store.get(layout.snapshot_key(snapshot_id))
        except NotFoundError:
            raise NotFoundError(f"snapshot {snapshot_id} not found in {self.store.url}") from None
        m = self._parse(raw, snapshot_id)
        self._remember(m)
        return m

    def _remember(self, m: Manifest) -> None:
        with self._cache_lock:
            self._cache[m.id] = m
            self._cache.move_to_end(m.id)
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)

    def many(self, ids: Sequence[str] | None = None) -> list[Manifest]:
        """The manifests of ``ids`` (default: all), in that order, fetched in parallel."""
        ids = self.ids() if ids is None else ids
        with ThreadPoolExecutor(max_workers=FETCHERS, thread_name_prefix="manifest") as pool:
            return list(pool.map(self.get, ids))

    def scan(self) -> Iterator[ManifestScan]:
        """Every key under snapshots/, oldest first, with its manifest or the error reading it
        (for check and list, which report a broken manifest instead of stopping at it)."""
        keys = [info.key for info in self.store.list(layout.SNAPSHOTS_PREFIX)]

        def load(key: str) -> ManifestScan:
            sid = layout.snapshot_id_from_key(key)
            if sid is None:
                return ManifestScan(key, None, None, None)
            try:
                return ManifestScan(key, sid, self.get(sid), None)
            except SnapshotError as exc:
                return ManifestScan(key, sid, None, exc)

        with ThreadPoolExecutor(max_workers=FETCHERS, thread_name_prefix="manifest") as pool:
            for start in range(0, len(keys), CACHED):  # a bounded window in flight
                yield from pool.map(load, keys[start : start + CACHED])

    def summaries(self) -> list[SnapshotSummary]:
        """Every snapshot's summary, oldest first; one whose manifest cannot be read is listed
        with its error (so that a user can find it to forget it) instead of failing the listing."""
        out = []
        for scan in self.scan():
            if scan.manifest is not None:
                out.append(SnapshotSummary.of(scan.manifest))
            elif scan.id is not None and scan.error is not None:
                out.append(SnapshotSummary.unreadable(scan.id, scan.error))
        return out

    def exists(self, snapshot_id: str) -> bool:
        return self.store.exists(layout.snapshot_key(snapshot_id))

    def save(self, m: Manifest) -> None:
        """Commit a snapshot: its manifest, create-only. A retry whose first attempt did land
        (its response was lost) finds our own bytes there: that is success."""
        key = layout.snapshot_key(m.id)
        data = self.root_bytes(m)
        try:
            self.store.put(key, data, kind=ObjectKind.ROOT, create_only=True)
        except AlreadyExistsError as exc:
            try:
                ours = self.store.get(key) == data
            except SnapshotError:
                ours = False
            if not ours:  # same 1/65536 s and 16 random bits: vanishingly rare
                raise SnapshotError(f"snapshot id {m.id} already exists; run create again") from exc
        self._remember(m)

    def replace(self, m: Manifest) -> None:
        """Rewrite an existing snapshot's root (repack moved frames it points at). One atomic
        PUT on S3, a rename locally: a reader sees the old root or the new one, never a mix, and
        both point only at objects that exist until the last rewritten root has landed."""
        if not self.store.exists(layout.snapshot_key(m.id)):
            raise NotFoundError(f"snapshot {m.id} not found in {self.store.url}")
        self.store.put(layout.snapshot_key(m.id), self.root_bytes(m), kind=ObjectKind.ROOT)
        self._remember(m)

    def root_bytes(self, m: Manifest) -> bytes:
        return dumps(m) if self._cipher is None else self._cipher.seal_root(dumps(m), m.id)

    def delete(self, snapshot_id: str) -> None:
        self.store.delete(layout.snapshot_key(snapshot_id))
        with self._cache_lock:
            self._cache.pop(snapshot_id, None)
