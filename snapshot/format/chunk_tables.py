"""Chunk tables (format 2): one file's chunk list, stored as a zstd frame of JSON lines in a
pack, shared by every snapshot in which the file did not change.

Each line is one chunk, in file order: ``{"frames": [[object, offset, length, codec, size,
hash], ...], "hash": ..., "size": ...}`` (frames as arrays: a table of a large file repeats
them a hundred thousand times). A table read from a repository is untrusted: every field is
validated as a manifest's are, and the chunks must add up to the file they describe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from snapshot.errors import IntegrityError
from snapshot.format.manifest import Chunk, FileEntry, Reader, check_chunks, parse_chunk

_FRAME_FIELDS = ("object", "offset", "length", "codec", "size", "hash")


def encode_table(chunks: Iterable[Chunk]) -> bytes:
    lines = []
    for c in chunks:
        frames = [[f.object, f.offset, f.length, f.codec, f.size, f.hash] for f in c.frames]
        lines.append(json.dumps({"frames": frames, "hash": c.hash, "size": c.size}, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode() if lines else b""


def parse_table(raw: bytes, f: FileEntry, chunk_size: int, what: str) -> tuple[Chunk, ...]:
    """The chunks of file ``f`` from its table's bytes (already hash-checked by the caller)."""
    r = Reader(f"{what}: chunk table of {f.path}")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise r.fail("not UTF-8") from exc
    if len(lines) != f.chunk_count:
        raise r.fail(f"{len(lines)} chunks, the snapshot says {f.chunk_count}")
    out = parse_lines(lines, 0, chunk_size, r.what)
    check_chunks(r, f.path, out, f.size, chunk_size)
    return out


def parse_lines(lines: Iterable[str | bytes], first: int, chunk_size: int, what: str) -> tuple[Chunk, ...]:
    """The chunks of some consecutive lines of a table, the first being chunk ``first``: each
    line validated on its own (whether they add up to the file is :func:`parse_table`'s)."""
    r = Reader(what)
    chunks = []
    for i, line in enumerate(lines, first):
        try:
            d = json.loads(line)
        except (ValueError, RecursionError) as exc:  # also a number of more than 4300 digits
            raise IntegrityError(f"{r.what}: line {i + 1} is not JSON") from exc
        frames = d.get("frames") if isinstance(d, dict) else None
        if not isinstance(frames, list) or not all(isinstance(x, list) and len(x) == 6 for x in frames):
            raise r.fail(f"line {i + 1}: frames must be lists of 6 fields")
        d = dict(d, frames=[dict(zip(_FRAME_FIELDS, x, strict=True)) for x in frames])
        chunks.append(parse_chunk(r, d, f"chunks[{i}].", chunk_size))
    return tuple(chunks)
