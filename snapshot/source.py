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

The user's database is never opened for writing.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from snapshot.errors import NotFoundError, SourceError, UsageError
from snapshot.manifest import CollectionInfo, check_rel_path

DB_NAME = "chroma.sqlite3"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REQUIRED_TABLES = {"collections", "segments", "embeddings"}

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


def open_readonly(db: Path, timeout: float = 30.0) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(str(db.absolute())) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)


def read_collections(conn: sqlite3.Connection) -> tuple[CollectionInfo, ...]:
    """Collections, their vector segment folders and record counts, as Chroma stores them."""
    rows = conn.execute("SELECT id, name, dimension FROM collections ORDER BY name").fetchall()
    out = []
    for cid, name, dim in rows:
        segs = conn.execute(
            "SELECT id, scope FROM segments WHERE collection = ? ORDER BY id", (cid,)
        ).fetchall()
        vector = tuple(s for s, scope in segs if scope == "VECTOR")
        metadata = [s for s, scope in segs if scope == "METADATA"]
        records = sum(_records(conn, cid, seg) for seg in metadata)
        out.append(
            CollectionInfo(
                name=name,
                id=cid,
                segments=vector,
                records=records,
                dimension=dim if isinstance(dim, int) else None,
            )
        )
    return tuple(out)


# embeddings_queue.operation codes (chromadb: ADD, UPDATE, UPSERT, DELETE).
_ADD, _UPSERT, _DELETE = 0, 2, 3


def _records(conn: sqlite3.Connection, collection: str, segment: str) -> int:
    """The record count Chroma will report once it opens this database.

    Chroma commits a write to embeddings_queue before applying it to the metadata segment's
    tables, and replays the queue past the segment's max_seq_id when it opens. A capture can
    fall between the two, so the pending queue entries are replayed here as well.
    """
    count: int = conn.execute(
        "SELECT count(*) FROM embeddings WHERE segment_id = ?", (segment,)
    ).fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"embeddings_queue", "max_seq_id"} <= tables:
        return count
    row = conn.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (segment,)).fetchone()
    seen = row[0] if row and isinstance(row[0], int) else 0
    present: dict[str, bool] = {}
    pending = conn.execute(
        "SELECT operation, id FROM embeddings_queue WHERE seq_id > ? AND topic LIKE ? ORDER BY seq_id",
        (seen, f"%/{collection}"),
    )
    for op, rid in pending:
        if rid not in present:
            present[rid] = (
                conn.execute(
                    "SELECT 1 FROM embeddings WHERE segment_id = ? AND embedding_id = ?",
                    (segment, rid),
                ).fetchone()
                is not None
            )
        if op in (_ADD, _UPSERT) and not present[rid]:
            count += 1
            present[rid] = True
        elif op == _DELETE and present[rid]:
            count -= 1
            present[rid] = False
    return count


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
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"{db} is not a readable SQLite database: {exc}") from exc
    missing = _REQUIRED_TABLES - names
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
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _include_entries(source: Path, includes: Sequence[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """(path in snapshot, real path) for every --include file; dirs are walked."""
    out: list[tuple[str, Path]] = []
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
        if p.is_dir():
            for f in _walk_files(p):
                out.append((f"{base}/{f.relative_to(p).as_posix()}", f))
        else:
            out.append((base, p))
    for rel, _ in out:
        check_rel_path(rel)
    return out


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
) -> Capture:
    """Copy a consistent view of ``source`` into ``staging`` (see module docstring)."""
    source = source.absolute()
    db = check_persist_dir(source)
    extra = _include_entries(source, includes)
    for attempt in range(1, attempts + 1):
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        result = _capture_once(source, db, staging, include_orphans, settle, stable_timeout)
        if result is not None:
            collections, files, orphans = result
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
    return Capture(tuple(files), collections, tuple(orphans), tuple(skipped), attempt)


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
        shutil.copyfile(db, dest)
        return
    target = sqlite3.connect(str(dest))
    try:
        conn.backup(target)
    finally:
        target.close()


def _capture_once(
    source: Path, db: Path, staging: Path, include_orphans: bool, settle: float, timeout: float
) -> tuple[tuple[CollectionInfo, ...], list[StagedFile], list[str]] | None:
    try:
        conn = open_readonly(db)
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"cannot open {db}: {exc}") from exc
    try:
        conn.execute("BEGIN")
        collections = read_collections(conn)  # this SELECT takes the SHARED lock
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
        for f in seg_files:
            rel = f.relative_to(source).as_posix()
            dst = staging / "db" / rel
            _copy(f, dst)
            role = "orphan" if rel.split("/", 1)[0] in orphans else "segment"
            files.append(StagedFile(rel, dst, f.stat().st_mode & 0o777, role))
        db_copy = staging / "db" / DB_NAME
        _copy_db(conn, db, db_copy)
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
    return collections, files, orphans
