"""``restore --chroma-check``: opening a restored directory with chromadb, in child processes,
before it is swapped in.

Count alone misses most damage (an index can answer ``count()`` with its vectors gone), so each
collection is checked for its record count, a sample of embeddings fetched from a few offsets
(right dimension, finite values) and a query with a sampled vector that must find it again.

Chroma writes to chroma.sqlite3 when it opens a directory; the restore brings every file back
to the snapshot's bytes afterwards and verifies them again. A child process keeps chromadb's
process-wide state, file handles and any crash in its native index away from the caller.

Memory is bounded by a batch of collections, not the sum: chromadb keeps every collection it
has loaded, so the collections are checked in batches (at most :data:`BATCH` collections and
about as many records as the largest collection holds), each in a fresh child process.

Run as ``python -m snapshot.chroma.trial_open DIR`` with the expected collections as JSON on stdin;
prints one JSON object.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from snapshot.chroma.child import child_env
from snapshot.chroma.consistency import known_migrations, unknown_schema
from snapshot.chroma.schema import chromadb_version
from snapshot.errors import ChromaCheckError
from snapshot.format.manifest import Manifest

#: A DB's schema levels: migrations dir -> (version, migration file name).
Schema = dict[str, tuple[int, str]]

SAMPLE = 5
TIMEOUT = 900
#: Collections per child process (chromadb's per-collection overhead is a few MB even for
#: tiny ones).
BATCH = 32


#: Records a batch may hold even when every collection is smaller (tiny collections cost
#: chromadb more per collection than per record).
BATCH_RECORDS = 50_000


def batches(expected: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split the collections so that no batch holds more records than the largest collection
    (or BATCH_RECORDS) nor more than BATCH collections: a child then needs at most about twice
    what opening the largest collection alone needs."""
    limit = max([int(e["records"]) for e in expected] + [BATCH_RECORDS])
    out: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    total = 0
    for exp in sorted(expected, key=lambda e: e["name"]):
        if current and (total + int(exp["records"]) > limit or len(current) >= BATCH):
            out.append(current)
            current, total = [], 0
        current.append(exp)
        total += int(exp["records"])
    if current:
        out.append(current)
    return out


class ChromaChecker:
    """Child processes that open the directory with chromadb, one batch of collections each.
    The first child starts at once, so its chromadb import overlaps the restore's writing.

    Chroma writes to the directory it opens, so the caller must bring the files back to the
    snapshot's bytes afterwards (see :func:`snapshot.restore.repair.repair`)."""

    def __init__(self, built: Path) -> None:
        self.built = built
        self.batches = 0
        self._proc: subprocess.Popen[str] | None = self._spawn()

    def _spawn(self) -> subprocess.Popen[str]:
        env = child_env()
        return subprocess.Popen(
            [sys.executable, "-m", "snapshot.chroma.trial_open", os.fsdecode(self.built)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(self, m: Manifest, schema: Schema | None = None) -> dict[str, int]:
        """Check every collection of ``m``; returns collection name -> count. ``schema``: the
        DB's schema levels (dir -> (version, migration file)), to say what a failure to open
        it means."""
        expected = [
            {"name": c.name, "records": c.records, "dimension": c.dimension} for c in m.collections
        ]
        counts: dict[str, int] = {}
        for batch in batches(expected) or [[]]:
            proc = self._proc or self._spawn()
            self._proc = None
            counts.update(self._run_one(proc, batch, schema or {}))
            self.batches += 1
        return counts

    def _run_one(self, proc: subprocess.Popen[str], batch: list[dict[str, Any]],
                 schema: Schema) -> dict[str, int]:
        try:
            out, err = proc.communicate(json.dumps(batch), timeout=TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise ChromaCheckError(f"chromadb did not open the restored copy in {TIMEOUT}s") from exc
        try:
            report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            tail = (err.strip().splitlines() or ["no output"])[-1]
            raise ChromaCheckError(
                f"chromadb crashed opening the restored snapshot (exit {proc.returncode}): {tail}"
            ) from None
        if report.get("problems"):
            said = "; ".join(report["problems"])
            why = cannot_open(said, schema) if report.get("unopened") else said
            raise ChromaCheckError(f"Chroma check failed: {why}")
        counts: dict[str, int] = report.get("counts", {})
        return counts

    def close(self) -> None:
        """Stop a child that is still waiting (the restore failed before the check)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            self._proc.communicate()


def cannot_open(said: str, schema: Schema) -> str:
    """What it means that the installed chromadb did not open the restored DB (``said``: its
    words), worded from the DB's schema. Its files are the snapshot's bytes (every hash was
    checked), so the likely cause is a DB written by a newer chromadb: its schema or stored
    configuration is one the installed chromadb cannot read (chromadb 0.5 reading what 1.x
    wrote fails with a bare ``'_type'``)."""
    installed = chromadb_version() or "?"
    knows = known_migrations()
    unknown = unknown_schema(schema, knows) if knows is not None else []
    if unknown:
        return (f"the installed chromadb {installed} cannot open the restored database: a newer chromadb "
                f"wrote it (the DB has applied {', '.join(unknown)}, which chromadb {installed} does not "
                "know) and stored a schema or collection configuration this one cannot read; install a "
                f"chromadb at least as new as the one that wrote it (chromadb said: {said})")
    levels = ", ".join(f"{d} {f}" for d, (_v, f) in sorted(schema.items())) or "not recorded"
    return (f"the installed chromadb {installed} cannot open the restored database, though its files are "
            f"exactly the snapshot's (every hash checked; its schema: {levels}): if another chromadb "
            "version wrote it, open it with that version or a newer one (chromadb said: "
            f"{said})")


def _check_collection(client: Any, exp: dict[str, Any], problems: list[str]) -> int | None:
    name = exp["name"]
    try:
        col = client.get_collection(name)
        n = col.count()
    except Exception as exc:  # noqa: BLE001 - any chromadb failure is a finding
        problems.append(f"collection {name!r} does not open: {exc}".splitlines()[0])
        return None
    if n != exp["records"]:
        problems.append(f"collection {name!r} has {n} records, the manifest says {exp['records']}")
        return int(n)
    if n == 0:
        return 0
    probes: list[tuple[str, list[float]]] = []
    try:
        for offset in sorted({0, n // 2, max(n - SAMPLE, 0)}):
            got = col.get(limit=SAMPLE, offset=offset, include=["embeddings"])
            embs = got["embeddings"]
            if len(got["ids"]) == 0 or embs is None or len(embs) != len(got["ids"]):
                problems.append(f"collection {name!r}: no embeddings at offset {offset}")
                return int(n)
            probes.append((got["ids"][0], [float(x) for x in embs[0]]))
            for e in embs:
                if exp["dimension"] and len(e) != exp["dimension"]:
                    problems.append(f"collection {name!r}: embedding of dimension {len(e)}")
                    return int(n)
                if not all(math.isfinite(float(x)) for x in e):
                    problems.append(f"collection {name!r}: non-finite embedding values")
                    return int(n)
        _query_probes(col, name, n, probes, problems)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"collection {name!r} fails to read: {exc}".splitlines()[0])
    return int(n)


def _query_probes(
    col: Any, name: str, n: int, probes: list[tuple[str, list[float]]], problems: list[str]
) -> None:
    """Every query must answer; at least one stored vector must be found again. (HNSW is
    approximate and leaves some nodes unreachable after deletes, so one miss is no damage;
    a broken index finds none.)"""
    found = 0
    for probe_id, vector in probes:
        res = col.query(query_embeddings=[vector], n_results=min(10, n))
        ids, dists = res["ids"][0], (res["distances"] or [[]])[0]
        if not ids:
            problems.append(f"collection {name!r}: a query returned nothing")
            return
        if probe_id in ids or (dists and abs(dists[0]) < 1e-3):
            found += 1
    if probes and not found:
        problems.append(f"collection {name!r}: queries did not find any stored vector")


def _main(path: str) -> int:
    problems: list[str] = []
    counts: dict[str, int] = {}
    try:
        import chromadb
        from chromadb.config import Settings
    except Exception as exc:  # noqa: BLE001
        print(json.dumps({"counts": {}, "problems": [f"chromadb does not import: {exc}"]}))
        return 0
    expected = json.loads(sys.stdin.read())  # the restore sends it once the files are complete
    unopened = False  # chromadb could not open the directory or a collection at all
    try:
        client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    except Exception as exc:  # noqa: BLE001
        problems.append(f"chromadb refused to open the directory: {exc}".splitlines()[0])
        unopened = True
    else:
        for exp in expected:
            n = _check_collection(client, exp, problems)
            if n is not None:
                counts[exp["name"]] = n
            else:
                unopened = True
    print(json.dumps({"counts": counts, "problems": problems, "unopened": unopened}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
