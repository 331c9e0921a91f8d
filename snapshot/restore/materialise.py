"""Writing a snapshot's files into a fresh directory, chunk by chunk, every chunk and file
hash checked, and reusing what the restore target and the leftovers of killed restores into
it already hold (re-hydration, resuming: snapshot/restore/local.py). (Putting the
result back after chromadb opened it, ``restore --chroma-check``, is snapshot/restore/repair.py's.)

One file's chunk table is held at a time: its chunks are read from the repository (or the
target) in a bounded window, decoded on a thread pool (zstd releases the GIL) and written in
order.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from snapshot.errors import IntegrityError, SnapshotError, naming_full_disk
from snapshot.format.chunking import read_verified
from snapshot.format.hashing import FileHasher
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest
from snapshot.repo.links import ahead_bytes, read_ahead
from snapshot.repo.packs import ChunkReader, Span, read_ranges
from snapshot.repo.repository import Repository
from snapshot.restore.local import Local, LocalChunk, Staged, index_local_file
from snapshot.util import pausepoints
from snapshot.util.fsync import fsync_path, start_writeback
from snapshot.util.progress import Reporter

#: Files of one chunk written at once by the small-file workers (each holds one chunk).
_SMALL_WINDOW = 64
#: Chunk readers for a remote store (each mostly waits for its range, read ahead by a pool as
#: wide as the link carries: snapshot/repo/links.py).
_REMOTE_READERS = 8
#: Frames of files of one chunk read ahead together from a remote store (see materialise).
_GROUP_BYTES = 32 << 20
#: Chunks of a bigger file whose frames are read ahead together from a remote store, and
#: the most bytes of frames one such plan may hold (one chunk's at least; the chunks being
#: written hold theirs until they are written).
_AHEAD = 16
_PLAN_BYTES = 16 << 20
#: Plans are made ahead of the chunk being written while the ranges not yet written hold less
#: than this (so at most this plus one plan, 32 MiB, is held: what two plans of a file that
#: does not compress held before): several range readers have a range in flight however well
#: the file compresses. (Counting chunks instead, 16 ahead, left a file that compresses 3:1
#: with one to three ranges in flight, and its restore at a fraction of the link; 32 MiB ahead
#: raised a 200k restore's peak RSS by 15-40 MiB, 16 by at most 16.) More when the link's
#: gauge keeps more ranges in flight than that holds (up to its budget, 64 MiB).
_AHEAD_BYTES = 16 << 20
_WINDOW = 8
#: A restored file's data is handed to the OS's writeback every this many bytes (see
#: start_writeback): the final sync then waits for the tail, not for the whole restore.
_WRITEBACK_EVERY = 8 << 20

def frames_to_read(chunks: Sequence[Chunk], local: Local) -> Iterator[Frame]:
    """The frames a restore reads for ``chunks``: none of a chunk the target holds, and of a
    delta chain only the links past the deepest one it holds."""
    for c in chunks:
        if c.hash not in local:
            yield from c.frames[first_missing_frame(c, local):]


def first_missing_frame(chunk: Chunk, local: dict[str, LocalChunk]) -> int:
    """Index of the first frame to read: past the deepest link of the chain the target holds."""
    for i in range(len(chunk.frames) - 2, -1, -1):
        if chunk.frames[i].hash in local:
            return i + 1
    return 0


class Fetcher:
    """Gets chunk contents: from the target when it holds them, else from the repository."""

    def __init__(self, reader: ChunkReader, ahead: int = 0,
                 ahead_bytes: Callable[[], int] = lambda: _AHEAD_BYTES) -> None:
        self.reader = reader
        #: Chunks of a file whose frames are planned together (ChunkReader.prefetch; 0: off).
        self.ahead = ahead
        #: The bytes of planned ranges a file's writer keeps ahead of it.
        self.ahead_bytes = ahead_bytes
        self.reused = self.fetched = self.bytes_reused = 0
        #: Chunks taken from the leftovers of killed restores (not counted as reused).
        self.resumed = self.bytes_resumed = 0
        self._lock = threading.Lock()

    def count(self, size: int, origin: LocalChunk | None, chunks: int = 1) -> None:
        """Count ``chunks`` chunks of ``size`` bytes in all, from ``origin`` (None: the repository)."""
        with self._lock:  # files are written by several threads at once
            if origin is None:
                self.fetched += chunks
            elif origin.staged:
                self.resumed += chunks
                self.bytes_resumed += size
            else:
                self.reused += chunks
                self.bytes_reused += size

    @staticmethod
    def _read_local(local: Local, h: str) -> bytes | None:
        lc = local.get(h)
        return None if lc is None else read_verified(lc.path, lc.offset, lc.size, h)

    def get(self, chunk: Chunk, local: Local) -> tuple[bytes, LocalChunk | None]:
        """The chunk's content, and where on this machine it was found (None: the repository)."""
        data = self._read_local(local, chunk.hash)
        if data is not None:
            return data, local[chunk.hash]
        start = first_missing_frame(chunk, local)
        base = self._read_local(local, chunk.frames[start - 1].hash) if start else None
        if base is None:
            start = 0  # the local base vanished or changed since it was indexed
        # the last frame's hash is the chunk's: checked (links only when it does not match)
        return self.reader.decode_chain(chunk.frames[start:], base), None


def _upcoming(chunks: Sequence[Chunk], i: int, local: Local, most: int) -> Sequence[Chunk]:
    """``chunks[i:j]``, the next chunks whose frames are planned together: at most ``most`` of
    them and _PLAN_BYTES of frames to read (deep chains of large deltas make fewer), at least one."""
    j, planned = i, 0
    while j < len(chunks) and j - i < most:
        planned += sum(fr.length for fr in frames_to_read(chunks[j : j + 1], local))
        if j > i and planned > _PLAN_BYTES:
            break
        j += 1
    return chunks[i:j]


def _group_full(files: int, frame_bytes: int) -> bool:
    """Whether a group of files of one chunk starts (remote stores; see materialise)."""
    return files >= _SMALL_WINDOW or frame_bytes >= _GROUP_BYTES


class ReadEstimate:
    """What :func:`materialise` reads of the repository, fed each file's chunks and what the
    target holds of them in the order it writes them (a dry run's prediction): from a folder,
    the frames to read; from a remote store, the ranges of packs it plans them into (a range
    also holds what lies between frames close together, and a frame needed twice is read once)."""

    def __init__(self, remote: bool) -> None:
        self.remote = remote
        self._bytes = 0
        #: The range reads (get_range requests) they take.
        self.requests = 0
        self._group: list[Frame] = []
        self._files = self._group_bytes = 0

    def add(self, chunks: Sequence[Chunk], local: Local) -> None:
        frames = list(frames_to_read(chunks, local))
        if not self.remote:  # a frame at a time
            self._bytes += sum(fr.length for fr in frames)
            self.requests += len(frames)
        elif len(chunks) <= 1:  # grouped with its neighbours, as materialise does
            self._group += frames
            self._files += 1
            self._group_bytes += sum(fr.length for fr in frames)
            if _group_full(self._files, self._group_bytes):
                self._flush()
        else:  # read ahead _AHEAD chunks at a time, as write_file does
            self._flush()
            i = 0
            while i < len(chunks):
                upcoming = _upcoming(chunks, i, local, _AHEAD)
                self._ranges(frames_to_read(upcoming, local))
                i += len(upcoming)

    def _flush(self) -> None:
        if self._group:
            self._ranges(self._group)
        self._group, self._files, self._group_bytes = [], 0, 0

    def _ranges(self, frames: Iterable[Frame]) -> None:
        ranges = read_ranges(frames)
        self._bytes += sum(e - s for _o, s, e in ranges)
        self.requests += len(ranges)

    def total(self) -> int:
        self._flush()
        return self._bytes


def last_uses(
    spans: Sequence[Span], chunks: Sequence[Chunk], first: int, local: Local
) -> dict[int, list[Span]]:
    """The index (``first`` for ``chunks[0]``) of the last of ``chunks`` that reads from each
    of ``spans``: the range is released once that chunk is written, not when all are."""
    by_object: dict[str, list[Span]] = {}
    for sp in spans:
        by_object.setdefault(sp.object, []).append(sp)
    at: dict[int, int] = {}  # id of a span -> the last chunk reading it
    for j, chunk in enumerate(chunks):
        for fr in frames_to_read([chunk], local):
            for sp in by_object.get(fr.object, ()):
                if sp.start <= fr.offset and fr.offset + fr.length <= sp.end:
                    at[id(sp)] = first + j
    out: dict[int, list[Span]] = {}
    for sp in spans:  # a range no chunk reads (cannot happen) goes with the last chunk
        out.setdefault(at.get(id(sp), first + len(chunks) - 1), []).append(sp)
    return out


def write_file(
    root: Path, f: FileEntry, chunks: Sequence[Chunk], local: Local, fetcher: Fetcher,
    pool: ThreadPoolExecutor | None, reporter: Reporter,
) -> None:
    """Write file ``f`` under ``root``, verified; a full disk names the file and its filesystem."""
    with naming_full_disk(root / f.path):
        _write_file(root, f, chunks, local, fetcher, pool, reporter)


def _write_file(
    root: Path, f: FileEntry, chunks: Sequence[Chunk], local: Local, fetcher: Fetcher,
    pool: ThreadPoolExecutor | None, reporter: Reporter,
) -> None:
    dest = root / f.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(dest, flags, 0o600)
    hasher = FileHasher()
    written = flushed = 0
    with os.fdopen(fd, "wb", buffering=0) as fh:
        pending: deque[tuple[Chunk, Future[tuple[bytes, LocalChunk | None]]]] = deque()
        # From a remote store, the frames of the next ``fetcher.ahead`` chunks are read a range
        # of a pack at a time (a chain's full frame and its small delta links are otherwise a
        # request each); each range released once the last chunk reading it is written.
        planned: dict[int, list[Span]] = {}
        held = 0  # bytes of the planned ranges not yet released
        drained = 0

        def drain_one() -> None:
            nonlocal written, flushed, drained, held
            chunk, fut = pending.popleft()
            try:
                data, origin = fut.result()
            except SnapshotError as exc:
                raise type(exc)(f"{f.path}: {exc}") from exc
            finally:
                spans = planned.pop(drained, [])
                held -= sum(sp.end - sp.start for sp in spans)
                fetcher.reader.release(spans)
                drained += 1
            if len(data) != chunk.size:
                raise IntegrityError(f"{f.path}: chunk at {written} has the wrong size")
            fetcher.count(len(data), origin)
            _write_all(fh.fileno(), data)
            pausepoints.point("restore.chunk-written")
            hasher.update(data)
            written += len(data)
            if written - flushed >= _WRITEBACK_EVERY:
                start_writeback(fh.fileno(), flushed, written - flushed)
                flushed = written
            reporter.advance(len(data))

        plan_at = 0  # the chunks before it are planned
        for i, chunk in enumerate(chunks):
            # Plans are made while those before are still being read (up to _AHEAD_BYTES, or
            # what keeps the link's width busy): the reads of the next chunks are under way
            # while these are decoded and written.
            while pool is not None and fetcher.ahead and plan_at < len(chunks) and (
                plan_at <= i or held < fetcher.ahead_bytes()
            ):
                upcoming = _upcoming(chunks, plan_at, local, fetcher.ahead)
                plan_at += len(upcoming)
                spans = fetcher.reader.prefetch(frames_to_read(upcoming, local))
                for at, sps in last_uses(spans, upcoming, plan_at - len(upcoming), local).items():
                    planned.setdefault(at, []).extend(sps)
                held += sum(sp.end - sp.start for sp in spans)
            if pool is None:  # this thread fetches each chunk itself
                done: Future[tuple[bytes, LocalChunk | None]] = Future()
                try:
                    done.set_result(fetcher.get(chunk, local))
                except SnapshotError as exc:  # named with the file by drain_one
                    done.set_exception(exc)
                pending.append((chunk, done))
            else:
                pending.append((chunk, pool.submit(fetcher.get, chunk, local)))
            if len(pending) > _WINDOW:
                drain_one()
        while pending:
            drain_one()
        if written > flushed:
            start_writeback(fh.fileno(), flushed, written - flushed)
    if written != f.size or hasher.hexdigest() != f.hash:
        raise IntegrityError(f"{f.path}: restored file does not match its hash in the manifest")
    os.chmod(dest, f.mode & 0o777 or 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def sync_tree(root: Path, m: Manifest) -> None:
    """Make every restored file and folder durable before the swap makes them the target: an
    fsync per file, then per folder (deepest first), in threads, run beside the consistency
    checks. Each file's writeback was started as it was written, so little is left to wait for;
    and unlike one syncfs, nothing waits for what other processes wrote to the same filesystem
    (bench/durability.py measures both)."""
    with naming_full_disk(root):  # a filesystem may find itself full only when it writes back
        dirs = {root} | {(root / f.path).parent for f in m.files}
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync") as pool:
            list(pool.map(fsync_path, [root / f.path for f in m.files]))
            list(pool.map(fsync_path, sorted(dirs, key=lambda d: -len(d.parts))))


def _readers(repo: Repository) -> int:
    """Threads that read and decode chunks: from a folder, decoding is the work and one per
    core is best (8 on 2 cores spent 0.1-0.3 s of a 200k restore switching between them);
    from a remote store, reads wait on the network, so more."""
    return max(2, os.cpu_count() or 2) if repo.local_root is not None else _REMOTE_READERS


def materialise(
    repo: Repository, m: Manifest, root: Path, target: Path, reporter: Reporter,
    written: Callable[[FileEntry], None] = lambda _f: None, order: Sequence[FileEntry] | None = None,
    staged: Staged | None = None, tables: Sequence[tuple[FileEntry, Sequence[Chunk]]] | None = None,
) -> Fetcher:
    """Write every file of ``m`` under ``root``, reusing what ``target`` and ``staged`` (the
    leftovers of killed restores) hold; ``written`` is called with each file once it is
    complete and verified. ``order``: the files in the order to write them [manifest order];
    ``tables``: those files with their chunks, when they were read already."""
    staged = staged or Staged(())
    if repo.local_root is not None:
        return _materialise(repo, m, root, target, reporter, written, order, Fetcher(ChunkReader(repo)),
                            staged, tables)
    # From a remote store, the ranges planned are read as soon as they are planned, several at
    # once: each request waits a round trip, and one connection moves a share of the link.
    ahead = read_ahead(repo)
    try:
        fetcher = Fetcher(ChunkReader(repo, ahead), _AHEAD, lambda: ahead_bytes(repo, _AHEAD_BYTES))
        return _materialise(repo, m, root, target, reporter, written, order, fetcher, staged, tables)
    finally:
        if ahead is not None:
            ahead.shutdown(wait=True, cancel_futures=True)


def sources(target: Path, staged: Staged, f: FileEntry, chunks: Sequence[Chunk],
             chunk_size: int) -> tuple[Local, Path | None]:
    """What the target and the leftovers hold of ``f``'s chunks, and a leftover's whole copy of
    ``f`` if there is one (then nothing else is indexed)."""
    local, whole = staged.index(f, chunks, chunk_size)
    if whole is not None:
        return local, whole
    return {**index_local_file(target, f, chunks, chunk_size), **local}, None


def _materialise(
    repo: Repository, m: Manifest, root: Path, target: Path, reporter: Reporter,
    written: Callable[[FileEntry], None], order: Sequence[FileEntry] | None, fetcher: Fetcher,
    staged: Staged, tables: Sequence[tuple[FileEntry, Sequence[Chunk]]] | None = None,
) -> Fetcher:
    remote = repo.local_root is None

    def done(f: FileEntry) -> None:
        staged.consume(f)
        written(f)
        pausepoints.point("restore.file-written")

    reporter.phase("restore", sum(f.size for f in m.files))
    # (file, its write, the ranges planned for its group: released once it is written)
    small: deque[tuple[FileEntry, Future[None], list[Span]]] = deque()
    # Files of one chunk not yet started. From a remote store they start in groups whose
    # frames are read with a request per range of a pack, not one per file (ChunkReader.prefetch).
    group: list[tuple[FileEntry, Sequence[Chunk], Local]] = []
    group_bytes = 0

    def finish_small() -> None:
        f, job, spans = small.popleft()
        job.result()
        fetcher.reader.release(spans)
        done(f)

    def start_group() -> None:
        nonlocal group_bytes
        spans = fetcher.reader.prefetch(
            fr for _f, chunks, local in group for fr in frames_to_read(chunks, local)
        ) if remote else []
        for i, (f, chunks, local) in enumerate(group):
            job = small_pool.submit(write_file, root, f, chunks, local, fetcher, None, reporter)
            small.append((f, job, spans if i == len(group) - 1 else []))
        group.clear()
        group_bytes = 0
        while len(small) > _SMALL_WINDOW:
            finish_small()

    with ThreadPoolExecutor(max_workers=_readers(repo), thread_name_prefix="fetch") as pool, \
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="small") as small_pool:
        for f, chunks in (repo.tables(m, order) if tables is None else tables):
            local, whole = sources(target, staged, f, chunks, m.chunk_size)
            if whole is not None and staged.take(whole, root, f):
                fetcher.count(f.size, LocalChunk(whole, 0, f.size, staged=True), len(chunks))
                reporter.advance(f.size)
                done(f)
                continue
            if len(chunks) <= 1:
                # A file of one chunk (most of a DB with many collections: headers, pickles,
                # small segments): written whole by a worker, several at once, instead of one
                # after another through the chunk pool.
                group.append((f, chunks, local))
                if remote:
                    group_bytes += sum(fr.length for fr in frames_to_read(chunks, local))
                if not remote or _group_full(len(group), group_bytes):
                    start_group()
            else:
                if group:
                    start_group()
                write_file(root, f, chunks, local, fetcher, pool, reporter)
                done(f)
            while small and small[0][1].done():  # announced as soon as they are complete
                finish_small()
        if group:
            start_group()
        while small:
            finish_small()
    return fetcher
