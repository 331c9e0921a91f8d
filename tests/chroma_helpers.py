"""Building and changing real Chroma persist dirs for the tests (explicit, seeded embeddings).

Every chromadb call runs in a fresh child process: chromadb keeps per-process state keyed by
collection and segment ids, and the tests copy one template (same ids) into many directories,
so in-process clients would read and write stale state across copies. The children are forked
from a server that has already imported chromadb (see :mod:`chroma_worker`).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.context
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

DIM = 64
DEFAULT_SPEC = {"docs": 3000, "notes": 1000}


def _context() -> multiprocessing.context.ForkServerContext:
    """A fork server that has imported chromadb, one per test process, started on first use:
    every operation still gets a fresh child process. (The server starts with the interpreter's
    own sys.path, so it preloads what site-packages holds; a name it cannot import is skipped.)"""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["numpy", "chromadb", "chromadb.api.rust", "chromadb_rust_bindings"])
    return _CONTEXT


_CONTEXT: multiprocessing.context.ForkServerContext | None = None


def _in_child(op: str, path: str, args: dict[str, Any], answer: Any) -> None:
    import chroma_worker  # chromadb is already imported here; the test process never imports it

    chroma_worker.run(op, path, args, answer)


def run_chroma(op: str, path: Path, **args: Any) -> Any:
    ctx = _context()
    mine, theirs = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_in_child, args=(op, str(path), args, theirs))
    child.start()
    theirs.close()
    try:
        status, result = mine.recv()
    except EOFError:
        status, result = "error", "the child process ended without an answer"
    child.join()
    mine.close()
    if status != "ok" or child.exitcode != 0:
        raise RuntimeError(f"chroma {op} failed (exit {child.exitcode}): {str(result)[-2000:]}")
    return result


def steps(path: Path, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    """Several changes in one chromadb process (one start instead of one per change), in
    order: ``steps(path, ("add", {"name": "docs", "ids": [...], "seed": 1}), ("delete", {...}))``."""
    result: list[Any] = run_chroma("steps", path, steps=[list(call) for call in calls])
    return result


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


def records(path: Path, name: str) -> list[tuple[str, bytes, str | None, dict[str, Any] | None]]:
    """Every record of collection ``name`` of a throwaway copy of ``path``, by id: (id,
    embedding as float32 bytes, document, metadata)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "db"
        shutil.copytree(path, copy)
        result: list[tuple[str, bytes, str | None, dict[str, Any] | None]] = run_chroma("records", copy, name=name)
    return result


def records_by_id(path: Path, name: str) -> dict[str, tuple[bytes, Any, Any, Any]]:
    """Every record of collection ``name`` of a throwaway copy: id -> (embedding as float32
    bytes, document, metadata, uri)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "db"
        shutil.copytree(path, copy)
        result: dict[str, tuple[bytes, Any, Any, Any]] = run_chroma("records_by_id", copy, name=name)
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
