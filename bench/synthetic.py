"""A synthetic large Chroma persist dir for the scale benchmark, and the nightly changes to it.

Building a real Chroma DB of several GB takes hours here (bench/dataset.py adds about 500
records of 384 dims a second: 200k records, 0.8 GB, in ~400 s), so the large DB is a real
small one (``dataset.py build``, seeded) whose HNSW segments are *grown*: each vector
segment's capacity (``max_elements`` in header.bin) is raised and ``data_level0.bin`` and
``length.bin`` are sized for that capacity, which is how Chroma itself lays out a segment
whose elements are not all persisted yet (chromadb 1.5 writes the ``notes`` segment of a
5,000-record DB that way). The elements past the real ones hold realistic content: each one
has the link block of a random real element (its neighbour ids shifted, as in another part of
the graph), a fresh seeded unit-normalised float32 vector and its label, so a 1 MiB chunk
compresses like a real one (zstd -1: ~0.91 here, as real data_level0.bin chunks do).
chroma.sqlite3, the id maps and the record counts are untouched, so the directory passes
create's structural checks (sqlite-quick-check, segment-files, hnsw-header, hnsw-sizes,
ids-match) as it is: no ``--allow-inconsistent``. chromadb itself would load every capacity
element, so the benchmark never opens it with chromadb (restores run without --chroma-check).

A "night" (:func:`night`) changes the DB in place as Chroma does, without opening it: about
1% of the 1 MiB blocks of the grown files, at scattered seeded offsets, get new vectors for
some of their elements (and new links for others), and 1% of the records get a new ``score``
metadata value in chroma.sqlite3 (a plain SQL UPDATE: same rows, same counts).

    python bench/synthetic.py grow PATH --gib G [--seed S]
    python bench/synthetic.py night PATH --night K [--fraction F]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GIB = 1 << 30
BLOCK = 1 << 20
SEED = 20261130
#: hnswlib's header.bin (see snapshot/chroma/consistency.py): version, offsetLevel0, max_elements,
#: cur_element_count, size_data_per_element, label_offset, offsetData, maxlevel,
#: enterpoint_node, maxM, maxM0, M, mult, ef_construction.
HEADER = struct.Struct("<iQQQQQQiIQQQdQ")
MAX_ELEMENTS_AT = 12  # byte offset of max_elements in header.bin
#: Elements written per batch while growing (a few MiB of numpy arrays at a time).
BATCH = 4096
#: Elements changed in each block a night touches: vectors rewritten / link lists rewired.
VECTORS_PER_BLOCK, LINKS_PER_BLOCK = 12, 24
#: Share of the growth given to each segment, largest first (the rest split the remainder).
FIRST_SHARE = 0.9


@dataclass(frozen=True)
class Segment:
    """One HNSW segment folder and the layout of its level-0 elements."""

    folder: Path
    max_elements: int
    count: int
    size: int  # bytes per element
    label_at: int
    data_at: int
    max_m0: int

    @property
    def dim(self) -> int:
        return (self.label_at - self.data_at) // 4

    @property
    def data_level0(self) -> Path:
        return self.folder / "data_level0.bin"

    @classmethod
    def read(cls, folder: Path) -> Segment:
        f = HEADER.unpack_from((folder / "header.bin").read_bytes())
        return cls(folder, max_elements=f[2], count=f[3], size=f[4], label_at=f[5], data_at=f[6],
                   max_m0=f[10])


def segments(root: Path) -> list[Segment]:
    """The HNSW segments of a persist dir, most elements first (then by name)."""
    found = [Segment.read(d) for d in sorted(root.iterdir())
             if (d / "header.bin").is_file() and (d / "data_level0.bin").is_file()]
    return sorted(found, key=lambda s: (-s.count, s.folder.name))


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _links(rng: np.random.Generator, n: int, seg: Segment, real: np.ndarray | None,
           capacity: int) -> np.ndarray:
    """``n`` level-0 link blocks (uint32 words: the neighbour count, then maxM0 ids): copies of
    real blocks with their ids shifted by a random offset, or made up when none is real."""
    words = seg.data_at // 4
    if real is not None and len(real):
        out = real[rng.integers(0, len(real), n)].copy()
        shift = rng.integers(0, capacity, (n, 1), dtype=np.uint64)
        ids = (out[:, 1:].astype(np.uint64) + shift) % np.uint64(capacity)
        used = np.arange(words - 1)[None, :] < (out[:, :1] & 0xFFFF)
        out[:, 1:] = np.where(used, ids.astype(np.uint32), out[:, 1:])
        return out
    out = np.zeros((n, words), dtype=np.uint32)
    out[:, 0] = seg.max_m0
    out[:, 1:1 + seg.max_m0] = rng.integers(0, capacity, (n, seg.max_m0), dtype=np.uint32)
    return out


def _elements(rng: np.random.Generator, seg: Segment, first: int, n: int, real: np.ndarray | None,
              capacity: int) -> bytes:
    buf = np.zeros((n, seg.size), dtype=np.uint8)
    buf[:, :seg.data_at] = _links(rng, n, seg, real, capacity).view(np.uint8)
    buf[:, seg.data_at:seg.label_at] = _unit_vectors(rng, n, seg.dim).view(np.uint8)
    labels = np.arange(first, first + n, dtype=np.uint64)[:, None]
    buf[:, seg.label_at:seg.label_at + 8] = labels.view(np.uint8)
    return buf.tobytes()


def _real_links(seg: Segment, limit: int = 20_000) -> np.ndarray | None:
    """The link blocks of (up to ``limit`` of) the segment's persisted elements."""
    n = min(seg.count, limit)
    if n == 0:
        return None
    raw = np.fromfile(seg.data_level0, dtype=np.uint8, count=n * seg.size).reshape(n, seg.size)
    return raw[:, :seg.data_at].copy().view(np.uint32)


def grow_segment(seg: Segment, add_bytes: int, rng: np.random.Generator) -> dict[str, Any]:
    """Raise the capacity of ``seg`` by about ``add_bytes`` (data_level0.bin + length.bin)."""
    capacity = max(seg.max_elements, seg.count + math.ceil(add_bytes / (seg.size + 4)))
    real = _real_links(seg)
    with open(seg.data_level0, "r+b") as fh:
        fh.truncate(seg.count * seg.size)  # keep the real elements, rewrite the rest
        fh.seek(seg.count * seg.size)
        for first in range(seg.count, capacity, BATCH):
            n = min(BATCH, capacity - first)
            fh.write(_elements(rng, seg, first, n, real, capacity))
    length = seg.folder / "length.bin"
    with open(length, "r+b") as fh:
        fh.truncate(4 * seg.count)
        fh.truncate(4 * capacity)  # no upper-level links for the capacity elements: zeros
    with open(seg.folder / "header.bin", "r+b") as fh:
        fh.seek(MAX_ELEMENTS_AT)
        fh.write(struct.pack("<Q", capacity))
    return {"segment": seg.folder.name, "elements": seg.count, "capacity": capacity,
            "data_level0_bytes": capacity * seg.size}


def grow(root: Path, target: int, seed: int = SEED) -> dict[str, Any]:
    """Grow the persist dir ``root`` to about ``target`` bytes (never shrinks it)."""
    started = time.monotonic()
    segs = segments(root)
    before = dir_bytes(root)
    extra = target - before
    grown = []
    if extra > 0 and segs:
        shares = [1.0] if len(segs) == 1 else \
            [FIRST_SHARE] + [(1 - FIRST_SHARE) / (len(segs) - 1)] * (len(segs) - 1)
        for k, (seg, share) in enumerate(zip(segs, shares, strict=True)):
            grown.append(grow_segment(seg, int(extra * share), np.random.default_rng([seed, k])))
    return {"bytes_before": before, "bytes": dir_bytes(root), "target": target, "segments": grown,
            "seconds": round(time.monotonic() - started, 1)}


def _touch_block(fh: Any, seg: Segment, block: int, rng: np.random.Generator, capacity: int,
                 real: np.ndarray | None) -> None:
    """New vectors for a few elements that lie in 1 MiB block ``block``, new links for others."""
    lo = block * BLOCK // seg.size
    hi = min(capacity, ((block + 1) * BLOCK) // seg.size)  # elements starting in the block
    if hi <= lo:
        return
    picks = rng.choice(hi - lo, size=min(hi - lo, VECTORS_PER_BLOCK + LINKS_PER_BLOCK), replace=False) + lo
    vectors = _unit_vectors(rng, VECTORS_PER_BLOCK, seg.dim)
    links = _links(rng, LINKS_PER_BLOCK, seg, real, capacity)
    for i, e in enumerate(sorted(int(p) for p in picks)):
        if i % 3 == 0 and i // 3 < VECTORS_PER_BLOCK:
            fh.seek(e * seg.size + seg.data_at)
            fh.write(vectors[i // 3].tobytes())
        else:
            fh.seek(e * seg.size)
            fh.write(links[i % LINKS_PER_BLOCK].tobytes())


def night(root: Path, k: int, fraction: float = 0.01, seed: int = SEED) -> dict[str, Any]:
    """Change the DB in place as night ``k`` (seeded): ~``fraction`` of the 1 MiB blocks of
    every segment's data_level0.bin, and the ``score`` metadata of ``fraction`` of the records."""
    started = time.monotonic()
    rng = np.random.default_rng([seed, 1000 + k])
    touched = 0
    for seg in segments(root):
        size = seg.data_level0.stat().st_size
        capacity = size // seg.size
        blocks = math.ceil(size / BLOCK)
        chosen = rng.choice(blocks, size=max(1, round(blocks * fraction)), replace=False)
        real = _real_links(seg, limit=2000)
        with open(seg.data_level0, "r+b") as fh:
            for b in sorted(int(x) for x in chosen):
                _touch_block(fh, seg, b, rng, capacity, real)
        touched += len(chosen)
    conn = sqlite3.connect(root / "chroma.sqlite3")
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM embedding_metadata WHERE key = 'score'")]
        picks = rng.choice(len(ids), size=min(len(ids), max(1, round(len(ids) * fraction))), replace=False)
        with conn:
            conn.executemany("UPDATE embedding_metadata SET float_value = ? WHERE id = ? AND key = 'score'",
                             [(round(float(rng.random()), 4), ids[int(i)]) for i in picks])
    finally:
        conn.close()
    return {"night": k, "blocks_changed": touched, "records_updated": len(picks),
            "seconds": round(time.monotonic() - started, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("grow", "night"))
    ap.add_argument("path", type=Path)
    ap.add_argument("--gib", type=float, default=1.0, help="grow: target size of the dir in GiB")
    ap.add_argument("--night", type=int, default=0, help="night: which night (seeds the changes)")
    ap.add_argument("--fraction", type=float, default=0.01, help="night: share of blocks and records")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    if args.action == "grow":
        out = grow(args.path, int(args.gib * GIB), args.seed)
    else:
        out = night(args.path, args.night, args.fraction, args.seed)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    sys.exit(main())
