"""A Chroma writer that keeps adding, updating and deleting until told to stop.

Run as ``python writer_proc.py PERSIST_DIR STOP_FILE``; prints a JSON summary when it stops.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def main(path: str, stop: str) -> None:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    docs = client.get_collection("docs")
    rng = np.random.default_rng(7)
    ops = errors = 0
    i = 0
    deadline = time.monotonic() + 120
    while not Path(stop).exists() and time.monotonic() < deadline:
        try:
            v = rng.standard_normal((50, 64)).astype("float32")
            docs.add(ids=[f"w{i}-{k}" for k in range(50)], embeddings=v,
                     documents=[f"writer {i} {k}" for k in range(50)])
            docs.update(ids=[f"w{i}-{k}" for k in range(10)], metadatas=[{"u": i}] * 10)
            if i:
                docs.delete(ids=[f"w{i - 1}-{k}" for k in range(20, 30)])
            ops += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors += 1
            print(f"writer error: {exc}", file=sys.stderr)
        i += 1
    print(json.dumps({"ops": ops, "errors": errors, "count": docs.count()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
