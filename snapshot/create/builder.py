"""Packing a capture: fixed-offset chunks of every file, deduplicated against this create and
the parent's version of the same file, changed chunks compressed (as zstd deltas against the
parent's chunk at the same offset where possible) on a thread pool and appended to packs; then
each file's chunk table, reused from the parent when the file did not change.

One file's chunk table of the parent is held at a time; the base of a delta comes from the
local base cache when it holds the parent's capture, else from the repository. A chunk that a
killed create already uploaded (the resume journal, snapshot/repo/journal.py) is taken from its
pack instead of being compressed and uploaded again; every pack uploaded is recorded there.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from snapshot.chroma.capture import StagedFile
from snapshot.format.chains import chain_limit
from snapshot.format.chunk_tables import encode_table, parse_table
from snapshot.format.chunking import ChunkedFile, chunk_sizes
from snapshot.format.codecs import compress
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest, TableRef
from snapshot.repo.basecache import BaseCache
from snapshot.repo.journal import NOTHING, Journal, JournalFrame, Resume
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
from snapshot.util.progress import Reporter

#: Chunks compressed ahead of the one being packed (bounds memory to ~3 MiB per slot).
_WINDOW = 8


@dataclass
class _Plan:
    """What to do with one chunk, decided in the packing thread."""

    data: bytes
    hash: str
    base: Chunk | None
    rel: str = ""
    index: int = 0
    #: A frame of a leftover pack that stands for the one this chunk would get.
    resumed: JournalFrame | None = None


@dataclass(frozen=True)
class StoredFile:
    """A file's chunks as frame chains (pending until the packs are sealed)."""

    staged: StagedFile
    chains: list[list[PendingFrame | Frame]]
    size: int
    hash: str


class Builder:
    def __init__(
        self,
        repo: Repository,
        parent: Manifest | None,
        level: int,
        delta: bool,
        reporter: Reporter,
        pack_size: int | None,
        cache: BaseCache | None,
        condemned: frozenset[str] = frozenset(),
        resume: Resume = NOTHING,
        journal: Journal | None = None,
        preloaded: dict[str, tuple[Chunk, ...]] | None = None,
        bases: dict[tuple[str, int], bytes] | None = None,
    ) -> None:
        self.repo = repo
        #: Read already (for a prediction): the parent's chunk tables by file, and delta bases
        #: the base cache lacks by (file, offset).
        self.preloaded = preloaded or {}
        self._bases = bases or {}
        self.resume = resume
        #: Packs a prune condemned: a chunk with a frame there is neither reused nor a delta
        #: base, and a table naming one is not reused (snapshot/format/condemned.py).
        self.condemned = condemned
        self.cache = cache
        self.bases_cached = self.bases_read = 0
        self._count_lock = threading.Lock()
        self.codec = repo.config.codec
        self.chunk_size = repo.config.chunk_size
        same_chunks = parent is not None and parent.chunk_size == self.chunk_size
        self.parent = parent if same_chunks else None
        self.level = level
        self.delta = delta and self.codec == "zstd"
        self.reporter = reporter
        #: Chunks stored by this create (any file), and those of the parent's version of the
        #: file being packed: one file's chunk table of the parent is held at a time.
        self.known: dict[str, tuple[Frame, ...] | list[PendingFrame | Frame]] = {}
        self._parent_chunks: tuple[Chunk, ...] = ()
        self._parent_known: dict[str, tuple[Frame, ...]] = {}
        self.parent_tables: dict[str, tuple[TableRef, set[str]]] = {}
        self.reader = ChunkReader(repo)
        #: None: sized to the database (pack_size_for), once its size is known.
        self.pack_size = pack_size
        self.writer = PackWriter(repo, pack_size=pack_size or DEFAULT_PACK_SIZE,
                                 on_sealed=journal.record if journal is not None else None)
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="zstd")
        self.chunks_total = self.chunks_new = self.chunks_delta = 0
        self.bytes_new = 0
        #: Chunks (and their stored bytes) taken from packs a killed create left, and those packs.
        self.chunks_resumed = self.bytes_resumed = 0
        self.packs_resumed: set[str] = set()
        self.tables_uploaded = 0
        #: The new snapshot's chunk tables (hash -> bytes), kept in the base cache with it.
        self.tables: dict[str, bytes] = {}

    def _load_parent(self, rel: str) -> None:
        """The parent's chunks of ``rel`` (for dedup and delta bases), and its chunk table to
        reuse if the file did not change."""
        self._parent_chunks, self._parent_known = (), {}
        pf = self.parent.file(rel) if self.parent is not None else None
        if self.parent is None or pf is None:
            return
        raw = None
        if rel not in self.preloaded and self.cache is not None and pf.table is not None:
            raw = self.cache.table(pf.table.hash)
        if rel in self.preloaded:
            self._parent_chunks = self.preloaded[rel]
        elif raw is not None:
            self._parent_chunks = parse_table(raw, pf, self.parent.chunk_size, f"snapshot {self.parent.id}")
        else:
            self._parent_chunks = self.repo.chunks(self.parent, pf)
        if self.condemned and not all(self._usable(c) for c in self._parent_chunks):
            self._parent_chunks = ()  # bases go by offset: the whole file is stored afresh
        self._parent_known = {c.hash: c.frames for c in self._parent_chunks}
        if pf.table is not None:
            objects = {fr.object for c in self._parent_chunks for fr in c.frames} | {pf.table.object}
            if not objects & self.condemned:
                self.parent_tables[rel] = (pf.table, objects)

    def _usable(self, c: Chunk) -> bool:
        return not any(fr.object in self.condemned for fr in c.frames)

    def _known(self, h: str) -> tuple[Frame, ...] | list[PendingFrame | Frame] | None:
        return self.known.get(h) or self._parent_known.get(h)

    def _base_for(self, rel: str, index: int) -> Chunk | None:
        if not self.delta or index >= len(self._parent_chunks):
            return None
        base = self._parent_chunks[index]
        limit = chain_limit(self.repo.config.max_chain, rel, index)
        if len(base.frames) >= limit or base.frames[-1].codec != "zstd":
            return None
        return base

    def _base_bytes(self, plan: _Plan) -> bytes:
        assert plan.base is not None and self.parent is not None
        if self.cache is not None:
            raw = self.cache.base(self.parent.id, plan.rel, plan.index * self.chunk_size, plan.base)
            if raw is not None:
                with self._count_lock:
                    self.bases_cached += 1
                return raw
        with self._count_lock:
            self.bases_read += 1
            raw = self._bases.pop((plan.rel, plan.index * self.chunk_size), None)
        return raw if raw is not None else self.reader.read_chunk(plan.base)

    def _compress(self, plan: _Plan) -> tuple[bytes | bytearray, Chunk | None]:
        """The frame to store (compressed, then sealed in an encrypted repository: the delta's
        dictionary is the parent chunk's plaintext) and its base."""
        if plan.base is not None:
            frame = compress(plan.data, self.codec, self.level, self._base_bytes(plan))
        else:
            frame = compress(plan.data, self.codec, self.level)
        return self.repo.seal_frame(frame, self.codec, len(plan.data), plan.hash), plan.base

    def add_file(self, sf: StagedFile) -> StoredFile:
        chains: list[list[PendingFrame | Frame]] = []
        pending: deque[tuple[int, _Plan, Future[tuple[bytes | bytearray, Chunk | None]] | None]] = deque()
        chunked = ChunkedFile(sf.staged, self.chunk_size)
        self._load_parent(sf.rel)
        for raw in chunked:
            plan = _Plan(raw.data, raw.hash, None, sf.rel, raw.index)
            fut = None
            if self._known(raw.hash) is None:
                plan.base = self._base_for(sf.rel, raw.index)
                plan.resumed = self.resume.find(raw.hash, plan.base.hash if plan.base is not None else None)
                if plan.resumed is None:
                    fut = self.pool.submit(self._compress, plan)
            chains.append([])
            pending.append((raw.index, plan, fut))
            while len(pending) > _WINDOW:
                self._finish(chains, *pending.popleft())
        while pending:
            self._finish(chains, *pending.popleft())
        return StoredFile(sf, chains, chunked.size, chunked.hash)

    def _finish(
        self,
        chains: list[list[PendingFrame | Frame]],
        index: int,
        plan: _Plan,
        fut: Future[tuple[bytes | bytearray, Chunk | None]] | None,
    ) -> None:
        self.chunks_total += 1
        self.reporter.advance(len(plan.data))
        known = self._known(plan.hash)
        if known is not None:  # stored before, maybe earlier in this very snapshot
            chains[index] = list(known)
            if fut is not None:
                fut.cancel()
            return
        if plan.resumed is not None:
            self._take(chains, index, plan, plan.resumed)
            return
        assert fut is not None
        frame, base = fut.result()
        # Full frames outlive the night's deltas (a chain's full frame is needed until a prune
        # re-bases it; its deltas die with the snapshots): packed apart, each pack dies whole.
        lane = FULL_FRAMES if base is None else DELTA_FRAMES
        pf = self.writer.add(frame, self.codec, len(plan.data), plan.hash, lane,
                             note=base.hash if base is not None else None)
        chain: list[PendingFrame | Frame] = list(base.frames) if base is not None else []
        chain.append(pf)
        self.known[plan.hash] = chain
        chains[index] = chain
        self.chunks_new += 1
        self.bytes_new += len(frame)
        if base is not None:
            self.chunks_delta += 1

    def _take(
        self, chains: list[list[PendingFrame | Frame]], index: int, plan: _Plan, jf: JournalFrame
    ) -> None:
        """Point the chunk at a frame already uploaded: a delta on the same base as planned, or
        a full frame (a chain of its own)."""
        chain: list[PendingFrame | Frame] = []
        if jf.base is not None:
            assert plan.base is not None and plan.base.hash == jf.base
            chain = list(plan.base.frames)
            self.chunks_delta += 1
        chain.append(jf.frame)
        self.known[plan.hash] = chain
        chains[index] = chain
        self.chunks_new += 1
        self.bytes_new += jf.frame.length
        self.chunks_resumed += 1
        self.bytes_resumed += jf.frame.length
        self.packs_resumed.add(jf.frame.object)

    def pack_files(self, files: Sequence[StagedFile]) -> list[StoredFile]:
        """Chunk, compress and pack every file; every pack is uploaded when this returns."""
        try:
            total = sum(sf.staged.stat().st_size for sf in files)
            self.writer.pack_size = self.pack_size or pack_size_for(total)
            self.reporter.phase("snapshot", total)
            stored = [self.add_file(sf) for sf in files]
            self.writer.close()
        except BaseException:
            self.writer.abort()
            raise
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return stored

    def _chunks(self, sf: StoredFile) -> tuple[Chunk, ...]:
        chunks = []
        for chain, size in zip(sf.chains, chunk_sizes(sf.size, self.chunk_size), strict=True):
            frames = tuple(self.writer.resolve(f) if isinstance(f, PendingFrame) else f for f in chain)
            chunks.append(Chunk(hash=frames[-1].hash, size=size, frames=frames))
        return tuple(chunks)

    def entries(self, stored: Sequence[StoredFile]) -> tuple[list[FileEntry], set[str]]:
        """The snapshot's files, each pointing at its chunk table (the parent's when the file
        did not change, else a new table frame packed now), and every object they need."""
        tables = PackWriter(self.repo, pack_size=self.writer.pack_size)
        pending: list[tuple[StoredFile, int, TableRef | PendingFrame]] = []
        written: dict[str, PendingFrame] = {}
        needed: set[str] = set()
        try:
            for sf in stored:
                chunks = self._chunks(sf)
                needed |= {fr.object for c in chunks for fr in c.frames}
                raw = encode_table(chunks)
                h = digest(raw)
                self.tables[h] = raw
                reuse = self.parent_tables.get(sf.staged.rel)
                if reuse is not None and reuse[0].hash == h:
                    pending.append((sf, len(chunks), reuse[0]))
                    needed |= reuse[1]
                    continue
                if h not in written:
                    packed = compress(raw, self.codec, self.level)
                    frame = self.repo.seal_frame(packed, self.codec, len(raw), h, table=True)
                    written[h] = tables.add(frame, self.codec, len(raw), h)
                pending.append((sf, len(chunks), written[h]))
            tables.close()
        except BaseException:
            tables.abort()
            raise
        self.tables_uploaded = tables.objects_uploaded
        files = []
        for sf, count, ref in pending:
            if isinstance(ref, PendingFrame):
                fr = tables.resolve(ref)
                ref = TableRef(fr.object, fr.offset, fr.length, fr.size, fr.hash, fr.codec)
                needed.add(ref.object)
            st = sf.staged
            files.append(FileEntry(st.rel, sf.size, st.mode, sf.hash, st.role, table=ref, chunk_count=count))
        return files, needed
