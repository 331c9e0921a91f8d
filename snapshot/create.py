"""Taking a snapshot: capture, chunk, dedup against the parent, delta-compress, pack, commit.

Per fixed-offset chunk of every captured file:

* a hash already stored (in the parent snapshot or earlier in this one) costs nothing: the new
  manifest points at the existing frames;
* otherwise, if the parent holds a chunk at the same offset of the same file, the chunk is
  stored as a zstd frame using that parent chunk as a raw-content dictionary (Chroma rewrites
  its files in place, so the parent chunk is nearly the same bytes); the chain of such deltas
  is bounded by the repository's ``max_chain``;
* else it is stored as a full frame.

Objects are uploaded before the manifest, which is written last and create-only: a crash
leaves unreferenced packs (collected by prune), never a half-snapshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from snapshot import __version__, layout
from snapshot.basecache import BaseCache, default_root
from snapshot.compression import check_codec, compress
from snapshot.errors import AlreadyExistsError, SnapshotError, UsageError
from snapshot.hashing import FileHasher, digest
from snapshot.manifest import Chunk, FileEntry, Frame, Manifest, Totals, dumps
from snapshot.packs import DEFAULT_PACK_SIZE, ChunkReader, PackWriter, PendingFrame
from snapshot.progress import NullReporter, Reporter
from snapshot.repository import Repository, new_snapshot_id, utc_now_iso
from snapshot.source import StagedFile, capture, check_persist_dir

DEFAULT_LEVELS = {"zstd": 1, "gzip": 6}
#: Chunks compressed ahead of the one being packed (bounds memory to ~3 MiB per slot).
_WINDOW = 8


@dataclass(frozen=True)
class CreateResult:
    id: str
    parent: str | None
    files: int
    bytes_total: int
    bytes_uploaded: int
    objects_uploaded: int
    chunks_total: int
    chunks_new: int
    chunks_delta: int
    bytes_new: int
    #: Delta bases taken from the local base cache / read back from the repository.
    bases_cached: int
    bases_read: int
    collections: dict[str, int]
    orphans: tuple[str, ...]
    skipped: tuple[str, ...]
    capture_attempts: int
    seconds: float
    requests: dict[str, int] = field(default_factory=dict)


def chromadb_version() -> str | None:
    try:
        return metadata.version("chromadb")
    except metadata.PackageNotFoundError:
        return None


def pick_parent(repo: Repository, source: Path, ref: str | None) -> Manifest | None:
    """The explicit parent, else the newest snapshot of the same host and path, else the
    newest snapshot of any source (dedup still helps), else None."""
    if ref is not None:
        return repo.get(ref)
    ids = repo.snapshot_ids()
    if not ids:
        return None
    host, path = socket.gethostname(), str(source)
    for sid in reversed(ids):
        m = repo.manifest(sid)
        if m.source_host == host and m.source_path == path:
            return m
    return repo.manifest(ids[-1])


def _read_chunks(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while True:
            data = fh.read(size)
            if not data:
                return
            yield data


@dataclass
class _Plan:
    """What to do with one chunk, decided in the packing thread."""

    data: bytes
    hash: str
    base: Chunk | None
    rel: str = ""
    index: int = 0


class _Builder:
    def __init__(
        self,
        repo: Repository,
        parent: Manifest | None,
        codec: str,
        level: int,
        delta: bool,
        reporter: Reporter,
        pack_size: int,
        cache: BaseCache | None,
    ) -> None:
        self.repo = repo
        self.cache = cache
        self.bases_cached = self.bases_read = 0
        self._count_lock = threading.Lock()
        self.parent = parent
        self.codec = codec
        self.level = level
        self.delta = delta and codec == "zstd"
        self.reporter = reporter
        self.chunk_size = repo.config.chunk_size
        self.known: dict[str, tuple[Frame, ...] | list[PendingFrame | Frame]] = {}
        if parent is not None and parent.chunk_size == self.chunk_size:
            for f in parent.files:
                for c in f.chunks:
                    self.known.setdefault(c.hash, c.frames)
        self.reader = ChunkReader(repo.store)
        self.writer = PackWriter(repo.store, pack_size=pack_size)
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="zstd")
        self.chunks_total = self.chunks_new = self.chunks_delta = 0
        self.bytes_new = 0

    def _base_for(self, rel: str, index: int) -> Chunk | None:
        if not self.delta or self.parent is None or self.parent.chunk_size != self.chunk_size:
            return None
        pf = self.parent.file(rel)
        if pf is None or index >= len(pf.chunks):
            return None
        base = pf.chunks[index]
        if len(base.frames) >= self.repo.config.max_chain or base.frames[-1].codec != "zstd":
            return None
        return base

    def _base_bytes(self, plan: _Plan) -> bytes:
        assert plan.base is not None and self.parent is not None
        if self.cache is not None:
            raw = self.cache.base(self.parent.id, plan.rel, plan.index, self.chunk_size, plan.base)
            if raw is not None:
                with self._count_lock:
                    self.bases_cached += 1
                return raw
        with self._count_lock:
            self.bases_read += 1
        return self.reader.read_chunk(plan.base)

    def _compress(self, plan: _Plan) -> tuple[bytes, Chunk | None]:
        if plan.base is not None:
            return compress(plan.data, self.codec, self.level, self._base_bytes(plan)), plan.base
        return compress(plan.data, self.codec, self.level), None

    def add_file(self, sf: StagedFile) -> list[list[PendingFrame | Frame]]:
        """Chunks of one file, as frame chains (pending until the packs are sealed)."""
        chains: list[list[PendingFrame | Frame]] = []
        hasher = FileHasher()
        pending: deque[tuple[int, _Plan, Future[tuple[bytes, Chunk | None]] | None]] = deque()
        size = 0
        for index, data in enumerate(_read_chunks(sf.staged, self.chunk_size)):
            hasher.update(data)
            size += len(data)
            h = digest(data)
            plan = _Plan(data, h, None, sf.rel, index)
            fut = None
            if h not in self.known:
                plan.base = self._base_for(sf.rel, index)
                fut = self.pool.submit(self._compress, plan)
            chains.append([])
            pending.append((index, plan, fut))
            while len(pending) > _WINDOW:
                self._finish(chains, *pending.popleft())
        while pending:
            self._finish(chains, *pending.popleft())
        self._file_hash, self._file_size = hasher.hexdigest(), size
        return chains

    def _finish(
        self,
        chains: list[list[PendingFrame | Frame]],
        index: int,
        plan: _Plan,
        fut: Future[tuple[bytes, Chunk | None]] | None,
    ) -> None:
        self.chunks_total += 1
        self.reporter.advance(len(plan.data))
        known = self.known.get(plan.hash)
        if known is not None:  # stored before, maybe earlier in this very snapshot
            chains[index] = list(known)
            if fut is not None:
                fut.cancel()
            return
        assert fut is not None
        frame, base = fut.result()
        pf = self.writer.add(frame, self.codec, len(plan.data), plan.hash)
        chain: list[PendingFrame | Frame] = list(base.frames) if base is not None else []
        chain.append(pf)
        self.known[plan.hash] = chain
        chains[index] = chain
        self.chunks_new += 1
        self.bytes_new += len(frame)
        if base is not None:
            self.chunks_delta += 1

    def resolve(self, chain: list[PendingFrame | Frame], size: int, h: str) -> Chunk:
        frames = tuple(self.writer.resolve(f) if isinstance(f, PendingFrame) else f for f in chain)
        return Chunk(hash=h, size=size, frames=frames)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def check_arguments(
    source: Path, *, tags: Sequence[str] = (), codec: str | None = None, level: int | None = None
) -> None:
    """Everything about a create that can be refused before the repository is touched (the
    CLI calls this before a create initialises a new repository)."""
    # Without --codec the repository's codec applies, unknown until it is opened: check what
    # holds for every codec here, the exact range again in create_snapshot.
    check_codec(codec or "zstd", level if level is not None else DEFAULT_LEVELS.get(codec or "zstd", 1))
    for t in tags:
        if not t or "," in t or t != t.strip():
            raise UsageError(f"bad tag {t!r}: tags are non-empty, without commas or edge spaces")
    check_persist_dir(source.expanduser().absolute())


def create_snapshot(
    repo: Repository,
    source: Path,
    *,
    tags: Sequence[str] = (),
    message: str = "",
    includes: Sequence[str | os.PathLike[str]] = (),
    include_orphans: bool = False,
    parent: str | None = None,
    codec: str | None = None,
    level: int | None = None,
    delta: bool = True,
    tmp_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    pack_size: int = DEFAULT_PACK_SIZE,
    reporter: Reporter | None = None,
) -> CreateResult:
    """Snapshot the Chroma persist dir ``source`` into ``repo``; see the module docstring.

    With ``use_cache`` the consistent copy is kept in the base cache (``cache_dir``, default
    $CHROMA_SNAPSHOT_CACHE or ~/.cache/chroma-snapshot) so the next create deltas against it
    without reading the repository."""
    started = time.monotonic()
    reporter = reporter or NullReporter()
    codec = codec or repo.config.codec
    if level is None:
        level = repo.config.level if codec == repo.config.codec else DEFAULT_LEVELS.get(codec, 1)
    check_arguments(source, tags=tags, codec=codec, level=level)
    source = source.expanduser().absolute()
    requests_before = repo.store.stats.as_dict()
    up_before = repo.store.stats.bytes_up
    parent_m = pick_parent(repo, source, parent)
    cache = None
    if use_cache:
        cache = BaseCache(Path(cache_dir) if cache_dir else default_root(), repo.config.id, source)
    if cache is not None and tmp_dir is None:
        staging = cache.new_staging()
    else:
        staging = Path(tempfile.mkdtemp(prefix="chroma-snapshot-", dir=tmp_dir))
    try:
        cap = capture(source, staging, includes=includes, include_orphans=include_orphans, log=reporter.warn)
        for orphan in cap.orphans:
            if not include_orphans:
                reporter.warn(
                    f"segment folder {orphan} belongs to no collection: left out "
                    "(--include-orphans keeps it)"
                )
        builder = _Builder(repo, parent_m, codec, level, delta, reporter, pack_size, cache)
        try:
            total = sum(sf.staged.stat().st_size for sf in cap.files)
            reporter.phase("snapshot", total)
            raw_files = []
            for sf in cap.files:
                chains = builder.add_file(sf)
                raw_files.append((sf, chains, builder._file_hash, builder._file_size))
            builder.writer.close()
        except BaseException:
            builder.writer.abort()
            raise
        finally:
            builder.close()
        files = []
        for sf, chains, fhash, fsize in raw_files:
            chunks = []
            for i, chain in enumerate(chains):
                csize = min(repo.config.chunk_size, fsize - i * repo.config.chunk_size)
                last = chain[-1]
                chunks.append(builder.resolve(chain, csize, last.hash))
            files.append(FileEntry(sf.rel, fsize, sf.mode, fhash, sf.role, tuple(chunks)))
        sid = new_snapshot_id()
        manifest = Manifest(
            id=sid,
            parent=parent_m.id if parent_m else None,
            created_at=utc_now_iso(),
            tool_version=__version__,
            chromadb_version=chromadb_version(),
            source_path=str(source),
            source_host=socket.gethostname(),
            tags=tuple(dict.fromkeys(tags)),
            message=message,
            chunk_size=repo.config.chunk_size,
            files=tuple(files),
            collections=cap.collections,
            totals=Totals(
                files=len(files),
                bytes=sum(f.size for f in files),
                chunks=builder.chunks_total,
                chunks_new=builder.chunks_new,
                bytes_new=builder.bytes_new,
                objects_new=builder.writer.objects_uploaded,
            ),
        )
        if parent_m is not None and not repo.store.exists(layout.snapshot_key(parent_m.id)):
            # A prune removed the parent while we worked: the frames we reused may be gone.
            raise SnapshotError(
                f"parent snapshot {parent_m.id} was removed during this create; run create again"
            )
        try:
            repo.store.put(layout.snapshot_key(sid), dumps(manifest), create_only=True)
        except AlreadyExistsError as exc:  # same 1/65536 s and 16 random bits: vanishingly rare
            raise SnapshotError(f"snapshot id {sid} already exists; run create again") from exc
        if cache is not None:
            try:
                cache.commit(staging, sid, {sf.rel: sf.staged for sf in cap.files})
            except OSError as exc:  # the snapshot is committed; only the next delta gets dearer
                reporter.warn(f"could not update the base cache in {cache.area}: {exc}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        reporter.done()
    after = repo.store.stats.as_dict()
    requests = {k: after.get(k, 0) - requests_before.get(k, 0) for k in after}
    return CreateResult(
        id=sid,
        parent=manifest.parent,
        files=len(files),
        bytes_total=manifest.totals.bytes,
        bytes_uploaded=repo.store.stats.bytes_up - up_before,
        objects_uploaded=builder.writer.objects_uploaded,
        chunks_total=builder.chunks_total,
        chunks_new=builder.chunks_new,
        chunks_delta=builder.chunks_delta,
        bytes_new=builder.bytes_new,
        bases_cached=builder.bases_cached,
        bases_read=builder.bases_read,
        collections={c.name: c.records for c in cap.collections},
        orphans=cap.orphans,
        skipped=cap.skipped,
        capture_attempts=cap.attempts,
        seconds=round(time.monotonic() - started, 3),
        requests={k: v for k, v in requests.items() if v},
    )
