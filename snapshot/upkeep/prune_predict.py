"""What a prune (or forget) will cost in requests and bytes, worked out from its plan.

A dry run makes the same plan the prune would make (the same listings and reads), so the
prediction is the prune's own steps (snapshot/upkeep/prune.py's docstring) counted from it;
a real prune asked for one (``PruneOptions.predict``) counts it from the plan it made anyway,
with no request more. In the order the prune makes them:

* the exclusive lock (a PUT, the listing of locks, a read of each other live lock; released
  with a DELETE at the end) and the check that deletes are allowed (a DELETE per probe key);
* the listing of roots and every root read, the listing of data/, the chunk tables read to
  know what is in use (once per distinct table, as snapshot/repo/usage.py walks them), the
  condemned records (as many requests and bytes as planning took);
* the repack: the re-based chains read as the ranges it plans them into (its own grouping,
  :func:`~snapshot.upkeep.repack.read_groups`; from a folder, a frame at a time), each pack
  to repack read whole, the new packs (lane by lane, sealed as PackWriter seals them), every
  kept chunk table read again, the rewritten ones written and read back by the condemn
  step, each changed root confirmed and replaced; a lock check (a HEAD) before each step
  that deletes or rewrites;
* the dropped roots deleted, the new condemned record, the listings of the condemn and delete
  steps, a DELETE per object deleted (the store deletes one key a request), the condemned
  records replaced, and the question whether the bucket keeps versions.

Counted exactly when nothing fails: every request but the sizes of re-based frames (a new
full frame is taken at its chain's full frame's size, a delta over the full frame at its
links' size) and so the number of packs near a pack boundary, and the size of rewritten chunk
tables (taken at their old size). A lock refresh (every 5 minutes of a long prune) and roots
read again beyond the 64 held in memory add requests the prediction does not count.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from snapshot.format.chains import location
from snapshot.format.condemned import MAX_RECORD_OBJECTS, new_record
from snapshot.format.manifest import Manifest, TableRef
from snapshot.repo import versions
from snapshot.repo.locks import EXCLUSIVE
from snapshot.repo.packs import DELTA_FRAMES, FULL_FRAMES, read_ranges
from snapshot.repo.prediction import DELETE_PROBES, LocksSeen, Prediction, Tally
from snapshot.repo.repository import Measurement, Repository
from snapshot.upkeep.prune_plan import PrunePlan
from snapshot.upkeep.repack import RepackPlan, read_groups

_REBASED, _OVER = "rebased", "rebased-over"


@dataclass(frozen=True)
class _Table:
    path: str
    ref: TableRef


@dataclass
class PruneFacts:
    """What the prune read while planning, for its prediction: each root (its stored size and
    chunk tables), in the order read; the condemned records' read; the other locks."""

    roots: dict[str, tuple[int, tuple[_Table, ...]]] = field(default_factory=dict)
    #: The snapshots whose chunk tables say what is in use (kept), and those dropped.
    kept: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: Whether the repack's walk (a path at a time) read the kept tables, not the plain walk.
    by_path: bool = False
    condemned: Measurement = field(default_factory=Measurement)
    snapshots_listed: int = 0
    locks_listed: int = 0
    locks_read: tuple[int, ...] = ()
    locks_dead: int = 0
    held_checked: int = 0
    notes: tuple[str, ...] = ()

    def root(self, repo: Repository, m: Manifest) -> Manifest:
        """Note root ``m`` (read by the planning); returns it."""
        if m.id not in self.roots:
            tables = tuple(_Table(f.path, f.table) for f in m.files if f.table is not None)
            self.roots[m.id] = (repo.root_size(m), tables)
        return m


def lock_facts(repo: Repository, facts: PruneFacts) -> None:
    """The other locks a dry run finds (a real prune predicts after it holds the lock: none)."""
    seen = LocksSeen.now(repo)
    facts.locks_listed, facts.locks_read, facts.locks_dead = seen.listed, seen.read, seen.dead
    if facts.locks_read:
        facts.notes += ("another command holds the repository now: the prune would wait or stop",)


def predict_prune(repo: Repository, plan: PrunePlan, facts: PruneFacts) -> Prediction:
    """The requests and bytes of ``plan``'s prune, from its start to its lock's release."""
    t = Tally()
    LocksSeen(facts.locks_listed, facts.locks_read, facts.locks_dead).taking(repo, t, EXCLUSIVE, "prune")
    t.add("delete", DELETE_PROBES)
    _planning(repo, plan, facts, t)
    written = _repack(repo, plan, facts, t) if not plan.repack.empty else _Written()
    for _sid in plan.removed:
        t.add("head")  # the lock, checked
        t.add("delete")
    _condemn_and_delete(repo, plan, facts, written, t)
    t.add("versioning", versions.versioned_requests(repo))
    t.add("delete")  # the lock
    for note in facts.notes:
        t.note(note)
    t.note("a prune running over 5 min refreshes its lock (a HEAD and a PUT each time)")
    return t.result()


def _planning(repo: Repository, plan: PrunePlan, facts: PruneFacts, t: Tally) -> None:
    t.add("list", repo.list_requests(facts.snapshots_listed))
    for size, _tables in facts.roots.values():
        t.add("get", down=size)
    t.add("head", facts.held_checked)
    t.add("list", repo.list_requests(len(plan.objects)))
    seen: set[str] = set()
    if facts.by_path:  # Usage.paths: each path's distinct tables, one read each
        by_path: dict[str, dict[str, TableRef]] = {}
        for sid in facts.kept:
            for tb in facts.roots[sid][1]:
                by_path.setdefault(tb.path, {}).setdefault(tb.ref.hash, tb.ref)
        for path in sorted(by_path):
            for ref in by_path[path].values():
                t.add("get_range", down=ref.length, pack=True)
                seen.add(ref.hash)
    else:
        _walk(t, (tb.ref for sid in facts.kept for tb in facts.roots[sid][1]), seen)
    _walk(t, (tb.ref for sid in facts.removed if sid in facts.roots for tb in facts.roots[sid][1]), seen)
    t.add_measured(facts.condemned)
    if repo.config.object_lock is not None:
        t.add("head", len(plan.expected.deletion.delete))


def _walk(t: Tally, refs: Iterable[TableRef], seen: set[str]) -> None:
    """Usage.walk: a read per table hash not read before."""
    for ref in refs:
        if ref.hash not in seen:
            seen.add(ref.hash)
            t.add("get_range", down=ref.length, pack=True)


@dataclass
class _Written:
    packs: int = 0
    #: Stored sizes of the chunk tables written (read back by the condemn step).
    tables: tuple[int, ...] = ()


def _seal(frames: Iterable[tuple[str, int]], pack_size: int) -> list[int]:
    """Pack sizes of ``frames`` (lane, size) added in order, a pack per lane at a time."""
    open_: dict[str, int] = {}
    out: list[int] = []
    for lane, size in frames:
        now = open_.get(lane, 0) + size
        if now >= pack_size:
            out.append(now)
            open_.pop(lane, None)
        else:
            open_[lane] = now
    return out + [size for size in open_.values() if size]


def _repack(repo: Repository, plan: PrunePlan, facts: PruneFacts, t: Tally) -> _Written:
    rp = plan.repack
    remote = repo.local_root is None
    for group in read_groups(sorted(rp.rebases.items()), rp.over):
        frames = [fr for _loc, frs in group for fr in frs]
        if remote:
            # the real repack may plan bigger groups when the link's gauge asks for more in
            # flight (snapshot/repo/links.py ahead_bytes): ranges merge more, never into more
            t.note("the repack's range reads are counted in groups of 16 MiB of frames; a link that "
                   "carries more in flight makes the groups bigger and the requests at most as many")
            ranges = read_ranges(frames)
            t.add("get_range", len(ranges), down=sum(e - s for _o, s, e in ranges), pack=True)
        else:
            t.add("get_range", len(frames), down=sum(fr.length for fr in frames), pack=True)
    for oid in rp.repack:
        info = plan.objects.get(oid)
        t.add("get", down=info.size if info is not None else 0, pack=True)
    t.note("re-based frames are estimated: a new full frame at its chain's full frame's size, a delta "
           "over the full frame at its links' size")
    packs = _seal(_frame_sizes(rp), rp.pack_size)
    for size in packs:
        t.add("put", repo.put_requests(size), up=size, pack=True)
    moved = {(oid, off) for oid, frs in rp.repack.items() for off in frs}
    first: dict[str, TableRef] = {}
    new: dict[str, bool] = {}
    changed_roots: list[str] = []
    for sid in plan.kept_ids:
        changed = False
        for tb in facts.roots.get(sid, (0, ()))[1]:
            ref = tb.ref
            if ref.hash not in first:
                first[ref.hash] = ref
                t.add("get_range", down=ref.length, pack=True)
                loc = location(ref.frame())
                new[ref.hash] = loc in rp.rewritten or loc in moved
            changed |= new[ref.hash] or first[ref.hash] != ref
        if changed:
            changed_roots.append(sid)
    tables = [first[h].length for h, n in new.items() if n and location(first[h].frame()) in rp.rewritten]
    table_packs = _seal((("", size) for size in tables), rp.pack_size)
    for size in table_packs:
        t.add("put", repo.put_requests(size), up=size, pack=True)
    if tables:
        t.note("rewritten chunk tables are taken at their old size")
    if changed_roots:
        t.add("head")  # the lock, checked
    for sid in changed_roots:
        t.add("head")
        t.add("put", up=facts.roots[sid][0])
    return _Written(len(packs) + len(table_packs), tuple(tables))


def _frame_sizes(rp: RepackPlan) -> list[tuple[str, int]]:
    out = []
    for loc, chain in sorted(rp.rebases.items()):
        if loc in rp.over:
            out.append((_OVER, min(sum(fr.length for fr in chain[1:]), chain[0].length)))
        else:
            out.append((_REBASED, chain[0].length))
    for oid, frames in rp.repack.items():
        for off, fr in frames.items():
            out.append((FULL_FRAMES if (oid, off) in rp.fulls else DELTA_FRAMES, fr.length))
    return out


def _record_size(objects: Sequence[str], now: float, delete_after: float) -> int:
    rec = new_record(secrets.token_hex(16), dict.fromkeys(objects, now), now=now, delete_after=delete_after)
    return len(rec.to_json())


def _condemn_and_delete(repo: Repository, plan: PrunePlan, facts: PruneFacts, written: _Written,
                        t: Tally) -> None:
    now = repo.now()
    fresh = plan.expected.condemned
    deletion = plan.expected.deletion
    t.add("head")  # the lock, checked
    t.add("list", repo.list_requests(len(plan.kept)))
    for size in written.tables:  # the rewritten roots' new tables
        t.add("get_range", down=size, pack=True)
    t.add_measured(facts.condemned)
    records = len(plan.records.records)
    if fresh:
        t.add("head")
        for start in range(0, len(fresh), MAX_RECORD_OBJECTS):
            t.add("put", up=_record_size(fresh[start:start + MAX_RECORD_OBJECTS], now, plan.delete_after))
            records += 1
    t.add("list", repo.list_requests(len(plan.objects) + written.packs))
    t.add("list", repo.list_requests(len(plan.kept)))
    if repo.config.object_lock is not None:
        t.add("head", len(deletion.delete))
    t.add("head")  # the lock, checked
    t.add("delete", len(deletion.delete))
    if deletion.delete or deletion.rescued or deletion.gone or plan.records.unreadable or records > 1:
        t.add("head")
        remaining = sorted(deletion.remaining)
        for start in range(0, len(remaining), MAX_RECORD_OBJECTS):
            t.add("put", up=_record_size(remaining[start:start + MAX_RECORD_OBJECTS], now, plan.delete_after))
        t.add("delete", records)

