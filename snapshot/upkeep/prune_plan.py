"""The prune plan: what a prune or forget decides (pure, from manifests, one listing of data/
and the condemned records) and how it carries it out (snapshot/upkeep/prune.py's docstring
gives the steps).

:func:`plan_prune` returns a :class:`PrunePlan` that holds everything its execution needs: the
listing, the options, the walker that knows what snapshots reference, and the *expected
outcome*: which objects the two phases condemn and delete were nothing committed meanwhile.
``--dry-run`` reports that outcome (:meth:`PrunePlan.report`); :meth:`PrunePlan.execute` runs
the steps and decides again, with the same functions (:func:`condemning`,
:func:`~snapshot.format.condemned.plan_deletion`), from the roots and records listed at each
moment the deletion protocol requires, so that a newcomer's root rescues what it uses.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from snapshot.errors import AccessDeniedError, IntegrityError, LockedError, SnapshotError, StorageError
from snapshot.format.condemned import DEFAULT_DELETE_AFTER, NOTHING, Condemned, DeletionPlan, plan_deletion
from snapshot.format.manifest import Manifest
from snapshot.repo import versions
from snapshot.repo.prediction import Prediction
from snapshot.repo.repository import Repository
from snapshot.repo.usage import Usage
from snapshot.storage.base import ObjectInfo
from snapshot.upkeep.repack import NO_PLAN, RepackPlan, RepackResult, execute_repack
from snapshot.upkeep.retention import Decision
from snapshot.util import pausepoints

#: (object id, its listing)
Listed = tuple[str, ObjectInfo]
Guard = Callable[[], None]


@dataclass(frozen=True)
class GcPlan:
    #: Candidates to condemn: referenced by no kept snapshot, and released or past the grace.
    delete: tuple[Listed, ...]
    #: Unreferenced, but younger than the grace period: left for a later prune.
    pending: tuple[Listed, ...]
    kept: int


@dataclass(frozen=True)
class Outcome:
    """What the two phases do at one moment (prune.py's docstring, steps 3 and 4)."""

    #: Candidates referenced by no root and not condemned yet: condemned now.
    condemned: tuple[str, ...]
    deletion: DeletionPlan


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
    #: Snapshots the policy would drop whose roots S3 Object Lock still retains (kept, listed
    #: among ``kept``), and condemned objects due for deletion but retained (still condemned):
    #: id -> until when (UTC, ISO 8601).
    snapshots_held: Mapping[str, str] = field(default_factory=dict)
    objects_held: Mapping[str, str] = field(default_factory=dict)
    #: Whether the bucket keeps versions, so that what was deleted stays as noncurrent versions
    #: (None: not a versioned store, or the credentials may not ask).
    versioned: bool | None = None
    #: What the prune (or, with dry_run, the dry run itself) took: requests by kind, bytes.
    requests: Mapping[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    #: What the prune takes (snapshot/upkeep/prune_predict.py): always with dry_run, and with
    #: ``PruneOptions.predict``.
    predicted: Prediction | None = None


def utc_iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _no_guard() -> None:
    return None


@dataclass(frozen=True)
class PrunePlan:
    """What a prune will do: snapshots to drop (newest first), the decision for each kept one,
    the repack, the objects to condemn and delete; and what it needs to do it."""

    removed: tuple[str, ...]
    kept: tuple[Decision, ...]
    #: Every snapshot id known when planning (a later id is a newcomer to protect).
    known: frozenset[str]
    gc: GcPlan
    grace_seconds: float
    #: What the two phases condemn and delete, were nothing committed meanwhile (--dry-run).
    expected: Outcome
    repack: RepackPlan = NO_PLAN
    #: The kept snapshots in the order the repack rewrites them.
    kept_ids: tuple[str, ...] = ()
    #: When the grace period and the early-deletion report are judged from.
    now: float = 0.0
    #: How long a pack stays condemned before it may be deleted.
    delete_after: float = DEFAULT_DELETE_AFTER
    #: The listing of every object when planning (sizes and ages for the report).
    objects: Mapping[str, ObjectInfo] = field(default_factory=dict)
    #: What the snapshots reference (tables read while planning are not read again).
    usage: Usage | None = field(default=None, compare=False, repr=False)
    #: Snapshots kept only because their roots are retained (id -> until when).
    snapshots_held: Mapping[str, float] = field(default_factory=dict)
    #: The condemned records read when planning.
    records: Condemned = NOTHING

    def report(self, repo: Repository) -> PruneResult:
        """The dry run: what :meth:`execute` would do, from the plan alone."""
        return _result(repo, self, self.expected, self.objects, dry_run=True)

    def execute(self, repo: Repository, guard: Guard = _no_guard) -> PruneResult:
        """Repack, drop the manifests, condemn, delete (prune.py's docstring). ``guard`` runs
        before each step that deletes or rewrites (is the lock still ours?)."""
        usage = self.usage or Usage(repo)
        repacked = None
        if not self.repack.empty:
            try:
                repacked = execute_repack(repo, self.repack, self.kept_ids, guard=guard)
            except StorageError:
                raise
            except SnapshotError as exc:
                if isinstance(exc, LockedError):
                    raise
                raise type(exc)(f"{exc}; no snapshot was removed (`chroma-snapshot check --read-data` finds "
                                "what is damaged; --no-repack prunes without reading data)") from exc
        for sid in self.removed:  # before objects: a crash now leaves objects, never a broken snapshot
            guard()
            repo.delete_snapshot(sid)
            pausepoints.point("prune.manifest-deleted")
        done, infos = _condemn_and_delete(repo, self, _Roots(repo, usage), repacked, guard)
        return _result(repo, self, done, infos, dry_run=False, repacked=repacked)


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


def condemning(candidates: set[str], live: set[str], before: Condemned) -> tuple[str, ...]:
    """Which candidates are condemned now: referenced by no root listed (``live``) and not
    condemned already."""
    return tuple(sorted(candidates - live - set(before.since)))


def _candidates(gc: GcPlan, objects: Mapping[str, ObjectInfo], emptied: Iterable[str],
                written: frozenset[str]) -> set[str]:
    """What the prune may condemn: the collected objects and the listed packs the repack
    empties, never one the repack wrote."""
    return ({oid for oid, _ in gc.delete} | {oid for oid in emptied if oid in objects}) - written


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
    condemned: Condemned = NOTHING,
    clock: float | None = None,
    usage: Usage | None = None,
    held: Mapping[str, float] | None = None,
) -> PrunePlan:
    """Pure: from the retention decision, the objects the kept snapshots reference, those the
    dropped ones referenced (a dropped snapshot whose manifest cannot be read adds none: its
    objects wait for the grace period like any unreferenced object), a listing of the objects
    and the ``condemned`` records, which objects are candidates to condemn and what the two
    phases will condemn and delete at ``clock`` (the store's time; default ``now``); ``held``:
    objects S3 Object Lock retains, never deleted (see :func:`plan_deletion`)."""
    listing = list(objects)
    infos = {oid: info for oid, info in listing if oid is not None}
    gc = plan_gc(listing, referenced, released - referenced, now, grace)
    known = frozenset([d.id for d in kept] + list(removed))
    live = referenced - repack.freed  # the repack moves live frames out of the packs it empties
    fresh = condemning(_candidates(gc, infos, repack.freed, frozenset()), live, condemned)
    at = now if clock is None else clock
    deletion = plan_deletion(condemned.adding(fresh, now=at, records=(), delete_after=delete_after),
                             live, set(infos), now=at, delete_after=delete_after, held=held)
    return PrunePlan(tuple(removed), tuple(kept), known, gc, grace, Outcome(fresh, deletion), repack,
                     tuple(d.id for d in kept), now, delete_after, infos, usage, records=condemned)


# ------------------------------------------------------------------ execution


def load_root(repo: Repository, sid: str, why: str) -> Manifest:
    """Snapshot ``sid``'s root, which ``why`` (prune, forget) needs to know what is in use."""
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


class _Roots:
    """Every object the roots listed at a moment reference. Each root's set is kept across
    calls (roots are immutable but for a repack, which runs before the first call), so a second
    call reads only the roots committed since the first."""

    def __init__(self, repo: Repository, usage: Usage) -> None:
        self.repo, self.usage = repo, usage
        self.seen: dict[str, frozenset[str]] = {}

    def live(self) -> set[str]:
        ids = self.repo.snapshot_ids()
        for sid in ids:
            if sid not in self.seen:
                self.seen[sid] = self.usage.objects(load_root(self.repo, sid, "prune"))
        out: set[str] = set()
        for sid in ids:
            out |= self.seen[sid]
        return out


def _condemn_and_delete(repo: Repository, plan: PrunePlan, roots: _Roots, repacked: RepackResult | None,
                        guard: Guard) -> tuple[Outcome, dict[str, ObjectInfo]]:
    """Steps 3 and 4 (prune.py's docstring); also the listing of every object seen."""
    guard()
    live = roots.live()
    pausepoints.point("prune.newcomers-read")
    before = repo.condemned()
    written = repacked.written if repacked is not None else frozenset()
    emptied = repacked.obsolete if repacked is not None else frozenset()
    fresh = condemning(_candidates(plan.gc, plan.objects, emptied, written), live, before)
    now = repo.now()
    written_records: list[str] = []
    if fresh:
        guard()
        written_records = repo.condemn(dict.fromkeys(fresh, now), delete_after=plan.delete_after)
    pausepoints.point("prune.condemned")
    # What a concurrent prune condemned meanwhile is neither deleted nor replaced by this one.
    condemned = before.adding(fresh, now=now, records=written_records, delete_after=plan.delete_after)
    listing = {oid: info for oid, info in repo.list_objects() if oid is not None}
    live = roots.live()  # at this moment: after it, only overdue packs go
    now = repo.now()
    deletion = plan_deletion(condemned, live, set(listing), now=now, delete_after=plan.delete_after,
                             keep=written)
    held = versions.held_objects(repo, deletion.delete)  # S3 would refuse to delete these versions
    if held:
        deletion = plan_deletion(condemned, live, set(listing), now=now, delete_after=plan.delete_after,
                                 keep=written, held=held)
    guard()
    pausepoints.point("prune.before-delete")
    repo.delete_objects(sorted(deletion.delete))
    changed = deletion.delete or deletion.rescued or deletion.gone or condemned.unreadable
    if changed or len(condemned.records) > 1:
        guard()
        repo.replace_condemned(deletion.remaining, condemned.records, delete_after=plan.delete_after)
        pausepoints.point("prune.records-replaced")
    return Outcome(fresh, deletion), {**plan.objects, **listing}


def _repack_report(plan: RepackPlan, done: RepackResult | None) -> RepackReport:
    return RepackReport(
        packs_repacked=len(plan.repack), bytes_copied=plan.copy_bytes, chunks_rebased=len(plan.rebases),
        unused_before=plan.unused_before, unused_after=plan.unused_after,
        repository_bytes=plan.repository_bytes,
        roots_rewritten=done.roots_rewritten if done else 0,
        bytes_written=done.bytes_written if done else 0, bytes_read=done.bytes_read if done else 0,
    )


def _result(repo: Repository, plan: PrunePlan, done: Outcome, infos: Mapping[str, ObjectInfo], *,
            dry_run: bool, repacked: RepackResult | None = None) -> PruneResult:
    deleted = sorted(done.deletion.delete)

    def size(oid: str) -> int:
        info = infos.get(oid)
        return 0 if info is None else info.size

    d = done.deletion
    handled = d.delete | d.rescued | d.gone | set(d.remaining)  # condemned: not merely in grace
    pending = [(oid, info) for oid, info in plan.gc.pending if oid not in handled]
    early = None
    if (cold := repo.cold_class) is not None:
        early = sum(infos[oid].size for oid in deleted
                    if oid in infos and plan.now - infos[oid].mtime < cold.min_seconds)
    ran = dry_run or repacked is not None
    try:
        keeps_versions = versions.versioned(repo)
    except AccessDeniedError:  # s3:GetBucketVersioning not granted: say nothing rather than fail
        keeps_versions = None
    return PruneResult(
        dry_run=dry_run,
        removed=plan.removed,
        kept=plan.kept,
        objects_removed=tuple(deleted),
        bytes_freed=sum(size(oid) for oid in deleted),
        objects_kept=plan.gc.kept,
        objects_in_grace=len(pending),
        bytes_in_grace=sum(info.size for _, info in pending),
        grace_seconds=plan.grace_seconds,
        repack=_repack_report(plan.repack, repacked) if ran and not plan.repack.empty else None,
        bytes_deleted_early=early,
        objects_condemned=done.condemned,
        bytes_condemned=sum(size(oid) for oid in done.condemned),
        objects_rescued=len(done.deletion.rescued),
        condemned_waiting=len(done.deletion.remaining),
        bytes_condemned_waiting=sum(size(oid) for oid in done.deletion.remaining),
        delete_after=plan.delete_after,
        snapshots_held={sid: utc_iso(t) for sid, t in sorted(plan.snapshots_held.items())},
        objects_held={oid: utc_iso(t) for oid, t in sorted(done.deletion.held.items())},
        versioned=keeps_versions,
    )
