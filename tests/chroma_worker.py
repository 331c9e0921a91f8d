"""chromadb operations for the tests, run in a child process by :func:`chroma_helpers.run_chroma`.

Imported by each operation's child, which a fork server that has already imported chromadb
starts (so it does not pay chromadb's ~1.7 s import); never by the test process itself.
"""

from __future__ import annotations

import os
import traceback
from multiprocessing.connection import Connection
from typing import Any

import chromadb
import numpy as np
from chromadb.config import Settings

DIM = 64


def vectors(seed: int, n: int) -> Any:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def apply(c: Any, op: str, args: dict[str, Any]) -> Any:
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
        c.get_collection(args["name"]).update(
            ids=args["ids"], embeddings=vectors(args["seed"], len(args["ids"])))
    elif op == "delete":
        c.get_collection(args["name"]).delete(ids=args["ids"])
    elif op == "delete_collection":
        c.delete_collection(args["name"])
    elif op == "counts":
        out = {col.name: c.get_collection(col.name).count() for col in c.list_collections()}
    elif op == "ids":
        out = sorted(c.get_collection(args["name"]).get(include=[])["ids"])
    elif op == "add_records":  # explicit records: {"name", "ids", "embeddings", "documents", ...}
        col = c.get_or_create_collection(args["name"], embedding_function=None, metadata=args.get("metadata"))
        fields = {k: args[k] for k in ("documents", "metadatas", "uris") if k in args}
        col.add(ids=args["ids"], embeddings=np.asarray(args["embeddings"], dtype="float32"), **fields)
    elif op == "records":  # id -> (embedding float32 bytes, document, metadata, uri) of a whole collection
        got = c.get_collection(args["name"]).get(include=["embeddings", "documents", "metadatas", "uris"])
        out = {rid: (np.asarray(got["embeddings"][i], dtype="float32").tobytes(), got["documents"][i],
                     got["metadatas"][i], got["uris"][i]) for i, rid in enumerate(got["ids"])}
    elif op == "steps":
        out = [apply(c, step_op, step_args) for step_op, step_args in args["steps"]]
    else:
        raise SystemExit(f"unknown op {op!r}")
    return out


def run(op: str, path: str, args: dict[str, Any], answer: Connection) -> None:
    """The child: one fresh client on ``path``, one operation, its result (or the traceback)
    sent back through ``answer``."""
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
    try:
        client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
        answer.send(("ok", apply(client, op, args)))
    except BaseException:  # noqa: BLE001  (everything goes back to the test)
        answer.send(("error", traceback.format_exc()))
