"""Which restore targets may be written or replaced: the one place that decides.

A restore replaces its target wholesale, so with ``--force`` only a directory that looks like
a Chroma persist dir (plus the files the snapshot itself restores) may go: chroma.sqlite3 and
its companions, and segment folders that hold only Chroma's index files, each folder one the
snapshot restores or one the target's own chroma.sqlite3 names as a segment. Places whose loss
would be a disaster (/, the home directory, the working directory, the repository, the
snapshot's source, the base cache) are refused whatever the options. Reads, never writes.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import Collection, Sequence
from pathlib import Path

from snapshot.chroma.consistency import SEGMENT_FILES
from snapshot.chroma.idmap import PICKLE
from snapshot.chroma.schema import DB_NAME, open_readonly, segment_ids
from snapshot.errors import TargetError, UsageError

#: SQLite's companions of chroma.sqlite3 (rollback journal, WAL, shared memory).
_DB_FILES = frozenset({DB_NAME, f"{DB_NAME}-journal", f"{DB_NAME}-wal", f"{DB_NAME}-shm"})
#: Chroma names each segment folder by the segment's UUID, lowercase.
_SEGMENT_DIR = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: What Chroma itself keeps in a segment folder (its HNSW index and the index's id map).
_IN_SEGMENT = frozenset({*SEGMENT_FILES, PICKLE})
_NOT_CHROMA = "which is not part of a Chroma persist dir"
_UNNAMED = f"a folder that neither the snapshot nor the target's {DB_NAME} names as a segment"


def _within(path: str, root: str) -> bool:
    """``path`` is ``root`` or lies inside it (both real, absolute)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _refuse_special(target: Path, real: str, protected: Sequence[tuple[Path, str]]) -> None:
    if os.path.dirname(real) == real:
        raise TargetError(f"refusing to restore into the filesystem root {target}")
    try:
        home: str | None = os.path.realpath(Path.home())
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        home = None
    if home is not None and _within(home, real):
        what = "is your home directory" if real == home else f"contains your home directory {home}"
        raise TargetError(f"refusing to restore into {target}: it {what}")
    cwd = os.path.realpath(os.getcwd())
    if _within(cwd, real):
        what = "is the current directory" if real == cwd else f"contains the current directory {cwd}"
        raise TargetError(f"refusing to restore into {target}: it {what}")
    for path, label in protected:
        other = os.path.realpath(path)
        if real == other:
            raise TargetError(f"refusing to restore into {target}: it is {label}")
        if _within(other, real):
            raise TargetError(f"refusing to restore into {target}: it contains {label} ({other})")
        if _within(real, other):
            raise TargetError(f"refusing to restore into {target}: it lies inside {label} ({other})")


def _db_segments(db: Path) -> set[str] | str:
    """The segment ids ``db`` names, or why they cannot be read."""
    try:
        conn = open_readonly(db, timeout=10.0)
        try:
            return segment_ids(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"a folder not in the snapshot, and the target's {DB_NAME} cannot be read ({exc})"


def _foreign_in_segment(folder: Path, name: str, files: Collection[str]) -> str | None:
    """The first entry of segment folder ``name`` that is neither Chroma's nor the snapshot's
    (by name; a folder never is, a symlink may be: removing it loses nothing it points to)."""
    for entry in sorted(os.listdir(folder)):
        ours = entry in _IN_SEGMENT or f"{name}/{entry}" in files
        if not ours or stat.S_ISDIR(os.lstat(folder / entry).st_mode):
            return entry
    return None


def _foreign_entry(
    target: Path, names: Sequence[str], allowed_names: Collection[str], files: Collection[str],
    leftovers: list[str],
) -> tuple[str, str] | None:
    """The first entry (a path relative to ``target``) that is not part of a Chroma persist
    dir and why, else None. Segment folders of Chroma's files alone that neither the snapshot
    nor the target's database names (Chroma leaves them behind after ``delete_collection``)
    are appended to ``leftovers``: replacing them loses nothing, but the restore says so."""
    restored = {p.split("/", 1)[0] for p in files if "/" in p}
    named: set[str] | str | None = None  # the target's own segments, read when first needed
    for name in sorted(names):
        if name in _DB_FILES or name in allowed_names:
            continue
        if not (_SEGMENT_DIR.fullmatch(name) and stat.S_ISDIR(os.lstat(target / name).st_mode)):
            return name, _NOT_CHROMA
        if name not in restored:
            named = _db_segments(target / DB_NAME) if named is None else named
            if isinstance(named, str):
                return name, named
            if name not in named:
                if os.listdir(target / name) and _foreign_in_segment(target / name, name, files) is None:
                    leftovers.append(name)
                    continue
                return name, _UNNAMED
        inner = _foreign_in_segment(target / name, name, files)
        if inner is not None:
            return f"{name}/{inner}", _NOT_CHROMA
    return None


def check_restore_target(
    target: Path,
    *,
    force: bool,
    protected: Sequence[tuple[Path, str]] = (),
    allowed_names: Collection[str] = (),
    files: Collection[str] = (),
    raw: str | None = None,
) -> tuple[str, ...]:
    """Raise unless a restore may write ``target`` (replacing it when it exists); return the
    leftover segment folders of deleted collections the replacement drops (see _foreign_entry).

    ``protected`` holds (path, label) pairs the target must neither be, contain nor lie inside
    (e.g. ``(repo_root, "the repository")``); ``allowed_names`` the top-level names the
    snapshot's extra (``--include``) files restore to, which a replaced target may hold;
    ``files`` the paths of every file the snapshot restores; ``raw`` what the user typed,
    since ``Path("")`` cannot be told from ``Path(".")``."""
    if raw == "":
        raise UsageError("empty restore target")
    target = Path(os.path.abspath(target))
    if os.path.islink(target):
        raise TargetError(f"restore target {target} is a symlink; give the real directory path")
    _refuse_special(target, os.path.realpath(target), protected)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise TargetError(f"cannot use restore target {target}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise TargetError(f"restore target {target} exists and is not a directory")
    if os.path.ismount(target):
        # A mount point cannot be renamed, and the swap that replaces the target is renames.
        raise TargetError(f"restore target {target} is a mount point; restore into a folder inside it")
    try:
        names = os.listdir(target)
        if not names:
            return ()
        if not force:
            raise TargetError(f"restore target {target} is not empty (use --force to replace it)")
        db = os.lstat(target / DB_NAME) if DB_NAME in names else None
        if db is None or not stat.S_ISREG(db.st_mode):
            raise TargetError(
                f"restore target {target} is not a Chroma persist dir (no {DB_NAME}); "
                "refusing to replace it even with --force"
            )
        leftovers: list[str] = []
        foreign = _foreign_entry(target, names, allowed_names, files, leftovers)
    except OSError as exc:
        raise TargetError(f"cannot read restore target {target}: {exc.strerror}") from exc
    if foreign is not None:
        raise TargetError(
            f"restore target {target} holds {foreign[0]!r}, {foreign[1]}; refusing to replace "
            "it even with --force (move it away or restore elsewhere)"
        )
    return tuple(leftovers)
