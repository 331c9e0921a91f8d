"""Building and changing real Chroma persist dirs for the tests (explicit, seeded embeddings)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

DIM = 64
DEFAULT_SPEC = {"docs": 3000, "notes": 1000}


@contextmanager
def client(path: Path) -> Iterator[Any]:
    import chromadb
    from chromadb.api.client import SharedSystemClient
    from chromadb.config import Settings

    c = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    try:
        yield c
    finally:
        SharedSystemClient.clear_system_cache()


def vectors(seed: int, n: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build_db(path: Path, spec: dict[str, int] | None = None, seed: int = 0) -> dict[str, int]:
    spec = spec or DEFAULT_SPEC
    with client(path) as c:
        for k, (name, n) in enumerate(sorted(spec.items())):
            col = c.get_or_create_collection(name, embedding_function=None)
            for start in range(0, n, 1000):
                stop = min(n, start + 1000)
                col.add(
                    ids=[f"{name}-{i}" for i in range(start, stop)],
                    embeddings=vectors(seed * 1000 + k * 100 + start, stop - start),
                    documents=[f"{name} document {i} " + "lorem ipsum " * 10 for i in range(start, stop)],
                    metadatas=[{"i": i, "group": i % 7} for i in range(start, stop)],
                )
    return dict(spec)


def grow(path: Path, name: str, n: int, seed: int, prefix: str = "new") -> list[str]:
    ids = [f"{name}-{prefix}{seed}-{i}" for i in range(n)]
    with client(path) as c:
        col = c.get_collection(name)
        col.add(
            ids=ids,
            embeddings=vectors(10_000 + seed, n),
            documents=[f"added {i}" for i in range(n)],
            metadatas=[{"i": -i, "group": 99} for i in range(n)],
        )
    return ids


def update_metadata(path: Path, name: str, ids: list[str], value: int) -> None:
    with client(path) as c:
        c.get_collection(name).update(ids=ids, metadatas=[{"i": value, "group": -1} for _ in ids])


def delete(path: Path, name: str, ids: list[str]) -> None:
    with client(path) as c:
        c.get_collection(name).delete(ids=ids)


def counts(path: Path) -> dict[str, int]:
    """Open a throwaway copy (Chroma writes on open) and count every collection."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "db"
        shutil.copytree(path, copy)
        with client(copy) as c:
            return {col.name: c.get_collection(col.name).count() for col in c.list_collections()}


def tree_digest(path: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (symlinks by target), to prove a tree unchanged."""
    out = {}
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def sqlite_payload(path: Path) -> bytes:
    """chroma.sqlite3 without its 100-byte header (the online backup rewrites counters there)."""
    return path.read_bytes()[100:]
