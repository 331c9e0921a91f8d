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
leaves unreferenced packs (collected by prune), never a half-snapshot. Each pack uploaded is
recorded in a local resume journal (snapshot/repo/journal.py), so that the next create of the
same source takes the chunks a killed one already uploaded from those packs.
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
from snapshot.create.predict import Preread, RepoFacts, choose_parent, predict_packing
from snapshot.errors import InconsistentSourceError, SnapshotError, SourceError
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
from snapshot.repo.commit import RECHECK_AFTER, check_condemned, check_present
from snapshot.repo.journal import NOTHING, Journal, Resume
from snapshot.repo.links import LinkReport, watch
from snapshot.repo.locks import SHARED, RepositoryLock
from snapshot.repo.prediction import Prediction
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
    #: Chunks (and their stored bytes) taken from packs that an interrupted create of this source
    #: had uploaded, instead of uploading them again.
    chunks_resumed: int = 0
    bytes_resumed: int = 0
    #: With ``CreateOptions.predict``: what was predicted once the source was captured.
    predicted: Prediction | None = None
    #: To a remote store: the uploads in flight at most and at the end, the latency and rates
    #: measured (snapshot/storage/link.py); None to a folder.
    link: LinkReport | None = None


def pick_parent(repo: Repository, source: Path, ref: str | None) -> Manifest | None:
    """The explicit parent, else the newest snapshot of the same host and path, else the
    newest snapshot of any source (dedup still helps), else None."""
    return choose_parent(repo, source, ref, repo.snapshot_ids())[0]


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
    check_condemned(repo, needed, started, condemned, command="create", recheck_after=RECHECK_AFTER)
    check_present(repo, needed, command="create")
    pausepoints.point("create.checked")
    repo.save_manifest(manifest)


def _after_commit(
    cache: BaseCache | None, staging: Path, manifest: Manifest, cap: Capture, tables: dict[str, bytes],
    reporter: Reporter, journal: Journal,
) -> None:
    """The snapshot is saved: nothing from here on may turn the outcome into a failure (an
    interrupt now would report "interrupted" for a snapshot that exists)."""
    try:
        pausepoints.point("create.after-commit")
        journal.discard()  # what it lists is referenced now, or was left unused
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
    #: Objects a prune condemned: never built on (their frames are stored anew), except the
    #: leftover packs ``resume`` offers (condemned recently: this root will rescue them).
    condemned: frozenset[str] = frozenset()
    resume: Resume = NOTHING
    journal: Journal | None = None
    #: With a prediction asked for: what the repository held (the prediction is made once the
    #: source is captured; the parent's chunk tables it reads are handed to the builder).
    facts: RepoFacts | None = None
    predicted: Prediction | None = None
    preread: Preread = field(default_factory=Preread)

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
                          self.options.pack_size, self.cache, self.condemned, self.resume, self.journal,
                          self.preread.tables, self.preread.bases)
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
                if self.facts is not None:
                    self.predicted, self.preread = predict_packing(
                        self.repo, self.source, self.options, cap, self.parent, self.facts, self.cache,
                        self.condemned)
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
            objects_new=(builder.writer.objects_uploaded + builder.tables_uploaded
                         + len(builder.packs_resumed)),
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
    cache_root = Path(opts.cache_dir) if opts.cache_dir else default_root()
    cache = BaseCache(cache_root, repo.config.id, source) if opts.use_cache and not opts.in_place else None
    journal = Journal(cache_root, repo.config.id, source, repo.config.codec)  # also with --no-cache
    link = watch(repo, "up")
    with repo.measure() as moved, repo.lock(SHARED, "create", wait=opts.wait or 0.0) as lock:
        ids = repo.snapshot_ids()
        parent_m, roots_read = choose_parent(repo, source, opts.parent, ids)
        records = repo.condemned()
        condemned = frozenset(records.since)
        facts = None
        if opts.predict:  # from what was read already: the records' sizes, other locks are not known
            facts = RepoFacts(len(ids), tuple(repo.root_size(m) for m in roots_read),
                              condemned=(0,) * len(records.records), journal=bool(journal.load()))
        resume = journal.resume(repo, records)
        staging = _staging(cache, opts.tmp_dir)
        try:
            job = _Job(repo, source, staging, parent_m, level, opts, reporter, cache, condemned, resume,
                       journal, facts)
            cap, builder, stored, verification = job.run()
            files, needed = builder.entries(stored)
            manifest = _manifest(repo, source, parent_m, files, cap, builder, opts, verification)
            _commit(repo, manifest, lock, needed, started, condemned)
            _after_commit(cache, staging, manifest, cap, builder.tables, reporter, journal)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            reporter.done()
    return replace(_result(manifest, cap, builder, verification, moved, started), predicted=job.predicted,
                   link=link.report())


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
        chunks_resumed=builder.chunks_resumed,
        bytes_resumed=builder.bytes_resumed,
    )
