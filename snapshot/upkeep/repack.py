"""Repack on prune: re-base dead chain prefixes and copy the live frames out of mostly-dead packs.

Prune can delete only whole packs, and a kept snapshot's chain keeps every frame down to its
full base frame, also those written for snapshots that are gone. Two moves free that space:

* **Re-base** (:func:`analyse`): for each chunk, the first frame of a kept chain that some kept
  snapshot ends at is the oldest content still needed; the frames before it are only links.
  When those links cost at least ``rebase_ratio`` of the chain's full frame, or the chain is
  about to reach its depth limit (chains.py), that content is decoded and stored as a new full
  frame, and every kept chain through it starts there instead.
* **Repack** (:func:`select_packs`): packs are taken in order of their live fraction, lowest
  first, while the repository holds more unused bytes than ``max_unused`` of its size (like
  restic's ``--max-unused``); their live frames are copied as they are (no decoding) into new
  packs. ``--repack-small`` also merges packs below a quarter of the pack size.

:func:`execute_repack` then, in this order (a crash between any two steps leaves every
snapshot restorable and ``check --read-data`` clean):

1. writes the new packs (re-based and copied frames); nothing refers to them yet;
2. writes the rewritten chunk tables into new packs;
3. replaces each changed root in one atomic write (the snapshot id stays; the old root and the
   new one both point only at objects that exist);
4. returns the packs no root refers to any more, for prune to delete last.

Prune holds the exclusive lock meanwhile, so no create can pick a parent being rewritten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from snapshot.errors import IntegrityError
from snapshot.format.chains import (
    Location,
    chain_limit,
    live_frames,
    location,
    rebase_share,
    rebases_at,
    rewrite_chunks,
)
from snapshot.format.chunk_tables import encode_table
from snapshot.format.codecs import compress
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest, TableRef
from snapshot.repo.links import ahead_bytes, read_ahead
from snapshot.repo.packs import (
    DEFAULT_PACK_SIZE,
    DELTA_FRAMES,
    FULL_FRAMES,
    ChunkReader,
    PackWriter,
    PendingFrame,
    pack_size_for,
)
from snapshot.repo.repository import Repository
from snapshot.repo.usage import Usage
from snapshot.util import pausepoints

#: Re-base a chain once its dead links cost this share of its full frame.
DEFAULT_REBASE_RATIO = 0.2
#: Repack until unused bytes are at most this share of the repository (restic's default).
DEFAULT_MAX_UNUSED = 0.05
#: A re-based full frame is the base of its chunk for many nights and is written off the
#: create's path, so it is compressed harder than a create's frames (zstd 6 instead of the
#: repository's level, 1 by default: about 5% smaller on Chroma's files, about 5x the CPU;
#: decoding is as fast).
REBASE_ZSTD_LEVEL = 6
#: From a remote store: what the planned reads of re-based chains hold at least (more when the
#: link's gauge keeps more in flight); how many run at once, the gauge says.
_AHEAD_BYTES = 16 << 20


@dataclass(frozen=True)
class RepackOptions:
    enabled: bool = True
    max_unused: float = DEFAULT_MAX_UNUSED
    repack_small: bool = False
    #: Stop choosing packs once this many live bytes would be copied (None: no bound).
    max_repack_size: int | None = None
    rebase_ratio: float = DEFAULT_REBASE_RATIO
    #: None: sized to the newest kept snapshot's database (packs.pack_size_for).
    pack_size: int | None = None


@dataclass
class PackUse:
    size: int
    live: dict[int, Frame] = field(default_factory=dict)
    #: Offsets of the live frames that are the full frame their chain starts with.
    fulls: set[int] = field(default_factory=set)

    @property
    def live_bytes(self) -> int:
        return sum(fr.length for fr in self.live.values())


@dataclass(frozen=True)
class RepackPlan:
    #: Frame to re-base (by location) -> its chain down to it, decoded to write the full frame.
    rebases: dict[Location, tuple[Frame, ...]]
    #: Packs whose live frames are copied (then deleted), with those frames by offset.
    repack: dict[str, dict[int, Frame]]
    #: Packs the kept snapshots reference now but no longer will once roots are rewritten.
    freed: frozenset[str]
    repository_bytes: int
    unused_before: int
    unused_after: int
    #: The copied frames that are the full frame of their chain (packed apart from deltas).
    fulls: frozenset[Location] = frozenset()
    #: The size of the packs to write.
    pack_size: int = DEFAULT_PACK_SIZE
    #: Re-bases stored as a delta against their chain's full frame (which stays), by the
    #: re-based frame's location -> that full frame.
    over: Mapping[Location, Frame] = field(default_factory=dict)
    #: The chunk tables (by location) written anew because a re-base or a moved frame changes
    #: them (a prediction counts their reads and writes).
    rewritten: frozenset[Location] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.rebases and not self.repack

    @property
    def copy_bytes(self) -> int:
        return sum(fr.length for frames in self.repack.values() for fr in frames.values())


@dataclass(frozen=True)
class RepackResult:
    packs_written: int
    bytes_written: int
    bytes_read: int
    chunks_rebased: int
    roots_rewritten: int
    tables_written: int
    #: Packs no root refers to any more (prune deletes them last).
    obsolete: frozenset[str]
    #: Every pack this repack wrote: never deleted by the prune that made it, also when a
    #: killed earlier run left a pack with the very same bytes (and so the same name).
    written: frozenset[str] = frozenset()


#: A chunk table's packs (of its live frames), whether a re-base changes it, and the optional
#: re-bases (by the location of the chain's full frame) that would.
TableUse = tuple[frozenset[str], bool, frozenset[Location]]

NO_PLAN = RepackPlan({}, {}, frozenset(), 0, 0, 0)


# ------------------------------------------------------------------ planning


@dataclass
class Analysis:
    """What :func:`analyse` found (see there)."""

    rebases: dict[Location, tuple[Frame, ...]]
    #: Chains with dead links too cheap to re-base for their own sake, by the location of
    #: their full frame: re-based after all when that frame's pack is emptied anyway.
    optional: dict[Location, tuple[Frame, ...]]
    use: dict[str, PackUse]
    tables: dict[Location, TableUse]
    referenced: set[str]
    #: Re-bases stored over their chain's full frame (rebases_at in chains.py).
    over: dict[Location, Frame] = field(default_factory=dict)
    #: Every kept chain (of every file, chunk and snapshot), and per chunk table its frame and
    #: its chunks' chains: what ``use`` and ``tables`` are computed from, again after a promotion.
    chains: set[tuple[Frame, ...]] = field(default_factory=set)
    table_chains: dict[Location, tuple[Frame, tuple[tuple[Frame, ...], ...]]] = field(default_factory=dict)


def analyse(
    repo: Repository,
    kept: Sequence[Manifest],
    sizes: dict[str, int],
    options: RepackOptions,
    usage: Usage | None = None,
) -> Analysis:
    """Read the chunk tables of the kept snapshots, one file path at a time (the walk of
    snapshot/repo/usage.py), and return the re-bases to make (and those that may be made),
    what each referenced pack holds that is still live after them, per chunk table (by
    location) the packs its live frames are in, whether a re-base changes it and the optional
    re-bases that would, and every object the kept snapshots reference today."""
    a = Analysis({}, {}, {}, {}, set())
    rebase = options.rebase_ratio >= 0 and repo.config.codec == "zstd"
    for found in (usage or Usage(repo)).paths(kept):
        a.referenced |= found.objects
        for index in range(found.chunk_count):
            chains = found.chains(index)
            if rebase:
                limit = chain_limit(repo.config.max_chain, found.path, index)
                share = rebase_share(options.rebase_ratio, found.path, index)
                rebases_at(chains, limit, share, a.rebases, a.optional, a.over)
            a.chains |= chains
        for loc, (table, chunks) in found.tables().items():
            a.table_chains[loc] = (table.frame(), tuple(c.frames for c in chunks))
    _liveness(a, sizes)
    return a


def _liveness(a: Analysis, sizes: dict[str, int]) -> None:
    """Fill ``a.use`` and ``a.tables`` from the kept chains and the re-bases planned now.

    A frame is live while any kept chain still needs it once the re-bases are made. The same
    frame (deduplicated content) can be in the chains of several files and chunks, and a
    re-base frees it only for the chains that pass through the re-based frame.
    """
    a.use, a.tables = {}, {}

    def mark(fr: Frame, full: bool = False) -> None:
        if fr.object in sizes:
            u = a.use.setdefault(fr.object, PackUse(sizes[fr.object]))
            u.live[fr.offset] = fr
            if full:
                u.fulls.add(fr.offset)

    for ch in a.chains:
        for fr in live_frames(ch, a.rebases, a.over):
            mark(fr, fr == ch[0])
    for loc, (frame, chains) in a.table_chains.items():
        mark(frame)
        lives = [live_frames(ch, a.rebases, a.over) for ch in chains]
        packs = frozenset(fr.object for live in lives for fr in live)
        cut = any(len(live) < len(ch) for live, ch in zip(lives, chains, strict=True))
        roots = frozenset(location(ch[0]) for ch in chains) & a.optional.keys()
        a.tables[loc] = (packs, cut, roots)


def _promote(a: Analysis, packs: set[str], sizes: dict[str, int]) -> bool:
    """Make the optional re-bases of the chains whose full frame is in one of ``packs`` (packs
    this prune empties or starts emptying), and store those planned over such a full frame as
    full frames: the full frame is written anew either way, and a re-base also frees the dead
    links. True if any was made."""
    roots = sorted(root for root in a.optional if root[0] in packs)
    for root in roots:
        chain = a.optional.pop(root)
        a.rebases[location(chain[-1])] = chain
    overs = [loc for loc, base in a.over.items() if base.object in packs]
    for loc in overs:
        del a.over[loc]
    if roots or overs:
        _liveness(a, sizes)
    return bool(roots or overs)


def _without(use: dict[str, PackUse], dead: set[Location]) -> dict[str, PackUse]:
    out = {}
    for oid, u in use.items():
        live = {off: fr for off, fr in u.live.items() if (oid, off) not in dead}
        out[oid] = PackUse(u.size, live, u.fulls & live.keys())
    return out


def select_packs(use: dict[str, PackUse], options: RepackOptions) -> list[str]:
    """Which packs to repack: lowest live fraction first while unused bytes exceed
    ``max_unused`` of the repository; with ``repack_small``, also every pack under a quarter
    of the pack size when there are at least two of them to merge."""
    live = {oid: u.live_bytes for oid, u in use.items()}
    partial = [oid for oid, u in use.items() if 0 < live[oid] < u.size]
    total = sum(u.size for oid, u in use.items() if live[oid])
    unused = sum(use[oid].size - live[oid] for oid in partial)
    chosen: list[str] = []
    budget = options.max_repack_size
    copied = 0
    for oid in sorted(partial, key=lambda o: (live[o] / use[o].size, o)):
        if unused <= options.max_unused * total:
            break
        if budget is not None and copied + live[oid] > budget:
            continue
        chosen.append(oid)
        copied += live[oid]
        unused -= use[oid].size - live[oid]
        total -= use[oid].size - live[oid]
    if options.repack_small:
        small = []
        quarter = (options.pack_size or DEFAULT_PACK_SIZE) // 4
        for oid in sorted(o for o, u in use.items() if live[o] and o not in chosen and u.size < quarter):
            if budget is None or copied + live[oid] <= budget:
                small.append(oid)
                copied += live[oid]
        if len(small) + len(chosen) >= 2:  # one pack alone would only be copied as it is
            chosen += small
    return chosen


def plan_repack(
    repo: Repository, kept: Sequence[Manifest], sizes: dict[str, int], options: RepackOptions,
    usage: Usage | None = None,
) -> tuple[RepackPlan, set[str]]:
    """What a prune's repack will do for the ``kept`` snapshots, given the listed pack sizes,
    and every object those snapshots reference today (one reading of their chunk tables, by
    ``usage``, serves both)."""
    if options.pack_size is None:
        db_bytes = max((m.totals.bytes for m in kept), default=0)
        options = dataclasses.replace(options, pack_size=pack_size_for(db_bytes))
    a = analyse(repo, kept, sizes, options, usage)
    # A chunk table that a re-base or a moved frame changes is written anew: its old frame is
    # unused too, which may make more packs worth repacking (a few rounds settle it). A full
    # frame in a pack to repack is re-based rather than copied when its chain has dead links.
    rewritten = {loc for loc, (_, cut, _) in a.tables.items() if cut}
    chosen: list[str] = []
    for _ in range(4):
        chosen = select_packs(_without(a.use, rewritten), options)
        promoted = _promote(a, set(chosen), sizes)
        more = rewritten | {loc for loc, (packs, cut, _) in a.tables.items() if cut or packs & set(chosen)}
        if more == rewritten and not promoted:
            break
        rewritten = more
    rebases, tables, referenced = a.rebases, a.tables, a.referenced
    rewritten = {loc for loc, (packs, cut, _) in tables.items() if cut or packs & set(chosen)}
    use = _without(a.use, rewritten)
    repack = {oid: dict(sorted(use[oid].live.items())) for oid in chosen}
    freed = frozenset(oid for oid in referenced
                      if oid in sizes and (oid in repack or oid not in use or not use[oid].live))
    in_use = {oid: u for oid, u in use.items() if u.live}
    total = sum(u.size for u in in_use.values())
    unused = sum(u.size - u.live_bytes for u in in_use.values())
    after = unused - sum(in_use[oid].size - in_use[oid].live_bytes for oid in chosen)
    if not rebases and not repack:
        return NO_PLAN, referenced
    fulls = frozenset((oid, off) for oid in chosen for off in use[oid].fulls)
    plan = RepackPlan(rebases, repack, freed, total, unused, after, fulls, options.pack_size or 0, a.over,
                      frozenset(rewritten))
    return plan, referenced


# ------------------------------------------------------------------ execution

#: The re-based chains' new full frames have a pack lane of their own: chains re-based on the
#: same night are likely to be re-based again together, so their packs tend to die whole. So
#: have the re-bases stored over a full frame (they die at the chain's next re-base).
_REBASED, _OVER = "rebased", "rebased-over"


def _resolve(writer: PackWriter, pending: dict[Location, PendingFrame]) -> dict[Location, Frame]:
    return {loc: writer.resolve(pf) for loc, pf in pending.items()}


Written = tuple[dict[Location, Frame], dict[Location, Frame], int, int, list[str]]


def read_groups(chains: Sequence[tuple[Location, tuple[Frame, ...]]], over: Mapping[Location, Frame],
                most: Callable[[], int] = lambda: _AHEAD_BYTES,
                ) -> Iterator[list[tuple[Location, list[Frame]]]]:
    """``chains`` in consecutive groups of up to ``most()`` bytes of frames, each chain with
    the frames it reads (its links and, re-based over its full frame, that frame)."""
    group: list[tuple[Location, list[Frame]]] = []
    planned = 0
    for loc, chain in chains:
        frames = [*chain, *((over[loc],) if loc in over else ())]
        group.append((loc, frames))
        planned += sum(fr.length for fr in frames)
        if planned >= most():
            yield group
            group, planned = [], 0
    if group:
        yield group


def _write_frames(repo: Repository, plan: RepackPlan, pack_size: int) -> Written:
    """Step 1: the re-based full frames and the copied live frames, in new packs."""
    codec, level = repo.config.codec, repo.config.level
    if codec == "zstd":
        level = max(level, REBASE_ZSTD_LEVEL)
    # From a remote store the chains' frames are planned as ranges of packs and read ahead,
    # several at once, as restore reads: a request per frame costs a round trip each.
    ahead = read_ahead(repo)
    reader = ChunkReader(repo, ahead)
    writer = PackWriter(repo, pack_size=pack_size)
    rebased: dict[Location, PendingFrame] = {}
    moved: dict[Location, PendingFrame] = {}
    read = 0
    try:
        for group in read_groups(sorted(plan.rebases.items()), plan.over,  # by old place
                                 lambda: ahead_bytes(repo, _AHEAD_BYTES)):
            spans = reader.prefetch(fr for _, frames in group for fr in frames) if ahead is not None else []
            try:
                for loc, chain in ((loc, plan.rebases[loc]) for loc, _ in group):
                    last = chain[-1]
                    content = reader.read_chunk(Chunk(last.hash, last.size, chain))  # every link verified
                    base = plan.over.get(loc)
                    if base is None:
                        stored, lane = compress(content, codec, level), _REBASED
                    else:
                        stored, lane = compress(content, codec, level, reader.decode(base, None)), _OVER
                    frame = repo.seal_frame(stored, codec, len(content), last.hash)
                    rebased[loc] = writer.add(frame, codec, len(content), last.hash, lane)
            finally:
                reader.release(spans)
        for oid, frames in plan.repack.items():
            data = repo.read_object(oid)  # checked against its name: copies are the stored bytes
            read += len(data)
            for off, fr in frames.items():
                if off + fr.length > len(data):
                    raise IntegrityError(f"object {oid} is shorter than its frame at {off}+{fr.length}")
                lane = FULL_FRAMES if (oid, off) in plan.fulls else DELTA_FRAMES
                moved[(oid, off)] = writer.add(data[off : off + fr.length], fr.codec, fr.size, fr.hash, lane)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if ahead is not None:
            ahead.shutdown(wait=True, cancel_futures=True)
    pausepoints.point("repack.packs-written")
    return (_resolve(writer, rebased), _resolve(writer, moved),
            read + reader.bytes_fetched, writer.bytes_uploaded, writer.object_ids)


def _check_kept(chunks: Iterable[Chunk], doomed: frozenset[str], what: str) -> None:
    for c in chunks:
        for fr in c.frames:
            if fr.object in doomed:
                raise IntegrityError(f"{what}: a rewritten chain still needs object {fr.object}; "
                                     "nothing was changed")


def _no_guard() -> None:
    return None


def execute_repack(repo: Repository, plan: RepackPlan, kept: Sequence[str],
                   guard: Callable[[], None] = _no_guard) -> RepackResult:
    """Steps 1-3 (module docstring); returns the packs prune may condemn afterwards.
    ``guard`` runs before the roots are rewritten (prune: is the lock still ours?)."""
    if plan.empty:
        return RepackResult(0, 0, 0, 0, 0, 0, frozenset())
    pack_size = plan.pack_size
    rebased, moved, read, written, packs = _write_frames(repo, plan, pack_size)
    # A pack written again with the very bytes it had (every frame live, copied in order)
    # keeps its name: it is not going anywhere.
    doomed = plan.freed - frozenset(packs)
    codec, level = repo.config.codec, repo.config.level
    tables = PackWriter(repo, pack_size=pack_size)
    new_tables: dict[str, TableRef | PendingFrame] = {}
    roots: list[tuple[Manifest, list[tuple[FileEntry, TableRef | PendingFrame | None]]]] = []
    try:
        for sid in kept:
            m = repo.manifest(sid)
            files: list[tuple[FileEntry, TableRef | PendingFrame | None]] = []
            changed = False
            for f in m.files:
                what = f"snapshot {m.id}: {f.path}"
                if f.table is None:  # format 1: chunks inline
                    chunks = rewrite_chunks(f.chunks, rebased, moved, plan.over)
                    _check_kept(chunks, doomed, what)
                    changed |= chunks != f.chunks
                    files.append((dataclasses.replace(f, chunks=chunks), None))
                    continue
                ref = new_tables.get(f.table.hash)
                if ref is None:
                    old = repo.chunks(m, f)
                    chunks = rewrite_chunks(old, rebased, moved, plan.over)
                    _check_kept(chunks, doomed, what)
                    if chunks != old:
                        raw = encode_table(chunks)
                        h = digest(raw)
                        frame = repo.seal_frame(compress(raw, codec, level), codec, len(raw), h, table=True)
                        ref = tables.add(frame, codec, len(raw), h)
                    else:
                        fr = moved.get(location(f.table.frame()))
                        ref = f.table if fr is None else TableRef(fr.object, fr.offset, fr.length, fr.size,
                                                                  fr.hash, fr.codec)
                    if not isinstance(ref, PendingFrame) and ref.object in doomed:
                        raise IntegrityError(f"{what}: its chunk table would be lost; nothing was changed")
                    new_tables[f.table.hash] = ref
                changed |= ref != f.table
                files.append((f, ref))
            if changed:
                roots.append((m, files))
        tables.close()
    except BaseException:
        tables.abort()
        raise
    pausepoints.point("repack.tables-written")
    if roots:
        guard()
    for m, files in roots:
        out = []
        for f, ref in files:
            if isinstance(ref, PendingFrame):
                fr = tables.resolve(ref)
                ref = TableRef(fr.object, fr.offset, fr.length, fr.size, fr.hash, fr.codec)
            out.append(f if ref is None else dataclasses.replace(f, table=ref))
        repo.replace_manifest(dataclasses.replace(m, files=tuple(out)))
        pausepoints.point("repack.root-rewritten")
    pausepoints.point("repack.roots-rewritten")
    new = frozenset(packs + tables.object_ids)
    return RepackResult(
        packs_written=len({fr.object for fr in [*rebased.values(), *moved.values()]}),
        bytes_written=written + tables.bytes_uploaded,
        bytes_read=read,
        chunks_rebased=len(rebased),
        roots_rewritten=len(roots),
        tables_written=tables.objects_uploaded,
        obsolete=doomed - new,
        written=new,
    )
