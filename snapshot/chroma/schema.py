"""Chroma's SQLite schema: every query this tool makes of a chroma.sqlite3 lives here.

Collections and their segments, record counts (replaying pending queue entries the way Chroma
does when it opens a directory), and the ordered record rows that ``diff --records`` merges.
Connections are read-only; the user's database is never opened for writing.
"""

from __future__ import annotations

import itertools
import operator
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from snapshot.chroma.collection_config import configuration
from snapshot.format.manifest import CollectionInfo
from snapshot.format.provenance import MetaValue

DB_NAME = "chroma.sqlite3"
REQUIRED_TABLES = frozenset({"collections", "segments", "embeddings"})

#: (record id, fingerprint): rows of one collection, ascending by id.
RecordRow = tuple[str, Hashable]


def chromadb_version() -> str | None:
    """The installed chromadb's version (None if it is not installed), read without importing it."""
    from importlib import metadata  # not at start-up: most commands never ask

    try:
        return metadata.version("chromadb")
    except metadata.PackageNotFoundError:
        return None


def open_readonly(db: Path, timeout: float = 30.0, *, immutable: bool = False) -> sqlite3.Connection:
    """``immutable``: a private copy nobody writes (no locks, no -wal/-shm files)."""
    flags = "?mode=ro&immutable=1" if immutable else "?mode=ro"
    uri = "file:" + urllib.parse.quote(os.fsencode(db.absolute())) + flags  # paths are bytes
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def read_collections(conn: sqlite3.Connection, *, counts: bool = True) -> tuple[CollectionInfo, ...]:
    """Collections, their vector segment folders and record counts, as Chroma stores them
    (``counts=False``: records 0, without reading every id)."""
    have = set(_columns(conn, "collections"))
    config_cols = ", ".join(c if c in have else "NULL" for c in ("config_json_str", "schema_str"))
    query = f"SELECT id, name, dimension, {config_cols} FROM collections ORDER BY name"
    rows = conn.execute(query).fetchall()
    queue = Queue(conn, min_segment_seq(conn)) if counts else None  # one pass for every collection
    provenance = collection_metadata(conn)
    out = []
    for cid, name, dim, config_json, schema_json in rows:
        segs = conn.execute(
            "SELECT id, scope FROM segments WHERE collection = ? ORDER BY id", (cid,)
        ).fetchall()
        vector = tuple(s for s, scope in segs if scope == "VECTOR")
        metadata = [s for s, scope in segs if scope == "METADATA"]
        records = sum(metadata_ids(conn, cid, seg, queue)[0] for seg in metadata) if queue else 0
        out.append(
            CollectionInfo(
                name=name,
                id=cid,
                segments=vector,
                records=records,
                dimension=dim if isinstance(dim, int) else None,
                metadata=provenance.get(cid, {}),
                configuration=configuration(config_json, schema_json, provenance.get(cid, {})),
            )
        )
    return tuple(out)


def collection_metadata(conn: sqlite3.Connection) -> dict[str, dict[str, MetaValue]]:
    """Collection id -> its metadata (key -> value), as Chroma stores it."""
    if "collection_metadata" not in table_names(conn):
        return {}
    have = _columns(conn, "collection_metadata")
    cols = [c for c in ("str_value", "int_value", "float_value", "bool_value") if c in have]
    out: dict[str, dict[str, MetaValue]] = {}
    query = (f"SELECT collection_id, key, {', '.join(cols)} FROM collection_metadata "
             "ORDER BY collection_id, key")
    for cid, key, *values in conn.execute(query):
        value: MetaValue = None
        for col, v in zip(cols, values, strict=True):
            if v is not None:
                value = bool(v) if col == "bool_value" else v
                break
        out.setdefault(str(cid), {})[str(key)] = value
    return out


# embeddings_queue.operation codes (chromadb: ADD, UPDATE, UPSERT, DELETE).
ADD, UPSERT, DELETE = 0, 2, 3
_MASK = (1 << 64) - 1


def segment_seq(conn: sqlite3.Connection, segment: str) -> int:
    """The last queue entry a segment has applied (0: none). Older Chroma stored it as a
    big-endian blob."""
    if "max_seq_id" not in table_names(conn):
        return 0
    row = conn.execute("SELECT seq_id FROM max_seq_id WHERE segment_id = ?", (segment,)).fetchone()
    if row is None:
        return 0
    value = row[0]
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    return value if isinstance(value, int) else 0


class Queue:
    """The queue entries a set of segments may still have to replay, read in one pass (a query
    per collection would scan the whole queue once per collection)."""

    def __init__(self, conn: sqlite3.Connection, after: int) -> None:
        self.after = after
        self._by_collection: dict[str, list[tuple[int, int, str]]] = {}
        if "embeddings_queue" not in table_names(conn):
            return
        rows = conn.execute(
            "SELECT topic, seq_id, operation, id FROM embeddings_queue WHERE seq_id > ? ORDER BY seq_id",
            (after,),
        )
        for topic, seq, op, rid in rows:
            cid = str(topic).rsplit("/", 1)[-1]
            self._by_collection.setdefault(cid, []).append((int(seq), int(op), str(rid)))

    def ops(self, collection: str, after: int) -> Iterator[tuple[int, str]]:
        """(operation, record id) of ``collection``'s entries past seq id ``after``, in order:
        what Chroma replays into a segment when it opens the directory."""
        if after < self.after:
            raise ValueError("queue read from a later seq id than asked for")
        return ((op, rid) for seq, op, rid in self._by_collection.get(collection, ()) if seq > after)


def min_segment_seq(conn: sqlite3.Connection) -> int:
    """The lowest seq id any segment has applied (segments without a row count as 0)."""
    if "max_seq_id" not in table_names(conn):
        return 0
    segs = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
    row = conn.execute("SELECT count(*), min(seq_id) FROM max_seq_id").fetchone()
    if row[0] < segs or row[1] is None:
        return 0
    low = row[1]
    return int.from_bytes(low, "big") if isinstance(low, bytes) else int(low)


def replay(present: Callable[[str], bool], ops: Iterable[tuple[int, str]]) -> Iterator[tuple[str, int]]:
    """Membership changes the queue entries make: (id, +1 added / -1 removed)."""
    state: dict[str, bool] = {}
    for op, rid in ops:
        if rid not in state:
            state[rid] = present(rid)
        if op in (ADD, UPSERT) and not state[rid]:
            state[rid] = True
            yield rid, 1
        elif op == DELETE and state[rid]:
            state[rid] = False
            yield rid, -1


def id_digest(rid: str) -> int:
    return xxhash.xxh3_64_intdigest(rid.encode("utf-8", "surrogatepass"))


_first = operator.itemgetter(0)
_encode = operator.methodcaller("encode", "utf-8", "surrogatepass")


def ids_digest(ids: Iterable[str]) -> int:
    """The order-free digest of many ids (the sum of their :func:`id_digest`, mod 2**64),
    computed without a Python call per id."""
    return sum(map(xxhash.xxh3_64_intdigest, map(_encode, ids))) & _MASK


def metadata_ids(conn: sqlite3.Connection, collection: str, segment: str, queue: Queue) -> tuple[int, int]:
    """(count, order-free digest of the ids) of the records Chroma will report once it opens
    this database: the metadata segment's rows plus the queue entries it has not applied yet
    (Chroma commits a write to the queue before it applies it, and replays on opening)."""
    count, digest = 0, 0
    rows = conn.execute("SELECT embedding_id FROM embeddings WHERE segment_id = ?", (segment,))
    while batch := rows.fetchmany(10_000):
        count += len(batch)
        digest = (digest + ids_digest(map(str, map(_first, batch)))) & _MASK

    def present(rid: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM embeddings WHERE segment_id = ? AND embedding_id = ?", (segment, rid)
        ).fetchone()
        return row is not None

    seen = segment_seq(conn, segment)
    ops = queue.ops(collection, seen)
    for rid, sign in replay(present, ops):
        count += sign
        digest = (digest + sign * id_digest(rid)) & _MASK
    return count, digest


@dataclass(frozen=True)
class SegmentRow:
    collection_id: str
    collection: str
    segment: str
    scope: str


def segments(conn: sqlite3.Connection) -> list[SegmentRow]:
    rows = conn.execute(
        "SELECT c.id, c.name, s.id, s.scope FROM collections c JOIN segments s ON s.collection = c.id "
        "ORDER BY c.name, s.scope, s.id"
    ).fetchall()
    return [SegmentRow(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def schema_levels(conn: sqlite3.Connection) -> dict[str, tuple[int, str]]:
    """Per migrations dir (sysdb, metadb, embeddings_queue): the highest version applied and
    its file name. Chroma refuses a database with a migration it does not know."""
    if "migrations" not in table_names(conn):
        return {}
    out: dict[str, tuple[int, str]] = {}
    for d, version, filename in conn.execute("SELECT dir, version, filename FROM migrations"):
        if isinstance(version, int) and (d not in out or version > out[d][0]):
            out[str(d)] = (version, str(filename))
    return out


def quick_check(conn: sqlite3.Connection) -> str | None:
    """SQLite's own structural check; None when it finds nothing."""
    rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
    return None if rows == ["ok"] else "; ".join(rows[:3])


def segment_ids(conn: sqlite3.Connection) -> set[str]:
    """Every segment the database names (a vector segment's folder is named by its id)."""
    return {str(r[0]) for r in conn.execute("SELECT id FROM segments")}


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
