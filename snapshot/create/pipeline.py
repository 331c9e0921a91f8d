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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from snapshot.chroma.capture import Capture, capture, check_persist_dir, segments_moved, with_counts
from snapshot.chroma.consistency import Verification, verify_dir
from snapshot.chroma.schema import chromadb_version
from snapshot.create.builder import Builder, StoredFile
from snapshot.create.options import CreateOptions, check_text
from snapshot.errors import InconsistentSourceError, LockedError, SnapshotError, SourceError
from snapshot.format.condemned import DEFAULT_DELETE_AFTER
from snapshot.format.ids import new_snapshot_id, utc_now_iso
from snapshot.format.manifest import (
    FORMAT_VERSION,
    FileEntry,
    Manifest,
    SchemaLevel,
    Totals,
    Verified,
)
from snapshot.repo.basecache import BaseCache, default_root
from snapshot.repo.locks import SHARED, RepositoryLock
from snapshot.repo.repository import Measurement, Repository
from snapshot.util import pausepoints
from snapshot.util.options import from_keywords
from snapshot.util.progress import NullReporter, Reporter
from snapshot.util.tempdirs import TEMP_PREFIX, owned_dir, sweep
from snapshot.version import __version__


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
    #: The consistency checks the capture passed (snapshot/chroma/consistency.py), and what failed
    #: when --allow-inconsistent let an inconsistent directory through.
    checks: tuple[str, ...] = ()
    inconsistencies: tuple[str, ...] = ()


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


def check_arguments(source: Path, options: CreateOptions, codec: str | None) -> None:
    """Everything about a create that can be refused before the repository is touched, besides
    what building ``options`` checked (the CLI calls this before a create initialises a new
    repository; ``codec``: the repository's, or the one it will be created with)."""
    options.check_level(codec)
    check_text("source path", str(source))
    check_persist_dir(source.expanduser().absolute())


def _staging(cache: BaseCache | None, tmp_dir: str | os.PathLike[str] | None) -> Path:
    if cache is not None and tmp_dir is None:
        return cache.new_staging()
    parent = Path(tmp_dir) if tmp_dir else Path(tempfile.gettempdir())
    sweep(parent, TEMP_PREFIX)  # what killed creates and diffs left behind
    return owned_dir(parent, TEMP_PREFIX)


#: A create younger than this commits without reading the condemned records again: a pack
#: condemned while it ran cannot be overdue unless a prune runs with a bound under twice this
#: (``--delete-after`` that short is for repositories no create runs against, like 0).
RECHECK_AFTER = 60.0


def _check_condemned(repo: Repository, needed: set[str], started: float, seen: frozenset[str]) -> None:
    """Refuse to commit a root that needs an object condemned for half the bound or longer:
    a prune may delete it before this root is listed (snapshot/format/condemned.py). A younger
    condemnation is harmless: this root, once committed, rescues the object. ``started``:
    when the create read the records first (monotonic); ``seen``: what was condemned then (a
    pack this create wrote again with the very same bytes is one of them)."""
    if time.monotonic() - started < RECHECK_AFTER and not needed & seen:
        return
    condemned = repo.condemned()
    if not condemned.since:
        return
    least = condemned.min_delete_after
    bound = DEFAULT_DELETE_AFTER if least is None else min(DEFAULT_DELETE_AFTER, least)  # 0 is a bound
    overdue = condemned.overdue(needed, now=repo.now(), age=bound / 2)
    if overdue:
        raise LockedError(
            f"{len(overdue)} object(s) this snapshot needs were condemned by a prune that ran while "
            f"it was being made (e.g. {sorted(overdue)[0]}); nothing was committed: run create again"
        )


def _commit(repo: Repository, manifest: Manifest, lock: RepositoryLock, needed: set[str],
            started: float, condemned: frozenset[str]) -> None:
    """Make the snapshot durable, only once everything it references is known to be there and
    safe from the deletion protocol."""
    pausepoints.point("create.before-commit")
    lock.check()  # still holding our shared lock (an optimisation: correctness does not rest on it)
    if manifest.parent is not None and not repo.has_snapshot(manifest.parent):
        # A prune removed the parent while we worked: the frames we reused may be gone.
        raise SnapshotError(
            f"parent snapshot {manifest.parent} was removed during this create; run create again"
        )
    _check_condemned(repo, needed, started, condemned)
    missing = repo.missing_objects(needed)
    if missing:
        raise SnapshotError(
            f"{len(missing)} object(s) this snapshot needs vanished during create (e.g. "
            f"{sorted(missing)[0]}); nothing was committed, run create again"
        )
    pausepoints.point("create.checked")
    repo.save_manifest(manifest)


def _after_commit(
    cache: BaseCache | None, staging: Path, manifest: Manifest, cap: Capture, tables: dict[str, bytes],
    reporter: Reporter,
) -> None:
    """The snapshot is saved: nothing from here on may turn the outcome into a failure (an
    interrupt now would report "interrupted" for a snapshot that exists)."""
    try:
        pausepoints.point("create.after-commit")
        if cache is not None:
            cache.commit(staging, manifest.id, {sf.rel: sf.staged for sf in cap.files}, tables)
            pausepoints.point("create.cache-committed")
    except OSError as exc:  # only the next delta gets dearer
        reporter.warn(f"could not update the base cache: {exc}")
    except KeyboardInterrupt:
        reporter.warn(f"interrupted after snapshot {manifest.id} was saved; the base cache was not updated")


#: Reads in place that a writer may spoil before a create gives up.
IN_PLACE_ATTEMPTS = 3


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
    #: The full-frame level: the options' or the repository's.
    level: int
    options: CreateOptions
    reporter: Reporter
    cache: BaseCache | None
    #: Objects a prune condemned: never built on (their frames are stored anew).
    condemned: frozenset[str] = frozenset()

    def _capture(self) -> Capture:
        # Record counts come from the consistency checks (run beside packing), not from
        # counting while the source is locked.
        cap = capture(self.source, self.staging, includes=self.options.includes,
                      include_orphans=self.options.include_orphans, log=self.reporter.warn, counts=False,
                      in_place=self.options.in_place)
        pausepoints.point("create.captured")
        return cap

    def _pack(self, cap: Capture) -> tuple[Builder, list[StoredFile]]:
        builder = Builder(self.repo, self.parent, self.level, self.options.delta, self.reporter,
                          self.options.pack_size, self.cache, self.condemned)
        return builder, builder.pack_files(cap.files)

    def run(self) -> tuple[Capture, Builder, list[StoredFile], Verification]:
        """Read in place, the capture holds only if no segment file moved while it was read."""
        for attempt in range(1, IN_PLACE_ATTEMPTS + 1):
            result = self._run_once()
            if not segments_moved(result[0]):
                return result
            if attempt < IN_PLACE_ATTEMPTS:
                self.reporter.warn("a segment file changed while it was read in place; reading it again")
        raise SourceError(f"segment files of {self.source} changed during each of {IN_PLACE_ATTEMPTS} "
                          "reads in place (a writer kept changing them); run create again later, or "
                          "without --in-place")

    def _run_once(self) -> tuple[Capture, Builder, list[StoredFile], Verification]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify") as checker:
            cap = self._capture()
            pending = checker.submit(verify_dir, self.staging / "db", segments=cap.in_place)
            try:
                builder, files = self._pack(cap)
            finally:
                verification = pending.result()
        if not verification.ok:
            self.reporter.warn(f"the capture failed a consistency check ({verification.problems[0]}); "
                               "taking it again")
            cap = self._capture()
            verification = verify_dir(self.staging / "db", segments=cap.in_place)
            if verification.ok or self.options.allow_inconsistent:
                builder, files = self._pack(cap)
        if not verification.ok:
            if not self.options.allow_inconsistent:
                raise InconsistentSourceError(
                    f"{self.source} is not consistent: {verification.problems[0]}"
                    + (f" (and {len(verification.problems) - 1} more)" if len(verification.problems) > 1
                       else "") + "; --allow-inconsistent snapshots it anyway")
            self.reporter.warn(f"snapshotting an inconsistent directory: {'; '.join(verification.problems)}")
        cap = with_counts(cap, verification.collections, self.staging / "db")
        for orphan in cap.orphans:
            if not self.options.include_orphans:
                self.reporter.warn(f"segment folder {orphan} belongs to no collection: left out "
                                   "(--include-orphans keeps it)")
        return cap, builder, files, verification


def _verified(v: Verification) -> Verified:
    schema = {d: SchemaLevel(version, filename) for d, (version, filename) in v.schema.items()}
    return Verified(v.checks, schema, dict(v.collections), v.problems)


def _manifest(
    repo: Repository, source: Path, parent: Manifest | None, files: list[FileEntry], cap: Capture,
    builder: Builder, options: CreateOptions, verification: Verification,
) -> Manifest:
    return Manifest(
        id=new_snapshot_id(),
        parent=parent.id if parent else None,
        created_at=utc_now_iso(),
        tool_version=__version__,
        tool_chromadb_version=chromadb_version(),
        source_path=str(source),
        source_host=socket.gethostname(),
        tags=tuple(dict.fromkeys(options.tags)),
        message=options.message,
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
        format_version=FORMAT_VERSION,
    )


def create_snapshot(
    repo: Repository,
    source: str | os.PathLike[str],
    options: CreateOptions | None = None,
    *,
    reporter: Reporter | None = None,
    **keywords: Any,
) -> CreateResult:
    """Snapshot the Chroma persist dir ``source`` into ``repo``; see the module docstring and
    :class:`CreateOptions` (whose fields may be given as keywords instead of ``options``).

    The create holds a shared repository lock throughout (a prune cannot run meanwhile). The
    codec is the repository's; the options' ``level`` overrides its full-frame level."""
    opts = from_keywords(CreateOptions, options, keywords, "create_snapshot")
    started = time.monotonic()
    reporter = reporter or NullReporter()
    level = repo.config.level if opts.level is None else opts.level
    check_arguments(Path(source), replace(opts, level=level), repo.config.codec)
    source = Path(source).expanduser().absolute()
    cache = BaseCache(Path(opts.cache_dir) if opts.cache_dir else default_root(), repo.config.id, source) \
        if opts.use_cache and not opts.in_place else None
    with repo.measure() as moved, repo.lock(SHARED, "create", wait=opts.wait or 0.0) as lock:
        parent_m = pick_parent(repo, source, opts.parent)
        condemned = frozenset(repo.condemned().since)
        staging = _staging(cache, opts.tmp_dir)
        try:
            job = _Job(repo, source, staging, parent_m, level, opts, reporter, cache, condemned)
            cap, builder, stored, verification = job.run()
            files, needed = builder.entries(stored)
            manifest = _manifest(repo, source, parent_m, files, cap, builder, opts, verification)
            _commit(repo, manifest, lock, needed, started, condemned)
            _after_commit(cache, staging, manifest, cap, builder.tables, reporter)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            reporter.done()
    return _result(manifest, cap, builder, verification, moved, started)


def _result(manifest: Manifest, cap: Capture, builder: Builder, verification: Verification,
            moved: Measurement, started: float) -> CreateResult:
    return CreateResult(
        id=manifest.id,
        parent=manifest.parent,
        files=len(manifest.files),
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
