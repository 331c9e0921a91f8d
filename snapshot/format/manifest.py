"""Snapshot manifests and the repository config: dataclasses, JSON (de)serialisation and
validation. No I/O here.

A manifest read from a repository is untrusted input: :func:`parse_manifest` checks every
field it will later act on (paths, sizes, hashes, object ids, chain depth) before returning.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from snapshot.errors import FormatVersionError, IntegrityError, SnapshotError, UnsafePathError
from snapshot.format import layout
from snapshot.format.chunking import chunk_size_problem
from snapshot.format.codecs import CODECS, check_codec
from snapshot.format.ids import is_snapshot_id
from snapshot.format.provenance import CollectionConfig, MetaValue, parse_configuration, parse_metadata

#: What writers write; readers read every version in READABLE_VERSIONS.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CONFIG_VERSION = 1
#: Longest delta chain a reader accepts (writers use a smaller configured bound).
MAX_CHAIN_HARD = 64
MAX_PATH_LEN = 4096
#: No count or size in a manifest may exceed this (bounds arithmetic and allocations).
MAX_NUMBER = (1 << 62) - 1
#: Packs are never this large; a frame offset beyond it is damage, not data.
MAX_OFFSET = 1 << 48

_HASH = re.compile(r"^[0-9a-f]{32}$")
_REPO_ID = re.compile(r"^[0-9a-f]{32}$")
ROLES = ("db", "segment", "orphan", "include")


@dataclass(frozen=True)
class Frame:
    """One compressed frame: ``length`` bytes at ``offset`` in pack ``object``, decoding to
    ``size`` raw bytes whose xxh3-128 is ``hash``."""

    object: str
    offset: int
    length: int
    codec: str
    size: int
    hash: str


@dataclass(frozen=True)
class Chunk:
    """A fixed-offset piece of a file. ``frames[0]`` is a full frame; each later frame is a
    zstd delta against the content the previous one decodes to. The last decodes to
    ``hash``."""

    hash: str
    size: int
    frames: tuple[Frame, ...]


@dataclass(frozen=True)
class TableRef:
    """Where a file's chunk table lives (format 2): a zstd frame of ``length`` bytes at
    ``offset`` in pack ``object``, decoding to ``size`` bytes of JSON lines whose xxh3-128 is
    ``hash``. Snapshots whose file did not change share it."""

    object: str
    offset: int
    length: int
    size: int
    hash: str
    #: The repository's codec (gzip repositories keep every pack readable by ``gzip -d``).
    codec: str = "zstd"

    def frame(self) -> Frame:
        return Frame(self.object, self.offset, self.length, self.codec, self.size, self.hash)


@dataclass(frozen=True)
class FileEntry:
    """A file of a snapshot. Format 1 lists its ``chunks`` inline; format 2 points at its
    chunk ``table`` (``chunks`` is then empty: ``Repository.chunks`` reads the table) and
    records how many chunks it has."""

    path: str
    size: int
    mode: int
    hash: str
    role: str
    chunks: tuple[Chunk, ...] = ()
    table: TableRef | None = None
    chunk_count: int = 0


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    id: str
    segments: tuple[str, ...]
    records: int
    dimension: int | None
    #: Provenance (format/provenance.py), recorded at capture; None in snapshots taken before.
    metadata: dict[str, MetaValue] | None = field(default=None, hash=False)
    configuration: CollectionConfig | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Totals:
    files: int
    bytes: int
    chunks: int
    chunks_new: int
    bytes_new: int
    objects_new: int


@dataclass(frozen=True)
class SchemaLevel:
    """The highest migration Chroma applied in one migrations dir (sysdb, metadb, ...)."""

    version: int
    filename: str


@dataclass(frozen=True)
class Verified:
    """The consistency proof taken at capture (snapshot/chroma/consistency.py): which checks ran, the
    DB's schema levels, the record count per collection they established, and any problem
    found (only recorded when the create was told --allow-inconsistent)."""

    checks: tuple[str, ...]
    schema: dict[str, SchemaLevel]
    collections: dict[str, int]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    id: str
    parent: str | None
    created_at: str
    tool_version: str
    #: The chromadb installed beside chroma-snapshot where the snapshot was taken (None: not
    #: installed). It is not the chromadb that wrote the DB: chroma.sqlite3 records no version,
    #: only its applied migrations (``verified.schema``). Earlier roots call it
    #: ``chromadb_version``, which readers still take.
    tool_chromadb_version: str | None
    source_path: str
    source_host: str
    tags: tuple[str, ...]
    message: str
    chunk_size: int
    files: tuple[FileEntry, ...]
    collections: tuple[CollectionInfo, ...]
    totals: Totals
    format_version: int = FORMAT_VERSION
    #: Absent in snapshots of chroma-snapshot before 0.2 (then a restore checks hashes only).
    verified: Verified | None = None

    @property
    def chromadb_version(self) -> str | None:
        """The earlier name of :attr:`tool_chromadb_version` (it never meant the DB's chromadb)."""
        return self.tool_chromadb_version

    def file(self, path: str) -> FileEntry | None:
        for f in self.files:
            if f.path == path:
                return f
        return None


#: Object Lock modes a config may name, and the longest retention it may ask (S3's limit: 100 years).
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_LOCK_DAYS = 36500


@dataclass(frozen=True)
class LockSetting:
    """A repository's S3 Object Lock: its packs, roots and config are retained ``days`` in ``mode``."""

    mode: str
    days: int


@dataclass(frozen=True)
class RepoConfig:
    id: str
    chunk_size: int
    codec: str
    level: int
    max_chain: int
    created_at: str
    format_version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    #: Absent (None) in the configs of repositories without Object Lock, and in every older one.
    object_lock: LockSetting | None = None


# ---------------------------------------------------------------- serialisation


def dumps(obj: Manifest | RepoConfig) -> bytes:
    data = asdict(obj)
    if isinstance(obj, RepoConfig):
        data.pop("extra")
        if data.get("object_lock") is None:  # the config of a repository without it stays as it was
            data.pop("object_lock", None)
    else:
        if data.get("verified") is None:
            data.pop("verified", None)
        for c in data["collections"]:  # provenance is optional: absent, not null
            for key in ("metadata", "configuration"):
                if c.get(key) is None:
                    c.pop(key, None)
        for f in data["files"]:
            if obj.format_version == 1:  # chunks inline
                f.pop("table")
                f.pop("chunk_count")
            else:  # a reference to the chunk table
                f.pop("chunks")
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(dumps(m))
    return result


def _load_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or a number of more than 4300 digits
        raise IntegrityError(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise IntegrityError(f"{what} is not a manifest: JSON nested too deeply") from exc
    if not isinstance(data, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    return data


class Reader:
    """Typed field access that names the manifest and field in every error."""

    def __init__(self, what: str) -> None:
        self.what = what

    def fail(self, msg: str) -> IntegrityError:
        return IntegrityError(f"{self.what}: {msg}")

    def get(self, d: Any, key: str, typ: type | tuple[type, ...], where: str = "") -> Any:
        if not isinstance(d, dict) or key not in d:
            raise self.fail(f"missing field {where}{key}")
        value = d[key]
        if isinstance(value, bool) and typ is not bool:
            raise self.fail(f"field {where}{key} has the wrong type")
        if not isinstance(value, typ):
            raise self.fail(f"field {where}{key} has the wrong type")
        return value

    def nat(self, d: Any, key: str, where: str = "", limit: int = MAX_NUMBER) -> int:
        v: int = self.get(d, key, int, where)
        if v < 0:
            raise self.fail(f"field {where}{key} is negative")
        if v > limit:
            raise self.fail(f"field {where}{key} is out of range ({v} > {limit})")
        return v

    def hash(self, d: Any, key: str, where: str = "") -> str:
        v: str = self.get(d, key, str, where)
        if not _HASH.match(v):
            raise self.fail(f"field {where}{key} is not an xxh3-128 hex digest")
        return v


def check_rel_path(path: str) -> str:
    """Refuse anything that could land outside a restore target."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LEN:
        raise UnsafePathError(f"unsafe path in manifest: {path!r}")
    if "\x00" in path or "\\" in path or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UnsafePathError(f"unsafe path in manifest: {path!r}")
    for part in path.split("/"):
        if part in ("", ".", "..") or len(part) > 255:
            raise UnsafePathError(f"unsafe path in manifest: {path!r}")
    return path


def max_frame_length(chunk_size: int) -> int:
    """The longest a frame of ``chunk_size`` raw bytes can be (incompressible data grows a
    little under zstd and gzip)."""
    return chunk_size + chunk_size // 64 + 4096


def _frame(r: Reader, d: Any, where: str, chunk_size: int) -> Frame:
    obj = r.get(d, "object", str, where)
    if not layout.is_object_id(obj):
        raise r.fail(f"field {where}object is not an object id")
    codec = r.get(d, "codec", str, where)
    if codec not in CODECS:
        raise r.fail(f"unknown codec {codec!r} at {where}")
    return Frame(
        object=obj,
        offset=r.nat(d, "offset", where, MAX_OFFSET),
        length=r.nat(d, "length", where, max_frame_length(chunk_size)),
        codec=codec,
        size=r.nat(d, "size", where, chunk_size),
        hash=r.hash(d, "hash", where),
    )


def parse_chunk(r: Reader, d: Any, where: str, chunk_size: int) -> Chunk:
    frames_raw = r.get(d, "frames", list, where)
    if not 1 <= len(frames_raw) <= MAX_CHAIN_HARD:
        raise r.fail(f"{where}frames must hold 1..{MAX_CHAIN_HARD} frames")
    frames = tuple(_frame(r, f, f"{where}frames[{i}].", chunk_size) for i, f in enumerate(frames_raw))
    for f in frames[:-1]:
        if f.codec != "zstd" or f.size > chunk_size:
            raise r.fail(f"{where}frames: bad delta base")
    for f in frames[1:]:
        if f.codec != "zstd":
            raise r.fail(f"{where}frames: delta frames must be zstd")
    chunk = Chunk(hash=r.hash(d, "hash", where), size=r.nat(d, "size", where, chunk_size), frames=frames)
    if frames[-1].hash != chunk.hash or frames[-1].size != chunk.size:
        raise r.fail(f"{where}frames do not end in the chunk's content")
    return chunk


def check_chunks(r: Reader, path: str, chunks: tuple[Chunk, ...], size: int, chunk_size: int) -> None:
    """Chunks sit at fixed offsets and add up to the file's size."""
    if sum(c.size for c in chunks) != size:
        raise r.fail(f"{path}: chunk sizes do not add up to the file size")
    for c in chunks[:-1]:
        if c.size != chunk_size:
            raise r.fail(f"{path}: chunk not at a fixed offset")
    if chunks and not 0 < chunks[-1].size <= chunk_size:
        raise r.fail(f"{path}: last chunk has a bad size")


#: Longest chunk table a reader accepts (about a million chunks with full delta chains: a
#: 1 TiB file at the default chunk size), and the longest line one chunk may take (a chain of
#: MAX_CHAIN_HARD frames): a hostile root cannot make a reader decode more than that.
MAX_TABLE = 1 << 30
MAX_TABLE_LINE = 16 << 10


def _table(r: Reader, d: Any, where: str, chunks: int) -> TableRef:
    where = f"{where}table."
    obj = r.get(d, "object", str, where)
    if not layout.is_object_id(obj):
        raise r.fail(f"field {where}object is not an object id")
    size = r.nat(d, "size", where, min(MAX_TABLE, chunks * MAX_TABLE_LINE))
    codec = r.get(d, "codec", str, where)
    if codec not in CODECS:
        raise r.fail(f"unknown codec {codec!r} at {where}")
    length = r.nat(d, "length", where, size + size // 64 + 4096)
    return TableRef(obj, r.nat(d, "offset", where, MAX_OFFSET), length, size, r.hash(d, "hash", where), codec)


def _file(r: Reader, d: Any, i: int, chunk_size: int, version: int) -> FileEntry:
    where = f"files[{i}]."
    path = r.get(d, "path", str, where)
    check_rel_path(path)
    role = r.get(d, "role", str, where)
    if role not in ROLES:
        raise r.fail(f"{where}role {role!r} is unknown")
    size = r.nat(d, "size", where)
    common = dict(path=path, size=size, mode=r.nat(d, "mode", where) & 0o777, hash=r.hash(d, "hash", where),
                  role=role)
    if version >= 2:
        count = r.nat(d, "chunk_count", where)
        if count != -(-size // chunk_size):
            raise r.fail(f"{path}: {count} chunks cannot hold {size} bytes")
        table = _table(r, r.get(d, "table", dict, where), where, count)
        return FileEntry(**common, table=table, chunk_count=count)
    chunks_raw = r.get(d, "chunks", list, where)
    chunks = tuple(parse_chunk(r, c, f"{where}chunks[{j}].", chunk_size) for j, c in enumerate(chunks_raw))
    check_chunks(r, path, chunks, size, chunk_size)
    return FileEntry(**common, chunks=chunks, chunk_count=len(chunks))


def _collection(r: Reader, d: Any, i: int) -> CollectionInfo:
    where = f"collections[{i}]."
    segs = r.get(d, "segments", list, where)
    if not all(isinstance(s, str) for s in segs):
        raise r.fail(f"{where}segments must be strings")
    dim = d.get("dimension") if isinstance(d, dict) else None
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool)):
        raise r.fail(f"{where}dimension has the wrong type")
    return CollectionInfo(
        name=r.get(d, "name", str, where),
        id=r.get(d, "id", str, where),
        segments=tuple(segs),
        records=r.nat(d, "records", where),
        dimension=dim,
        metadata=parse_metadata(d.get("metadata"), f"{r.what}: {where}metadata"),
        configuration=parse_configuration(d.get("configuration"), f"{r.what}: {where}configuration"),
    )


def _verified(r: Reader, d: Any) -> Verified | None:
    if d is None:
        return None
    where = "verified."
    checks = r.get(d, "checks", list, where)
    problems = r.get(d, "problems", list, where)
    if not all(isinstance(c, str) for c in checks + problems):
        raise r.fail("verified.checks and verified.problems must be strings")
    schema = {}
    for name, level in r.get(d, "schema", dict, where).items():
        schema[str(name)] = SchemaLevel(r.nat(level, "version", f"{where}schema."),
                                        r.get(level, "filename", str, f"{where}schema."))
    cols = r.get(d, "collections", dict, where)
    counts = {str(k): r.nat(cols, k, f"{where}collections.") for k in cols}
    return Verified(tuple(checks), schema, counts, tuple(problems))


def _check_tree(r: Reader, files: tuple[FileEntry, ...]) -> None:
    paths = {f.path for f in files}
    if len(paths) != len(files):
        raise r.fail("a path appears twice")
    for p in paths:
        parts = p.split("/")
        for k in range(1, len(parts)):
            if "/".join(parts[:k]) in paths:
                raise r.fail(f"{p} lies under a path that is a file")


def _versioned(raw: bytes, what: str, supported: tuple[int, ...]) -> tuple[dict[str, Any], int]:
    """The JSON object of ``raw`` and its format_version, if that is ``supported``."""
    data = _load_json(raw, what)
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise IntegrityError(f"{what}: missing format_version")
    if version not in supported:
        raise FormatVersionError(
            f"{what} has format_version {version}; this chroma-snapshot reads version "
            f"{', '.join(map(str, supported))} (upgrade chroma-snapshot)"
        )
    return data, version


def parse_manifest(raw: bytes, what: str = "manifest") -> Manifest:
    data, version = _versioned(raw, what, READABLE_VERSIONS)
    r = Reader(what)
    sid = r.get(data, "id", str)
    if not is_snapshot_id(sid):
        raise r.fail(f"bad snapshot id {sid!r}")
    parent = data.get("parent")
    if parent is not None and not is_snapshot_id(parent):
        raise r.fail("bad parent id")
    chunk_size = r.get(data, "chunk_size", int)
    problem = chunk_size_problem(chunk_size)
    if problem:
        raise r.fail(problem)
    tags = r.get(data, "tags", list)
    if not all(isinstance(t, str) for t in tags):
        raise r.fail("tags must be strings")
    files = tuple(_file(r, f, i, chunk_size, version) for i, f in enumerate(r.get(data, "files", list)))
    _check_tree(r, files)
    cols = tuple(_collection(r, c, i) for i, c in enumerate(r.get(data, "collections", list)))
    t = r.get(data, "totals", dict)
    # "chromadb_version": the name earlier roots gave the same fact
    cv = data.get("tool_chromadb_version", data.get("chromadb_version"))
    return Manifest(
        id=sid,
        parent=parent,
        created_at=r.get(data, "created_at", str),
        tool_version=r.get(data, "tool_version", str),
        tool_chromadb_version=cv if isinstance(cv, str) else None,
        source_path=r.get(data, "source_path", str),
        source_host=r.get(data, "source_host", str),
        tags=tuple(tags),
        message=r.get(data, "message", str),
        chunk_size=chunk_size,
        files=files,
        collections=cols,
        totals=Totals(**{k: r.nat(t, k, "totals.") for k in Totals.__dataclass_fields__}),
        verified=_verified(r, data.get("verified")),
        format_version=version,
    )


def parse_config(raw: bytes, what: str = "repository config") -> RepoConfig:
    data, _ = _versioned(raw, what, (CONFIG_VERSION,))
    r = Reader(what)
    cfg = RepoConfig(
        id=r.get(data, "id", str),
        chunk_size=r.get(data, "chunk_size", int),
        codec=r.get(data, "codec", str),
        level=r.nat(data, "level", limit=22),
        max_chain=r.nat(data, "max_chain", limit=MAX_CHAIN_HARD),
        created_at=r.get(data, "created_at", str),
        object_lock=_lock_setting(r, data.get("object_lock")),
    )
    # Every field is used later (the id names a cache folder): refuse anything unexpected.
    if not _REPO_ID.match(cfg.id):
        raise r.fail(f"repository id {cfg.id[:40]!r} is not 32 hex digits")
    problem = chunk_size_problem(cfg.chunk_size)
    if problem:
        raise r.fail(problem)
    try:
        check_codec(cfg.codec, cfg.level)
    except SnapshotError as exc:
        raise r.fail(str(exc)) from None
    if cfg.max_chain < 1:
        raise r.fail("max_chain out of range")
    return cfg


def _lock_setting(r: Reader, raw: Any) -> LockSetting | None:
    if raw is None:
        return None
    mode = r.get(raw, "mode", str, "object_lock.")
    if mode not in LOCK_MODES:
        raise r.fail(f"object_lock.mode {mode[:20]!r} is not one of {', '.join(LOCK_MODES)}")
    days = r.nat(raw, "days", "object_lock.", limit=MAX_LOCK_DAYS)
    if days < 1:
        raise r.fail("object_lock.days out of range")
    return LockSetting(mode, days)
