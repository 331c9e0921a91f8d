"""Copying snapshots from one repository into another (restic's ``copy``: run against the
destination, ``--from-repo`` names the source).

Each snapshot keeps its id and every field of its root (tags, message, times, collections,
the capture's ``verified`` block, file hashes); only where its frames and chunk tables are
stored changes. Snapshots are copied oldest first, each with what the destination holds
(snapshot/copy/index.py decides per chunk) and what this copy stored before it:

* every source frame read is decoded and hash-checked before it is written (a delta against the
  content the link before it decodes to), opened with the source's key and sealed with the
  destination's (plain or encrypted, any two master keys); a frame of another codec is
  re-encoded as a full frame in the destination's;
* the source is read only for the frames copied: the content the first of them decodes from
  (its base, snapshot/copy/bases.py) is one this run decoded and kept (snapshot/copy/contents.py:
  in memory, else spilled to local disk; before a snapshot is copied, the next one's chunk
  tables are read, and kept for its copy, to know which of its contents to keep), else one the
  image of the last snapshot copied of its source holds (snapshot/copy/image.py: kept on local
  disk from one copy to the next, rebuilt as this one runs), else rebuilt by the destination's
  chain to it; hash-checked wherever it comes from. The source's own frames are decoded
  instead when that chain is in a pack still being written, or when the source is a folder and
  the destination is not (reading the folder costs nothing);
* frames go to packs (full frames and deltas in their lanes, as a create packs them), then each
  file's chunk table (reused when the destination holds the same table), then the root: last,
  create-only, once every object it names is listed and none is condemned beyond rescue (the
  deletion protocol, snapshot/repo/commit.py). The destination holds a shared lock throughout,
  and frames in packs a prune condemned are never built on;
* each pack is recorded in a local journal before its upload (snapshot/repo/journal.py):
  a copy killed and run again takes the frames of the packs that landed instead of uploading
  them again.

The source is only read (no lock: read-only credentials suffice, as for restore). A snapshot a
prune removes from the source before it is copied is reported and skipped; one whose root a
prune's repack rewrote meanwhile is read again.
"""

from __future__ import annotations

import copy
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from snapshot.copy import predict
from snapshot.copy.bases import Bases
from snapshot.copy.contents import DEFAULT_BYTES, Contents, spill_budget
from snapshot.copy.image import Images, Source, source_of
from snapshot.copy.index import ChainIndex, DestFrame, Step
from snapshot.copy.plan import (
    COPIED,
    PRESENT,
    VANISHED,
    CopyResult,
    DestIndex,
    SnapshotCopy,
    check_pair,
    index_destination,
    index_resumed,
    select,
    split_present,
)
from snapshot.copy.predict import CopyFacts, CopyPrediction, Tables
from snapshot.copy.tables import CopiedFile, write_tables
from snapshot.errors import NotFoundError, SnapshotError
from snapshot.format.codecs import compress
from snapshot.format.manifest import FORMAT_VERSION, Chunk, FileEntry, Manifest
from snapshot.repo.basecache import default_root
from snapshot.repo.commit import check_condemned, check_present
from snapshot.repo.journal import CopyJournal
from snapshot.repo.links import read_ahead
from snapshot.repo.locks import SHARED, RepositoryLock
from snapshot.repo.packs import (
    DELTA_FRAMES,
    FULL_FRAMES,
    ChunkReader,
    PackWriter,
    PendingFrame,
    Span,
    pack_size_for,
)
from snapshot.repo.repository import Measurement, Repository
from snapshot.repo.selection import SnapshotFilter
from snapshot.util import pausepoints
from snapshot.util.progress import NullReporter, Reporter

#: Chunks whose source frames are planned and read together (frames of one pack close together
#: are read with one request), and how many such groups are in flight.
_GROUP = 16
_GROUPS_AHEAD = 2

#: What a source chunk becomes: (stored bytes, codec, size, content hash, lane, base note).
_Out = list[tuple[bytes | bytearray, str, int, str, str, str | None]]


@dataclass(frozen=True)
class CopyOptions:
    """``dry_run``: report what would be copied, write nothing (and take no lock).
    ``pack_size``: bytes per pack [sized to each snapshot, repo/packs.py pack_size_for].
    ``wait``: seconds to wait for a prune holding the destination [0].
    ``cache_bytes``: chunk contents kept in memory as bases for the deltas copied next [128 MiB].
    ``spill_bytes``: those kept beyond it on local disk [twice the largest snapshot copied].
    ``use_cache``: take bases from, and keep, the image of each source's last snapshot copied
    (snapshot/copy/image.py; ``--no-cache``: false).
    ``predict``: also predict what the copy takes (snapshot/copy/predict.py)."""

    dry_run: bool = False
    pack_size: int | None = None
    wait: float | None = None
    cache_bytes: int = DEFAULT_BYTES
    spill_bytes: int | None = None
    use_cache: bool = True
    #: Also predict each side's requests and bytes (``CopyResult.predicted``; a dry run always
    #: does): the chunk tables of every snapshot to copy are then read first.
    predict: bool = False


@dataclass
class _Item:
    chains: list[tuple[DestFrame, ...]]
    index: int
    chunk: Chunk
    step: Step
    #: The snapshot path of the chunk's file.
    rel: str
    future: Future[_Out] | None = None


@dataclass
class _Copier:
    """Copies one snapshot at a time into ``dest``, keeping ``known`` up to date."""

    dest: Repository
    source: Repository
    known: DestIndex
    journal: CopyJournal
    reader: ChunkReader
    #: The bases of the deltas copied (the destination's reader among them).
    bases: Bases
    pool: ThreadPoolExecutor
    options: CopyOptions
    reporter: Reporter
    #: The next snapshot's root and chunk tables, read before the current one is copied.
    _peeked: tuple[Manifest, list[tuple[FileEntry, tuple[Chunk, ...]]]] | None = None
    #: Roots and chunk tables read before the copy (for its prediction), by snapshot id.
    preread: dict[str, tuple[Manifest, Tables]] = field(default_factory=dict)
    #: The current snapshot's pending frames, figures (chunks, stored, re-encoded, bytes) and
    #: the planned ranges (of the source, of the destination) of the groups in flight.
    _added: list[PendingFrame] = field(default_factory=list)
    _stats: list[int] = field(default_factory=list)
    _spans: deque[tuple[list[Span], list[Span]]] = field(default_factory=deque)
    #: The (host, path) of the snapshot being copied.
    _source: Source = ("", "")

    def _fetch(self, chunk: Chunk, step: Step, rel: str, offset: int) -> _Out:
        """The frames to store for ``chunk`` (at ``offset`` of file ``rel``), each verified:
        decoded against the content of the link before it, its hash checked. Its content is
        kept as a base and written to the source's new image."""
        codec = self.dest.config.codec
        frames = chunk.frames
        content = self.bases.get(chunk, step, self._source)
        out: _Out = []
        if step.reencode:
            content = self.reader.decode_chain(frames[step.skip :], content)
            data = compress(content, codec, self.dest.config.level)
            out.append((self.dest.seal_frame(data, codec, len(content), chunk.hash), codec, len(content),
                        chunk.hash, FULL_FRAMES, None))
        for j in range(step.skip, len(frames)) if not step.reencode else ():
            fr = frames[j]
            raw, content = self.reader.decode_keeping(fr, content)
            note = frames[j - 1].hash if j else None
            out.append((self.dest.seal_frame(raw, fr.codec, fr.size, fr.hash), fr.codec, fr.size, fr.hash,
                        DELTA_FRAMES if j else FULL_FRAMES, note))
        assert content is not None
        self.bases.contents.put(chunk.hash, content)
        self.bases.images.put(self._source, rel, offset, chunk.hash, content)
        return out

    def _peek(self, sid: str | None) -> None:
        """Read snapshot ``sid``'s root and chunk tables (kept for its copy, if its root is the
        same then) and keep from now on the contents its chains build on."""
        self._peeked = None
        tables: list[tuple[FileEntry, tuple[Chunk, ...]]] = []
        if sid is not None:
            try:
                m = self.source.manifest(sid, fresh=True)
                early = self.preread.pop(sid, None)
                tables = early[1] if early is not None and early[0] == m else list(self.source.tables(m))
            except SnapshotError:
                tables = []  # read again when it is copied, which reports what fails
            else:
                self._peeked = (m, tables)
        self.bases.contents.want(frozenset(fr.hash for _f, chunks in tables for c in chunks
                                     for fr in c.frames[:-1]))

    def _tables_of(self, m: Manifest) -> list[tuple[FileEntry, tuple[Chunk, ...]]]:
        if self._peeked is not None and self._peeked[0] == m:
            return self._peeked[1]
        early = self.preread.pop(m.id, None)
        if early is not None and early[0] == m:
            return early[1]
        return list(self.source.tables(m))

    def copy(self, m: Manifest, lock: RepositoryLock, started: float, seen: frozenset[str],
             next_sid: str | None = None) -> SnapshotCopy:
        """Copy snapshot ``m``; ``next_sid``: the one copied after it."""
        self._source = source_of(m)
        tables = self._tables_of(m)
        self._peek(next_sid)
        pack_size = self.options.pack_size or pack_size_for(m.totals.bytes)
        writer = PackWriter(self.dest, pack_size=pack_size, on_sealed=self.journal.record)
        files: list[CopiedFile] = []
        self._stats, self._added = [0, 0, 0, 0], []
        try:
            self._pack(tables, writer, files)
            writer.close()
        except BaseException:
            writer.abort()
            self.known.chains.drop_pending()
            raise
        done = {pf: writer.resolve(pf) for pf in self._added}
        self.known.chains.resolve(done)
        entries, needed = write_tables(self.dest, self.known, self.journal, files, done, pack_size)
        root = replace(m, files=tuple(entries), format_version=FORMAT_VERSION)
        pausepoints.point("copy.before-commit")
        lock.check()
        check_condemned(self.dest, needed, started, seen, command="copy")
        check_present(self.dest, needed, command="copy")
        self.dest.save_manifest(root)
        pausepoints.point("copy.committed")
        self.bases.images.settle(self._source, m.id, tables, self.bases.contents.get)
        return SnapshotCopy(m.id, COPIED, *self._stats)

    def _pack(self, tables: Sequence[tuple[FileEntry, tuple[Chunk, ...]]], writer: PackWriter,
              files: list[CopiedFile]) -> None:
        group: list[_Item] = []
        flying: deque[list[_Item]] = deque()
        for f, chunks in tables:
            chains: list[tuple[DestFrame, ...]] = [()] * len(chunks)
            files.append((f, chunks, chains))
            for i, c in enumerate(chunks):
                group.append(_Item(chains, i, c, self.known.chains.plan(c), f.path))
                if sum(1 for it in group if it.step.stores) >= _GROUP:
                    self._launch(group, flying, writer)
                    group = []
        self._launch(group, flying, writer)
        while flying:
            self._finish(flying.popleft(), writer)

    def _launch(self, group: list[_Item], flying: deque[list[_Item]], writer: PackWriter) -> None:
        readers = [it for it in group if it.step.stores]
        spans = self.reader.prefetch([fr for it in readers for fr in it.step.reads(it.chunk)])
        bases = self.bases.dest_reader.prefetch(
            [fr for it in readers for fr in self.bases.to_read(it.chunk, it.step, self._source)])
        for it in readers:
            it.future = self.pool.submit(self._fetch, it.chunk, it.step, it.rel,
                                         it.index * self.dest.config.chunk_size)
        flying.append(group)
        self._spans.append((spans, bases))
        while len(flying) > _GROUPS_AHEAD:
            self._finish(flying.popleft(), writer)

    def _finish(self, group: list[_Item], writer: PackWriter) -> None:
        index = self.known.chains
        try:
            for it in group:
                self._stats[0] += 1
                self.reporter.advance(it.chunk.size)
                known = index.get(it.chunk.hash)
                if it.future is None or known is not None:  # stored meanwhile: nothing to write
                    it.chains[it.index] = known if known is not None else it.step.reuse
                    continue
                chain: list[DestFrame] = list(it.step.reuse)
                for stored, codec, size, h, lane, note in it.future.result():
                    now = index.get(h)  # e.g. a delta a killed copy stored, once its base is here
                    if now is not None:
                        chain = list(now)
                        continue
                    pf = writer.add(stored, codec, size, h, lane, note=note)
                    self._added.append(pf)
                    chain.append(pf)
                    self._stats[3] += len(stored)
                    index.add(chain)
                self._stats[1] += 1
                self._stats[2] += it.step.reencode
                it.chains[it.index] = tuple(chain)
        finally:
            spans, bases = self._spans.popleft()
            self.reader.release(spans)
            self.bases.dest_reader.release(bases)


def copy_snapshots(
    dest: Repository, source: Repository, refs: Sequence[str] = (), filters: SnapshotFilter | None = None,
    options: CopyOptions | None = None, *, reporter: Reporter | None = None,
) -> CopyResult:
    """Copy the snapshots ``refs`` names in ``source`` (every one passing ``filters`` when there
    is no ref) into ``dest``; see the module docstring. Everything that can be refused (same
    repository, other chunk size, an unknown id, a destination snapshot of the same id with
    other content) is refused before anything is written."""
    options = options or CopyOptions()
    reporter = reporter or NullReporter()
    started = time.monotonic()
    check_pair(dest, source)
    facts = CopyFacts()
    with source.measure() as read, dest.measure() as wrote:
        with source.measure() as facts.chosen_source, dest.measure() as facts.chosen_dest:
            ids = select(source, refs, filters or SnapshotFilter())
            to_copy, present = split_present(dest, source, ids)
        resumed = 0
        predicted = None
        if options.dry_run:
            images = Images(default_root(), dest.config.id, dest.config.chunk_size, options.use_cache)
            snaps, predicted = predict.dry_run(
                dest, source, to_copy, present, facts, pack_size=options.pack_size,
                cache_bytes=options.cache_bytes, spill_bytes=options.spill_bytes, images=images)
        else:
            with dest.lock(SHARED, "copy", wait=options.wait or 0.0) as lock:
                copied, resumed, predicted = _run(dest, source, to_copy, options, reporter, lock, started,
                                                  facts)
            snaps = sorted([SnapshotCopy(sid, PRESENT) for sid in present] + copied, key=lambda s: s.id)
    return replace(_result(dest, source, snaps, options.dry_run, resumed, read, wrote, started),
                   predicted=predicted)


def _run(dest: Repository, source: Repository, to_copy: Sequence[str], options: CopyOptions,
         reporter: Reporter, lock: RepositoryLock, started: float, facts: CopyFacts,
         ) -> tuple[list[SnapshotCopy], int, CopyPrediction | None]:
    with dest.measure() as facts.condemned:
        seen = frozenset(dest.condemned().since)
    journal = CopyJournal(default_root(), dest.config.id, source.config.id, dest.config.codec)
    with dest.measure() as facts.index:
        known = index_destination(dest, seen)
    facts.journal = bool(journal.load())
    resumed = index_resumed(known, journal, dest, seen)
    predicted = None
    workers = max(2, os.cpu_count() or 2)
    # the source's link sets the width when it is remote (a copy reads it most), else the destination's
    ahead = read_ahead(source if source.local_root is None else dest)
    out: list[SnapshotCopy] = []
    with source.measure() as facts.roots:
        sizes = [source.manifest(sid).totals.bytes for sid in to_copy]
    spill = spill_budget(sizes) if options.spill_bytes is None else options.spill_bytes
    contents = Contents(options.cache_bytes, spill, default_root() / dest.config.id)
    images = Images(default_root(), dest.config.id, dest.config.chunk_size, options.use_cache, reporter.warn)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy") as pool:
            reader = ChunkReader(source, ahead if source.local_root is None else None)
            dest_reader = ChunkReader(dest, ahead if dest.local_root is None else None)
            bases = Bases(reader, dest_reader, contents, images)
            copier = _Copier(dest, source, known, journal, reader, bases, pool, options, reporter)
            reporter.phase("copy", sum(sizes))
            if options.predict:
                copier.preread = {sid: (m, list(source.tables(m))) for sid in to_copy
                                  for m in (source.manifest(sid),)}
                _copies, predicted = predict.predict_copy(
                    dest, source, list(copier.preread.values()), copy.deepcopy(known), facts,
                    pack_size=options.pack_size, cache_bytes=options.cache_bytes, spill_bytes=spill,
                    images=images)
            for i, sid in enumerate(to_copy):
                nxt = to_copy[i + 1] if i + 1 < len(to_copy) else None
                out.append(_one(copier, source, sid, lock, started, seen, nxt))
        journal.discard()
        images.commit()
        pausepoints.point("copy.image-committed")
    finally:
        images.abort()
        contents.close()
        if ahead is not None:
            ahead.shutdown(wait=True, cancel_futures=True)
        reporter.done()
    return out, resumed, predicted


def _one(copier: _Copier, source: Repository, sid: str, lock: RepositoryLock, started: float,
         seen: frozenset[str], next_sid: str | None) -> SnapshotCopy:
    """Copy snapshot ``sid``, its root read just before; once more if a prune's repack moved its
    frames meanwhile."""
    for attempt in range(2):
        try:
            m = source.manifest(sid, fresh=True)  # as it is now: a prune may have rewritten it
            pausepoints.point("copy.root-read")
            return copier.copy(m, lock, started, seen, next_sid)
        except NotFoundError:
            if not source.has_snapshot(sid):
                copier.reporter.warn(f"snapshot {sid} was removed from the source during the copy: skipped")
                return SnapshotCopy(sid, VANISHED)
            if attempt:
                raise
    raise AssertionError("unreachable")


def _result(dest: Repository, source: Repository, snaps: Sequence[SnapshotCopy], dry: bool, resumed: int,
            read: Measurement, wrote: Measurement, started: float) -> CopyResult:
    copied = sum(1 for s in snaps if s.status not in (PRESENT, VANISHED))
    return CopyResult(
        source=source.url, destination=dest.url, dry_run=dry, snapshots=tuple(snaps), copied=copied,
        skipped=len(snaps) - copied, bytes_read=read.bytes_down, bytes_written=wrote.bytes_up,
        bytes_read_destination=wrote.bytes_down, bytes_stored=sum(s.bytes_stored for s in snaps),
        packs_resumed=resumed,
        requests={"source": read.requests, "destination": wrote.requests},
        seconds=round(time.monotonic() - started, 3),
    )


__all__ = ["ChainIndex", "CopyOptions", "CopyResult", "SnapshotCopy", "copy_snapshots"]
