"""What a restore needs to know of Chroma's files: the order to write a snapshot's files in, the
checks that can start while the rest is still being written, the capture's consistency checks
run again on the result, and the warning when the installed chromadb may not open its schema.

Pure functions over a manifest, except where a docstring says what is read from disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from pathlib import Path

from snapshot.chroma.consistency import (
    IndexIds,
    SqliteSide,
    Verification,
    check_segments,
    known_migrations,
    read_sqlite_side,
    segment_ids,
    unknown_schema,
)
from snapshot.chroma.idmap import PICKLE
from snapshot.chroma.schema import DB_NAME, chromadb_version, open_readonly, schema_levels
from snapshot.errors import IntegrityError
from snapshot.format.manifest import FileEntry, Manifest

#: A database's schema: migrations folder -> (version, file name of the last migration applied).
Schema = dict[str, tuple[int, str]]


def write_order(m: Manifest) -> list[FileEntry]:
    """The order a restore writes files in: chroma.sqlite3 first (its half of the checks runs
    while the rest is written), then the files of one chunk, then the segments' id maps (their
    checks run too), then the rest; each group in manifest order."""
    def group(f: FileEntry) -> int:
        if f.path == DB_NAME:
            return 0
        return 1 if f.size <= m.chunk_size else 2 if f.path.endswith("/" + PICKLE) else 3

    return sorted(m.files, key=group)


def include_names(m: Manifest) -> set[str]:
    """The top-level names the snapshot holds besides Chroma's files (its --include paths),
    which a target replaced by ``--force`` may hold."""
    return {f.path.split("/", 1)[0] for f in m.files if f.role == "include"}


def recorded_schema(m: Manifest) -> Schema:
    """The schema levels the capture recorded (empty for snapshots made without checks)."""
    return {d: (s.version, s.filename) for d, s in m.verified.schema.items()} if m.verified else {}


def read_schema(db: Path) -> Schema:
    """The schema levels of the database file ``db`` (empty if it cannot be read)."""
    conn = open_readonly(db, immutable=True)
    try:
        return schema_levels(conn)
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


def schema_warning(m: Manifest, schema: Schema, knows: Callable[[str], bool] | None) -> str | None:
    """A warning when the installed chromadb may not open the restored DB: the DB has applied
    a migration the installed chromadb does not know (``knows``: see
    :func:`~snapshot.chroma.consistency.known_migrations`; None: chromadb is not installed).
    Worded from the DB's own schema: the chromadb installed where the snapshot was taken says
    nothing about the one that wrote it."""
    if knows is None:
        return "chromadb is not installed here: cannot tell whether it can open this database"
    unknown = unknown_schema(schema, knows)
    if not unknown:
        return None
    installed = chromadb_version() or "?"
    return (f"snapshot {m.id}: its database has applied {_migrations(unknown)} that the installed chromadb "
            f"{installed} does not know: a newer chromadb wrote it, and chromadb {installed} may not open "
            "it; upgrade chromadb (to one at least as new as the one that wrote it)")


def _migrations(unknown: list[str]) -> str:
    return ("migration " if len(unknown) == 1 else "migrations ") + ", ".join(unknown)


def installed_schema_warning(m: Manifest, schema: Schema) -> str | None:
    """:func:`schema_warning` for the chromadb installed here (it reads its files); None for
    a snapshot that recorded no schema."""
    return schema_warning(m, schema, known_migrations()) if schema else None


def restored_schema_warning(built: Path, m: Manifest, verification: Verification | None,
                            recorded_warning: str | None) -> str | None:
    """The schema warning for the restored directory ``built``: ``recorded_warning`` (the one
    for :func:`recorded_schema`, worked out beforehand) when its schema is the recorded one."""
    db = built / DB_NAME
    schema = verification.schema if verification is not None else (read_schema(db) if db.is_file() else {})
    return recorded_warning if schema == recorded_schema(m) else installed_schema_warning(m, schema)


def recheck_consistency(
    built: Path, m: Manifest, sqlite_side: SqliteSide | None = None,
    ids: Mapping[str, IndexIds | str | None] | None = None,
) -> tuple[Verification | None, list[str]]:
    """The capture's consistency checks again, on the restored directory (SQLite's
    quick_check excepted: the hashes already prove the file byte-identical to the copy that
    passed it). Raises IntegrityError if the result differs from what create established.
    ``sqlite_side``: chroma.sqlite3's half, when it was read while the rest was written, and
    ``ids`` the segments' id maps read so far (see :class:`EarlyChecks`)."""
    notes: list[str] = []
    if m.verified is None:
        notes.append(f"snapshot {m.id} was made without consistency checks (an older chroma-snapshot): "
                     "checked hashes only")
        return None, notes
    if m.verified.problems:
        notes.append(f"snapshot {m.id} was taken of an inconsistent directory (--allow-inconsistent): "
                     + "; ".join(m.verified.problems))
        return None, notes
    v = check_segments(built, sqlite_side or read_sqlite_side(built, sqlite_check=False), ids)
    if v.problems:
        raise IntegrityError(f"the restored directory fails a consistency check: {v.problems[0]}")
    recorded = {c.name: c.records for c in m.collections}
    if v.collections != m.verified.collections or v.collections != recorded:
        raise IntegrityError(f"the restored directory holds {v.collections}, the snapshot recorded "
                             f"{recorded}")
    return v, notes


class EarlyChecks:
    """The consistency checks that run while a restore is still writing (files in
    :func:`write_order`): chroma.sqlite3's half as soon as it is complete, then each segment's
    id map as soon as it is. Both are read on ``pool``; call :meth:`written` for each file
    written, :meth:`results` once all are."""

    def __init__(self, built: Path, m: Manifest, pool: Executor) -> None:
        self._built, self._pool = built, pool
        self._wanted = m.verified is not None and not m.verified.problems
        self._side: Future[SqliteSide] | None = None
        self._ids: dict[str, Future[IndexIds | str | None]] = {}

    def written(self, f: FileEntry) -> None:
        if f.path == DB_NAME and self._wanted:
            self._side = self._pool.submit(read_sqlite_side, self._built, sqlite_check=False)
        elif self._side is not None and f.path.endswith("/" + PICKLE) and f.path.count("/") == 1:
            segment, side = f.path.split("/", 1)[0], self._side
            self._ids[segment] = self._pool.submit(lambda: segment_ids(self._built, side.result(), segment))

    def results(self) -> tuple[SqliteSide | None, dict[str, IndexIds | str | None]]:
        """chroma.sqlite3's half (None if it was not read) and the id maps read, by segment."""
        side = self._side.result() if self._side is not None else None
        return side, {segment: job.result() for segment, job in self._ids.items()}
