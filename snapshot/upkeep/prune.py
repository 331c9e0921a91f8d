"""Prune and forget: drop snapshots (by a retention policy, or by name), then delete the
objects no remaining snapshot needs, in two phases (snapshot/format/condemned.py).

Every prune is ``plan_prune`` (snapshot/upkeep/prune_plan.py; pure: which snapshots go, which
objects become candidates and what the two phases will condemn and delete, decided from the
manifests, one listing of data/ and the condemned records; reported by ``--dry-run``) followed
by ``PrunePlan.execute``:

1. the repack (snapshot/upkeep/repack.py): dead chain prefixes re-based, live frames of mostly-dead
   packs copied into new packs, the kept roots that point at them rewritten. It is the step
   that reads data, so it comes before anything is removed: a damaged pack stops the prune
   with every snapshot still there;
2. the dropped manifests are deleted: a crash now leaves objects, never a snapshot that
   points at deleted data;
3. *condemn*: the roots are listed again, and every candidate that no root references now
   (the objects only the dropped snapshots used, the packs the repack emptied, and objects no
   root referenced at all once older than the grace period) is recorded as condemned, with
   the time. Nothing is deleted in the run that condemns it (unless ``delete_after`` is 0);
4. *delete*: the records are read and the roots listed once more, at this moment; a condemned
   pack that a root references is rescued, one condemned for ``delete_after`` or longer (24 h
   by default) and referenced by no root is deleted, last.

The prune holds the exclusive lock and re-checks it right before each step that deletes or
rewrites (exit 9 when it is gone, with nothing more deleted), but correctness does not rest on
it: a create that slipped in meanwhile either commits in time for its root to rescue what it
uses, or refuses to commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from snapshot.errors import HeldError, IntegrityError, SnapshotError, StorageError, UsageError
from snapshot.format.condemned import DEFAULT_DELETE_AFTER
from snapshot.repo import versions
from snapshot.repo.locks import EXCLUSIVE, RepositoryLock
from snapshot.repo.repository import Repository
from snapshot.repo.usage import Usage
from snapshot.upkeep.options import PruneOptions
from snapshot.upkeep.prune_plan import (
    GcPlan,
    PrunePlan,
    PruneResult,
    RepackReport,
    load_root,
    plan_gc,
    plan_prune,
    utc_iso,
)
from snapshot.upkeep.prune_predict import PruneFacts, lock_facts, predict_prune
from snapshot.upkeep.repack import NO_PLAN, RepackOptions, plan_repack
from snapshot.upkeep.retention import (
    DEFAULT_GROUP_BY,
    Decision,
    RetentionPolicy,
    plan_retention,
    snapshot_time,
)
from snapshot.util.options import from_keywords

__all__ = [
    "DEFAULT_GRACE", "GcPlan", "PrunePlan", "PruneResult", "RepackReport", "forget", "plan_gc", "plan_prune",
    "prune",
]

#: Unreferenced objects younger than this are left alone (a create may still be writing them).
DEFAULT_GRACE = 3600.0


def _referenced(repo: Repository, usage: Usage, ids: Sequence[str], why: str) -> set[str]:
    """Objects the snapshots ``ids`` need; one manifest is held at a time."""
    out: set[str] = set()
    for sid in ids:
        m = load_root(repo, sid, why)
        try:
            out |= usage.objects(m)
        except StorageError:
            raise
        except SnapshotError as exc:
            raise IntegrityError(f"snapshot {sid}: {exc}; {why} cannot tell which objects it needs: "
                                 f"run `chroma-snapshot check`") from exc
    return out


def _released(repo: Repository, usage: Usage, ids: Sequence[str], facts: PruneFacts) -> set[str]:
    out: set[str] = set()
    for sid in ids:
        try:
            out |= usage.objects(facts.root(repo, repo.manifest(sid)))
        except SnapshotError:  # a broken dropped snapshot frees nothing at once
            continue
    return out


def _settings(options: PruneOptions) -> tuple[float, float, RepackOptions]:
    """The grace period, the deletion bound and the repack settings, defaults filled in."""
    grace = DEFAULT_GRACE if options.grace is None else options.grace
    bound = DEFAULT_DELETE_AFTER if options.delete_after is None else options.delete_after
    return grace, bound, options.repack or RepackOptions()


def _hold_back(repo: Repository, keep: Sequence[Decision], remove: Sequence[Decision],
               ) -> tuple[list[Decision], list[str], dict[str, float]]:
    """The retention decision, less the snapshots whose roots S3 Object Lock still retains
    (kept, with that reason): what to keep (newest first), what to drop, what is held."""
    held = versions.held_snapshots(repo, [d.id for d in remove])
    if not held:
        return list(keep), [d.id for d in remove], held
    kept = list(keep) + [dataclasses.replace(d, reasons=(f"held by Object Lock until {utc_iso(held[d.id])}",))
                         for d in remove if d.id in held]
    kept.sort(key=lambda d: d.id, reverse=True)
    return kept, [d.id for d in remove if d.id not in held], held


def _plan(
    repo: Repository, kept: Sequence[Decision], removed: Sequence[str], now: float | None, grace: float,
    repack: RepackOptions, delete_after: float, facts: PruneFacts,
    held_roots: Mapping[str, float] | None = None,
) -> PrunePlan:
    usage = Usage(repo)
    listing = list(repo.list_objects())
    rp = NO_PLAN
    facts.kept, facts.removed = tuple(d.id for d in kept), tuple(removed)
    if repack.enabled and kept:
        facts.by_path = True
        manifests = [facts.root(repo, load_root(repo, d.id, "prune")) for d in kept]
        try:
            sizes = {oid: info.size for oid, info in listing if oid is not None}
            rp, referenced = plan_repack(repo, manifests, sizes, repack, usage)
        except StorageError:
            raise
        except SnapshotError as exc:
            raise IntegrityError(
                f"{exc}; prune cannot tell which objects are in use: run `chroma-snapshot check`") from exc
    else:
        referenced = _referenced(repo, usage, [d.id for d in kept], "prune")
    released = _released(repo, usage, removed, facts)
    clock = repo.now()
    with repo.measure() as facts.condemned:
        condemned = repo.condemned()

    def plan(held: Mapping[str, float] | None = None) -> PrunePlan:
        return plan_prune(
            kept, referenced, released, removed, listing,
            now=clock if now is None else now, grace=grace, repack=rp, delete_after=delete_after,
            condemned=condemned, clock=clock, usage=usage, held=held,
        )

    first = plan()
    held = versions.held_objects(repo, first.expected.deletion.delete)
    return dataclasses.replace(plan(held) if held else first, snapshots_held=dict(held_roots or {}))


def _run(repo: Repository, plan: PrunePlan, lock: RepositoryLock | None, facts: PruneFacts,
         predict: bool) -> PruneResult:
    predicted = predict_prune(repo, plan, facts) if predict or lock is None else None
    result = plan.report(repo) if lock is None else plan.execute(repo, guard=lock.check)
    return dataclasses.replace(result, predicted=predicted)


def _locked(repo: Repository, options: PruneOptions, command: str,
            work: Callable[[RepositoryLock | None, PruneFacts], PruneResult]) -> PruneResult:
    """Prune and forget hold the exclusive lock (no create may run while objects are judged
    unreferenced) and re-check it before each step that deletes; a dry run changes nothing
    and takes none. The result says what the run took."""
    facts = PruneFacts()
    with repo.measure() as spent:
        if options.dry_run:
            lock_facts(repo, facts)
            result = work(None, facts)
        else:
            with repo.lock(EXCLUSIVE, command, wait=options.wait or 0.0) as lock:
                repo.check_deletes_allowed(command)
                result = work(lock, facts)
    return dataclasses.replace(result, requests=spent.requests, bytes_up=spent.bytes_up,
                               bytes_down=spent.bytes_down)


def prune(
    repo: Repository,
    policy: RetentionPolicy,
    options: PruneOptions | None = None,
    *,
    group_by: str = DEFAULT_GROUP_BY,
    now: float | None = None,
    **keywords: Any,
) -> PruneResult:
    """Drop the snapshots ``policy`` does not keep (per source group by ``group_by``; never a
    group's newest), then repack, condemn what no snapshot needs and delete what was condemned
    long enough ago (:class:`PruneOptions`, whose fields may be given as keywords instead)."""
    opts = from_keywords(PruneOptions, options, keywords, "prune")
    if policy.empty:
        raise UsageError("no retention policy given: pass at least one --keep-* option")
    grace, bound, repack = _settings(opts)

    def work(lock: RepositoryLock | None, facts: PruneFacts) -> PruneResult:
        ids = repo.snapshot_ids()
        facts.snapshots_listed = len(ids)
        times = [snapshot_time(facts.root(repo, load_root(repo, sid, "prune"))) for sid in ids]
        decision = plan_retention(times, policy, group_by)
        facts.held_checked = len(decision.remove) if repo.config.object_lock is not None else 0
        kept, removed, held = _hold_back(repo, decision.keep, decision.remove)
        plan = _plan(repo, kept, removed, now, grace, repack, bound, facts, held)
        return _run(repo, plan, lock, facts, opts.predict)

    return _locked(repo, opts, "prune", work)


def forget(
    repo: Repository,
    refs: Sequence[str],
    options: PruneOptions | None = None,
    *,
    now: float | None = None,
    **keywords: Any,
) -> PruneResult:
    """Drop the named snapshots (ids, prefixes, ``latest``), then collect objects as prune
    does. Every ref is resolved before anything is deleted, so one unknown ref deletes nothing."""
    opts = from_keywords(PruneOptions, options, keywords, "forget")
    if not refs:
        raise UsageError("name at least one snapshot to forget")
    grace, bound, repack = _settings(opts)

    def work(lock: RepositoryLock | None, facts: PruneFacts) -> PruneResult:
        ids = repo.snapshot_ids()
        facts.snapshots_listed = len(ids)
        targets = {repo.resolve(ref, ids) for ref in refs}
        facts.held_checked = len(targets) if repo.config.object_lock is not None else 0
        held = versions.held_snapshots(repo, sorted(targets))
        if held:
            sid, until = min(held.items(), key=lambda item: item[1])
            more = f" (and {len(held) - 1} more of those named)" if len(held) > 1 else ""
            raise HeldError(f"snapshot {sid}{more} is retained by S3 Object Lock until {utc_iso(until)}: it "
                            "cannot be forgotten before then; nothing was deleted")
        remaining = sorted(set(ids) - targets, reverse=True)
        kept = [Decision(m.id, m.created_at, m.tags, ("not named",))
                for m in (facts.root(repo, load_root(repo, sid, "forget")) for sid in remaining)]
        plan = _plan(repo, kept, sorted(targets, reverse=True), now, grace, repack, bound, facts)
        return _run(repo, plan, lock, facts, opts.predict)

    return _locked(repo, opts, "forget", work)
