"""Prune and forget: drop snapshots (by a retention policy, or by name), then delete the
objects no remaining snapshot needs.

Order of side effects (DESIGN.md "Prune"):

1. every manifest is read first; the snapshots to drop are decided (nothing changed yet);
2. the dropped manifests are deleted;
3. the snapshot list is read again, so a create that committed meanwhile keeps its objects;
4. one listing of ``data/``; an object is deleted only if no remaining manifest references it
   (any frame of any chain, delta bases included). Objects that only the dropped snapshots
   referenced go at once; objects no manifest referenced at all (a create in flight, or one
   that crashed before its manifest) go only once older than the grace period.

:func:`plan_gc` is the pure part of step 4; ``dry_run`` stops after planning.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from snapshot import layout
from snapshot.errors import IntegrityError, SnapshotError, UsageError
from snapshot.manifest import Manifest
from snapshot.repository import Repository
from snapshot.retention import Decision, RetentionPolicy, plan_retention, snapshot_times
from snapshot.storage.base import ObjectInfo

DEFAULT_GRACE = 3600.0
_DELETERS = 8


@dataclass(frozen=True)
class GcPlan:
    delete: tuple[ObjectInfo, ...]
    #: Unreferenced, but younger than the grace period: left for a later prune.
    pending: tuple[ObjectInfo, ...]
    kept: int


@dataclass(frozen=True)
class PruneResult:
    dry_run: bool
    #: Snapshot ids dropped (or that would be, with dry_run), newest first.
    removed: tuple[str, ...]
    kept: tuple[Decision, ...]
    objects_removed: tuple[str, ...]
    bytes_freed: int
    objects_kept: int
    objects_in_grace: int
    bytes_in_grace: int
    grace_seconds: float


def referenced_objects(m: Manifest) -> set[str]:
    """Every object a snapshot needs: the objects of every frame of every chain."""
    return {fr.object for f in m.files for c in f.chunks for fr in c.frames}


def plan_gc(
    objects: Iterable[ObjectInfo],
    referenced: set[str],
    released: set[str],
    now: float,
    grace: float,
) -> GcPlan:
    """Which listed objects to delete: not ``referenced`` by a remaining snapshot, and either
    ``released`` (referenced only by the snapshots just dropped) or older than ``grace``.
    Keys under data/ that are not object keys are left alone."""
    delete: list[ObjectInfo] = []
    pending: list[ObjectInfo] = []
    kept = 0
    for info in objects:
        oid = layout.object_id_from_key(info.key)
        if oid is None:
            continue
        if oid in referenced:
            kept += 1
        elif oid in released or now - info.mtime >= grace:
            delete.append(info)
        else:
            pending.append(info)
    return GcPlan(tuple(delete), tuple(pending), kept)


def _load(repo: Repository, ids: Sequence[str], why: str) -> list[Manifest]:
    out = []
    for sid in ids:
        try:
            out.append(repo.manifest(sid))
        except SnapshotError as exc:
            raise IntegrityError(
                f"manifest {sid} cannot be read ({exc}); {why} needs every remaining manifest to "
                f"know which objects are in use: run `chroma-snapshot check`, then "
                f"`chroma-snapshot forget {sid}` if it is broken"
            ) from exc
    return out


def _released(repo: Repository, ids: Sequence[str]) -> set[str]:
    """Objects the dropped snapshots referenced (a broken dropped manifest adds none: its
    objects then wait for the grace period like any unreferenced object)."""
    out: set[str] = set()
    for sid in ids:
        try:
            out |= referenced_objects(repo.manifest(sid))
        except SnapshotError:
            continue
    return out


def _apply(
    repo: Repository,
    kept: Sequence[Decision],
    removed: Sequence[str],
    all_ids: Sequence[str],
    *,
    dry_run: bool,
    grace: float,
    now: float | None,
) -> PruneResult:
    kept_ids = [d.id for d in kept]
    referenced: set[str] = set()
    for m in _load(repo, kept_ids, "prune"):
        referenced |= referenced_objects(m)
    released = _released(repo, removed) - referenced
    if not dry_run:
        for sid in removed:  # manifests first: a crash now leaves objects, never a broken snapshot
            repo.store.delete(layout.snapshot_key(sid))
            repo.forget_cached(sid)
        newer = sorted(set(repo.snapshot_ids()) - set(all_ids))
        for m in _load(repo, newer, "prune"):
            referenced |= referenced_objects(m)
        released -= referenced
    plan = plan_gc(
        repo.store.list(layout.DATA_PREFIX), referenced, released, time.time() if now is None else now, grace
    )
    if not dry_run and plan.delete:
        with ThreadPoolExecutor(max_workers=_DELETERS, thread_name_prefix="delete") as pool:
            list(pool.map(repo.store.delete, [info.key for info in plan.delete]))
    return PruneResult(
        dry_run=dry_run,
        removed=tuple(removed),
        kept=tuple(kept),
        objects_removed=tuple(sorted(layout.object_id_from_key(i.key) or i.key for i in plan.delete)),
        bytes_freed=sum(i.size for i in plan.delete),
        objects_kept=plan.kept,
        objects_in_grace=len(plan.pending),
        bytes_in_grace=sum(i.size for i in plan.pending),
        grace_seconds=grace,
    )


def prune(
    repo: Repository,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    grace: float = DEFAULT_GRACE,
    now: float | None = None,
) -> PruneResult:
    """Drop the snapshots ``policy`` does not keep (never the newest), then collect objects."""
    if policy.empty:
        raise UsageError("no retention policy given: pass at least one --keep-* option")
    if grace < 0:
        raise UsageError("the grace period cannot be negative")
    ids = repo.snapshot_ids()
    manifests = _load(repo, ids, "prune")
    plan = plan_retention(snapshot_times(manifests), policy)
    return _apply(
        repo, plan.keep, [d.id for d in plan.remove], ids, dry_run=dry_run, grace=grace, now=now
    )


def forget(
    repo: Repository,
    refs: Sequence[str],
    *,
    dry_run: bool = False,
    grace: float = DEFAULT_GRACE,
    now: float | None = None,
) -> PruneResult:
    """Drop the named snapshots (ids, prefixes, ``latest``), then collect objects. Every ref is
    resolved before anything is deleted, so one unknown ref deletes nothing."""
    if not refs:
        raise UsageError("name at least one snapshot to forget")
    if grace < 0:
        raise UsageError("the grace period cannot be negative")
    ids = repo.snapshot_ids()
    targets = set()
    for ref in refs:
        targets.add(repo.resolve(ref, ids))
    remaining = sorted(set(ids) - targets, reverse=True)
    kept = [Decision(m.id, m.created_at, m.tags, ("not named",)) for m in _load(repo, remaining, "forget")]
    return _apply(
        repo, kept, sorted(targets, reverse=True), ids, dry_run=dry_run, grace=grace, now=now
    )
