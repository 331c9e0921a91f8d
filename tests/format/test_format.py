"""The format's pure parts: manifest validation, path safety, codecs, chunk readers, ids."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot.errors import FormatVersionError, IntegrityError, UnsafePathError
from snapshot.format import layout
from snapshot.format.codecs import compress, decompress
from snapshot.format.hashing import digest
from snapshot.format.ids import SNAPSHOT_ID, new_snapshot_id
from snapshot.format.manifest import check_rel_path, dumps, parse_manifest
from snapshot.repo.packs import ChunkReader, PackWriter
from snapshot.repo.repository import Repository

H = "0" * 32


def _manifest(**over):
    frame = {"object": "a" * 32, "offset": 0, "length": 10, "codec": "zstd", "size": 5, "hash": H}
    m = {
        "format_version": 1, "id": "20261128T015012-1a2b3c4d", "parent": None,
        "created_at": "2026-11-28T01:50:12Z", "tool_version": "0.1.0", "chromadb_version": "1.5.9",
        "source_path": "/x", "source_host": "h", "tags": [], "message": "", "chunk_size": 4096,
        "files": [{"path": "chroma.sqlite3", "size": 5, "mode": 420, "hash": H, "role": "db",
                   "chunks": [{"hash": H, "size": 5, "frames": [frame]}]}],
        "collections": [{"name": "c", "id": "i", "segments": [], "records": 1, "dimension": 3}],
        "totals": {"files": 1, "bytes": 5, "chunks": 1, "chunks_new": 1, "bytes_new": 10, "objects_new": 1},
    }
    m.update(over)
    return json.dumps(m).encode()


def test_valid_manifest_parses():
    m = parse_manifest(_manifest())
    assert m.files[0].chunks[0].frames[0].size == 5 and m.collections[0].dimension == 3


def test_the_chromadb_beside_the_tool_is_written_under_its_own_name_and_the_old_name_still_reads():
    old = parse_manifest(_manifest())  # "chromadb_version", as earlier roots call it
    assert old.tool_chromadb_version == "1.5.9"
    written = json.loads(dumps(old))
    assert written["tool_chromadb_version"] == "1.5.9" and "chromadb_version" not in written
    assert parse_manifest(dumps(old)) == old
    both = parse_manifest(_manifest(tool_chromadb_version="1.6.0"))
    assert both.tool_chromadb_version == "1.6.0"
    assert parse_manifest(_manifest(chromadb_version=None)).tool_chromadb_version is None


@pytest.mark.parametrize(
    "change, error",
    [
        ({"format_version": 3}, FormatVersionError),
        ({"id": "nope"}, IntegrityError),
        ({"chunk_size": 12}, IntegrityError),
        ({"tags": [1]}, IntegrityError),
        ({"files": [{"path": "../x"}]}, UnsafePathError),
        ({"files": "x"}, IntegrityError),
    ],
)
def test_invalid_manifests(change, error):
    with pytest.raises(error):
        parse_manifest(_manifest(**change))


def test_sizes_and_chains_are_checked():
    base = json.loads(_manifest())
    base["files"][0]["size"] = 6
    with pytest.raises(IntegrityError, match="add up"):
        parse_manifest(json.dumps(base).encode())
    base = json.loads(_manifest())
    base["files"][0]["chunks"][0]["frames"][0]["hash"] = "1" * 32
    with pytest.raises(IntegrityError, match="do not end"):
        parse_manifest(json.dumps(base).encode())
    base = json.loads(_manifest())
    base["files"].append(dict(base["files"][0], path="chroma.sqlite3/inner"))
    with pytest.raises(IntegrityError, match="under a path"):
        parse_manifest(json.dumps(base).encode())
    with pytest.raises(IntegrityError, match="not valid JSON"):
        parse_manifest(b"\xff\xfe")


@pytest.mark.parametrize("bad", ["", "/abs", "..", "a/../b", "a/./b", "a//b", "a\\b", "C:x", "a\x00b", "x/"])
def test_unsafe_paths(bad):
    with pytest.raises(UnsafePathError):
        check_rel_path(bad)


@pytest.mark.parametrize("good", ["chroma.sqlite3", "a/b/c.bin", "..hidden", "a..b"])
def test_safe_paths(good):
    assert check_rel_path(good) == good


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=20000), st.binary(max_size=20000), st.sampled_from(["zstd", "gzip"]))
def test_codec_round_trip(data, base, codec):
    frame = compress(data, codec, 1, base if codec == "zstd" and base else None)
    out = decompress(frame, codec, len(data), base if codec == "zstd" and base else None)
    assert out == data


def test_delta_frame_is_small_and_needs_its_base():
    import os

    base = os.urandom(1 << 20)
    changed = bytearray(base)
    changed[5000:5100] = os.urandom(100)
    full = compress(bytes(changed), "zstd", 3)
    delta = compress(bytes(changed), "zstd", 3, base)
    assert len(delta) < len(full) / 100
    assert decompress(delta, "zstd", len(changed), base) == bytes(changed)
    with pytest.raises(IntegrityError):
        decompress(delta, "zstd", len(changed), None)


def test_corrupt_frames_and_size_bombs_are_integrity_errors():
    frame = compress(b"x" * 100000, "zstd", 3)
    with pytest.raises(IntegrityError):
        decompress(frame, "zstd", 10)  # manifest declares less than the frame holds
    bad = bytearray(frame)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(IntegrityError):
        decompress(bytes(bad), "zstd", 100000)
    with pytest.raises(IntegrityError):
        decompress(compress(b"y" * 1000, "gzip", 6)[:-3], "gzip", 1000)


def test_packs_round_trip_chain(tmp_path):
    repo = Repository.open(tmp_path, create=True)
    w = PackWriter(repo, pack_size=10)
    a, b = b"a" * 5000 + b"tail", b"a" * 4999 + b"Xtail"
    fa = w.add(compress(a, "zstd", 3), "zstd", len(a), digest(a))
    fb = w.add(compress(b, "zstd", 3, a), "zstd", len(b), digest(b))
    w.close()
    from snapshot.format.manifest import Chunk

    chunk = Chunk(hash=digest(b), size=len(b), frames=(w.resolve(fa), w.resolve(fb)))
    assert ChunkReader(repo).read_chunk(chunk) == b
    assert w.objects_uploaded == 2  # the pack size was exceeded after each frame


def test_snapshot_ids_sort_by_time_and_round_trip_keys():
    a, b = new_snapshot_id(1_700_000_000), new_snapshot_id(1_700_000_001)
    assert a < b and SNAPSHOT_ID.match(a)
    assert layout.snapshot_id_from_key(layout.snapshot_key(a)) == a
    oid = digest(b"x")
    assert layout.object_id_from_key(layout.object_key(oid)) == oid
    assert layout.snapshot_id_from_key("snapshots/evil/../x.json") is None


def test_ids_sort_within_one_second():
    ids = [new_snapshot_id(1_700_000_000 + k / 1000) for k in range(0, 1000, 7)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
