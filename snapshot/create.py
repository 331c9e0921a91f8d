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
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from snapshot import hooks
from snapshot.basecache import BaseCache, default_root
from snapshot.chunking import ChunkedFile, chunk_sizes
from snapshot.compression import check_codec, compress
from snapshot.consistency import Verification, verify_dir
from snapshot.errors import InconsistentSourceError, SnapshotError, UsageError
from snapshot.hashing import digest
from snapshot.ids import new_snapshot_id, utc_now_iso
from snapshot.locks import SHARED, RepositoryLock
from snapshot.manifest import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    Chunk,
    FileEntry,
    Frame,
    Manifest,
    SchemaLevel,
    TableRef,
    Totals,
    Verified,
)
from snapshot.packs import DEFAULT_PACK_SIZE, ChunkReader, PackWriter, PendingFrame
from snapshot.progress import NullReporter, Reporter
from snapshot.repository import Repository
from snapshot.source import Capture, StagedFile, capture, check_persist_dir
from snapshot.tables import encode_table, parse_table
from snapshot.tempdirs import TEMP_PREFIX, owned_dir, sweep
from snapshot.version import __version__

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
    #: The consistency checks the capture passed (snapshot/consistency.py), and what failed
    #: when --allow-inconsistent let an inconsistent directory through.
    checks: tuple[str, ...] = ()
    inconsistencies: tuple[str, ...] = ()


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


@dataclass
class _Plan:
    """What to do with one chunk, decided in the packing thread."""

    data: bytes
    hash: str
    base: Chunk | None
    rel: str = ""
    index: int = 0


@dataclass(frozen=True)
class _StoredFile:
    """A file's chunks as frame chains (pending until the packs are sealed)."""

    staged: StagedFile
    chains: list[list[PendingFrame | Frame]]
    size: int
    hash: str


class _Builder:
    def __init__(
        self,
        repo: Repository,
        parent: Manifest | None,
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
        self.writer = PackWriter(repo, pack_size=pack_size)
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="zstd")
        self.chunks_total = self.chunks_new = self.chunks_delta = 0
        self.bytes_new = 0
        self.tables_uploaded = 0
        self.format_version = FORMAT_VERSION
        #: The new snapshot's chunk tables (hash -> bytes), kept in the base cache with it.
        self.tables: dict[str, bytes] = {}

    def _load_parent(self, rel: str) -> None:
        """The parent's chunks of ``rel`` (for dedup and delta bases), and its chunk table to
        reuse if the file did not change."""
        self._parent_chunks, self._parent_known = (), {}
        pf = self.parent.file(rel) if self.parent is not None else None
        if self.parent is None or pf is None:
            return
        raw = self.cache.table(pf.table.hash) if self.cache is not None and pf.table is not None else None
        if raw is not None:
            self._parent_chunks = parse_table(raw, pf, self.parent.chunk_size, f"snapshot {self.parent.id}")
        else:
            self._parent_chunks = self.repo.chunks(self.parent, pf)
        self._parent_known = {c.hash: c.frames for c in self._parent_chunks}
        if pf.table is not None:
            objects = {fr.object for c in self._parent_chunks for fr in c.frames}
            self.parent_tables[rel] = (pf.table, objects | {pf.table.object})

    def _known(self, h: str) -> tuple[Frame, ...] | list[PendingFrame | Frame] | None:
        return self.known.get(h) or self._parent_known.get(h)

    def _base_for(self, rel: str, index: int) -> Chunk | None:
        if not self.delta or index >= len(self._parent_chunks):
            return None
        base = self._parent_chunks[index]
        if len(base.frames) >= self.repo.config.max_chain or base.frames[-1].codec != "zstd":
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
        return self.reader.read_chunk(plan.base)

    def _compress(self, plan: _Plan) -> tuple[bytes, Chunk | None]:
        if plan.base is not None:
            return compress(plan.data, self.codec, self.level, self._base_bytes(plan)), plan.base
        return compress(plan.data, self.codec, self.level), None

    def add_file(self, sf: StagedFile) -> _StoredFile:
        chains: list[list[PendingFrame | Frame]] = []
        pending: deque[tuple[int, _Plan, Future[tuple[bytes, Chunk | None]] | None]] = deque()
        chunked = ChunkedFile(sf.staged, self.chunk_size)
        self._load_parent(sf.rel)
        for raw in chunked:
            plan = _Plan(raw.data, raw.hash, None, sf.rel, raw.index)
            fut = None
            if self._known(raw.hash) is None:
                plan.base = self._base_for(sf.rel, raw.index)
                fut = self.pool.submit(self._compress, plan)
            chains.append([])
            pending.append((raw.index, plan, fut))
            while len(pending) > _WINDOW:
                self._finish(chains, *pending.popleft())
        while pending:
            self._finish(chains, *pending.popleft())
        return _StoredFile(sf, chains, chunked.size, chunked.hash)

    def _finish(
        self,
        chains: list[list[PendingFrame | Frame]],
        index: int,
        plan: _Plan,
        fut: Future[tuple[bytes, Chunk | None]] | None,
    ) -> None:
        self.chunks_total += 1
        self.reporter.advance(len(plan.data))
        known = self._known(plan.hash)
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

    def pack_files(self, files: Sequence[StagedFile]) -> list[_StoredFile]:
        """Chunk, compress and pack every file; every pack is uploaded when this returns."""
        try:
            self.reporter.phase("snapshot", sum(sf.staged.stat().st_size for sf in files))
            stored = [self.add_file(sf) for sf in files]
            self.writer.close()
        except BaseException:
            self.writer.abort()
            raise
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return stored

    def _chunks(self, sf: _StoredFile) -> tuple[Chunk, ...]:
        chunks = []
        for chain, size in zip(sf.chains, chunk_sizes(sf.size, self.chunk_size), strict=True):
            frames = tuple(self.writer.resolve(f) if isinstance(f, PendingFrame) else f for f in chain)
            chunks.append(Chunk(hash=frames[-1].hash, size=size, frames=frames))
        return tuple(chunks)

    def entries(self, stored: Sequence[_StoredFile]) -> tuple[list[FileEntry], set[str]]:
        """The snapshot's files, each pointing at its chunk table (the parent's when the file
        did not change, else a new table frame packed now), and every object they need."""
        if self.format_version == 1:  # chunks inline (what chroma-snapshot 0.1 wrote)
            files = []
            needed: set[str] = set()
            for sf in stored:
                chunks = self._chunks(sf)
                needed |= {fr.object for c in chunks for fr in c.frames}
                st = sf.staged
                files.append(FileEntry(st.rel, sf.size, st.mode, sf.hash, st.role, chunks, None, len(chunks)))
            return files, needed
        tables = PackWriter(self.repo, pack_size=self.writer.pack_size)
        pending: list[tuple[_StoredFile, int, TableRef | PendingFrame]] = []
        written: dict[str, PendingFrame] = {}
        needed = set()
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
                    written[h] = tables.add(compress(raw, self.codec, self.level), self.codec, len(raw), h)
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


def check_arguments(
    source: Path, *, tags: Sequence[str] = (), message: str = "", level: int | None = None,
    codec: str | None = None,
) -> None:
    """Everything about a create that can be refused before the repository is touched (the
    CLI calls this before a create initialises a new repository)."""
    codec = codec or "zstd"
    check_codec(codec, level if level is not None else 1)
    for t in tags:
        if not t or "," in t or t != t.strip():
            raise UsageError(f"bad tag {t!r}: tags are non-empty, without commas or edge spaces")
    for what, text in [("--tag", t) for t in tags] + [("--message", message)]:
        _check_text(what, text)
    _check_text("source path", str(source))
    check_persist_dir(source.expanduser().absolute())


def _check_text(what: str, text: str) -> None:
    """Manifests are UTF-8 JSON: refuse text that cannot be encoded (undecodable bytes from the
    command line arrive as lone surrogates) before anything is uploaded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8: {text.encode('utf-8', 'replace')!r}") from None


def _staging(cache: BaseCache | None, tmp_dir: str | os.PathLike[str] | None) -> Path:
    if cache is not None and tmp_dir is None:
        return cache.new_staging()
    parent = Path(tmp_dir) if tmp_dir else Path(tempfile.gettempdir())
    sweep(parent, TEMP_PREFIX)  # what killed creates and diffs left behind
    return owned_dir(parent, TEMP_PREFIX)


def _commit(repo: Repository, manifest: Manifest, lock: RepositoryLock, needed: set[str]) -> None:
    """Make the snapshot durable, only once everything it references is known to be there."""
    hooks.point("create.before-commit")
    lock.check()  # still holding our shared lock: no prune can have run meanwhile
    if manifest.parent is not None and not repo.has_snapshot(manifest.parent):
        # A prune removed the parent while we worked: the frames we reused may be gone.
        raise SnapshotError(
            f"parent snapshot {manifest.parent} was removed during this create; run create again"
        )
    missing = repo.missing_objects(needed)
    if missing:
        raise SnapshotError(
            f"{len(missing)} object(s) this snapshot needs vanished during create (e.g. "
            f"{sorted(missing)[0]}); nothing was committed, run create again"
        )
    repo.save_manifest(manifest)


def _after_commit(
    cache: BaseCache | None, staging: Path, manifest: Manifest, cap: Capture, tables: dict[str, bytes],
    reporter: Reporter,
) -> None:
    """The snapshot is saved: nothing from here on may turn the outcome into a failure (an
    interrupt now would report "interrupted" for a snapshot that exists)."""
    try:
        hooks.point("create.after-commit")
        if cache is not None:
            cache.commit(staging, manifest.id, {sf.rel: sf.staged for sf in cap.files}, tables)
            hooks.point("create.cache-committed")
    except OSError as exc:  # only the next delta gets dearer
        reporter.warn(f"could not update the base cache: {exc}")
    except KeyboardInterrupt:
        reporter.warn(f"interrupted after snapshot {manifest.id} was saved; the base cache was not updated")


@dataclass
class _Job:
    """Capture, verify the capture (in a thread, beside compression) and pack it. A capture
    that fails a check is taken once more and checked before packing: a writer may have caught
    it mid-flight; if it fails again the source itself is inconsistent (SourceError, exit 6),
    unless ``allow_inconsistent``."""

    repo: Repository
    source: Path
    staging: Path
    parent: Manifest | None
    level: int
    delta: bool
    reporter: Reporter
    pack_size: int
    cache: BaseCache | None
    includes: Sequence[str | os.PathLike[str]]
    include_orphans: bool
    allow_inconsistent: bool

    def _capture(self) -> Capture:
        cap = capture(self.source, self.staging, includes=self.includes,
                      include_orphans=self.include_orphans, log=self.reporter.warn)
        hooks.point("create.captured")
        return cap

    def _pack(self, cap: Capture) -> tuple[_Builder, list[_StoredFile]]:
        builder = _Builder(self.repo, self.parent, self.level, self.delta, self.reporter, self.pack_size,
                           self.cache)
        return builder, builder.pack_files(cap.files)

    def run(self) -> tuple[Capture, _Builder, list[_StoredFile], Verification]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify") as checker:
            cap = self._capture()
            pending = checker.submit(verify_dir, self.staging / "db")
            try:
                builder, files = self._pack(cap)
            finally:
                verification = pending.result()
        if not verification.ok:
            self.reporter.warn(f"the capture failed a consistency check ({verification.problems[0]}); "
                               "taking it again")
            cap = self._capture()
            verification = verify_dir(self.staging / "db")
            if verification.ok or self.allow_inconsistent:
                builder, files = self._pack(cap)
        if not verification.ok:
            if not self.allow_inconsistent:
                raise InconsistentSourceError(
                    f"{self.source} is not consistent: {verification.problems[0]}"
                    + (f" (and {len(verification.problems) - 1} more)" if len(verification.problems) > 1
                       else "") + "; --allow-inconsistent snapshots it anyway")
            self.reporter.warn(f"snapshotting an inconsistent directory: {'; '.join(verification.problems)}")
        for orphan in cap.orphans:
            if not self.include_orphans:
                self.reporter.warn(f"segment folder {orphan} belongs to no collection: left out "
                                   "(--include-orphans keeps it)")
        return cap, builder, files, verification


def _verified(v: Verification) -> Verified:
    schema = {d: SchemaLevel(version, filename) for d, (version, filename) in v.schema.items()}
    return Verified(v.checks, schema, dict(v.collections), v.problems)


def _manifest(
    repo: Repository, source: Path, parent: Manifest | None, files: list[FileEntry], cap: Capture,
    builder: _Builder, tags: Sequence[str], message: str, verification: Verification,
) -> Manifest:
    return Manifest(
        id=new_snapshot_id(),
        parent=parent.id if parent else None,
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
            objects_new=builder.writer.objects_uploaded + builder.tables_uploaded,
        ),
        verified=_verified(verification),
        format_version=builder.format_version,
    )


def create_snapshot(
    repo: Repository,
    source: str | os.PathLike[str],
    *,
    tags: Sequence[str] = (),
    message: str = "",
    includes: Sequence[str | os.PathLike[str]] = (),
    include_orphans: bool = False,
    parent: str | None = None,
    level: int | None = None,
    delta: bool = True,
    tmp_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    pack_size: int = DEFAULT_PACK_SIZE,
    wait: float | None = None,
    allow_inconsistent: bool = False,
    format_version: int = FORMAT_VERSION,
    reporter: Reporter | None = None,
) -> CreateResult:
    """Snapshot the Chroma persist dir ``source`` into ``repo``; see the module docstring.

    The create holds a shared repository lock throughout (a prune cannot run meanwhile);
    ``wait``: seconds to wait for a prune that holds the exclusive lock.

    The codec is the repository's; ``level`` overrides its full-frame level for this create.
    With ``use_cache`` the consistent copy is kept in the base cache (``cache_dir``, default
    $CHROMA_SNAPSHOT_CACHE or ~/.cache/chroma-snapshot) so the next create deltas against it
    without reading the repository. ``format_version`` 1 writes what chroma-snapshot 0.1 wrote
    (chunk lists inline; for compatibility tests)."""
    if format_version not in READABLE_VERSIONS:
        raise UsageError(f"cannot write manifest format {format_version}")
    started = time.monotonic()
    reporter = reporter or NullReporter()
    level = repo.config.level if level is None else level
    source = Path(source)
    check_arguments(source, tags=tags, message=message, level=level, codec=repo.config.codec)
    source = source.expanduser().absolute()
    cache = BaseCache(Path(cache_dir) if cache_dir else default_root(), repo.config.id, source) \
        if use_cache else None
    with repo.measure() as moved, repo.lock(SHARED, "create", wait=wait or 0.0) as lock:
        parent_m = pick_parent(repo, source, parent)
        staging = _staging(cache, tmp_dir)
        try:
            job = _Job(repo, source, staging, parent_m, level, delta, reporter, pack_size, cache,
                       includes, include_orphans, allow_inconsistent)
            cap, builder, stored, verification = job.run()
            builder.format_version = format_version
            files, needed = builder.entries(stored)
            manifest = _manifest(repo, source, parent_m, files, cap, builder, tags, message, verification)
            _commit(repo, manifest, lock, needed)
            _after_commit(cache, staging, manifest, cap, builder.tables, reporter)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            reporter.done()
    return CreateResult(
        id=manifest.id,
        parent=manifest.parent,
        files=len(files),
        bytes_total=manifest.totals.bytes,
        bytes_uploaded=moved.bytes_up,
        objects_uploaded=builder.writer.objects_uploaded + builder.tables_uploaded,
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
        requests=moved.requests,
        checks=verification.checks,
        inconsistencies=verification.problems,
    )
