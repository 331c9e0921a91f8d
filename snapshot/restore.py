"""Restoring a snapshot: verified, atomic, and re-hydrating an older copy in place of downloads.

1. Validate the manifest (paths are untrusted) and the target.
2. Index the target's current files: a chunk whose hash matches the manifest is copied from
   there instead of being read from the repository.
3. Build the result in a fresh temporary directory beside the target, checking every chunk
   hash and every file hash.
4. Only when every hash matched (Chroma opening a partial dir silently rebuilds an empty index)
   open a throwaway copy with chromadb in a child process: counts, sampled embeddings, a query.
5. Swap it into place. On any failure the target is exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from snapshot import hooks
from snapshot.basecache import default_root
from snapshot.chroma_check import ChromaChecker
from snapshot.chroma_db import open_readonly, schema_levels
from snapshot.chunking import ChunkedFile, is_regular_file, read_verified
from snapshot.consistency import Verification, known_migrations, unknown_schema, verify_dir
from snapshot.create import chromadb_version
from snapshot.errors import ChromaCheckError, IntegrityError, SnapshotError, UsageError
from snapshot.fsync import fsync_path, sync_filesystem
from snapshot.hashing import FileHasher
from snapshot.manifest import Chunk, FileEntry, Manifest, check_rel_path
from snapshot.packs import ChunkReader
from snapshot.progress import NullReporter, Reporter
from snapshot.repository import Repository
from snapshot.swap import recover, swap_into_place, sweep_beside, temp_beside
from snapshot.target import check_restore_target

_WINDOW = 8


@dataclass(frozen=True)
class LocalChunk:
    path: Path
    offset: int
    size: int


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


@dataclass(frozen=True)
class RestorePlan:
    """A restore decided: the snapshot, the target, and where each chunk comes from (reused
    from the target when ``local`` holds its hash, else read from the repository)."""

    manifest: Manifest
    target: Path
    local: dict[str, LocalChunk]
    summary: RestoreSummary


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


def schema_warning(m: Manifest, schema: dict[str, tuple[int, str]],
                   knows: Callable[[str], bool] | None) -> str | None:
    """A warning when the installed chromadb cannot open the restored DB: its schema holds a
    migration the installed chromadb does not know (compared by schema, not package version)."""
    if knows is None:
        return "chromadb is not installed here: cannot tell whether it can open this database"
    unknown = unknown_schema(schema, knows)
    if not unknown:
        return None
    made = f" (made with chromadb {m.chromadb_version})" if m.chromadb_version else ""
    return (f"snapshot {m.id}{made} has a database schema the installed chromadb "
            f"{chromadb_version() or '?'} does not know ({', '.join(unknown)}); it cannot open it: "
            "upgrade chromadb")


def check_consistency(built: Path, m: Manifest) -> tuple[Verification | None, list[str]]:
    """The capture's consistency checks again, on the restored directory (SQLite's
    quick_check excepted: the hashes already prove the file byte-identical to the copy that
    passed it). Raises IntegrityError if the result differs from what create established."""
    notes: list[str] = []
    if m.verified is None:
        notes.append(f"snapshot {m.id} was made without consistency checks (an older chroma-snapshot): "
                     "checked hashes only")
        return None, notes
    if m.verified.problems:
        notes.append(f"snapshot {m.id} was taken of an inconsistent directory (--allow-inconsistent): "
                     + "; ".join(m.verified.problems))
        return None, notes
    v = verify_dir(built, sqlite_check=False)
    if v.problems:
        raise IntegrityError(f"the restored directory fails a consistency check: {v.problems[0]}")
    recorded = {c.name: c.records for c in m.collections}
    if v.collections != m.verified.collections or v.collections != recorded:
        raise IntegrityError(f"the restored directory holds {v.collections}, the snapshot recorded "
                             f"{recorded}")
    return v, notes


def _inside(root: Path, rel: str) -> Path | None:
    """``root/rel`` if it is a regular file reached without any symlink, else None."""
    p = root
    for part in rel.split("/"):
        p = p / part
        if p.is_symlink():
            return None
    return p if is_regular_file(p) else None


def index_local(target: Path, m: Manifest) -> dict[str, LocalChunk]:
    """hash -> where that chunk already lies in the target (same paths as the manifest)."""
    found: dict[str, LocalChunk] = {}
    if not target.is_dir() or target.is_symlink():
        return found
    # Final chunk contents, and the intermediate contents of delta chains: a target holding
    # the parent's version of a chunk needs only the newer delta frames.
    wanted = {fr.hash for f in m.files for c in f.chunks for fr in c.frames}
    for f in m.files:
        p = _inside(target, f.path)
        if p is None:
            continue
        try:
            for raw in ChunkedFile(p, m.chunk_size):
                if raw.hash in wanted:
                    found.setdefault(raw.hash, LocalChunk(p, raw.offset, len(raw.data)))
        except OSError:
            continue
    return found


def first_missing_frame(chunk: Chunk, local: dict[str, LocalChunk]) -> int:
    """Index of the first frame to read: past the deepest link of the chain the target holds."""
    for i in range(len(chunk.frames) - 2, -1, -1):
        if chunk.frames[i].hash in local:
            return i + 1
    return 0


def plan_restore(m: Manifest, target: Path, local: dict[str, LocalChunk]) -> RestorePlan:
    """Pure: how much of ``m`` the target already holds, and what must be read."""
    cl = bl = cr = br = down = 0
    for f in m.files:
        for c in f.chunks:
            if c.hash in local:
                cl, bl = cl + 1, bl + c.size
            else:
                cr, br = cr + 1, br + c.size
                down += sum(fr.length for fr in c.frames[first_missing_frame(c, local) :])
    summary = RestoreSummary(m.id, len(m.files), sum(f.size for f in m.files), cl, bl, cr, br, down)
    return RestorePlan(m, target, local, summary)


def target_path(target: str | os.PathLike[str]) -> Path:
    """The absolute target path; an empty string is refused rather than meaning "here"."""
    raw = os.fspath(target)
    if not raw.strip():
        raise UsageError("empty restore target: name the directory to restore into")
    return Path(raw).expanduser().absolute()


def prepare_restore(repo: Repository, ref: str, target: str | os.PathLike[str]) -> RestorePlan:
    """Read and validate the snapshot, index what the target already holds, and plan."""
    path = target_path(target)
    m = repo.get(ref)
    for f in m.files:
        check_rel_path(f.path)
    return plan_restore(m, path, index_local(path, m))


class _Fetcher:
    def __init__(self, reader: ChunkReader, local: dict[str, LocalChunk]) -> None:
        self.reader = reader
        self.local = local
        self.reused = self.fetched = self.bytes_reused = 0

    def _read_local(self, h: str) -> bytes | None:
        lc = self.local.get(h)
        return None if lc is None else read_verified(lc.path, lc.offset, lc.size, h)

    def get(self, chunk: Chunk) -> tuple[bytes, bool]:
        data = self._read_local(chunk.hash)
        if data is not None:
            return data, True
        start = first_missing_frame(chunk, self.local)
        base = self._read_local(chunk.frames[start - 1].hash) if start else None
        if base is None:
            start = 0  # the local base vanished or changed since it was indexed
        for frame in chunk.frames[start:]:
            base = self.reader.decode(frame, base)  # checks every frame's hash, the last is the chunk's
        assert base is not None
        return base, False


def _write_file(
    root: Path, f: FileEntry, fetcher: _Fetcher, pool: ThreadPoolExecutor | None, reporter: Reporter
) -> None:
    dest = root / f.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(dest, flags, 0o600)
    hasher = FileHasher()
    written = 0
    with os.fdopen(fd, "wb") as fh:
        pending: deque[tuple[Chunk, Future[tuple[bytes, bool]]]] = deque()

        def drain_one() -> None:
            nonlocal written
            chunk, fut = pending.popleft()
            try:
                data, was_local = fut.result()
            except SnapshotError as exc:
                raise type(exc)(f"{f.path}: {exc}") from exc
            if len(data) != chunk.size:
                raise IntegrityError(f"{f.path}: chunk at {written} has the wrong size")
            if was_local:
                fetcher.reused += 1
                fetcher.bytes_reused += len(data)
            else:
                fetcher.fetched += 1
            fh.write(data)
            hasher.update(data)
            written += len(data)
            reporter.advance(len(data))

        own_pool = pool is None
        pool = pool or ThreadPoolExecutor(max_workers=4, thread_name_prefix="fetch")
        for chunk in f.chunks:
            pending.append((chunk, pool.submit(fetcher.get, chunk)))
            if len(pending) > _WINDOW:
                drain_one()
        while pending:
            drain_one()
        if own_pool:
            pool.shutdown()
        fh.flush()
    if written != f.size or hasher.hexdigest() != f.hash:
        raise IntegrityError(f"{f.path}: restored file does not match its hash in the manifest")
    os.chmod(dest, f.mode & 0o777 or 0o644)


def _sync_tree(root: Path, m: Manifest) -> None:
    """Make every restored file and folder durable before the swap makes them the target: one
    syncfs where the OS has it, else an fsync per file and folder in threads (run beside the
    consistency checks)."""
    if sync_filesystem(root):
        return
    dirs = {root} | {(root / f.path).parent for f in m.files}
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync") as pool:
        list(pool.map(fsync_path, [root / f.path for f in m.files]))
        list(pool.map(fsync_path, sorted(dirs, key=lambda d: -len(d.parts))))


def _materialise(
    repo: Repository, m: Manifest, root: Path, local: dict[str, LocalChunk], reporter: Reporter
) -> _Fetcher:
    fetcher = _Fetcher(ChunkReader(repo), local)
    reporter.phase("restore", sum(f.size for f in m.files))
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="fetch") as pool:
        for f in m.files:
            _write_file(root, f, fetcher, pool, reporter)
            hooks.point("restore.file-written")
    return fetcher


def repair(root: Path, m: Manifest, fetcher: _Fetcher, reporter: Reporter) -> int:
    """Bring ``root`` back to exactly the snapshot after chromadb opened it: files it added
    are removed, chunks it rewrote are restored, and every file hash is verified again.
    Returns how many chunks had to be restored."""
    wanted = {f.path: f for f in m.files}
    parents = {"/".join(p.split("/")[:k]) for p in wanted for k in range(1, p.count("/") + 1)}
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rel not in wanted and rel not in parents:
                if full.is_dir() and not full.is_symlink():
                    shutil.rmtree(full)
                else:
                    full.unlink()
    fixed = 0
    for f in m.files:
        dest = root / f.path
        if not dest.is_file() or dest.is_symlink():
            dest.unlink(missing_ok=True)
            _write_file(root, f, fetcher, None, reporter)
            fsync_path(dest)
            fixed += len(f.chunks)
            continue
        fixed += _repair_file(dest, f, fetcher)
    # Removals durable before the swap: a journal chromadb left behind that came back after a
    # crash would be rolled into the restored database. (File contents were synced already.)
    for d in sorted({root} | {(root / f.path).parent for f in m.files}, key=lambda d: -len(d.parts)):
        fsync_path(d)
    return fixed


def _repair_file(dest: Path, f: FileEntry, fetcher: _Fetcher) -> int:
    fixed = 0
    hasher = FileHasher()
    with open(dest, "r+b") as fh:
        offset = 0
        for chunk in f.chunks:
            data = read_verified(dest, offset, chunk.size, chunk.hash)
            if data is None:
                data, _ = fetcher.get(chunk)
                fh.seek(offset)
                fh.write(data)
                fixed += 1
            hasher.update(data)
            offset += chunk.size
        grown = os.fstat(fh.fileno()).st_size != f.size
        fh.truncate(f.size)
        fh.flush()
        if fixed or grown:
            os.fsync(fh.fileno())
    if hasher.hexdigest() != f.hash:
        raise IntegrityError(f"{f.path}: could not restore the file after Chroma opened it")
    os.chmod(dest, f.mode & 0o777 or 0o644)
    return fixed


def _dir_mode(target: Path) -> int:
    """Keep the replaced directory's mode; a new one gets the usual umask-derived mode."""
    if target.is_dir():
        return target.stat().st_mode & 0o7777
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


def read_schema(db: Path) -> dict[str, tuple[int, str]]:
    conn = open_readonly(db, immutable=True)
    try:
        return schema_levels(conn)
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


def _include_names(m: Manifest) -> set[str]:
    return {f.path.split("/", 1)[0] for f in m.files if f.role == "include"}


def restore_snapshot(
    repo: Repository,
    ref: str,
    target: str | os.PathLike[str],
    *,
    force: bool = False,
    chroma_check: bool = False,
    strict: bool = False,
    reporter: Reporter | None = None,
) -> RestoreResult:
    """Plan a restore of snapshot ``ref`` into ``target`` and execute it."""
    target = target_path(target)
    recovered = recover(target)  # an earlier restore killed mid-swap is finished or rolled back
    plan = prepare_restore(repo, ref, target)
    result = execute_restore(repo, plan, force=force, chroma_check=chroma_check, strict=strict,
                             reporter=reporter)
    return result if recovered is None else replace(result, warnings=(recovered, *result.warnings))


def _check(built: Path, m: Manifest, strict: bool, reporter: Reporter) -> tuple[list[str], tuple[str, ...]]:
    """Consistency and schema of the built directory: (warnings, checks that passed)."""
    verification, warnings = check_consistency(built, m)
    db = built / "chroma.sqlite3"
    schema = verification.schema if verification is not None else (read_schema(db) if db.is_file() else {})
    w = schema_warning(m, schema, known_migrations()) if schema else None
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
    *,
    force: bool = False,
    chroma_check: bool = False,
    strict: bool = False,
    reporter: Reporter | None = None,
) -> RestoreResult:
    """Build ``plan``'s snapshot beside its target, verify it, and swap it in atomically.

    Every chunk and file hash is checked, then the capture's consistency checks; with
    ``chroma_check`` chromadb also opens it (in batches of collections, child processes)."""
    started = time.monotonic()
    reporter = reporter or NullReporter()
    m, target = plan.manifest, plan.target
    protected = [(default_root(), "the base cache")]
    if repo.local_root is not None:
        protected.append((repo.local_root, "the repository"))
    check_restore_target(target, force=force, protected=protected, allowed_names=_include_names(m))
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_beside(target)
    checked: dict[str, int] = {}
    repaired = 0
    with repo.measure() as moved:
        built = temp_beside(target, "restore")
        checker = ChromaChecker(built) if chroma_check and m.file("chroma.sqlite3") is not None else None
        try:
            fetcher = _materialise(repo, m, built, plan.local, reporter)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync") as bg:
                synced = bg.submit(_sync_tree, built, m)
                warnings, passed = _check(built, m, strict, reporter)
                if checker is not None:
                    checked = checker.run(m)
                synced.result()
            if checker is not None:
                repaired = repair(built, m, fetcher, reporter)  # fsyncs what it rewrites
            hooks.point("restore.verified")
            os.chmod(built, _dir_mode(target))
            swap_into_place(built, target)
        except BaseException:
            shutil.rmtree(built, ignore_errors=True)
            raise
        finally:
            if checker is not None:
                checker.close()
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
        warnings=tuple(warnings),
        seconds=round(time.monotonic() - started, 3),
        requests=moved.requests,
        checks=passed + (("chromadb",) if checker is not None else ()),
        chroma_batches=checker.batches if checker is not None else 0,
    )
