"""A Chroma writer that keeps adding, updating and deleting until told to stop.

Run as ``python writer_proc.py PERSIST_DIR STOP_FILE [PROGRESS_FILE]``; prints a JSON summary
when it stops. PROGRESS_FILE, if given, holds the number of rounds done so far (replaced after
each round), so that a test can wait for the writer instead of sleeping.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def _progress(path: str | None, ops: int) -> None:
    if path is not None:
        tmp = Path(f"{path}.tmp")
        tmp.write_text(str(ops))
        tmp.replace(path)


def main(path: str, stop: str, progress: str | None = None) -> None:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    docs = client.get_collection("docs")
    rng = np.random.default_rng(7)
    ops = errors = 0
    i = 0
    deadline = time.monotonic() + 900
    while not Path(stop).exists() and time.monotonic() < deadline:
        try:
            v = rng.standard_normal((50, 64)).astype("float32")
            docs.add(ids=[f"w{i}-{k}" for k in range(50)], embeddings=v,
                     documents=[f"writer {i} {k}" for k in range(50)])
            docs.update(ids=[f"w{i}-{k}" for k in range(10)], metadatas=[{"u": i}] * 10)
            if i:
                docs.delete(ids=[f"w{i - 1}-{k}" for k in range(20, 30)])
            ops += 1
            _progress(progress, ops)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors += 1
            print(f"writer error: {exc}", file=sys.stderr)
        i += 1
    print(json.dumps({"ops": ops, "errors": errors, "count": docs.count()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
