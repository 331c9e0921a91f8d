"""Building and changing real Chroma persist dirs for the tests (explicit, seeded embeddings).

Every chromadb call runs in a fresh child process: chromadb keeps per-process state keyed by
collection and segment ids, and the tests copy one template (same ids) into many directories,
so in-process clients would read and write stale state across copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DIM = 64
DEFAULT_SPEC = {"docs": 3000, "notes": 1000}

_WORKER = r'''
import json, sys
import numpy as np
import chromadb
from chromadb.config import Settings

DIM = 64
def vectors(seed, n):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)

op, path, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
c = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
out = None
if op == "build":
    for k, (name, n) in enumerate(sorted(args["spec"].items())):
        col = c.get_or_create_collection(name, embedding_function=None)
        for start in range(0, n, 1000):
            stop = min(n, start + 1000)
            col.add(
                ids=[f"{name}-{i}" for i in range(start, stop)],
                embeddings=vectors(args["seed"] * 1000 + k * 100 + start, stop - start),
                documents=[f"{name} document {i} " + "lorem ipsum " * 10 for i in range(start, stop)],
                metadatas=[{"i": i, "group": i % 7} for i in range(start, stop)],
            )
elif op == "add":
    ids = args["ids"]
    c.get_collection(args["name"]).add(
        ids=ids, embeddings=vectors(10_000 + args["seed"], len(ids)),
        documents=[f"added {i}" for i in ids], metadatas=[{"i": -1, "group": 99} for _ in ids])
elif op == "update_metadata":
    c.get_collection(args["name"]).update(
        ids=args["ids"], metadatas=[{"i": args["value"], "group": -1} for _ in args["ids"]])
elif op == "update_embedding":
    c.get_collection(args["name"]).update(ids=args["ids"], embeddings=vectors(args["seed"], len(args["ids"])))
elif op == "delete":
    c.get_collection(args["name"]).delete(ids=args["ids"])
elif op == "delete_collection":
    c.delete_collection(args["name"])
elif op == "counts":
    out = {col.name: c.get_collection(col.name).count() for col in c.list_collections()}
elif op == "ids":
    out = sorted(c.get_collection(args["name"]).get(include=[])["ids"])
print(json.dumps(out))
'''


def run_chroma(op: str, path: Path, **args: Any) -> Any:
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, op, str(path), json.dumps(args)],
        capture_output=True, text=True, env=dict(os.environ, ANONYMIZED_TELEMETRY="False"),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"chroma {op} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_db(path: Path, spec: dict[str, int] | None = None, seed: int = 0) -> dict[str, int]:
    spec = dict(spec or DEFAULT_SPEC)
    run_chroma("build", path, spec=spec, seed=seed)
    return spec


def grow(path: Path, name: str, n: int, seed: int, prefix: str = "new") -> list[str]:
    ids = [f"{name}-{prefix}{seed}-{i}" for i in range(n)]
    run_chroma("add", path, name=name, ids=ids, seed=seed)
    return ids


def update_metadata(path: Path, name: str, ids: list[str], value: int) -> None:
    run_chroma("update_metadata", path, name=name, ids=ids, value=value)


def update_embedding(path: Path, name: str, ids: list[str], seed: int) -> None:
    run_chroma("update_embedding", path, name=name, ids=ids, seed=seed)


def delete(path: Path, name: str, ids: list[str]) -> None:
    run_chroma("delete", path, name=name, ids=ids)


def delete_collection(path: Path, name: str) -> None:
    run_chroma("delete_collection", path, name=name)


def become(path: Path, other: Path) -> None:
    """Make the Chroma dir at ``path`` a copy of ``other`` (a later state of the same dir, such
    as the ``chroma_grown`` fixture), as if chromadb had written the change there."""
    shutil.rmtree(path)
    shutil.copytree(other, path)


def retag(path: Path, value: int) -> None:
    """Change a Chroma dir without starting chromadb (seconds cheaper than :func:`grow`), for
    tests that need a snapshot to differ from the last: every record's ``group`` metadata
    becomes ``value`` (chroma.sqlite3 changes; the segment files and counts do not)."""
    with sqlite3.connect(path / "chroma.sqlite3") as conn:
        conn.execute("UPDATE embedding_metadata SET int_value = ? WHERE key = 'group'", (value,))
    conn.close()


def ids(path: Path, name: str) -> list[str]:
    result: list[str] = run_chroma("ids", path, name=name)
    return result


def counts(path: Path) -> dict[str, int]:
    """Count every collection of a throwaway copy (Chroma writes when it opens a dir)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "db"
        shutil.copytree(path, copy)
        result: dict[str, int] = run_chroma("counts", copy)
    return result


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


def stand_in_persist_dir(path: Path, *segments: str) -> Path:
    """A stand-in for a persist dir, for tests of what a restore may replace: a chroma.sqlite3
    whose ``segments`` table names ``segments``, and a folder for each holding a header.bin."""
    path.mkdir(parents=True)
    with sqlite3.connect(path / "chroma.sqlite3") as conn:
        conn.execute("CREATE TABLE segments (id TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO segments VALUES (?)", [(s,) for s in segments])
    conn.close()
    for segment in segments:
        (path / segment).mkdir()
        (path / segment / "header.bin").write_text("old")
    return path
