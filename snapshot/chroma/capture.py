"""Reading a Chroma persist dir consistently, and the collection facts in its chroma.sqlite3.

A live persist dir cannot be copied file by file: Chroma rewrites chroma.sqlite3 and the HNSW
segment files in place. The capture here (measured to give good copies while a writer runs):

1. open chroma.sqlite3 read-only and hold a read transaction (a SHARED lock: no writer can
   commit while we hold it); read the collection facts inside it;
2. wait until the segment files are stable (size and mtime), copy them to a staging folder;
3. copy chroma.sqlite3 while that transaction is open: a plain copy with a rollback journal
   (the lock keeps writers off the file), SQLite's online backup API on that same connection in
   WAL mode; both keep every page at its offset (VACUUM INTO would not, defeating dedup);
4. re-check the segment files; end the transaction. If anything moved, start over (bounded).

Read in place (``in_place``), step 2 copies nothing: the segment files are read where they lie
by whatever reads the capture (the create's packing and consistency checks), and the same
re-check, of size and mtime against the stable state of step 2, runs again once they are done
(:func:`segments_moved`): a change anywhere in that longer window means the capture is taken
again. It needs no disk for a DB-sized copy (the staging folder holds only chroma.sqlite3), and writers
are held off only while chroma.sqlite3 is copied.

The user's database is never opened for writing.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from snapshot.chroma.schema import DB_NAME, REQUIRED_TABLES, open_readonly, read_collections, table_names
from snapshot.errors import NotFoundError, SourceError, UsageError, disk_full
from snapshot.format.manifest import CollectionInfo, check_rel_path

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

StatMap = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class StagedFile:
    """A file of the snapshot: its path in the snapshot and where its stable copy lies."""

    rel: str
    staged: Path
    mode: int
    role: str


@dataclass(frozen=True)
class Capture:
    files: tuple[StagedFile, ...]
    collections: tuple[CollectionInfo, ...]
    orphans: tuple[str, ...]
    skipped: tuple[str, ...]
    attempts: int
    #: The source, when its segment files are read in place (their StagedFile points there).
    in_place: Path | None = None
    #: In place: the segment folders and the stable state of their files (path, size, mtime).
    folders: tuple[Path, ...] = ()
    stable: tuple[tuple[str, int, int], ...] = ()


def segments_moved(cap: Capture) -> bool:
    """Whether a segment file read in place has changed (size, mtime), appeared or gone since
    the capture found them stable; always False for a staged copy."""
    if cap.in_place is None:
        return False
    stable = {p: (size, mtime) for p, size, mtime in cap.stable}
    now = _stat_map([Path(p) for p in stable])
    return now != stable or {str(f) for d in cap.folders for f in _walk_files(d)} != set(stable)


def with_counts(cap: Capture, counts: Mapping[str, int], staged_db: Path) -> Capture:
    """``cap`` with each collection's record count from ``counts`` (the consistency checks'),
    counting on the private copy for any collection they could not (a damaged capture)."""
    if any(c.name not in counts for c in cap.collections):
        conn = open_readonly(staged_db / DB_NAME, immutable=True)
        try:
            counts = {c.name: c.records for c in read_collections(conn)} | dict(counts)
        except sqlite3.DatabaseError:
            counts = dict(counts)
        finally:
            conn.close()
    collections = tuple(dataclasses.replace(c, records=counts.get(c.name, 0)) for c in cap.collections)
    return dataclasses.replace(cap, collections=collections)


def check_persist_dir(source: Path) -> Path:
    """The path of chroma.sqlite3, or a clear error saying why ``source`` is not usable."""
    if not source.exists():
        raise NotFoundError(f"source {source} does not exist")
    if not source.is_dir():
        raise SourceError(f"source {source} is not a directory")
    db = source / DB_NAME
    if not db.is_file():
        raise SourceError(f"{source} is not a Chroma persist dir: no {DB_NAME}")
    try:
        conn = open_readonly(db)
        try:
            names = table_names(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"{db} is not a readable SQLite database: {exc}") from exc
    missing = REQUIRED_TABLES - names
    if missing:
        raise SourceError(
            f"{source} is not a Chroma persist dir: {DB_NAME} lacks Chroma's tables "
            f"({', '.join(sorted(missing))})"
        )
    return db


def _walk_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


def _stat_map(paths: Sequence[Path]) -> StatMap:
    out: StatMap = {}
    for p in paths:
        try:
            st = p.stat()
        except FileNotFoundError:
            out[str(p)] = (-1, -1)
            continue
        out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def _wait_stable(folders: Sequence[Path], settle: float, timeout: float) -> tuple[list[Path], StatMap]:
    deadline = time.monotonic() + timeout
    files = [f for d in folders for f in _walk_files(d)]
    before = _stat_map(files)
    while True:
        time.sleep(settle)
        files = [f for d in folders for f in _walk_files(d)]
        now = _stat_map(files)
        if now == before:
            return files, now
        if time.monotonic() > deadline:
            raise SourceError(f"segment files kept changing for {timeout:.0f}s; try again later")
        before = now


def _copy(src: Path, dst: Path) -> None:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    except OSError as exc:
        full = disk_full(exc, dst)  # name the filesystem that is full, not the source file
        if full is not None:
            raise full from exc
        raise


def _include_entries(source: Path, includes: Sequence[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """(path in snapshot, real path) for every --include file; dirs are walked."""
    out: list[tuple[str, Path]] = []
    origin: dict[str, str] = {}
    for inc in includes:
        p = Path(inc).expanduser().absolute()
        if not p.exists():
            raise NotFoundError(f"--include {inc}: no such file or directory")
        try:
            base = p.relative_to(source.absolute()).as_posix()
        except ValueError:
            base = p.name
        if base in ("", "."):
            raise UsageError(f"--include {inc}: cannot include the persist dir itself")
        _check_text(f"--include {inc}", base)
        for other, first in origin.items():
            if base == other or base.startswith(other + "/") or other.startswith(base + "/"):
                raise UsageError(f"--include {inc} and --include {first} both restore to {other}")
        origin[base] = str(inc)
        if p.is_dir():
            for f in _walk_files(p):
                out.append((f"{base}/{f.relative_to(p).as_posix()}", f))
        else:
            out.append((base, p))
    for rel, _ in out:
        _check_text("included file name", rel)
        check_rel_path(rel)
    return out


def _check_text(what: str, name: str) -> None:
    """Snapshot paths are UTF-8 in the manifest: refuse names that are not (before uploading)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise SourceError(f"{what}: file name {shown!r} is not valid UTF-8") from None


def capture(
    source: Path,
    staging: Path,
    *,
    includes: Sequence[str | os.PathLike[str]] = (),
    include_orphans: bool = False,
    attempts: int = 5,
    settle: float = 0.05,
    stable_timeout: float = 30.0,
    log: Callable[[str], None] = lambda _msg: None,
    counts: bool = True,
    in_place: bool = False,
) -> Capture:
    """Copy a consistent view of ``source`` into ``staging`` (see module docstring).
    ``counts=False`` leaves the collections' record counts at 0 (a create takes them from its
    consistency checks on the copy, instead of counting while the source is locked).
    ``in_place``: copy only chroma.sqlite3; the caller reads the segment files where they lie,
    then asks :func:`segments_moved`."""
    source = source.absolute()
    db = check_persist_dir(source)
    extra = _include_entries(source, includes)
    for attempt in range(1, attempts + 1):
        for part in ("db", "include"):  # a retry starts from nothing (the folder itself is owned)
            shutil.rmtree(staging / part, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
        result = _capture_once(source, db, staging, include_orphans, settle, stable_timeout, counts, in_place)
        if result is not None:
            collections, files, orphans, folders, stable = result
            break
        log(f"segment files changed during capture, retrying ({attempt}/{attempts})")
        time.sleep(min(0.2 * attempt, 1.0))
    else:
        raise SourceError(
            f"could not take a consistent copy of {source} in {attempts} attempts "
            "(a writer kept changing it)"
        )
    taken = {f.rel for f in files}
    for rel, real in extra:
        if rel in taken or any(rel.startswith(t + "/") or t.startswith(rel + "/") for t in taken):
            raise UsageError(f"--include {real}: {rel} clashes with a file of the Chroma dir")
        dst = staging / "include" / rel
        _copy(real, dst)
        files.append(StagedFile(rel, dst, real.stat().st_mode & 0o777, "include"))
        taken.add(rel)
    skipped = sorted(
        e.name
        for e in source.iterdir()
        if e.name != DB_NAME
        and e.name not in {c for col in collections for c in col.segments}
        and e.name not in orphans
        and not e.name.startswith(DB_NAME)
        and e.name not in {r.split("/", 1)[0] for r, _ in extra}
    )
    return Capture(tuple(files), collections, tuple(orphans), tuple(skipped), attempt,
                   source if in_place else None, tuple(folders) if in_place else (),
                   tuple((p, size, mtime) for p, (size, mtime) in stable.items()) if in_place else ())


_ROLLBACK_MODES = {"delete", "truncate", "persist"}


def _copy_db(conn: sqlite3.Connection, db: Path, dest: Path) -> None:
    """Copy the database as of ``conn``'s open read transaction.

    With a rollback journal (Chroma's default, ``journal_mode=delete``) our SHARED lock keeps
    every writer from touching the database file until we end the transaction, so a plain
    copy is consistent and byte-identical to the source (and ~4x faster than the backup API on
    a large DB). In WAL mode the file alone is not the database, so SQLite's online backup API
    copies it through the connection, page for page at the same offsets.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    hot_journal = Path(str(db) + "-journal")
    if mode in _ROLLBACK_MODES and not (hot_journal.exists() and hot_journal.stat().st_size):
        _copy(db, dest)
        return
    target = sqlite3.connect(str(dest))
    try:
        conn.backup(target)
    finally:
        target.close()


def _capture_once(
    source: Path, db: Path, staging: Path, include_orphans: bool, settle: float, timeout: float,
    counts: bool, in_place: bool,
) -> tuple[tuple[CollectionInfo, ...], list[StagedFile], list[str], list[Path], StatMap] | None:
    try:
        conn = open_readonly(db)
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"cannot open {db}: {exc}") from exc
    try:
        conn.execute("BEGIN")
        collections = read_collections(conn, counts=counts)  # this SELECT takes the SHARED lock
        referenced = {s for c in collections for s in c.segments}
        orphans = sorted(
            e.name
            for e in source.iterdir()
            if e.is_dir() and not e.is_symlink() and _UUID.match(e.name) and e.name not in referenced
        )
        wanted = sorted(s for s in referenced if (source / s).is_dir())
        if include_orphans:
            wanted += orphans
        folders = [source / s for s in wanted]
        seg_files, stable = _wait_stable(folders, settle, timeout)
        files: list[StagedFile] = []
        copies = []
        db_copy = staging / "db" / DB_NAME
        # The copies (kernel copies, the GIL released) run side by side, all under our lock.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="capture") as pool:
            for f in seg_files:
                rel = f.relative_to(source).as_posix()
                _check_text(f"segment folder {rel.split('/', 1)[0]}", rel)
                dst = f if in_place else staging / "db" / rel
                if not in_place:
                    copies.append(pool.submit(_copy, f, dst))
                role = "orphan" if rel.split("/", 1)[0] in orphans else "segment"
                files.append(StagedFile(rel, dst, f.stat().st_mode & 0o777, role))
            _copy_db(conn, db, db_copy)
            for c in copies:
                c.result()
        after = _stat_map([Path(p) for p in stable])
        fresh = {str(f) for d in folders for f in _walk_files(d)}
        if after != stable or fresh != set(stable):
            return None
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"reading {db}: {exc}") from exc
    finally:
        conn.close()
    files.insert(0, StagedFile(DB_NAME, db_copy, db.stat().st_mode & 0o777, "db"))
    return collections, files, orphans, folders, stable
