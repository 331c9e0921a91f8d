"""Chunk tables (format 2) on literal data: what encode_table writes, that parse_table reads it
back, and that every kind of bad table is one IntegrityError naming the file (chunk_tables.py)."""

from __future__ import annotations

import json

import pytest

from snapshot.errors import IntegrityError
from snapshot.format.chunk_tables import encode_table, parse_table
from snapshot.format.manifest import Chunk, FileEntry, Frame

CS = 4096  # chunk size
P = "d" * 32  # a pack
H = [f"{i:032x}" for i in range(1, 9)]

CHUNKS = (
    Chunk(H[0], CS, (Frame(P, 0, 700, "zstd", CS, H[0]),)),
    Chunk(H[2], CS, (Frame(P, 700, 800, "zstd", CS, H[1]), Frame(P, 1500, 30, "zstd", CS, H[2]))),
    Chunk(H[3], 10, (Frame(P, 1530, 19, "gzip", 10, H[3]),)),
)
FILE = FileEntry("seg/data_level0.bin", 2 * CS + 10, 0o644, H[7], "segment", chunk_count=3)


def _parse(raw: bytes, f: FileEntry = FILE) -> tuple[Chunk, ...]:
    return parse_table(raw, f, CS, "snapshot s1")


def test_a_table_is_one_json_line_per_chunk_with_frames_as_arrays() -> None:
    raw = encode_table(CHUNKS)
    lines = raw.decode().split("\n")
    assert lines[-1] == "" and len(lines) == 4
    assert json.loads(lines[1]) == {
        "frames": [[P, 700, 800, "zstd", CS, H[1]], [P, 1500, 30, "zstd", CS, H[2]]],
        "hash": H[2],
        "size": CS,
    }
    assert lines[0] == f'{{"frames":[["{P}",0,700,"zstd",{CS},"{H[0]}"]],"hash":"{H[0]}","size":{CS}}}'


def test_encode_then_parse_gives_the_chunks_back() -> None:
    assert _parse(encode_table(CHUNKS)) == CHUNKS


def test_an_empty_file_has_an_empty_table() -> None:
    empty = FileEntry("seg/length.bin", 0, 0o644, H[7], "segment", chunk_count=0)
    assert encode_table(()) == b""
    assert _parse(b"", empty) == ()


def _lines() -> list[dict]:
    return [json.loads(x) for x in encode_table(CHUNKS).decode().splitlines()]


def _raw(lines: list[object]) -> bytes:
    return ("\n".join(json.dumps(x) for x in lines) + "\n").encode()


def _bad(change) -> list[object]:
    lines: list[object] = _lines()
    change(lines)
    return lines


@pytest.mark.parametrize("raw,says", [
    (b"\xff\xfe" + encode_table(CHUNKS), "not UTF-8"),
    (encode_table(CHUNKS[:2]), "2 chunks, the snapshot says 3"),
    (encode_table(CHUNKS) + encode_table(CHUNKS[2:]), "4 chunks, the snapshot says 3"),
    (encode_table(CHUNKS).replace(b"}\n", b"\n", 1), "line 1 is not JSON"),
    (_raw(_bad(lambda x: x.__setitem__(1, [1, 2]))), "line 2: frames must be lists of 6 fields"),
    (_raw(_bad(lambda x: x[0].pop("frames"))), "line 1: frames must be lists of 6 fields"),
    (_raw(_bad(lambda x: x[0]["frames"][0].pop())), "line 1: frames must be lists of 6 fields"),
    (_raw(_bad(lambda x: x[0]["frames"][0].__setitem__(0, "../etc"))), "is not an object id"),
    (_raw(_bad(lambda x: x[0]["frames"][0].__setitem__(3, "lz4"))), "unknown codec 'lz4'"),
    (_raw(_bad(lambda x: x[0]["frames"][0].__setitem__(1, -1))), "chunks[0].frames[0].offset is negative"),
    (_raw(_bad(lambda x: x[2].update(hash=H[0]))), "chunks[2].frames do not end in the chunk's content"),
    (_raw(_bad(lambda x: x[1]["frames"][1].__setitem__(3, "gzip"))), "delta frames must be zstd"),
    (_raw(_bad(lambda x: x[0].update(size=CS + 1))), "chunks[0].size is out of range"),
    (_raw(_bad(lambda x: x.reverse())), "chunk not at a fixed offset"),
])
def test_a_bad_table_is_an_integrity_error_naming_the_file(raw: bytes, says: str) -> None:
    with pytest.raises(IntegrityError) as err:
        _parse(raw)
    message = str(err.value)
    assert message.startswith("snapshot s1: chunk table of seg/data_level0.bin"), message
    assert says in message, message


def test_chunks_must_add_up_to_the_file_size() -> None:
    longer = FileEntry(FILE.path, FILE.size + 1, 0o644, H[7], "segment", chunk_count=3)
    with pytest.raises(IntegrityError, match="chunk sizes do not add up to the file size"):
        _parse(encode_table(CHUNKS), longer)
