"""Prune and forget: drop snapshots (by a retention policy, or by name), then delete the
objects no remaining snapshot needs.

Every prune is ``plan_prune`` (pure: which snapshots go, which objects go, decided from the
manifests and one listing of data/; printed by ``--dry-run``) followed by ``execute_prune``:

1. the repack (snapshot/repack.py): dead chain prefixes re-based, live frames of mostly-dead
   packs copied into new packs, the kept roots that point at them rewritten. It is the step
   that reads data, so it comes before anything is removed: a damaged pack stops the prune
   with every snapshot still there;
2. the dropped manifests are deleted: a crash now leaves objects, never a snapshot that
   points at deleted data;
3. :func:`protect_newcomers`: the snapshot list is read again, and any snapshot committed since
   the plan (a create that ran meanwhile) keeps every object it references;
4. the planned objects (minus those) are deleted, last. Objects that only the dropped snapshots
   referenced go at once, as do the packs the repack emptied; objects no manifest referenced at
   all (a create in flight, or one that crashed before its manifest) go only once older than
   the grace period. Objects uploaded after the plan's listing are never touched.
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
from snapshot.repack import NO_PLAN, RepackOptions, RepackPlan, RepackResult, execute_repack, plan_repack
from snapshot.repository import Repository
from snapshot.retention import (
    DEFAULT_GROUP_BY,
    Decision,
    RetentionPolicy,
    plan_retention,
    snapshot_time,
)
from snapshot.storage.base import MIN_BILLED_SECONDS, ObjectInfo

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
    repack: RepackPlan = NO_PLAN
    #: The kept snapshots in the order the repack rewrites them.
    kept_ids: tuple[str, ...] = ()
    #: Listed size and age (seconds) of every object, for the report.
    now: float = 0.0


@dataclass(frozen=True)
class RepackReport:
    """What the repack did (or, in a dry run, would do)."""

    packs_repacked: int
    bytes_copied: int
    chunks_rebased: int
    unused_before: int
    unused_after: int
    repository_bytes: int
    roots_rewritten: int = 0
    bytes_written: int = 0
    bytes_read: int = 0


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
    repack: RepackReport | None = None
    #: Bytes deleted from an infrequent-access class before its 30-day minimum (billed anyway);
    #: None when the repository's data is not stored in such a class.
    bytes_deleted_early: int | None = None


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
    repack: RepackPlan = NO_PLAN,
) -> PrunePlan:
    """Pure: from the retention decision, the objects the kept snapshots reference, those the
    dropped ones referenced (a dropped snapshot whose manifest cannot be read adds none: its
    objects wait for the grace period like any unreferenced object) and a listing of the
    objects, what to delete."""
    gc = plan_gc(objects, referenced, released - referenced, now, grace)
    known = frozenset([d.id for d in kept] + list(removed))
    return PrunePlan(tuple(removed), tuple(kept), known, gc, grace, repack, tuple(d.id for d in kept), now)


def protect_newcomers(repo: Repository, plan: PrunePlan) -> set[str]:
    """Objects referenced by snapshots committed since ``plan`` was made: never deleted."""
    newer = sorted(set(repo.snapshot_ids()) - plan.known)
    refs = References(repo)
    protected: set[str] = set()
    for sid in newer:
        protected |= refs.of(_load_one(repo, sid, "prune"))
    return protected


def execute_prune(repo: Repository, plan: PrunePlan, objects: dict[str, ObjectInfo],
                  pack_size: int) -> PruneResult:
    repacked = None
    if not plan.repack.empty:
        try:
            repacked = execute_repack(repo, plan.repack, plan.kept_ids, pack_size)
        except StorageError:
            raise
        except SnapshotError as exc:
            raise type(exc)(f"{exc}; no snapshot was removed (`chroma-snapshot check --read-data` finds "
                            "what is damaged; --no-repack prunes without reading data)") from exc
    for sid in plan.removed:  # before objects: a crash now leaves objects, never a broken snapshot
        repo.delete_snapshot(sid)
        hooks.point("prune.manifest-deleted")
    protected = protect_newcomers(repo, plan)
    hooks.point("prune.newcomers-read")
    delete = [(oid, info) for oid, info in plan.gc.delete if oid not in protected]
    if repacked is not None:
        delete = [(oid, info) for oid, info in delete if oid not in repacked.written]
        planned = {oid for oid, _ in delete}
        delete += [(oid, objects[oid]) for oid in sorted(repacked.obsolete)
                   if oid not in planned and oid not in protected]
    hooks.point("prune.before-delete")
    repo.delete_objects(oid for oid, _ in delete)
    return _result(repo, plan, tuple(delete), dry_run=False, repacked=repacked)


def _repack_report(plan: RepackPlan, done: RepackResult | None) -> RepackReport:
    return RepackReport(
        packs_repacked=len(plan.repack), bytes_copied=plan.copy_bytes, chunks_rebased=len(plan.rebases),
        unused_before=plan.unused_before, unused_after=plan.unused_after,
        repository_bytes=plan.repository_bytes,
        roots_rewritten=done.roots_rewritten if done else 0,
        bytes_written=done.bytes_written if done else 0, bytes_read=done.bytes_read if done else 0,
    )


def _result(repo: Repository, plan: PrunePlan, delete: Sequence[Listed], *, dry_run: bool,
            repacked: RepackResult | None = None) -> PruneResult:
    early = None
    if repo.infrequent_access:
        early = sum(info.size for _, info in delete if plan.now - info.mtime < MIN_BILLED_SECONDS)
    ran = dry_run or repacked is not None
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
        repack=_repack_report(plan.repack, repacked) if ran and not plan.repack.empty else None,
        bytes_deleted_early=early,
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
    repo: Repository, kept: Sequence[Decision], removed: Sequence[str], now: float | None, grace: float,
    repack: RepackOptions,
) -> tuple[PrunePlan, dict[str, ObjectInfo]]:
    refs = References(repo)
    listing = list(repo.list_objects())
    objects = {oid: info for oid, info in listing if oid is not None}
    rp = NO_PLAN
    if repack.enabled and kept:
        manifests = [_load_one(repo, d.id, "prune") for d in kept]
        try:
            sizes = {oid: info.size for oid, info in objects.items()}
            rp, referenced = plan_repack(repo, manifests, sizes, repack)
        except StorageError:
            raise
        except SnapshotError as exc:
            raise IntegrityError(
                f"{exc}; prune cannot tell which objects are in use: run `chroma-snapshot check`") from exc
    else:
        referenced = _referenced(repo, refs, [d.id for d in kept], "prune")
    released = _released(repo, refs, removed)
    plan = plan_prune(
        kept, referenced, released, removed, listing,
        now=time.time() if now is None else now, grace=grace, repack=rp,
    )
    return plan, objects


def _run(repo: Repository, planned: tuple[PrunePlan, dict[str, ObjectInfo]], dry_run: bool,
         repack: RepackOptions) -> PruneResult:
    plan, objects = planned
    if dry_run:
        would = list(plan.gc.delete)
        would += [(oid, objects[oid]) for oid in sorted(plan.repack.freed - {o for o, _ in would})]
        return _result(repo, plan, tuple(would), dry_run=True)
    return execute_prune(repo, plan, objects, repack.pack_size)


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
    repack: RepackOptions | None = None,
) -> PruneResult:
    """Drop the snapshots ``policy`` does not keep (per source group; never a group's newest),
    then repack and collect objects."""
    if policy.empty:
        raise UsageError("no retention policy given: pass at least one --keep-* option")
    grace = _check_grace(grace)
    with _lock(repo, dry_run, "prune", wait):
        times = [snapshot_time(_load_one(repo, sid, "prune")) for sid in repo.snapshot_ids()]
        decision = plan_retention(times, policy, group_by)
        repack = repack or RepackOptions()
        planned = _plan(repo, decision.keep, [d.id for d in decision.remove], now, grace, repack)
        return _run(repo, planned, dry_run, repack)


def forget(
    repo: Repository,
    refs: Sequence[str],
    *,
    dry_run: bool = False,
    grace: float | None = None,
    now: float | None = None,
    wait: float | None = None,
    repack: RepackOptions | None = None,
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
        repack = repack or RepackOptions()
        planned = _plan(repo, kept, sorted(targets, reverse=True), now, grace, repack)
        return _run(repo, planned, dry_run, repack)
