"""Restoring a snapshot: verified, atomic, and re-hydrating an older copy in place of downloads.

1. Validate the manifest (paths are untrusted) and the target.
2. Index the target's current files, and what restores into it that were killed left beside
   it: a chunk whose hash matches the manifest is copied from there instead of being read from
   the repository (snapshot/restore/local.py).
3. Build the result in a fresh staging directory beside the target, checking every chunk
   hash and every file hash.
4. Only when every hash matched (Chroma opening a partial dir silently rebuilds an empty index)
   open a throwaway copy with chromadb in a child process: counts, sampled embeddings, a query.
5. Swap it into place. On any failure the target is exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from snapshot.chroma.consistency import IndexIds, SqliteSide
from snapshot.chroma.persist_dir import check_restore_target
from snapshot.chroma.restore_rules import (
    EarlyChecks,
    include_names,
    installed_schema_warning,
    read_schema,
    recheck_consistency,
    recorded_schema,
    restored_schema_warning,
    write_order,
)
from snapshot.chroma.schema import DB_NAME
from snapshot.chroma.trial_open import ChromaChecker
from snapshot.errors import ArchivedError, ChromaCheckError, UsageError
from snapshot.format.manifest import Chunk, Manifest, check_rel_path
from snapshot.repo.archive import require_snapshot_readable
from snapshot.repo.basecache import default_root
from snapshot.repo.links import LinkReport, watch
from snapshot.repo.prediction import Prediction
from snapshot.repo.repository import Repository
from snapshot.restore.local import Local, Staged, claim_leftovers, index_local_file, leftovers, staging_dir
from snapshot.restore.materialise import ReadEstimate, materialise, sync_tree
from snapshot.restore.options import RestoreOptions
from snapshot.restore.predict import predict_reads
from snapshot.restore.repair import keep_copies, repair
from snapshot.restore.swap import recover, swap_into_place, sweep_beside, temp_beside
from snapshot.util import pausepoints
from snapshot.util.options import from_keywords
from snapshot.util.progress import NullReporter, Reporter


@dataclass(frozen=True)
class RestoreSummary:
    """What a restore will reuse from the target and read from the repository."""

    snapshot: str
    files: int
    bytes_total: int
    chunks_local: int
    bytes_local: int
    chunks_remote: int
    bytes_remote: int
    #: Compressed bytes of the frames to read (less when the target holds a delta base).
    bytes_to_download: int
    #: What the leftovers of killed restores into the target hold (not counted as local).
    chunks_resumed: int = 0
    bytes_resumed: int = 0
    #: The requests and bytes the restore will take (see snapshot/restore/predict.py).
    predicted: Prediction | None = None


@dataclass(frozen=True)
class RestorePlan:
    """A restore decided: which snapshot goes where. Each file's chunks come from the target
    when it holds them, else from the repository (decided file by file as it is written);
    ``summary`` (a dry run's survey) says how much that is."""

    manifest: Manifest
    target: Path
    summary: RestoreSummary | None = None


@dataclass(frozen=True)
class RestoreResult:
    id: str
    target: str
    files: int
    bytes_total: int
    bytes_reused: int
    bytes_downloaded: int
    chunks_reused: int
    chunks_fetched: int
    chroma_checked: dict[str, int]
    #: Chunks chromadb rewrote while the check had the directory open, put back afterwards.
    chunks_repaired: int
    warnings: tuple[str, ...]
    seconds: float
    requests: dict[str, int] = field(default_factory=dict)
    #: What this restore proved before the swap: "hashes", the capture's consistency checks
    #: again, and "chromadb" with --chroma-check (run in ``chroma_batches`` child processes).
    checks: tuple[str, ...] = ()
    chroma_batches: int = 0
    #: Taken from what restores into the same target that were killed had written, verified
    #: again (not counted in ``bytes_reused``, which is what the target itself held).
    chunks_resumed: int = 0
    bytes_resumed: int = 0
    #: With ``RestoreOptions.predict``: what was predicted before the first file was written.
    predicted: Prediction | None = None
    #: Every byte read from the repository (``bytes_downloaded`` and the chunk tables).
    bytes_down: int = 0
    #: From a remote store: the reads in flight at most and at the end, the latency and rates
    #: measured (snapshot/storage/link.py); None from a folder.
    link: LinkReport | None = None


def summarise(m: Manifest, files: Iterable[tuple[Sequence[Chunk], Local]], *,
              remote: bool = False) -> RestoreSummary:
    """Pure: how much of ``m`` the target already holds (per file, in the order a restore
    writes them: its chunks and what the target holds of them), and what must be read (from
    a ``remote`` store: the ranges of packs the frames are read with)."""
    cl = bl = cr = br = cs = bs = 0
    reads = ReadEstimate(remote)
    for chunks, local in files:
        for c in chunks:
            lc = local.get(c.hash)
            if lc is None:
                cr, br = cr + 1, br + c.size
            elif lc.staged:
                cs, bs = cs + 1, bs + c.size
            else:
                cl, bl = cl + 1, bl + c.size
        reads.add(chunks, local)
    return RestoreSummary(m.id, len(m.files), sum(f.size for f in m.files), cl, bl, cr, br, reads.total(),
                          cs, bs)


def target_path(target: str | os.PathLike[str]) -> Path:
    """The absolute target path; an empty string is refused rather than meaning "here"."""
    raw = os.fspath(target)
    if not raw.strip():
        raise UsageError("empty restore target: name the directory to restore into")
    return Path(raw).expanduser().absolute()


def prepare_restore(
    repo: Repository, ref: str, target: str | os.PathLike[str], *, survey: bool = True
) -> RestorePlan:
    """Read and validate the snapshot; with ``survey``, also read each file's chunk table
    and index what the target and the leftovers of killed restores into it hold of it (one
    file at a time) to say what a restore would reuse and download."""
    path = target_path(target)
    m = repo.get(ref)
    for f in m.files:
        check_rel_path(f.path)
    if not survey:
        return RestorePlan(m, path)

    staged = Staged(leftovers(path))  # looked at, not claimed: a dry run changes nothing
    tables = list(repo.tables(m, write_order(m)))

    def per_file() -> Iterator[tuple[Sequence[Chunk], Local]]:
        for f, chunks in tables:
            yield chunks, {**index_local_file(path, f, chunks, m.chunk_size),
                           **staged.index(f, chunks, m.chunk_size)[0]}

    summary = summarise(m, per_file(), remote=repo.local_root is None)
    predicted = predict_reads(repo, path, staged, m.chunk_size, tables)
    return RestorePlan(m, path, replace(summary, predicted=predicted))


def target_mode(target: Path) -> int:
    """Keep the replaced directory's mode; a new one gets the usual umask-derived mode."""
    if target.is_dir():
        return target.stat().st_mode & 0o7777
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


def restore_snapshot(
    repo: Repository,
    ref: str,
    target: str | os.PathLike[str],
    options: RestoreOptions | None = None,
    *,
    reporter: Reporter | None = None,
    on_commit: Callable[[], None] | None = None,
    **keywords: Any,
) -> RestoreResult:
    """Plan a restore of snapshot ``ref`` into ``target`` and execute it (``on_commit``: see
    :func:`execute_restore`; :class:`RestoreOptions`' fields may be given as keywords instead)."""
    opts = from_keywords(RestoreOptions, options, keywords, "restore_snapshot")
    target = target_path(target)
    recovered = recover(target)  # an earlier restore killed mid-swap is finished or rolled back
    m = repo.get(ref)
    what = f"restoring snapshot {m.id}"
    try:
        if opts.request_restore is not None:
            require_snapshot_readable(repo, m, what, opts.request_restore)
        plan = prepare_restore(repo, ref, target, survey=False)
        result = execute_restore(repo, plan, opts, reporter=reporter, on_commit=on_commit)
    except ArchivedError:  # say how much is archived, not only the first pack met
        require_snapshot_readable(repo, m, what)
        raise
    return result if recovered is None else replace(result, warnings=(recovered, *result.warnings))


def _check_built(built: Path, m: Manifest, strict: bool, reporter: Reporter, side: SqliteSide | None,
                 ids: Mapping[str, IndexIds | str | None], recorded_warning: str | None,
                 ) -> tuple[list[str], tuple[str, ...]]:
    """Consistency and schema of the built directory: (warnings, checks that passed).
    ``recorded_warning``: the schema warning for the recorded schema, worked out while the
    files were written (it reads the installed chromadb's files)."""
    verification, warnings = recheck_consistency(built, m, side, ids)
    w = restored_schema_warning(built, m, verification, recorded_warning)
    if w is not None:
        if strict:
            raise ChromaCheckError(w)
        warnings.append(w)
    for note in warnings:
        reporter.warn(note)
    return warnings, ("hashes", *(verification.checks if verification is not None else ()))


def execute_restore(
    repo: Repository,
    plan: RestorePlan,
    options: RestoreOptions | None = None,
    *,
    reporter: Reporter | None = None,
    on_commit: Callable[[], None] | None = None,
    **keywords: Any,
) -> RestoreResult:
    """Build ``plan``'s snapshot beside its target, verify it, and swap it in atomically.

    Every chunk and file hash is checked, then the capture's consistency checks; with
    ``chroma_check`` chromadb also opens it (in batches of collections, child processes).
    ``on_commit`` is called the moment the new data stands at the target: from then on the
    restore has succeeded, whatever happens before this returns."""
    opts = from_keywords(RestoreOptions, options, keywords, "execute_restore")
    started = time.monotonic()
    reporter = reporter or NullReporter()
    m, target = plan.manifest, plan.target
    protected = [(default_root(), "the base cache")]
    if repo.local_root is not None:
        protected.append((repo.local_root, "the repository"))
    leftovers = check_restore_target(target, force=opts.force, protected=protected,
                                     allowed_names=include_names(m), files={f.path for f in m.files})
    dropped = [f"replacing {target} drops segment folder {name}: no collection of the snapshot or of the "
               f"target's {DB_NAME} uses it (left behind by a deleted collection)" for name in leftovers]
    for note in dropped:
        reporter.warn(note)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = claim_leftovers(target)  # before the sweep, which would remove them
    sweep_beside(target)
    checked: dict[str, int] = {}
    predicted: Prediction | None = None
    repaired = 0
    kept: Path | None = None
    link = watch(repo, "down")
    with repo.measure() as moved:
        built = staging_dir(target, m.id)
        checker = ChromaChecker(built) if opts.chroma_check and m.file(DB_NAME) is not None else None
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="check") as side_pool:
                schema_job = side_pool.submit(installed_schema_warning, m, recorded_schema(m))
                early = EarlyChecks(built, m, side_pool)
                tables = None
                if opts.predict:  # read before the first file, once: materialise takes them
                    tables = list(repo.tables(m, write_order(m)))
                    predicted = predict_reads(repo, target, staged, m.chunk_size, tables)
                fetcher = materialise(repo, m, built, target, reporter, early.written, write_order(m), staged,
                                      tables)
                side, ids = early.results()
                recorded_warning = schema_job.result()
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync") as bg:
                synced = bg.submit(sync_tree, built, m)
                warnings, passed = _check_built(built, m, opts.strict, reporter, side, ids, recorded_warning)
                if checker is not None:
                    # what chromadb rewrites is put back from a local copy, not read again
                    kept = temp_beside(target, "restore")
                    keep_copies(built, m, kept, side)
                    # the DB's schema says what a failure to open it means
                    checked = checker.run(m, recorded_schema(m) or read_schema(built / DB_NAME))
                synced.result()
            if checker is not None:
                repaired = repair(repo, built, m, fetcher, reporter, kept)  # fsyncs what it rewrites
            pausepoints.point("restore.verified")
            os.chmod(built, target_mode(target))
            swap_into_place(built, target, on_commit or (lambda: None))
            pausepoints.point("restore.swapped")
        except BaseException:
            shutil.rmtree(built, ignore_errors=True)
            raise
        finally:
            staged.remove()
            if checker is not None:
                checker.close()
            if kept is not None:
                shutil.rmtree(kept, ignore_errors=True)
            reporter.done()
    return RestoreResult(
        id=m.id,
        target=str(target),
        files=len(m.files),
        bytes_total=sum(f.size for f in m.files),
        bytes_reused=fetcher.bytes_reused,
        bytes_downloaded=fetcher.reader.bytes_fetched,
        chunks_reused=fetcher.reused,
        chunks_fetched=fetcher.fetched,
        chroma_checked=checked,
        chunks_repaired=repaired,
        warnings=(*dropped, *warnings),
        seconds=round(time.monotonic() - started, 3),
        requests=moved.requests,
        checks=passed + (("chromadb",) if checker is not None else ()),
        chroma_batches=checker.batches if checker is not None else 0,
        chunks_resumed=fetcher.resumed,
        bytes_resumed=fetcher.bytes_resumed,
        predicted=predicted,
        bytes_down=moved.bytes_down,
        link=link.report(),
    )
