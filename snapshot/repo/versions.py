"""What a versioned bucket keeps and holds: Object Lock retention, noncurrent versions, and
bringing back the versions of a past moment.

Object Lock: a repository whose config names one has its packs, roots, config and keys written
with a retain-until date (snapshot/storage/s3/versions.py). S3 refuses to delete such a version
before that date, and a plain DELETE of its key only hides it behind a delete marker, so prune
and forget ask for the date (one HeadObject per object they are about to delete) and leave
what is still held: see snapshot/upkeep/prune.py.

Versioning (which Object Lock implies): what prune deletes stays as noncurrent versions, billed
until a lifecycle rule expires them; ``stats`` counts them. :func:`rollback_plan` finds, for a
moment, every key whose current version is not the one it had then (deleted, or overwritten),
and :func:`copy_back` makes that version current again (``undelete``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from snapshot.errors import NotFoundError
from snapshot.format import layout
from snapshot.repo.repository import Repository
from snapshot.storage import ObjectKind, ObjectVersion, Store, StoreOptions, open_store

_HEADS = 8
#: The prefixes :func:`rollback_plan` brings back, with the kind of their objects, in the order
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


@dataclass(frozen=True)
class Noncurrent:
    """Versions of the repository's keys that are not current (deleted or replaced), and delete
    markers: still billed until a lifecycle rule expires them."""

    versions: int
    bytes: int
    delete_markers: int


def noncurrent(repo: Repository) -> Noncurrent | None:
    """The repository's noncurrent versions (one listing of versions); None when the bucket
    never had versioning."""
    store = repo.store
    if not store.capabilities.versions or store.versioning() is None:
        return None
    count = size = markers = 0
    for v in _repository_versions(store):
        if v.deleted:
            markers += 1
        elif not v.latest:
            count, size = count + 1, size + v.size
    return Noncurrent(count, size, markers)


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


def rollback_plan(repo: Repository, before: float) -> list[BringBack]:
    """:func:`_rollback_plan` of every kind but the config (:func:`config_back` brings it back
    before the repository can be opened)."""
    return _rollback_plan(repo.store, before, ROLLBACK_KINDS[1:])


def config_back(location: str | os.PathLike[str], options: StoreOptions | None, before: float, *,
                dry_run: bool) -> BringBack | None:
    """Bring back the config the repository at ``location`` had at ``before``, if it was
    deleted or replaced since (unless ``dry_run``): what to do first, since nothing opens a
    repository without its config."""
    store = open_store(os.fspath(location), options)
    found = _rollback_plan(store, before, ROLLBACK_KINDS[:1])
    if found and not dry_run:
        _copy_back(store, found)
    return found[0] if found else None


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
    if then is None or then.deleted or (current is not None and current.version_id == then.version_id):
        return []
    why = "deleted" if current is None or current.deleted else "replaced"
    return [BringBack(key, kind, then.version_id, then.size, why)]


def copy_back(repo: Repository, items: Iterable[BringBack]) -> None:
    """Make each item's old version current again (a server-side copy, retained as a put of its
    kind would be), a few at a time."""
    _copy_back(repo.store, items)


def _copy_back(store: Store, items: Iterable[BringBack]) -> None:
    def one(item: BringBack) -> None:
        store.copy_back(item.key, item.version_id, kind=item.kind, size=item.size)

    with ThreadPoolExecutor(max_workers=_HEADS, thread_name_prefix="undelete") as pool:
        list(pool.map(one, items))
