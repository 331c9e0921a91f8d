"""Prune and forget: drop snapshots (by a retention policy, or by name), then delete the
objects no remaining snapshot needs, in two phases (snapshot/format/condemned.py).

Every prune is ``plan_prune`` (pure: which snapshots go, which objects become candidates,
decided from the manifests and one listing of data/; printed by ``--dry-run``) followed by
``execute_prune``:

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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from snapshot.errors import IntegrityError, LockedError, SnapshotError, StorageError, UsageError
from snapshot.format.condemned import DEFAULT_DELETE_AFTER, DeletionPlan, plan_deletion
from snapshot.format.manifest import Manifest
from snapshot.repo.locks import EXCLUSIVE, RepositoryLock
from snapshot.repo.repository import Repository
from snapshot.storage.base import ObjectInfo
from snapshot.upkeep.options import PruneOptions
from snapshot.upkeep.repack import (
    NO_PLAN,
    RepackOptions,
    RepackPlan,
    RepackResult,
    execute_repack,
    plan_repack,
)
from snapshot.upkeep.retention import (
    DEFAULT_GROUP_BY,
    Decision,
    RetentionPolicy,
    plan_retention,
    snapshot_time,
)
from snapshot.util import pausepoints
from snapshot.util.options import from_keywords

#: Unreferenced objects younger than this are left alone (a create may still be writing them).
DEFAULT_GRACE = 3600.0


#: (object id, its listing)
Listed = tuple[str, ObjectInfo]


@dataclass(frozen=True)
class GcPlan:
    #: Candidates to condemn: referenced by no kept snapshot, and released or past the grace.
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
    #: How long a pack stays condemned before it may be deleted.
    delete_after: float = DEFAULT_DELETE_AFTER


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
    #: Objects condemned by this run (deleted by a later one, ``delete_after`` from now).
    objects_condemned: tuple[str, ...] = ()
    bytes_condemned: int = 0
    #: Condemned objects that a root references again: no longer condemned.
    objects_rescued: int = 0
    #: Condemned objects still waiting for their time (this run's included), and their bytes.
    condemned_waiting: int = 0
    bytes_condemned_waiting: int = 0
    delete_after: float = DEFAULT_DELETE_AFTER


class References:
    """Every object snapshots need: each file's chunk table and the objects of every frame of
    every chain in it. A table shared by many snapshots is read once (tables are cached by
    hash as the set of objects their frames are in, a few pack ids each). The same table
    content can be stored in several packs (a file that changed back, a repack that moved
    it): the table's own object is taken from each file entry, never from the cache."""

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
                known = self._tables[f.table.hash] = frozenset({fr.object for c in chunks for fr in c.frames})
            out |= known
            out.add(f.table.object)
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
    delete_after: float = DEFAULT_DELETE_AFTER,
) -> PrunePlan:
    """Pure: from the retention decision, the objects the kept snapshots reference, those the
    dropped ones referenced (a dropped snapshot whose manifest cannot be read adds none: its
    objects wait for the grace period like any unreferenced object) and a listing of the
    objects, which objects are candidates to condemn."""
    gc = plan_gc(objects, referenced, released - referenced, now, grace)
    known = frozenset([d.id for d in kept] + list(removed))
    return PrunePlan(tuple(removed), tuple(kept), known, gc, grace, repack, tuple(d.id for d in kept), now,
                     delete_after)


Guard = Callable[[], None]


def _no_guard() -> None:
    return None


def _live(repo: Repository, refs: References, seen: dict[str, set[str]]) -> set[str]:
    """Every object the roots listed at this moment reference. ``seen`` keeps each root's set
    across calls (roots are immutable but for a repack, which runs before the first call), so
    a second call reads only the roots committed since the first."""
    ids = repo.snapshot_ids()
    for sid in ids:
        if sid not in seen:
            seen[sid] = refs.of(_load_one(repo, sid, "prune"))
    out: set[str] = set()
    for sid in ids:
        out |= seen[sid]
    return out


def _candidates(plan: PrunePlan, objects: dict[str, ObjectInfo], repacked: RepackResult | None) -> set[str]:
    out = {oid for oid, _ in plan.gc.delete}
    if repacked is not None:
        out |= {oid for oid in repacked.obsolete if oid in objects}
        out -= repacked.written
    elif not plan.repack.empty:  # a dry run: what the repack would empty
        out |= {oid for oid in plan.repack.freed if oid in objects}
    return out


@dataclass(frozen=True)
class _Done:
    """What the two phases did."""

    condemned: tuple[str, ...]
    deletion: DeletionPlan
    #: The listing of every object seen (for sizes and ages in the report).
    infos: dict[str, ObjectInfo]


def _condemn_and_delete(repo: Repository, plan: PrunePlan, objects: dict[str, ObjectInfo],
                        refs: References, repacked: RepackResult | None, guard: Guard) -> _Done:
    """Steps 3 and 4 (module docstring)."""
    seen: dict[str, set[str]] = {}
    guard()
    live = _live(repo, refs, seen)
    pausepoints.point("prune.newcomers-read")
    before = repo.condemned()
    fresh = sorted(_candidates(plan, objects, repacked) - live - set(before.since))
    now = repo.now()
    written_records: list[str] = []
    if fresh:
        guard()
        written_records = repo.condemn(dict.fromkeys(fresh, now), delete_after=plan.delete_after)
    pausepoints.point("prune.condemned")
    # What a concurrent prune condemned meanwhile is neither deleted nor replaced by this one.
    condemned = before.adding(fresh, now=now, records=written_records, delete_after=plan.delete_after)
    listing = {oid: info for oid, info in repo.list_objects() if oid is not None}
    live = _live(repo, refs, seen)  # at this moment: after it, only overdue packs go
    written = repacked.written if repacked is not None else frozenset()
    deletion = plan_deletion(condemned, live, set(listing), now=repo.now(),
                             delete_after=plan.delete_after, keep=written)
    guard()
    pausepoints.point("prune.before-delete")
    repo.delete_objects(sorted(deletion.delete))
    changed = deletion.delete or deletion.rescued or deletion.gone or condemned.unreadable
    if changed or len(condemned.records) > 1:
        guard()
        repo.replace_condemned(deletion.remaining, condemned.records, delete_after=plan.delete_after)
        pausepoints.point("prune.records-replaced")
    return _Done(tuple(fresh), deletion, {**objects, **listing})


def execute_prune(repo: Repository, plan: PrunePlan, objects: dict[str, ObjectInfo], pack_size: int,
                  refs: References | None = None, guard: Guard = _no_guard) -> PruneResult:
    refs = refs or References(repo)
    repacked = None
    if not plan.repack.empty:
        try:
            repacked = execute_repack(repo, plan.repack, plan.kept_ids, pack_size, guard=guard)
        except StorageError:
            raise
        except SnapshotError as exc:
            if isinstance(exc, LockedError):
                raise
            raise type(exc)(f"{exc}; no snapshot was removed (`chroma-snapshot check --read-data` finds "
                            "what is damaged; --no-repack prunes without reading data)") from exc
    for sid in plan.removed:  # before objects: a crash now leaves objects, never a broken snapshot
        guard()
        repo.delete_snapshot(sid)
        pausepoints.point("prune.manifest-deleted")
    done = _condemn_and_delete(repo, plan, objects, refs, repacked, guard)
    return _result(repo, plan, done, dry_run=False, repacked=repacked)


def _dry_run(repo: Repository, plan: PrunePlan, objects: dict[str, ObjectInfo],
             refs: References) -> PruneResult:
    """What a real run would condemn and delete, were nothing committed meanwhile."""
    kept = set(plan.kept_ids)
    live: set[str] = set()
    for sid in kept:
        live |= refs.of(_load_one(repo, sid, "prune"))
    if not plan.repack.empty:  # the repack moves live frames out of the packs it empties
        live -= plan.repack.freed
    before = repo.condemned()
    now = repo.now()
    fresh = sorted(_candidates(plan, objects, None) - live - set(before.since))
    condemned = before.adding(fresh, now=now, records=(), delete_after=plan.delete_after)
    deletion = plan_deletion(condemned, live, set(objects), now=now, delete_after=plan.delete_after)
    return _result(repo, plan, _Done(tuple(fresh), deletion, objects), dry_run=True)


def _repack_report(plan: RepackPlan, done: RepackResult | None) -> RepackReport:
    return RepackReport(
        packs_repacked=len(plan.repack), bytes_copied=plan.copy_bytes, chunks_rebased=len(plan.rebases),
        unused_before=plan.unused_before, unused_after=plan.unused_after,
        repository_bytes=plan.repository_bytes,
        roots_rewritten=done.roots_rewritten if done else 0,
        bytes_written=done.bytes_written if done else 0, bytes_read=done.bytes_read if done else 0,
    )


def _result(repo: Repository, plan: PrunePlan, done: _Done, *, dry_run: bool,
            repacked: RepackResult | None = None) -> PruneResult:
    deleted = sorted(done.deletion.delete)

    def size(oid: str, default: int = 0) -> int:
        info = done.infos.get(oid)
        return default if info is None else info.size

    d = done.deletion
    handled = d.delete | d.rescued | d.gone | set(d.remaining)  # condemned: not merely in grace
    pending = [(oid, info) for oid, info in plan.gc.pending if oid not in handled]
    early = None
    if (cold := repo.cold_class) is not None:
        early = sum(done.infos[oid].size for oid in deleted
                    if oid in done.infos and plan.now - done.infos[oid].mtime < cold.min_seconds)
    ran = dry_run or repacked is not None
    return PruneResult(
        dry_run=dry_run,
        removed=plan.removed,
        kept=plan.kept,
        objects_removed=tuple(deleted),
        bytes_freed=sum(size(oid, 0) for oid in deleted),
        objects_kept=plan.gc.kept,
        objects_in_grace=len(pending),
        bytes_in_grace=sum(info.size for _, info in pending),
        grace_seconds=plan.grace_seconds,
        repack=_repack_report(plan.repack, repacked) if ran and not plan.repack.empty else None,
        bytes_deleted_early=early,
        objects_condemned=done.condemned,
        bytes_condemned=sum(size(oid, 0) for oid in done.condemned),
        objects_rescued=len(done.deletion.rescued),
        condemned_waiting=len(done.deletion.remaining),
        bytes_condemned_waiting=sum(size(oid, 0) for oid in done.deletion.remaining),
        delete_after=plan.delete_after,
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




def _settings(options: PruneOptions) -> tuple[float, float, RepackOptions]:
    """The grace period, the deletion bound and the repack settings, defaults filled in."""
    grace = DEFAULT_GRACE if options.grace is None else options.grace
    bound = DEFAULT_DELETE_AFTER if options.delete_after is None else options.delete_after
    return grace, bound, options.repack or RepackOptions()


@dataclass(frozen=True)
class _Planned:
    plan: PrunePlan
    objects: dict[str, ObjectInfo]
    refs: References


def _plan(
    repo: Repository, kept: Sequence[Decision], removed: Sequence[str], now: float | None, grace: float,
    repack: RepackOptions, delete_after: float,
) -> _Planned:
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
        now=repo.now() if now is None else now, grace=grace, repack=rp, delete_after=delete_after,
    )
    return _Planned(plan, objects, refs)


def _run(repo: Repository, planned: _Planned, lock: RepositoryLock | None,
         repack: RepackOptions) -> PruneResult:
    plan, objects, refs = planned.plan, planned.objects, planned.refs
    if lock is None:
        return _dry_run(repo, plan, objects, refs)
    return execute_prune(repo, plan, objects, repack.pack_size, refs, guard=lock.check)


def _locked(repo: Repository, dry_run: bool, command: str, wait: float | None,
            work: Callable[[RepositoryLock | None], PruneResult]) -> PruneResult:
    """Prune and forget hold the exclusive lock (no create may run while objects are judged
    unreferenced) and re-check it before each step that deletes; a dry run changes nothing
    and takes none."""
    if dry_run:
        return work(None)
    with repo.lock(EXCLUSIVE, command, wait=wait or 0.0) as lock:
        return work(lock)


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

    def work(lock: RepositoryLock | None) -> PruneResult:
        times = [snapshot_time(_load_one(repo, sid, "prune")) for sid in repo.snapshot_ids()]
        decision = plan_retention(times, policy, group_by)
        planned = _plan(repo, decision.keep, [d.id for d in decision.remove], now, grace, repack, bound)
        return _run(repo, planned, lock, repack)

    return _locked(repo, opts.dry_run, "prune", opts.wait, work)


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

    def work(lock: RepositoryLock | None) -> PruneResult:
        ids = repo.snapshot_ids()
        targets = {repo.resolve(ref, ids) for ref in refs}
        remaining = sorted(set(ids) - targets, reverse=True)
        kept = [Decision(m.id, m.created_at, m.tags, ("not named",))
                for m in (_load_one(repo, sid, "forget") for sid in remaining)]
        planned = _plan(repo, kept, sorted(targets, reverse=True), now, grace, repack, bound)
        return _run(repo, planned, lock, repack)

    return _locked(repo, opts.dry_run, "forget", opts.wait, work)
