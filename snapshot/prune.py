"""Prune and forget: drop snapshots (by a retention policy, or by name), then delete the
objects no remaining snapshot needs.

Every prune is ``plan_prune`` (pure: which snapshots go, which objects go, decided from the
manifests and one listing of data/; printed by ``--dry-run``) followed by ``execute_prune``:

1. the dropped manifests are deleted first: a crash now leaves objects, never a snapshot that
   points at deleted data;
2. :func:`protect_newcomers`: the snapshot list is read again, and any snapshot committed since
   the plan (a create that ran meanwhile) keeps every object it references;
3. the planned objects (minus those) are deleted. Objects that only the dropped snapshots
   referenced go at once; objects no manifest referenced at all (a create in flight, or one
   that crashed before its manifest) go only once older than the grace period. Objects uploaded
   after the plan's listing are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from snapshot import hooks
from snapshot.errors import IntegrityError, SnapshotError, StorageError, UsageError
from snapshot.locks import EXCLUSIVE
from snapshot.manifest import Manifest
from snapshot.repository import Repository
from snapshot.retention import (
    DEFAULT_GROUP_BY,
    Decision,
    RetentionPolicy,
    plan_retention,
    snapshot_time,
)
from snapshot.storage.base import ObjectInfo

#: Unreferenced objects younger than this are left alone (a create may still be writing them).
DEFAULT_GRACE = 3600.0


#: (object id, its listing)
Listed = tuple[str, ObjectInfo]


@dataclass(frozen=True)
class GcPlan:
    delete: tuple[Listed, ...]
    #: Unreferenced, but younger than the grace period: left for a later prune.
    pending: tuple[Listed, ...]
    kept: int


@dataclass(frozen=True)
class PrunePlan:
    """What a prune will do: snapshots to drop (newest first), the decision for each kept one,
    and the objects to delete (by id)."""

    removed: tuple[str, ...]
    kept: tuple[Decision, ...]
    #: Every snapshot id known when planning (a later id is a newcomer to protect).
    known: frozenset[str]
    gc: GcPlan
    grace_seconds: float


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


class References:
    """Every object snapshots need: each file's chunk table and the objects of every frame of
    every chain in it. A table shared by many snapshots is read once (tables are cached by
    hash as the set of objects they reference, a few pack ids each)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._tables: dict[str, frozenset[str]] = {}

    def of(self, m: Manifest) -> set[str]:
        out: set[str] = set()
        for f in m.files:
            if f.table is None:
                out |= {fr.object for c in f.chunks for fr in c.frames}
                continue
            known = self._tables.get(f.table.hash)
            if known is None:
                chunks = self.repo.chunks(m, f)
                known = self._tables[f.table.hash] = frozenset(
                    {f.table.object} | {fr.object for c in chunks for fr in c.frames})
            out |= known
        return out


def referenced_objects(repo: Repository, m: Manifest) -> set[str]:
    """Every object snapshot ``m`` needs."""
    return References(repo).of(m)


def plan_gc(
    objects: Iterable[tuple[str | None, ObjectInfo]],
    referenced: set[str],
    released: set[str],
    now: float,
    grace: float,
) -> GcPlan:
    """Which listed objects to delete: not ``referenced`` by a remaining snapshot, and either
    ``released`` (referenced only by the snapshots just dropped) or older than ``grace``.
    Keys under data/ that are not object keys (id None) are left alone."""
    delete: list[Listed] = []
    pending: list[Listed] = []
    kept = 0
    for oid, info in objects:
        if oid is None:
            continue
        if oid in referenced:
            kept += 1
        elif oid in released or now - info.mtime >= grace:
            delete.append((oid, info))
        else:
            pending.append((oid, info))
    return GcPlan(tuple(delete), tuple(pending), kept)


def plan_prune(
    kept: Sequence[Decision],
    referenced: set[str],
    released: set[str],
    removed: Sequence[str],
    objects: Iterable[tuple[str | None, ObjectInfo]],
    *,
    now: float,
    grace: float,
) -> PrunePlan:
    """Pure: from the retention decision, the objects the kept snapshots reference, those the
    dropped ones referenced (a dropped snapshot whose manifest cannot be read adds none: its
    objects wait for the grace period like any unreferenced object) and a listing of the
    objects, what to delete."""
    gc = plan_gc(objects, referenced, released - referenced, now, grace)
    known = frozenset([d.id for d in kept] + list(removed))
    return PrunePlan(tuple(removed), tuple(kept), known, gc, grace)


def protect_newcomers(repo: Repository, plan: PrunePlan) -> set[str]:
    """Objects referenced by snapshots committed since ``plan`` was made: never deleted."""
    newer = sorted(set(repo.snapshot_ids()) - plan.known)
    refs = References(repo)
    protected: set[str] = set()
    for sid in newer:
        protected |= refs.of(_load_one(repo, sid, "prune"))
    return protected


def execute_prune(repo: Repository, plan: PrunePlan) -> PruneResult:
    for sid in plan.removed:  # manifests first: a crash now leaves objects, never a broken snapshot
        repo.delete_snapshot(sid)
        hooks.point("prune.manifest-deleted")
    protected = protect_newcomers(repo, plan)
    hooks.point("prune.newcomers-read")
    delete = tuple((oid, info) for oid, info in plan.gc.delete if oid not in protected)
    repo.delete_objects(oid for oid, _ in delete)
    return _result(plan, delete, dry_run=False)


def _result(plan: PrunePlan, delete: Sequence[Listed], *, dry_run: bool) -> PruneResult:
    return PruneResult(
        dry_run=dry_run,
        removed=plan.removed,
        kept=plan.kept,
        objects_removed=tuple(sorted(oid for oid, _ in delete)),
        bytes_freed=sum(info.size for _, info in delete),
        objects_kept=plan.gc.kept,
        objects_in_grace=len(plan.gc.pending),
        bytes_in_grace=sum(info.size for _, info in plan.gc.pending),
        grace_seconds=plan.grace_seconds,
    )


def _load_one(repo: Repository, sid: str, why: str) -> Manifest:
    try:
        return repo.manifest(sid)
    except StorageError:
        raise  # unreadable now (network, store): not a broken manifest
    except SnapshotError as exc:
        raise IntegrityError(
            f"manifest {sid} cannot be read ({exc}); {why} needs every remaining manifest to "
            f"know which objects are in use: run `chroma-snapshot check`, then "
            f"`chroma-snapshot forget {sid}` if it is broken"
        ) from exc


def _referenced(repo: Repository, refs: References, ids: Sequence[str], why: str) -> set[str]:
    """Objects the snapshots ``ids`` need; one manifest is held at a time."""
    out: set[str] = set()
    for sid in ids:
        m = _load_one(repo, sid, why)
        try:
            out |= refs.of(m)
        except StorageError:
            raise
        except SnapshotError as exc:
            raise IntegrityError(f"snapshot {sid}: {exc}; {why} cannot tell which objects it needs: "
                                 f"run `chroma-snapshot check`") from exc
    return out


def _released(repo: Repository, refs: References, ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for sid in ids:
        try:
            out |= refs.of(repo.manifest(sid))
        except SnapshotError:  # a broken dropped snapshot frees nothing at once
            continue
    return out


def _check_grace(grace: float | None) -> float:
    if grace is None:
        return DEFAULT_GRACE
    if grace < 0:
        raise UsageError("the grace period cannot be negative")
    return grace


def _plan(
    repo: Repository, kept: Sequence[Decision], removed: Sequence[str], now: float | None, grace: float
) -> PrunePlan:
    refs = References(repo)
    referenced = _referenced(repo, refs, [d.id for d in kept], "prune")
    released = _released(repo, refs, removed)
    return plan_prune(
        kept, referenced, released, removed, repo.list_objects(),
        now=time.time() if now is None else now, grace=grace,
    )


def _run(repo: Repository, plan: PrunePlan, dry_run: bool) -> PruneResult:
    if dry_run:
        return _result(plan, plan.gc.delete, dry_run=True)
    return execute_prune(repo, plan)


def _lock(repo: Repository, dry_run: bool, command: str, wait: float | None) -> AbstractContextManager[Any]:
    """Prune and forget hold the exclusive lock (no create may run while objects are judged
    unreferenced); a dry run changes nothing and takes none."""
    return nullcontext() if dry_run else repo.lock(EXCLUSIVE, command, wait=wait or 0.0)


def prune(
    repo: Repository,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    grace: float | None = None,
    group_by: str = DEFAULT_GROUP_BY,
    now: float | None = None,
    wait: float | None = None,
) -> PruneResult:
    """Drop the snapshots ``policy`` does not keep (per source group; never a group's newest),
    then collect objects."""
    if policy.empty:
        raise UsageError("no retention policy given: pass at least one --keep-* option")
    grace = _check_grace(grace)
    with _lock(repo, dry_run, "prune", wait):
        times = [snapshot_time(_load_one(repo, sid, "prune")) for sid in repo.snapshot_ids()]
        decision = plan_retention(times, policy, group_by)
        plan = _plan(repo, decision.keep, [d.id for d in decision.remove], now, grace)
        return _run(repo, plan, dry_run)


def forget(
    repo: Repository,
    refs: Sequence[str],
    *,
    dry_run: bool = False,
    grace: float | None = None,
    now: float | None = None,
    wait: float | None = None,
) -> PruneResult:
    """Drop the named snapshots (ids, prefixes, ``latest``), then collect objects. Every ref is
    resolved before anything is deleted, so one unknown ref deletes nothing."""
    if not refs:
        raise UsageError("name at least one snapshot to forget")
    grace = _check_grace(grace)
    with _lock(repo, dry_run, "forget", wait):
        ids = repo.snapshot_ids()
        targets = {repo.resolve(ref, ids) for ref in refs}
        remaining = sorted(set(ids) - targets, reverse=True)
        kept = [Decision(m.id, m.created_at, m.tags, ("not named",))
                for m in (_load_one(repo, sid, "forget") for sid in remaining)]
        plan = _plan(repo, kept, sorted(targets, reverse=True), now, grace)
        return _run(repo, plan, dry_run)
