"""Build a small Chroma DB, snapshot it, change it, snapshot again, restore the first, verify.

    python examples/quickstart.py [WORKDIR]

Everything is written under WORKDIR: the DB in vector_db/, the repository in snapshots/, the
base cache in base-cache/ and the restore in restored/. WORKDIR must be new or empty (the
example refuses a folder holding anything: it never deletes what it did not create); without
one it works in a fresh temporary folder and removes it at the end. Embeddings are explicit
seeded vectors, so no model is downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import chromadb
import numpy as np
from chromadb.api.client import SharedSystemClient

import snapshot
from snapshot import Repository


def vectors(seed: int, n: int, dim: int = 128) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add(db: Path, name: str, start: int, n: int, seed: int) -> int:
    client = chromadb.PersistentClient(path=str(db))
    col = client.get_or_create_collection(name, embedding_function=None)
    col.add(
        ids=[f"{name}-{i}" for i in range(start, start + n)],
        embeddings=vectors(seed, n),
        documents=[f"chapter {i % 12}: passage {i}" for i in range(start, start + n)],
        metadatas=[{"chapter": i % 12} for i in range(start, start + n)],
    )
    count = col.count()
    SharedSystemClient.clear_system_cache()
    return count


_COUNT = """
import json, sys, chromadb
client = chromadb.PersistentClient(path=sys.argv[1])
print(json.dumps({c.name: client.get_collection(c.name).count() for c in client.list_collections()}))
"""


def count_in(db: Path) -> dict[str, int]:
    """Open ``db`` in a fresh process: Chroma keeps per-process state about directories it has
    opened, so a process that had the old files open can read stale data after a restore
    swapped them (restart or reopen applications after a restore)."""
    out = subprocess.run([sys.executable, "-c", _COUNT, str(db)], capture_output=True, text=True, check=True)
    counts: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return counts


def main(workdir: Path) -> None:
    db, repo_dir, restored = workdir / "vector_db", workdir / "snapshots", workdir / "restored"
    add(db, "textbook", 0, 2000, seed=1)
    add(db, "glossary", 0, 300, seed=2)

    repo = Repository.open(repo_dir, create=True)
    cache = workdir / "base-cache"  # the last capture, kept so the next create deltas against it
    first = snapshot.create_snapshot(repo, db, tags=["initial"], message="first embeddings run", cache_dir=cache)
    print(f"snapshot 1: {first.id}  {first.collections}  uploaded {first.bytes_uploaded:,} bytes")

    add(db, "textbook", 2000, 20, seed=3)  # grow by 1%
    second = snapshot.create_snapshot(repo, db, message="after chapter 5", cache_dir=cache)
    print(f"snapshot 2: {second.id}  {second.collections}  uploaded {second.bytes_uploaded:,} bytes "
          f"({second.chunks_delta} delta chunks)")

    result = snapshot.restore_snapshot(repo, first.id, restored, chroma_check=True)
    print(f"restored {result.id} -> {restored}: checked {result.checks}, chromadb opened {result.chroma_checked}")
    assert count_in(restored) == {"textbook": 2000, "glossary": 300}, "restore verification failed"

    result = snapshot.restore_snapshot(repo, "latest", restored, force=True)
    print(f"restored latest over it, reusing {result.bytes_reused:,} local bytes")
    got = count_in(restored)
    assert got == {"textbook": 2020, "glossary": 300}, f"restore verification failed: {got}"
    assert second.bytes_uploaded < first.bytes_uploaded / 4, "the incremental snapshot was not cheap"
    print(f"OK: {len(repo.list_snapshots())} snapshots in {repo_dir}; the incremental one cost "
          f"{100 * second.bytes_uploaded / first.bytes_uploaded:.1f}% of the first")


def usable_workdir(arg: str) -> Path:
    """``arg`` as the folder to work in: new or empty, never one holding anything (which the
    example would mix its files into)."""
    workdir = Path(arg).expanduser().absolute()
    problem = None
    if workdir.exists() and not workdir.is_dir():
        problem = "is not a folder"
    elif workdir.is_dir() and any(workdir.iterdir()):
        problem = "is not empty"
    if problem:
        print(f"quickstart: error: WORKDIR {workdir} {problem}; name a new or empty folder (the example "
              "writes vector_db/, snapshots/, base-cache/ and restored/ into it)", file=sys.stderr)
        sys.exit(2)
    return workdir


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = usable_workdir(sys.argv[1])
        print(f"writing into {target}")
        main(target)
    else:
        with tempfile.TemporaryDirectory(prefix="chroma-snapshot-example-") as tmp:
            print(f"writing into {tmp} (a temporary folder, removed at the end)")
            main(Path(tmp))
