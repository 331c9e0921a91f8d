"""The benchmark's Chroma persist dir: building it (seeded, explicit embeddings) and changing it.

Run as a script so that chromadb lives in a child process that exits (and so flushes and closes
every file) before a backup tool reads the directory::

    python bench/dataset.py build PATH --records N
    python bench/dataset.py build PATH --collections C --records N    # C tenants x N records
    python bench/dataset.py insert|update|delete PATH --records N
    python bench/dataset.py counts PATH

Each prints one JSON object on stdout. Everything is a pure function of N (and C) and the
seed, so the counts a restore must show can be computed without opening the DB
(``expected_counts``, ``tenant_counts``).

The data imitates a RAG store: 384-dim unit-normalised float32 embeddings (the size of
all-MiniLM-L6-v2), ~300-character chunks of text, a few metadata fields, two collections split
90% / 10%. Chroma's default embedding function needs the internet, so embeddings are explicit.
With ``--collections C`` it imitates a multi-tenant store instead: C collections
``tenant-0000``... of N records each, the same kind of records; tenant k's records do not
depend on C, so a 1-collection DB holds exactly the first collection of a 500-collection one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DIM = 384
SEED = 20240601
#: (collection, share of the records); the last one takes the rounding remainder.
COLLECTIONS = (("docs", 0.9), ("notes", 0.1))
CHANGE_FRACTION = 0.01
CHANGES = ("insert", "update", "delete")


def split(n: int) -> dict[str, int]:
    """How ``n`` records are shared between the collections (deterministic)."""
    out: dict[str, int] = {}
    left = n
    for name, share in COLLECTIONS[:-1]:
        out[name] = round(n * share)
        left -= out[name]
    out[COLLECTIONS[-1][0]] = left
    return out


def change_size(n: int) -> int:
    return max(1, round(n * CHANGE_FRACTION))


def expected_counts(n: int, applied: list[str]) -> dict[str, int]:
    """Records per collection after building ``n`` and applying ``applied`` changes in order."""
    counts = split(n)
    delta = split(change_size(n))
    for change in applied:
        if change == "insert":
            counts = {k: counts[k] + delta[k] for k in counts}
        elif change == "delete":
            counts = {k: counts[k] - delta[k] for k in counts}
    return counts


@contextmanager
def client(path: Path) -> Iterator[Any]:
    import chromadb
    from chromadb.api.client import SharedSystemClient  # type: ignore[attr-defined]
    from chromadb.config import Settings

    c = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    try:
        yield c
    finally:
        SharedSystemClient.clear_system_cache()


def _rng(*key: int) -> Any:
    import numpy as np

    return np.random.default_rng([SEED, *key])


def embeddings(rng: Any, n: int) -> Any:
    import numpy as np

    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


_SYLLABLES = ("ka", "lo", "mi", "ra", "tu", "ve", "si", "no", "pe", "da", "qu", "ri", "en", "ta",
              "or", "us", "el", "an", "is", "om", "be", "ch", "st", "gr")


def _vocabulary(rng: Any, size: int = 3000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        k = int(rng.integers(1, 5))
        words.add("".join(_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), k)))
    return sorted(words)


def documents(rng: Any, n: int, length: int = 300) -> list[str]:
    """``n`` texts of about ``length`` characters, Zipf-ish word frequencies like prose."""
    vocab = _vocabulary(_rng(0))
    ranks = rng.zipf(1.3, size=n * 80) % len(vocab)
    out, pos = [], 0
    for _ in range(n):
        words: list[str] = []
        size = 0
        while size < length:
            w = vocab[int(ranks[pos % len(ranks)])]
            pos += 1
            words.append(w)
            size += len(w) + 1
        out.append(" ".join(words)[:length].rstrip().capitalize() + ".")
    return out


def metadatas(rng: Any, start: int, n: int, tag: str) -> list[dict[str, Any]]:
    langs = ("en", "de", "fr", "es")
    scores = rng.random(n)
    return [
        {
            "source": f"{tag}/file-{(start + i) // 40:05d}.md",
            "chunk": (start + i) % 40,
            "lang": langs[(start + i) % len(langs)],
            "year": 2000 + (start + i) % 25,
            "score": round(float(scores[i]), 4),
        }
        for i in range(n)
    ]


def _add(col: Any, ids: list[str], rng: Any, start: int, tag: str, batch: int) -> None:
    for lo in range(0, len(ids), batch):
        hi = min(len(ids), lo + batch)
        col.add(
            ids=ids[lo:hi],
            embeddings=embeddings(rng, hi - lo),
            documents=documents(rng, hi - lo),
            metadatas=metadatas(rng, start + lo, hi - lo, tag),
        )


def build(path: Path, n: int) -> dict[str, Any]:
    started = time.monotonic()
    with client(path) as c:
        batch = c.get_max_batch_size()
        for k, (name, count) in enumerate(split(n).items()):
            col = c.get_or_create_collection(name, embedding_function=None,
                                             metadata={"hnsw:space": "cosine"})
            _add(col, [f"{name}-{i}" for i in range(count)], _rng(1, k), 0, name, batch)
    return {"counts": split(n), "batch_size": batch, "seconds": round(time.monotonic() - started, 3)}


def tenant_counts(collections: int, per_collection: int) -> dict[str, int]:
    """The multi-tenant layout: collection name -> records."""
    return {f"tenant-{k:04d}": per_collection for k in range(collections)}


def build_tenants(path: Path, collections: int, per_collection: int) -> dict[str, Any]:
    started = time.monotonic()
    layout = tenant_counts(collections, per_collection)
    with client(path) as c:
        batch = c.get_max_batch_size()
        for k, (name, count) in enumerate(layout.items()):
            col = c.get_or_create_collection(name, embedding_function=None,
                                             metadata={"hnsw:space": "cosine"})
            _add(col, [f"{name}-{i}" for i in range(count)], _rng(4, k), 0, name, batch)
    return {"counts": layout, "batch_size": batch, "seconds": round(time.monotonic() - started, 3)}


def _sample_base_ids(name: str, count: int, k: int, salt: int) -> list[str]:
    picks = _rng(3, salt).choice(count, size=min(k, count), replace=False)
    return [f"{name}-{int(i)}" for i in sorted(picks)]


def apply_change(path: Path, n: int, change: str) -> dict[str, Any]:
    """One of CHANGES, 1% of the records, shared between the collections like the records."""
    started = time.monotonic()
    base, delta = split(n), split(change_size(n))
    with client(path) as c:
        batch = c.get_max_batch_size()
        for k, (name, k_change) in enumerate(delta.items()):
            if k_change == 0:
                continue
            col = c.get_collection(name)
            if change == "insert":
                ids = [f"{name}-new-{i}" for i in range(k_change)]
                _add(col, ids, _rng(2, k), base[name], f"{name}-new", batch)
            elif change == "update":
                ids = _sample_base_ids(name, base[name], k_change, 10 + k)
                for lo in range(0, len(ids), batch):
                    part = ids[lo:lo + batch]
                    col.update(ids=part, metadatas=[{"reviewed": True, "year": 2025} for _ in part])
            elif change == "delete":
                ids = _sample_base_ids(name, base[name], k_change, 20 + k)
                for lo in range(0, len(ids), batch):
                    col.delete(ids=ids[lo:lo + batch])
            else:
                raise ValueError(f"unknown change {change!r}")
    return {"change": change, "records": sum(delta.values()),
            "seconds": round(time.monotonic() - started, 3)}


def counts(path: Path) -> dict[str, int]:
    """Open the dir (Chroma writes on open: use a copy you can spoil) and count every collection."""
    with client(path) as c:
        return {col.name: c.get_collection(col.name).count() for col in c.list_collections()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("build", "counts", *CHANGES))
    ap.add_argument("path", type=Path)
    ap.add_argument("--records", type=int, default=0, help="records (per collection with --collections)")
    ap.add_argument("--collections", type=int, default=0,
                    help="build: that many tenant collections of --records each, not docs/notes")
    args = ap.parse_args(argv)
    if args.action == "build" and args.collections:
        out = build_tenants(args.path, args.collections, args.records)
    elif args.action == "build":
        out = build(args.path, args.records)
    elif args.action == "counts":
        out = {"counts": counts(args.path)}
    else:
        out = apply_change(args.path, args.records, args.action)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
