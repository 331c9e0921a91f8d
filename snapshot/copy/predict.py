"""What a copy will cost on each side, in requests and bytes, worked out before it copies.

The copy of each snapshot is simulated as snapshot/copy/pipeline.py runs it: chunk by chunk
against the destination's index (snapshot/copy/index.py), in groups of chunks planned and read
together, with the same groups in flight, the contents this run keeps as delta bases (in
memory and spilled: the same Ledger as snapshot/copy/contents.py), the images of the sources
(snapshot/copy/image.py: the committed one's contents, and where each chunk decoded lands in the
one being built, as Placement tracks it; their reads taken to succeed, so a base they hold is
read from neither side), frames packed lane by lane and sealed as PackWriter seals them,
each file's chunk table encoded (and reused when the destination holds the same one), and the
commit's checks. Counted exactly when nothing fails: the listings, the roots and chunk tables
read, the source's planned range reads (and a frame at a time for the bases decoded from a
folder source), the destination's range reads of the bases, the lock, the commit's checks and
the roots. Estimated: the stored size of a re-encoded frame (its chain's full frame's size),
the sealing overhead when the repositories differ in encryption (that of an empty frame), and
so the number of packs near a pack boundary; the chunk tables' sizes (encoded with the source
frames standing for those not yet written). What the destination's condemned records and the
index of its chains took is counted as the dry run's own reading of them took.

A dry run (``CopyOptions.dry_run``) reads what it needs for this (roots, chunk tables, the
index) and writes nothing; a real copy asked for a prediction (``CopyOptions.predict``) reads
the chunk tables of every snapshot it copies first (the copy reads each once either way), and
holds them until it has copied them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from snapshot.copy.contents import Ledger, spill_budget
from snapshot.copy.image import Images, Placement, Source, source_of
from snapshot.copy.index import ChainIndex, Step
from snapshot.copy.plan import PRESENT, TO_COPY, DestIndex, SnapshotCopy, index_destination
from snapshot.format.chunk_tables import encode_table
from snapshot.format.codecs import compress
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest
from snapshot.repo.basecache import default_root
from snapshot.repo.journal import CopyJournal
from snapshot.repo.locks import SHARED
from snapshot.repo.packs import DELTA_FRAMES, FULL_FRAMES, pack_size_for, read_ranges
from snapshot.repo.prediction import LocksSeen, Prediction, Tally
from snapshot.repo.repository import Measurement, Repository

#: Mirrors snapshot/copy/pipeline.py: chunks stored per group, groups in flight.
_GROUP = 16
_GROUPS_AHEAD = 2

Tables = list[tuple[FileEntry, tuple[Chunk, ...]]]


@dataclass(frozen=True)
class CopyPrediction:
    """A copy's requests and bytes on each side (each priced in its repository's class)."""

    source: Prediction
    destination: Prediction
    notes: tuple[str, ...] = ()


@dataclass
class CopyFacts:
    """What the copy finds before it copies (counted by the dry run, or by the copy itself)."""

    #: What choosing the snapshots took on each side (listings; roots read by filters, and
    #: those of snapshots in both, to compare them).
    chosen_source: Measurement = field(default_factory=Measurement)
    chosen_dest: Measurement = field(default_factory=Measurement)
    #: What reading the roots of the snapshots to copy took (those the choice did not read).
    roots: Measurement = field(default_factory=Measurement)
    condemned: Measurement = field(default_factory=Measurement)
    index: Measurement = field(default_factory=Measurement)
    locks_listed: int = 0
    locks_read: tuple[int, ...] = ()
    locks_dead: int = 0
    journal: bool = False
    #: Objects under the destination's data/ now (None: not listed; taken as one page).
    data_objects: int | None = None


def lock_facts(dest: Repository, facts: CopyFacts) -> None:
    """The other locks of the destination (a dry run's; a real copy predicts holding its own)."""
    seen = LocksSeen.now(dest)
    facts.locks_listed, facts.locks_read, facts.locks_dead = seen.listed, seen.read, seen.dead


@dataclass
class _Item:
    chunk: Chunk
    step: Step
    chains: list[tuple[Frame, ...]]
    index: int
    rel: str


class CopySimulation:
    """Copies snapshots on paper: their figures (SnapshotCopy) and each side's requests."""

    def __init__(self, dest: Repository, source: Repository, known: DestIndex, pack_size: int | None,
                 held: Ledger, images: Images, data_objects: int = 0) -> None:
        self.dest, self.source = dest, source
        self.index: ChainIndex = known.chains
        self.tables: set[str] = set(known.tables)
        self.pack_size = pack_size
        #: The contents the copy holds (snapshot/copy/contents.py), the images it reads.
        self.held, self.images = held, images
        #: What the images being built hold at each offset, by source.
        self.placed: dict[Source, Placement] = {}
        self._source = ("", "")
        self.src, self.dst = Tally(), Tally()
        self.src_local, self.dst_local = source.local_root is not None, dest.local_root is not None
        codec = dest.config.codec
        self.src_over = len(source.seal_frame(b"", codec, 0, "0" * 32)) if source.encrypted else 0
        self.dst_over = len(dest.seal_frame(b"", codec, 0, "0" * 32)) if dest.encrypted else 0
        self.packs = 0
        self.data_objects = data_objects
        #: Source frames standing for the frames of the snapshot being copied (not yet stored).
        self._pending: set[Frame] = set()

    def run(self, snapshots: Sequence[tuple[Manifest, Tables]]) -> list[SnapshotCopy]:
        out = []
        for i, (m, tables) in enumerate(snapshots):
            self.src.add("get", down=self.source.root_size(m))  # read afresh before its copy
            if i:
                self.src.add("get", down=self.source.root_size(m))  # read afresh by the peek before
            for kind, size in self.source.table_reads([f for f, _c in tables]):
                self.src.add(kind, down=size, pack=True)
            nxt = snapshots[i + 1][1] if i + 1 < len(snapshots) else []
            self.held.want(frozenset(fr.hash for _f, chunks in nxt for c in chunks for fr in c.frames[:-1]))
            out.append(self._one(m, tables))
        return out

    def _imaged(self, content: str) -> bool:
        """Whether the image being built or the last one left holds ``content``."""
        return content in self.placed.setdefault(self._source, Placement()) \
            or content in self.images.old(self._source)

    def _settle(self, tables: Tables) -> None:
        """Mirrors snapshot/copy/image.py Builder.settle."""
        placed, old = self.placed[self._source], self.images.old(self._source)
        size = self.dest.config.chunk_size
        for f, chunks in tables:
            for i, c in enumerate(chunks):
                at = (f.path, i * size)
                if placed.at.get(at) == c.hash:
                    continue
                if c.hash in old or c.hash in placed or self.held.touch(c.hash):
                    placed.put(at, c.hash)
                else:
                    placed.forget(at)

    def _one(self, m: Manifest, tables: Tables) -> SnapshotCopy:
        self._source = source_of(m)
        self.placed.setdefault(self._source, Placement())
        pack_size = self.pack_size or pack_size_for(m.totals.bytes)
        self._lanes: dict[str, int] = {}
        self._sizes: list[int] = []
        self._stats = [0, 0, 0, 0]
        self._pending = set()
        files: list[tuple[FileEntry, list[tuple[Frame, ...]]]] = []
        group: list[_Item] = []
        flying: deque[list[_Item]] = deque()
        for f, chunks in tables:
            chains: list[tuple[Frame, ...]] = [()] * len(chunks)
            files.append((f, chains))
            for i, c in enumerate(chunks):
                group.append(_Item(c, self.index.plan(c), chains, i, f.path))
                if sum(1 for it in group if it.step.stores) >= _GROUP:
                    self._launch(group, flying, pack_size)
                    group = []
        self._launch(group, flying, pack_size)
        while flying:
            self._finish(flying.popleft(), pack_size)
        self._seal_all()
        self._pending = set()
        self._tables(files, pack_size)
        self.dst.add("head")  # the lock, confirmed
        self.dst.add("list", self.dest.list_requests(self.data_objects + self.packs))
        self.dst.add("put", up=self.dest.root_size(m))
        self._settle(tables)
        return SnapshotCopy(m.id, TO_COPY, *self._stats)

    def _launch(self, group: list[_Item], flying: deque[list[_Item]], pack_size: int) -> None:
        readers = [it for it in group if it.step.stores]
        ranges = read_ranges(fr for it in readers for fr in it.step.reads(it.chunk))
        self.src.add("get_range", len(ranges), down=sum(e - s for _o, s, e in ranges), pack=True)
        bases: list[Frame] = []
        for it in readers:
            base = self._dest_base(it.chunk, it.step)
            if base is not None:
                bases += base
            elif (content := it.step.base_hash(it.chunk)) is not None and not self.held.touch(content) \
                    and not self._imaged(content):
                for fr in it.chunk.frames[: it.step.skip]:  # decoded from the source, a frame at a time
                    self.src.add("get_range", down=fr.length, pack=True)
            self.held.put(it.chunk.hash, it.chunk.size)
        for it in readers:  # each decoded chunk is written to the image at its offset
            self.placed[self._source].put((it.rel, it.index * self.dest.config.chunk_size), it.chunk.hash)
        dranges = read_ranges(bases)
        self.dst.add("get_range", len(dranges), down=sum(e - s for _o, s, e in dranges), pack=True)
        flying.append(group)
        while len(flying) > _GROUPS_AHEAD:
            self._finish(flying.popleft(), pack_size)

    def _dest_base(self, chunk: Chunk, step: Step) -> list[Frame] | None:
        if self.src_local and not self.dst_local:
            return None
        content = step.base_hash(chunk)
        if content is None or content in self.held or self._imaged(content):
            return None
        stored = [fr for fr in step.base if isinstance(fr, Frame) and fr not in self._pending]
        return stored if stored and len(stored) == len(step.base) else None

    def _finish(self, group: list[_Item], pack_size: int) -> None:
        for it in group:
            self._stats[0] += 1
            known = self.index.get(it.chunk.hash)
            if not it.step.stores or known is not None:
                it.chains[it.index] = tuple(known if known is not None else it.step.reuse)  # type: ignore[arg-type]
                continue
            chain: list[Frame] = list(it.step.reuse)  # type: ignore[arg-type]
            if it.step.reencode:
                full = it.chunk.frames[0]
                out = [(it.chunk.frames[-1], FULL_FRAMES, full.length - self.src_over + self.dst_over)]
            else:
                out = [(fr, DELTA_FRAMES if j else FULL_FRAMES, fr.length - self.src_over + self.dst_over)
                       for j, fr in enumerate(it.chunk.frames) if j >= it.step.skip]
            for fr, lane, size in out:
                now = self.index.get(fr.hash)
                if now is not None:
                    chain = list(now)  # type: ignore[arg-type]
                    continue
                self._add(lane, size, pack_size)
                self._pending.add(fr)
                chain.append(fr)
                self._stats[3] += fr.length if not it.step.reencode else it.chunk.size
                self.index.add(chain)
            self._stats[1] += 1
            self._stats[2] += it.step.reencode
            it.chains[it.index] = tuple(chain)

    def _add(self, lane: str, size: int, pack_size: int) -> None:
        now = self._lanes.get(lane, 0) + size
        if now >= pack_size:
            self._put(now)
            self._lanes.pop(lane, None)
        else:
            self._lanes[lane] = now

    def _put(self, size: int) -> None:
        self.dst.add("put", self.dest.put_requests(size), up=size, pack=True)
        self.packs += 1

    def _seal_all(self) -> None:
        for size in self._lanes.values():
            if size:
                self._put(size)
        self._lanes = {}

    def _tables(self, files: Sequence[tuple[FileEntry, list[tuple[Frame, ...]]]], pack_size: int) -> None:
        codec, level = self.dest.config.codec, self.dest.config.level
        for _f, chains in files:
            chunks = tuple(Chunk(ch[-1].hash, ch[-1].size, ch) for ch in chains if ch)
            raw = encode_table(chunks)
            h = digest(raw)
            if h in self.tables:
                continue
            self.tables.add(h)
            self._add("tables", len(self.dest.seal_frame(compress(raw, codec, level), codec, len(raw), h,
                                                         table=True)), pack_size)
        self._seal_all()


def predict_copy(dest: Repository, source: Repository, snapshots: Sequence[tuple[Manifest, Tables]],
                 known: DestIndex, facts: CopyFacts, *, pack_size: int | None, cache_bytes: int,
                 spill_bytes: int, images: Images) -> tuple[list[SnapshotCopy], CopyPrediction]:
    """The figures of each snapshot ``snapshots`` copies, and the copy's prediction; ``known``
    is changed (it ends as the copy would leave it, with source frames standing for new ones).
    ``cache_bytes``, ``spill_bytes``: the contents held in memory and spilled; ``images``: the
    images of the sources' last snapshots copied (their bases are not read from either side)."""
    sim = CopySimulation(dest, source, known, pack_size, Ledger(cache_bytes, spill_bytes), images,
                         facts.data_objects or 0)
    src, dst = sim.src, sim.dst
    src.add_measured(facts.chosen_source)
    dst.add_measured(facts.chosen_dest)
    # the copy takes the lock, reads the records and indexes its chains also with nothing to copy
    LocksSeen(facts.locks_listed, facts.locks_read, facts.locks_dead).taking(dest, dst, SHARED, "copy")
    dst.add_measured(facts.condemned)
    dst.add_measured(facts.index)
    if facts.journal:
        dst.add("list", dest.list_requests(facts.data_objects or 0))
        dst.note("an interrupted copy's packs may be taken instead of uploading again: fewer bytes up")
    src.add_measured(facts.roots)
    out = sim.run(snapshots)
    dst.add("delete")  # the lock
    notes = ["a re-encoded frame is taken at its chain's full frame's size"] \
        if any(s.chunks_reencoded for s in out) else []
    if source.encrypted != dest.encrypted:
        notes.append("frames re-sealed: the sealing overhead is that of an empty frame")
    if facts.data_objects is None and snapshots:
        notes.append("each commit's listing of the destination's data/ is taken as one page (one more per "
                     "1000 objects)")
    notes.append("a copy running over 60 s reads the condemned records again before each commit; one over "
                 "5 min refreshes its lock (a HEAD and a PUT each time)")
    return out, CopyPrediction(src.result(), dst.result(), tuple(notes))


def dry_run(dest: Repository, source: Repository, to_copy: Sequence[str], present: Sequence[str],
            facts: CopyFacts, *, pack_size: int | None, cache_bytes: int, spill_bytes: int | None,
            images: Images) -> tuple[list[SnapshotCopy], CopyPrediction]:
    """``copy --dry-run``: what each snapshot would store and what the copy would take, reading
    roots, chunk tables, the destination's index and listings; writing nothing."""
    lock_facts(dest, facts)
    with dest.measure() as facts.condemned:
        condemned = frozenset(dest.condemned().since)
    with dest.measure() as facts.index:
        known = index_destination(dest, condemned)
    journal = CopyJournal(default_root(), dest.config.id, source.config.id, dest.config.codec)
    facts.journal = bool(journal.load())
    facts.data_objects = len(dest.listed("data"))
    with source.measure() as facts.roots:
        roots = [source.manifest(sid) for sid in to_copy]
    snapshots = [(m, list(source.tables(m))) for m in roots]
    spill = spill_budget([m.totals.bytes for m in roots]) if spill_bytes is None else spill_bytes
    copies, predicted = predict_copy(dest, source, snapshots, known, facts, pack_size=pack_size,
                                     cache_bytes=cache_bytes, spill_bytes=spill, images=images)
    return sorted([SnapshotCopy(sid, PRESENT) for sid in present] + copies, key=lambda s: s.id), predicted
