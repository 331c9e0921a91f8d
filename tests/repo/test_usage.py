"""The one walker of what snapshots reference (snapshot/repo/usage.py), on literal manifests:
inline chunks (format 1) and chunk tables (format 2), a table read once per hash while each
entry names its own copy, unreadable tables reported per entry, and the per-path view."""

from __future__ import annotations

import pytest

from snapshot.errors import IntegrityError, SnapshotError, StorageError
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest, TableRef, Totals
from snapshot.repo.usage import Usage


def _oid(c: str) -> str:
    return c * 32


def _fr(obj: str, offset: int, h: str = "h") -> Frame:
    return Frame(_oid(obj), offset, 10, "zstd", 100, h * 32)


def _chunk(*frames: Frame) -> Chunk:
    return Chunk(frames[-1].hash, 100, frames)


def _table(obj: str, offset: int, h: str) -> TableRef:
    return TableRef(_oid(obj), offset, 20, 200, h * 32)


def _inline(path: str, *chunks: Chunk) -> FileEntry:
    return FileEntry(path, 100 * len(chunks), 0o644, "f" * 32, "other", chunks=chunks)


def _tabled(path: str, table: TableRef, count: int) -> FileEntry:
    return FileEntry(path, 100 * count, 0o644, "f" * 32, "other", table=table, chunk_count=count)


def _manifest(sid: str, *files: FileEntry) -> Manifest:
    return Manifest(sid, None, "2026-01-01T00:00:00Z", "0", None, "/db", "host", (), "", 100, files, (),
                    Totals(len(files), 0, 0, 0, 0, 0), format_version=2 if any(f.table for f in files) else 1)


class _Repo:
    """Stands in for a Repository: chunk tables by hash, reads counted by location, some
    locations failing."""

    def __init__(self, tables: dict[str, tuple[Chunk, ...]], failing: dict[tuple[str, int], SnapshotError]
                 | None = None) -> None:
        self.tables, self.failing = tables, failing or {}
        self.reads: list[tuple[str, int]] = []

    def chunks(self, m: Manifest, f: FileEntry) -> tuple[Chunk, ...]:
        if f.table is None:
            return f.chunks
        self.reads.append((f.table.object, f.table.offset))
        error = self.failing.get((f.table.object, f.table.offset))
        if error is not None:
            raise error
        return self.tables[f.table.hash]


def _usage(repo: _Repo) -> Usage:
    return Usage(repo)  # type: ignore[arg-type]


# s1 (format 1): a.bin inline, one chunk with a two-frame chain (full frame in pack A, delta in B)
A0, B0 = _fr("a", 0, "1"), _fr("b", 0, "2")
S1 = _manifest("s1", _inline("a.bin", _chunk(A0, B0)))
# s2 and s3 (format 2): a.bin's table (hash t) in pack T, then the same table stored again in
# pack U (a file that changed back); its chunk is a chain A0 -> C0.
C0 = _fr("c", 0, "3")
T_AT_T, T_AT_U = _table("t", 0, "t"), _table("u", 40, "t")
TABLES = {"t" * 32: (_chunk(A0, C0),), "v" * 32: (_chunk(_fr("d", 0, "4")), _chunk(_fr("d", 10, "5")))}
S2 = _manifest("s2", _tabled("a.bin", T_AT_T, 1), _tabled("b.bin", _table("t", 20, "v"), 2))
S3 = _manifest("s3", _tabled("a.bin", T_AT_U, 1))


def test_objects_of_inline_chunks_and_of_chunk_tables() -> None:
    usage = _usage(_Repo(TABLES))
    assert usage.objects(S1) == {_oid("a"), _oid("b")}
    assert usage.objects(S2) == {_oid("t"), _oid("a"), _oid("c"), _oid("d")}
    assert usage.objects_of([S1, S2]) == {_oid(c) for c in "abcdt"}


def test_a_table_is_read_once_per_hash_but_each_entry_names_its_own_copy() -> None:
    repo = _Repo(TABLES)
    usage = _usage(repo)
    assert usage.objects(S2) == {_oid("t"), _oid("a"), _oid("c"), _oid("d")}
    # s3's a.bin has the same table content, stored in pack U: U is in use, T is not (for s3)
    assert usage.objects(S3) == {_oid("u"), _oid("a"), _oid("c")}
    assert repo.reads == [(_oid("t"), 0), (_oid("t"), 20)]  # s3's copy was not read again


def test_walk_gives_chunks_the_first_time_a_table_is_met() -> None:
    repo = _Repo(TABLES)
    seen = [(r.manifest.id, r.entry.path, r.table, r.chunks) for r in _usage(repo).walk([S1, S2, S3])]
    assert seen == [
        ("s1", "a.bin", None, (_chunk(A0, B0),)),
        ("s2", "a.bin", T_AT_T, TABLES["t" * 32]),
        ("s2", "b.bin", _table("t", 20, "v"), TABLES["v" * 32]),
        ("s3", "a.bin", T_AT_U, None),
    ]


def test_an_unreadable_table_is_reported_for_each_entry_read_once_and_another_copy_is_read() -> None:
    broken = IntegrityError("chunk table of a.bin does not match its hash")
    repo = _Repo(TABLES, {(_oid("t"), 0): broken})
    s4 = _manifest("s4", _tabled("a.bin", T_AT_T, 1))
    refs = list(_usage(repo).walk([S2, s4, S3]))
    assert [(r.manifest.id, r.entry.path, r.error) for r in refs] == [
        ("s2", "a.bin", broken), ("s2", "b.bin", None), ("s4", "a.bin", broken), ("s3", "a.bin", None)]
    assert refs[0].objects == {_oid("t")}  # the table's own object is referenced all the same
    assert refs[3].chunks == TABLES["t" * 32]  # the copy in pack U is fine
    assert repo.reads == [(_oid("t"), 0), (_oid("t"), 20), (_oid("u"), 40)]
    with pytest.raises(IntegrityError, match="does not match"):
        _usage(_Repo(TABLES, {(_oid("t"), 0): broken})).objects(S2)
    with pytest.raises(StorageError):
        next(_usage(_Repo(TABLES, {(_oid("t"), 0): StorageError("GET failed")})).paths([S2]))


def test_a_table_not_to_be_read_is_asked_about_every_time_and_not_counted_read() -> None:
    repo = _Repo(TABLES)
    asked: list[tuple[str, str]] = []

    def readable(m: Manifest, f: FileEntry, table: TableRef) -> bool:
        asked.append((m.id, table.object))
        return table.object != _oid("t") or table.offset != 0

    refs = list(_usage(repo).walk([S2, S3, S2], readable))
    t, u = _oid("t"), _oid("u")
    assert asked == [("s2", t), ("s2", t), ("s3", u), ("s2", t), ("s2", t)]
    assert [r.chunks is not None for r in refs] == [False, True, True, False, False]
    assert repo.reads == [(_oid("t"), 20), (_oid("u"), 40)]


def test_paths_gives_per_path_the_distinct_chains_the_table_copies_and_the_objects() -> None:
    repo = _Repo(TABLES)
    s0 = _manifest("s0", _inline("a.bin", _chunk(A0, B0)), _inline("z.bin", _chunk(_fr("e", 0, "6"))))
    paths = list(_usage(repo).paths([s0, S1, S2, S3]))
    assert [p.path for p in paths] == ["a.bin", "b.bin", "z.bin"]
    a = paths[0]
    # s0 and s1 list the same inline chunks, s2 and s3 the same table: two versions
    assert [v.snapshots for v in a.versions] == [("s0", "s1"), ("s2", "s3")]
    assert [v.tables for v in a.versions] == [(), (T_AT_T, T_AT_U)]
    assert a.chunk_count == 1
    assert a.chains(0) == {(A0, B0), (A0, C0)}
    assert a.chains(1) == set()
    content = TABLES["t" * 32]
    assert a.tables() == {(_oid("t"), 0): (T_AT_T, content), (_oid("u"), 40): (T_AT_U, content)}
    assert a.objects == {_oid(c) for c in "abctu"}
    b = paths[1]
    assert b.chunk_count == 2 and b.chains(1) == {(_fr("d", 10, "5"),)}
    assert paths[2].tables() == {} and paths[2].objects == {_oid("e")}
    assert repo.reads == [(_oid("t"), 0), (_oid("t"), 20)]  # each table once, one path at a time


def test_the_versions_of_a_path_share_equal_frames_and_chains() -> None:
    """Each chunk table is parsed on its own, so two versions of a file hold equal frames as
    separate objects; the per-path view makes them one (a kept chain is the one before it plus
    a link: at 20 GiB that is most of a prune's memory)."""
    old = (_chunk(_fr("a", 0, "1")), _chunk(_fr("a", 10, "2")))
    new = (_chunk(_fr("a", 0, "1"), _fr("b", 0, "3")), _chunk(_fr("a", 10, "2")))  # equal, not the same
    assert new[0].frames[0] == old[0].frames[0] and new[0].frames[0] is not old[0].frames[0]
    repo = _Repo({"t" * 32: old, "u" * 32: new})
    manifests = [_manifest("s1", _tabled("x.bin", _table("t", 0, "t"), 2)),
                 _manifest("s2", _tabled("x.bin", _table("u", 0, "u"), 2))]
    (path,) = Usage(repo).paths(manifests)  # type: ignore[arg-type]
    first, second = (v.chunks for v in path.versions)
    assert second[0].frames[0] is first[0].frames[0]  # one frame object
    assert second[1].frames is first[1].frames  # one chain object
    assert [c.frames for c in first] == [c.frames for c in old]  # and the same content
    assert [c.frames for c in second] == [c.frames for c in new]
