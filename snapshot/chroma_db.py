"""Chroma's SQLite schema: every query this tool makes of a chroma.sqlite3 lives here.

Collections and their segments, record counts (replaying pending queue entries the way Chroma
does when it opens a directory), and the ordered record rows that ``diff --records`` merges.
Connections are read-only; the user's database is never opened for writing.
"""

from __future__ import annotations

import itertools
import sqlite3
import urllib.parse
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

from snapshot.manifest import CollectionInfo

DB_NAME = "chroma.sqlite3"
REQUIRED_TABLES = frozenset({"collections", "segments", "embeddings"})

#: (record id, fingerprint): rows of one collection, ascending by id.
RecordRow = tuple[str, Hashable]


def open_readonly(db: Path, timeout: float = 30.0, *, immutable: bool = False) -> sqlite3.Connection:
    """``immutable``: a private copy nobody writes (no locks, no -wal/-shm files)."""
    flags = "?mode=ro&immutable=1" if immutable else "?mode=ro"
    uri = "file:" + urllib.parse.quote(str(db.absolute())) + flags
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


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
    tables = table_names(conn)
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


def metadata_segments(conn: sqlite3.Connection) -> dict[str, list[str]]:
    rows = conn.execute(
        "SELECT c.name, s.id FROM collections c JOIN segments s ON s.collection = c.id "
        "WHERE s.scope = 'METADATA' ORDER BY c.name, s.id"
    ).fetchall()
    out: dict[str, list[str]] = {}
    for name, seg in rows:
        out.setdefault(name, []).append(seg)
    return out


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _records_sql(conn: sqlite3.Connection, n_segments: int) -> str:
    wanted = ("string_value", "int_value", "float_value", "bool_value")
    cols = [c for c in wanted if c in _columns(conn, "embedding_metadata")]
    qs = ",".join("?" * n_segments)
    sql = (
        f"SELECT e.embedding_id, e.seq_id, m.key, {', '.join('m.' + c for c in cols)} "
        f"FROM embeddings e LEFT JOIN embedding_metadata m ON m.id = e.id WHERE e.segment_id IN ({qs})"
    )
    array_cols = _columns(conn, "embedding_metadata_array")
    if array_cols and conn.execute("SELECT 1 FROM embedding_metadata_array LIMIT 1").fetchone():
        values = ", ".join(f"a.{c}" if c in array_cols else "NULL" for c in cols)
        sql += (
            f" UNION ALL SELECT e.embedding_id, e.seq_id, '[]' || a.key, {values} FROM embeddings e "
            f"JOIN embedding_metadata_array a ON a.id = e.id WHERE e.segment_id IN ({qs})"
        )
        order = ", ".join(str(i) for i in range(1, len(cols) + 4))
        return f"{sql} ORDER BY {order}"
    return sql + " ORDER BY e.embedding_id, m.key"


def iter_records(conn: sqlite3.Connection, segments: list[str]) -> Iterator[RecordRow]:
    """(id, (seq_id, metadata rows)) of a collection's records, ascending by id, streamed."""
    sql = _records_sql(conn, len(segments))
    params: list[Any] = list(segments)
    if "UNION ALL" in sql:
        params += segments
    cursor = conn.execute(sql, params)
    for rid, rows in itertools.groupby(cursor, key=lambda r: r[0]):
        group = list(rows)
        yield rid, (group[0][1], tuple(tuple(r[2:]) for r in group if r[2] is not None))
