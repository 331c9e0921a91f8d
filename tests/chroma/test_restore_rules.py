"""What a restore knows of Chroma's files, on literal manifests: the order files are written in,
the names a replaced target may hold besides Chroma's, and the schema warning's words."""

from __future__ import annotations

import pytest

from snapshot.chroma import restore_rules
from snapshot.chroma.restore_rules import (
    include_names,
    installed_schema_warning,
    recorded_schema,
    schema_warning,
    write_order,
)
from snapshot.format.manifest import FileEntry, Manifest, SchemaLevel, Totals, Verified

SEG = "3f0c1a2b-9d4e-4c5f-8a6b-7c8d9e0f1a2b"
OTHER = "4c5f8a6b-0000-4000-8000-000000000000"
MIB = 1 << 20


def _file(path: str, size: int, role: str = "chroma") -> FileEntry:
    return FileEntry(path=path, size=size, mode=0o644, hash="0" * 32, role=role)


def _manifest(*files: FileEntry, verified: Verified | None = None) -> Manifest:
    return Manifest(
        id="20260101T000000Z-abcd", parent=None, created_at="2026-01-01T00:00:00Z", tool_version="0.2.0",
        tool_chromadb_version="0.6.3", source_path="/data/db", source_host="h", tags=(), message="",
        chunk_size=MIB, files=files, collections=(), totals=Totals(len(files), 0, 0, 0, 0, 0),
        verified=verified,
    )


def test_the_database_comes_first_then_small_files_then_id_maps_then_the_rest() -> None:
    m = _manifest(
        _file(f"{SEG}/data_level0.bin", 40 * MIB),
        _file(f"{SEG}/header.bin", 100),
        _file(f"{SEG}/index_metadata.pickle", 3 * MIB),
        _file("chroma.sqlite3", 200 * MIB),
        _file(f"{OTHER}/link_lists.bin", 2 * MIB),
        _file(f"{OTHER}/index_metadata.pickle", 2 * MIB),
        _file(f"{OTHER}/length.bin", MIB),  # one chunk exactly: a small file
        _file("notes/readme.txt", 10, role="include"),
    )
    assert [f.path for f in write_order(m)] == [
        "chroma.sqlite3",
        f"{SEG}/header.bin", f"{OTHER}/length.bin", "notes/readme.txt",
        f"{SEG}/index_metadata.pickle", f"{OTHER}/index_metadata.pickle",
        f"{SEG}/data_level0.bin", f"{OTHER}/link_lists.bin",
    ]


def test_a_small_id_map_is_written_with_the_small_files() -> None:
    m = _manifest(_file(f"{SEG}/data_level0.bin", 5 * MIB), _file(f"{SEG}/index_metadata.pickle", 900),
                  _file("chroma.sqlite3", 4096))
    assert [f.path for f in write_order(m)] == [
        "chroma.sqlite3", f"{SEG}/index_metadata.pickle", f"{SEG}/data_level0.bin"]


def test_include_names_are_the_top_level_names_of_included_files() -> None:
    m = _manifest(_file("chroma.sqlite3", 10), _file(f"{SEG}/header.bin", 10),
                  _file("notes/a/readme.txt", 10, role="include"), _file("extra.json", 10, role="include"))
    assert include_names(m) == {"notes", "extra.json"}
    assert include_names(_manifest(_file("chroma.sqlite3", 10))) == set()


SCHEMA = {"sysdb": (9, "00009-segment-collection-not-null.sqlite.sql"),
          "metadb": (4, "00004-metadata-indices.sqlite.sql")}


def test_the_recorded_schema_is_read_from_the_manifest() -> None:
    verified = Verified(checks=(), collections={},
                        schema={d: SchemaLevel(v, f) for d, (v, f) in SCHEMA.items()})
    assert recorded_schema(_manifest(verified=verified)) == SCHEMA
    assert recorded_schema(_manifest()) == {}
    assert installed_schema_warning(_manifest(), {}) is None  # nothing recorded: nothing to judge


def test_the_schema_warning_names_the_migrations_the_installed_chromadb_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(restore_rules, "chromadb_version", lambda: "0.5.0")
    m = _manifest()
    assert schema_warning(m, SCHEMA, lambda name: True) is None
    one = schema_warning(m, SCHEMA, lambda name: name.startswith("00004"))
    assert one == (
        "snapshot 20260101T000000Z-abcd: its database has applied migration "
        "sysdb 00009-segment-collection-not-null.sqlite.sql that the installed chromadb 0.5.0 does not "
        "know: a newer chromadb wrote it, and chromadb 0.5.0 may not open it; upgrade chromadb (to one "
        "at least as new as the one that wrote it)")
    both = schema_warning(m, SCHEMA, lambda name: False)
    assert both is not None and both.startswith(
        "snapshot 20260101T000000Z-abcd: its database has applied migrations "
        "metadb 00004-metadata-indices.sqlite.sql, sysdb 00009-segment-collection-not-null.sqlite.sql "
        "that the installed chromadb 0.5.0 does not know")
    assert schema_warning(m, SCHEMA, None) == (
        "chromadb is not installed here: cannot tell whether it can open this database")
    monkeypatch.setattr(restore_rules, "chromadb_version", lambda: None)
    assert "the installed chromadb ? does not know" in (schema_warning(m, SCHEMA, lambda name: False) or "")
