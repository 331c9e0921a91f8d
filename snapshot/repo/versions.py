"""What a versioned bucket keeps and holds: Object Lock retention, noncurrent versions, and
bringing back the versions of a past moment.

Object Lock: a repository whose config names one has its packs, roots, config and keys written
with a retain-until date (snapshot/storage/s3/versions.py). S3 refuses to delete such a version
before that date, and a plain DELETE of its key only hides it behind a delete marker, so prune
and forget ask for the date (one HeadObject per object they are about to delete) and leave
what is still held: see snapshot/upkeep/prune.py.

Versioning (which Object Lock implies): what prune deletes stays as noncurrent versions, billed
until a lifecycle rule expires them; ``stats`` counts them. :func:`undelete` finds, for a
moment, every key whose current version is not the one it had then (deleted, or overwritten),
and makes that version current again.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from snapshot.errors import NotFoundError, UsageError
from snapshot.format import layout
from snapshot.repo.keys import KeySource
from snapshot.repo.locks import EXCLUSIVE
from snapshot.repo.repository import Repository
from snapshot.storage import ObjectKind, ObjectVersion, Store, StoreOptions, open_store

_HEADS = 8
#: The prefixes :func:`undelete` brings back, with the kind of their objects, in the order
#: they are brought back: objects before the roots that need them (as a create writes them).
ROLLBACK_KINDS: tuple[tuple[str, ObjectKind], ...] = (
    (layout.CONFIG_KEY, ObjectKind.CONFIG),
    (layout.KEYS_PREFIX, ObjectKind.KEY),
    (layout.DATA_PREFIX, ObjectKind.PACK),
    (layout.SNAPSHOTS_PREFIX, ObjectKind.ROOT),
)


def _held(repo: Repository, keys: Mapping[str, str]) -> dict[str, float]:
    """Those of ``keys`` (name -> storage key) whose current version is retained beyond the
    store's now (S3's clock: the one that enforces it): name -> until when. Asks nothing unless
    the repository has Object Lock; a key gone meanwhile is not held."""
    if repo.config.object_lock is None or not keys:
        return {}
    store = repo.store

    def until(key: str) -> float | None:
        try:
            return store.retention(key)
        except NotFoundError:
            return None

    names = list(keys)
    with ThreadPoolExecutor(max_workers=_HEADS, thread_name_prefix="retention") as pool:
        dates = list(pool.map(until, [keys[n] for n in names]))
    now = store.now()
    return {n: d for n, d in zip(names, dates, strict=True) if d is not None and d > now}


def held_objects(repo: Repository, object_ids: Iterable[str]) -> dict[str, float]:
    """Those of the packs ``object_ids`` still retained: id -> until when (see :func:`_held`)."""
    return _held(repo, {oid: layout.object_key(oid) for oid in object_ids})


def held_snapshots(repo: Repository, snapshot_ids: Iterable[str]) -> dict[str, float]:
    """Those of the snapshots whose root is still retained: id -> until when."""
    return _held(repo, {sid: layout.snapshot_key(sid) for sid in snapshot_ids})


def versioned(repo: Repository) -> bool | None:
    """Whether deleting an object leaves a noncurrent version (one request); None on a store
    that has no versions at all (asking nothing)."""
    store = repo.store
    return store.versioning() == "Enabled" if store.capabilities.versions else None


def versioned_requests(repo: Repository) -> int:
    """The requests :func:`versioned` makes (for a prediction)."""
    return 1 if repo.store.capabilities.versions else 0


@dataclass(frozen=True)
class Noncurrent:
    """Versions of the repository's keys that are not current (deleted or replaced), and delete
    markers: still billed until a lifecycle rule expires them."""

    versions: int
    bytes: int
    delete_markers: int


def noncurrent(repo: Repository) -> tuple[str | None, Noncurrent | None]:
    """The bucket's versioning status and the repository's noncurrent versions (one request,
    then one listing of versions); (None, None) when the bucket never had versioning."""
    store = repo.store
    status = store.versioning() if store.capabilities.versions else None
    if status is None:
        return None, None
    count = size = markers = 0
    for v in _repository_versions(store):
        if v.deleted:
            markers += 1
        elif not v.latest:
            count, size = count + 1, size + v.size
    return status, Noncurrent(count, size, markers)


def _repository_versions(store: Store) -> Iterator[ObjectVersion]:
    for prefix in (layout.CONFIG_KEY, layout.SNAPSHOTS_PREFIX, layout.DATA_PREFIX, layout.KEYS_PREFIX,
                   layout.LOCKS_PREFIX, layout.CONDEMNED_PREFIX):
        for v in store.versions(prefix):
            if prefix != layout.CONFIG_KEY or v.key == layout.CONFIG_KEY:
                yield v


@dataclass(frozen=True)
class BringBack:
    """One key whose version at the moment asked is not its current one."""

    key: str
    kind: ObjectKind
    #: The version it had then, and its size.
    version_id: str
    size: int
    #: "deleted" (its current version is a delete marker) or "replaced".
    why: str


def _rollback_plan(store: Store, before: float, prefixes: Iterable[tuple[str, ObjectKind]],
                   ) -> list[BringBack]:
    """Every key under ``prefixes`` that existed at ``before`` (seconds since the epoch, the
    store's clock) whose current version is not the one it had then: pure but for one listing
    of versions per prefix. Keys written only after ``before`` are left as they are."""
    out: list[BringBack] = []
    for prefix, kind in prefixes:
        by_key: dict[str, list[ObjectVersion]] = {}
        for v in store.versions(prefix):
            if prefix != layout.CONFIG_KEY or v.key == layout.CONFIG_KEY:
                by_key.setdefault(v.key, []).append(v)
        for key in sorted(by_key):
            out.extend(_bring_back(key, kind, by_key[key], before))
    return out


def _bring_back(key: str, kind: ObjectKind, versions: list[ObjectVersion], before: float) -> list[BringBack]:
    then = max((v for v in versions if v.mtime < before), key=lambda v: v.mtime, default=None)
    current = next((v for v in versions if v.latest), None)
    if then is None or then.deleted or current is None:
        return []
    same = not current.deleted and bool(then.etag) and current.etag == then.etag
    if current.version_id == then.version_id or same:
        return []  # as it was (or brought back already: a copy of it)
    why = "deleted" if current.deleted else "replaced"
    return [BringBack(key, kind, then.version_id, then.size, why)]


def _copy_back(store: Store, items: Iterable[BringBack]) -> None:
    def one(item: BringBack) -> None:
        store.copy_back(item.key, item.version_id, kind=item.kind, size=item.size)

    with ThreadPoolExecutor(max_workers=_HEADS, thread_name_prefix="undelete") as pool:
        list(pool.map(one, items))


@dataclass(frozen=True)
class UndeleteResult:
    """What ``undelete`` brought back (or, with ``dry_run``, would): the repository as it was
    at ``before``, but for what was written after it."""

    dry_run: bool
    before: str
    #: The config, if it was deleted or replaced since ("deleted", "replaced"), else None.
    config: str | None
    snapshots: tuple[str, ...]
    packs: int
    keys: int
    #: Of everything brought back, how many were replaced (overwritten), not deleted.
    replaced: int
    bytes: int


def undelete(location: str | os.PathLike[str], options: StoreOptions | None, before: float, *,
             key_source: KeySource | None = None, dry_run: bool = False, wait: float = 0.0) -> UndeleteResult:
    """Make the version each key of the repository at ``location`` had at ``before`` (seconds
    since the epoch) current again, where it was deleted or replaced since: the config first
    (nothing opens a repository without it), then, under the exclusive lock, its keys, packs
    and, last, snapshot roots. Keys written after ``before`` are left as they are, so later
    snapshots stay; what a prune deleted since comes back too (a later prune collects it)."""
    store = open_store(os.fspath(location), options)
    if not store.capabilities.versions or store.versioning() is None:
        raise UsageError(f"{store.url} keeps no versions: only a versioned S3 bucket can bring objects back")
    found = _rollback_plan(store, before, ROLLBACK_KINDS)
    result = _summary(found, before, dry_run)
    if dry_run or not found:
        return result
    config = [item for item in found if item.kind is ObjectKind.CONFIG]
    _copy_back(store, config)
    repo = Repository.open(location, options, key_source=key_source)
    with repo.lock(EXCLUSIVE, "undelete", wait=wait):
        if config and repo.config.object_lock is not None:  # copied once more, now under its retention
            _copy_back(repo.store, config)
        for _, kind in ROLLBACK_KINDS[1:]:  # keys and packs before the roots that need them
            _copy_back(repo.store, [item for item in found if item.kind is kind])
    return result


def _summary(found: list[BringBack], before: float, dry_run: bool) -> UndeleteResult:
    config = next((item.why for item in found if item.kind is ObjectKind.CONFIG), None)
    roots = [layout.snapshot_id_from_key(item.key) for item in found if item.kind is ObjectKind.ROOT]
    return UndeleteResult(
        dry_run=dry_run,
        before=datetime.datetime.fromtimestamp(before, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        config=config, snapshots=tuple(sorted(sid for sid in roots if sid is not None)),
        packs=sum(1 for item in found if item.kind is ObjectKind.PACK),
        keys=sum(1 for item in found if item.kind is ObjectKind.KEY),
        replaced=sum(1 for item in found if item.why == "replaced"), bytes=sum(item.size for item in found),
    )
