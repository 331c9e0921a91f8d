"""What a create will cost in requests and bytes, worked out before it packs anything.

The packing is simulated chunk by chunk as the builder decides it (snapshot/create/builder.py):
a chunk this create or the parent's version of its file already holds costs nothing; another
becomes a delta frame on the parent's chunk at its offset or a full frame, in that lane's
packs; a file whose chunks all stand as they stood keeps its parent's table. What is counted
exactly: the listings, the roots and chunk tables read, the delta bases read back from the
repository (those the base cache does not hold), the lock, the commit's checks and the root.
What is estimated: the stored size of each new frame, by compressing a sample of the new
chunks as the create would (every new chunk of a capture of up to ``SAMPLE_BYTES``; one in
N of a bigger one, by hash; a delta whose base is not in the base cache is taken at the size
of the parent's own delta at that offset), and so the number of packs near a pack boundary.

A dry run (:func:`predict_create`) captures the source into a temporary folder, as ``diff``
does, and lists what the create would list. A real create asked for a prediction
(``CreateOptions.predict``) makes it from what it holds once it has captured: the parent's
chunk tables it reads for it are handed to the builder, so it reads none twice.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from snapshot.chroma.capture import Capture, StagedFile, capture, check_persist_dir
from snapshot.chroma.schema import chromadb_version
from snapshot.create.options import CreateOptions, check_text
from snapshot.format.chains import chain_limit
from snapshot.format.chunk_tables import encode_table, parse_table
from snapshot.format.chunking import ChunkedFile
from snapshot.format.codecs import compress
from snapshot.format.hashing import digest
from snapshot.format.ids import new_snapshot_id, utc_now_iso
from snapshot.format.manifest import (
    FORMAT_VERSION,
    Chunk,
    FileEntry,
    Frame,
    Manifest,
    TableRef,
    Totals,
    Verified,
)
from snapshot.repo.basecache import BaseCache, default_root
from snapshot.repo.journal import Journal
from snapshot.repo.locks import SHARED, STALE_AFTER
from snapshot.repo.packs import DEFAULT_PACK_SIZE, DELTA_FRAMES, FULL_FRAMES, ChunkReader, pack_size_for
from snapshot.repo.prediction import LocksSeen, Prediction, Tally
from snapshot.repo.repository import Repository
from snapshot.util.tempdirs import TEMP_PREFIX, owned_dir, sweep
from snapshot.version import __version__

#: New chunks of a capture up to this size are all compressed to predict their frames; of a
#: bigger capture, one in N (by hash, so the sample is spread over every file).
SAMPLE_BYTES = 64 << 20
#: Delta bases the base cache lacks are read for the sample up to this many bytes (held until
#: the builder takes them, so it reads none of them again).
BASE_SAMPLE_BYTES = 16 << 20
_PLACEHOLDER = "0" * 32


@dataclass(frozen=True)
class RepoFacts:
    """What the create will find in the repository (counted by a dry run; a real create
    knows most of it from what it has read when it predicts)."""

    snapshots: int
    #: Stored sizes of the roots choosing the parent reads.
    roots_read: tuple[int, ...]
    #: Other lock objects: all listed; the live ones read (sizes); dead ones of this host deleted.
    locks_listed: int = 0
    locks_read: tuple[int, ...] = ()
    locks_dead: int = 0
    #: Stored sizes of the condemned records read.
    condemned: tuple[int, ...] = ()
    #: The resume journal names packs of a killed create (one more listing of data/).
    journal: bool = False
    #: Objects under data/ now (None: not known; the commit's listing is taken as one page).
    data_objects: int | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preread:
    """What a prediction read of the repository, for the builder: the parent's chunk tables by
    file, and delta bases by (file, offset)."""

    tables: dict[str, tuple[Chunk, ...]] = field(default_factory=dict)
    bases: dict[tuple[str, int], bytes] = field(default_factory=dict)


@dataclass
class _Frame:
    lane: str
    raw: int
    stored: int | None


@dataclass
class CreateSimulation:
    """The packing decided without packing: frames per lane, tables, and the reads it takes."""

    repo: Repository
    parent: Manifest | None
    level: int
    delta: bool
    cache: BaseCache | None
    condemned: frozenset[str]
    tally: Tally
    #: rel -> the parent's chunks of that file (handed to the builder: read once).
    tables: dict[str, tuple[Chunk, ...]] = field(default_factory=dict)
    frames: list[_Frame] = field(default_factory=list)
    new_tables: dict[str, int] = field(default_factory=dict)
    files: list[FileEntry] = field(default_factory=list)
    #: (rel, offset) -> a delta base the cache lacks, read for the sample (handed to the builder).
    bases: dict[tuple[str, int], bytes] = field(default_factory=dict)
    bases_held: int = 0
    _offsets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reader = ChunkReader(self.repo)

    def run(self, files: Sequence[StagedFile]) -> None:
        repo = self.repo
        codec, chunk_size = repo.config.codec, repo.config.chunk_size
        self.delta = self.delta and codec == "zstd"
        if self.parent is not None and self.parent.chunk_size != chunk_size:
            self.parent = None
        total = sum(sf.staged.stat().st_size for sf in files)
        self.stride = max(1, -(-total // SAMPLE_BYTES))
        self.overhead = len(repo.seal_frame(b"", codec, 0, _PLACEHOLDER)) if repo.encrypted else 0
        known: dict[str, tuple[Frame, ...]] = {}
        for sf in files:
            self._file(sf, known, codec, chunk_size)

    def _parent_chunks(self, rel: str) -> tuple[tuple[Chunk, ...], TableRef | None]:
        parent = self.parent
        pf = parent.file(rel) if parent is not None else None
        if parent is None or pf is None:
            return (), None
        raw = self.cache.table(pf.table.hash) if self.cache is not None and pf.table is not None else None
        if raw is not None:
            chunks = parse_table(raw, pf, parent.chunk_size, f"snapshot {parent.id}")
        else:
            chunks = self.repo.chunks(parent, pf)
            if pf.table is not None:
                self.tally.add("get_range", down=pf.table.length, pack=True)
        self.tables[rel] = chunks
        if self.condemned and any(fr.object in self.condemned for c in chunks for fr in c.frames):
            return (), None
        table = pf.table
        if table is not None and ({fr.object for c in chunks for fr in c.frames} | {table.object}) \
                & self.condemned:
            table = None
        return chunks, table

    def _file(self, sf: StagedFile, known: dict[str, tuple[Frame, ...]], codec: str, chunk_size: int) -> None:
        parent_chunks, parent_table = self._parent_chunks(sf.rel)
        parent_known = {c.hash: c.frames for c in parent_chunks}
        chunks: list[Chunk] = []
        chunked = ChunkedFile(sf.staged, chunk_size)
        for raw in chunked:
            chain = known.get(raw.hash) or parent_known.get(raw.hash)
            if chain is None:
                base = self._base_for(sf.rel, raw.index, parent_chunks)
                stored = self._frame_size(raw.data, raw.hash, base, sf.rel, raw.index * chunk_size)
                lane = FULL_FRAMES if base is None else DELTA_FRAMES
                self.frames.append(_Frame(lane, len(raw.data), stored))
                # new packs' ids are hashes too: the table compresses as the real one will
                at = self._offsets.get(lane, 0)
                self._offsets[lane] = at + (stored or len(raw.data))
                length = stored or len(raw.data)
                mine = Frame(digest(lane.encode()), at, length, codec, len(raw.data), raw.hash)
                chain = (*(base.frames if base is not None else ()), mine)
                known[raw.hash] = chain
            chunks.append(Chunk(hash=raw.hash, size=len(raw.data), frames=chain))
        table = encode_table(chunks)
        h = digest(table)
        if not (parent_table is not None and parent_table.hash == h) and h not in self.new_tables:
            packed = compress(table, codec, self.level)
            self.new_tables[h] = len(self.repo.seal_frame(packed, codec, len(table), h, table=True))
        ref = TableRef(_PLACEHOLDER, 0, self.new_tables.get(h, 0), len(table), h, codec)
        self.files.append(FileEntry(sf.rel, chunked.size, sf.mode, chunked.hash, sf.role, table=ref,
                                    chunk_count=len(chunks)))

    def _base_for(self, rel: str, index: int, parent_chunks: tuple[Chunk, ...]) -> Chunk | None:
        if not self.delta or index >= len(parent_chunks):
            return None
        base = parent_chunks[index]
        if len(base.frames) >= chain_limit(self.repo.config.max_chain, rel, index) \
                or base.frames[-1].codec != "zstd":
            return None
        return base

    def _frame_size(self, data: bytes, h: str, base: Chunk | None, rel: str, offset: int) -> int | None:
        """The stored size of the chunk's new frame: compressed if sampled, else None (filled
        in from the sample's ratio). A base the cache lacks is read back by the create."""
        sampled = int(h[:8], 16) % self.stride == 0
        content = None
        if base is not None:
            assert self.parent is not None
            if self.cache is not None:
                content = self.cache.base(self.parent.id, rel, offset, base)
            if content is None:
                for fr in base.frames:
                    self.tally.add("get_range", down=fr.length, pack=True)
                if not sampled or self.bases_held + base.size > BASE_SAMPLE_BYTES:
                    return None
                # read as the create would read it, and handed to it: read once
                content = self.bases[(rel, offset)] = self.reader.read_chunk(base)
                self.bases_held += base.size
        if not sampled:
            return None
        codec = self.repo.config.codec
        return len(compress(data, codec, self.level, content)) + self.overhead

    def packs(self, pack_size: int) -> dict[str, list[int]]:
        """Pack sizes per lane (and "tables"), sealed as PackWriter seals them."""
        ratios = {}
        for lane in (FULL_FRAMES, DELTA_FRAMES):
            sampled = [f for f in self.frames if f.lane == lane and f.stored is not None]
            raw = sum(f.raw for f in sampled)
            ratios[lane] = sum(f.stored or 0 for f in sampled) / raw if raw else None
        if ratios[DELTA_FRAMES] is None and any(f.lane == DELTA_FRAMES for f in self.frames):
            self.tally.note("no delta could be sampled (no base cache): deltas estimated as full frames")
        fallback = ratios[FULL_FRAMES] or ratios[DELTA_FRAMES] or 1.0
        out: dict[str, list[int]] = {}
        for lane in (FULL_FRAMES, DELTA_FRAMES):
            ratio = ratios[lane] or fallback
            sizes = [f.stored if f.stored is not None else int(f.raw * ratio) + self.overhead
                     for f in self.frames if f.lane == lane]
            out[lane] = _seal(sizes, pack_size)
        out["tables"] = _seal(list(self.new_tables.values()), pack_size)
        return out


def _seal(sizes: Sequence[int], pack_size: int) -> list[int]:
    packs, current = [], 0
    for size in sizes:
        current += size
        if current >= pack_size:
            packs.append(current)
            current = 0
    if current:
        packs.append(current)
    return packs


def _root_size(repo: Repository, sim: CreateSimulation, source: Path, options: CreateOptions,
               cap: Capture) -> int:
    parent = sim.parent
    m = Manifest(
        id=new_snapshot_id(), parent=parent.id if parent else None, created_at=utc_now_iso(),
        tool_version=__version__, tool_chromadb_version=chromadb_version(), source_path=str(source),
        source_host=socket.gethostname(), tags=tuple(dict.fromkeys(options.tags)), message=options.message,
        chunk_size=repo.config.chunk_size, files=tuple(sim.files), collections=cap.collections,
        totals=Totals(len(sim.files), sum(f.size for f in sim.files), 10**6, 10**6, 10**9, 100),
        verified=parent.verified if parent is not None else Verified((), {}, {}),
        format_version=FORMAT_VERSION,
    )
    return repo.root_size(m)


def predict_packing(
    repo: Repository, source: Path, options: CreateOptions, cap: Capture, parent: Manifest | None,
    facts: RepoFacts, cache: BaseCache | None, condemned: frozenset[str] = frozenset(),
) -> tuple[Prediction, Preread]:
    """The prediction of a create of ``cap`` on ``parent``, and what was read for it (for the
    builder: it reads none of that again)."""
    tally = Tally()
    level = repo.config.level if options.level is None else options.level
    sim = CreateSimulation(repo, parent, level, options.delta, cache, condemned, tally)
    # the order the create makes its requests in: lock, parent, condemned records, journal
    LocksSeen(facts.locks_listed, facts.locks_read, facts.locks_dead).taking(repo, tally, SHARED, "create")
    tally.add("list", repo.list_requests(facts.snapshots))
    for size in facts.roots_read:
        tally.add("get", down=size)
    tally.add("list", repo.list_requests(len(facts.condemned)))
    for size in facts.condemned:
        tally.add("get", down=size)
    if facts.journal:
        tally.add("list", repo.list_requests(facts.data_objects or 0))
        tally.note("a killed create's packs may be taken instead of uploading again: fewer bytes up")
    sim.run(cap.files)
    total = sum(sf.staged.stat().st_size for sf in cap.files)
    packs = sim.packs(options.pack_size or pack_size_for(total) if cap.files else DEFAULT_PACK_SIZE)
    for lane in (FULL_FRAMES, DELTA_FRAMES, "tables"):
        for size in packs[lane]:
            tally.add("put", repo.put_requests(size), up=size, pack=True)
    tally.add("head")  # the lock, confirmed before the commit
    if parent is not None:
        tally.add("head")  # the parent still there
    new_packs = sum(len(p) for p in packs.values())
    if facts.data_objects is None and repo.list_requests(10**6) > 1:
        tally.note("the commit's listing of data/ is taken as one page (one more per 1000 objects)")
    if sim.files:
        tally.add("list", repo.list_requests((facts.data_objects or 0) + new_packs))
    tally.add("put", up=_root_size(repo, sim, source, options, cap))
    tally.add("delete")  # the lock
    if sim.stride > 1:
        tally.note(f"frame sizes estimated from 1 in {sim.stride} new chunks, compressed")
    for note in facts.notes:
        tally.note(note)
    tally.note("a create running over 60 s reads the condemned records again before its commit; one "
               "over 5 min refreshes its lock (a HEAD and a PUT each time)")
    return tally.result(), Preread(sim.tables, sim.bases)


def choose_parent(repo: Repository, source: Path, ref: str | None, ids: Sequence[str]) -> \
        tuple[Manifest | None, list[Manifest]]:
    """The parent a create builds on (``ref``, else the newest snapshot of the same host and
    path, else the newest of any source: dedup still helps, else None) among ``ids`` (every
    snapshot id), and the roots read to choose it."""
    if ref is not None:
        m = repo.manifest(repo.resolve(ref, ids))
        return m, [m]
    if not ids:
        return None, []
    host, path = socket.gethostname(), str(source)
    read = []
    for sid in reversed(ids):
        m = repo.manifest(sid)
        read.append(m)
        if m.source_host == host and m.source_path == path:
            return m, read
    return repo.manifest(ids[-1]), read


def repo_facts(repo: Repository, source: Path, options: CreateOptions, journal: Journal
               ) -> tuple[RepoFacts, Manifest | None, frozenset[str]]:
    """Count what the create will find (a dry run's listings and reads)."""
    ids = repo.snapshot_ids()
    parent, read = choose_parent(repo, source, options.parent, ids)
    now = repo.now()
    locks = repo.list_locks()
    live = [obj.size for info, obj, stale in locks if not stale]
    dead = sum(1 for _info, obj, stale in locks if stale and now - obj.mtime <= STALE_AFTER)
    condemned = repo.listed("condemned")
    data = repo.listed("data")
    notes: tuple[str, ...] = ()
    if any(info is None or info.kind != SHARED for info, _obj, stale in locks if not stale):
        notes = ("another command holds the repository exclusively now: the create would wait or stop",)
    return (RepoFacts(len(ids), tuple(repo.root_size(m) for m in read), len(locks), tuple(live), dead,
                      tuple(o.size for o in condemned), bool(journal.load()), len(data), notes),
            parent, frozenset(repo.condemned().since) if condemned else frozenset())


def predict_create(repo: Repository, source: str | os.PathLike[str], options: CreateOptions | None = None
                   ) -> Prediction:
    """``create --dry-run``: capture ``source`` into a temporary folder (nothing is uploaded,
    no lock is taken) and predict what a create of it now would take."""
    opts = options or CreateOptions()
    level = repo.config.level if opts.level is None else opts.level
    replace(opts, level=level).check_level(repo.config.codec)
    check_text("source path", str(source))
    src = Path(source).expanduser().absolute()
    check_persist_dir(src)
    cache_root = Path(opts.cache_dir) if opts.cache_dir else default_root()
    cache = BaseCache(cache_root, repo.config.id, src) if opts.use_cache else None
    journal = Journal(cache_root, repo.config.id, src, repo.config.codec)
    parent_dir = Path(opts.tmp_dir) if opts.tmp_dir else Path(tempfile.gettempdir())
    sweep(parent_dir, TEMP_PREFIX)
    work = owned_dir(parent_dir, TEMP_PREFIX)
    try:
        facts, parent, condemned = repo_facts(repo, src, opts, journal)
        cap = capture(src, work, includes=opts.includes, include_orphans=opts.include_orphans, counts=False)
        prediction, _tables = predict_packing(repo, src, opts, cap, parent, facts, cache, condemned)
        return prediction
    finally:
        shutil.rmtree(work, ignore_errors=True)
