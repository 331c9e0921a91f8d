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
    elif op == "records":
        got = c.get_collection(args["name"], embedding_function=None).get(
            include=["embeddings", "documents", "metadatas"])
        out = sorted((rid, np.asarray(e, dtype="float32").tobytes(), d, m) for rid, e, d, m in
                     zip(got["ids"], got["embeddings"], got["documents"], got["metadatas"], strict=True))
    elif op == "create":
        col = c.create_collection(args["name"], embedding_function=None, metadata=args.get("metadata"),
                                  configuration=args.get("configuration"))
        n = args.get("records", 0)
        if n:
            col.add(ids=[f"{args['name']}-{i}" for i in range(n)], embeddings=vectors(args.get("seed", 0), n))
    elif op == "make":
        # metadata, index settings and chromadb's default embedding function (recorded, not called)
        col = c.create_collection(args["name"], metadata=args.get("metadata"),
                                  configuration=args.get("configuration"))
        n, dim = args.get("n", 0), args.get("dim", DIM)
        for start in range(0, n, 1000):
            stop = min(n, start + 1000)
            v = np.random.default_rng(args.get("seed", 0) + start).standard_normal((stop - start, dim))
            col.add(ids=[f"{args['name']}-{i}" for i in range(start, stop)], embeddings=v.astype("float32"),
                    uris=[f"file:///{i}" if i % 2 else None for i in range(start, stop)],
                    metadatas=[{"i": i, "f": i / 3} if i % 3 else None for i in range(start, stop)])
    elif op == "all_records":
        out = {col.name: records(c.get_collection(col.name, embedding_function=None))
               for col in c.list_collections() if col.name in args.get("names", [col.name])}
    elif op == "add_records":  # explicit records: {"name", "ids", "embeddings", "documents", ...}
        col = c.get_or_create_collection(args["name"], embedding_function=None, metadata=args.get("metadata"))
        fields = {k: args[k] for k in ("documents", "metadatas", "uris") if k in args}
        col.add(ids=args["ids"], embeddings=np.asarray(args["embeddings"], dtype="float32"), **fields)
    elif op == "records_by_id":  # id -> (embedding float32 bytes, document, metadata, uri) of a whole collection
        got = c.get_collection(args["name"]).get(include=["embeddings", "documents", "metadatas", "uris"])
        out = {rid: (np.asarray(got["embeddings"][i], dtype="float32").tobytes(), got["documents"][i],
                     got["metadatas"][i], got["uris"][i]) for i, rid in enumerate(got["ids"])}
    elif op == "steps":
        out = [apply(c, step_op, step_args) for step_op, step_args in args["steps"]]
    else:
        raise SystemExit(f"unknown op {op!r}")
    return out


def records(col: Any) -> dict[str, Any]:
    """A collection's settings and each record (embedding as float32 bytes in hex, document,
    metadata, uri), read in pages."""
    digests = {}
    n = col.count()
    for offset in range(0, n, 2000):
        got = col.get(offset=offset, limit=2000, include=["embeddings", "documents", "metadatas", "uris"])
        for k, rid in enumerate(got["ids"]):
            emb = np.asarray(got["embeddings"][k], dtype=np.float32).tobytes().hex()
            digests[rid] = (emb, got["documents"][k], got["metadatas"][k], got["uris"][k])
    cfg = dict(col.configuration_json or {})
    ef = cfg.get("embedding_function")
    return {"records": digests, "metadata": col.metadata, "hnsw": cfg.get("hnsw"),
            "embedding_function": None if not ef or ef.get("type") == "legacy" else ef}


def client_for(path: str) -> Any:
    """A persist dir's client, or a server's for ``http://HOST:PORT``."""
    if path.startswith("http://"):
        host, port = path[len("http://"):].split(":")
        return chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
    return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def run(op: str, path: str, args: dict[str, Any], answer: Connection) -> None:
    """The child: one fresh client on ``path``, one operation, its result (or the traceback)
    sent back through ``answer``."""
    os.environ["ANONYMIZED_TELEMETRY"] = "False"
    try:
        client = client_for(path)
        answer.send(("ok", apply(client, op, args)))
    except BaseException:  # noqa: BLE001  (everything goes back to the test)
        answer.send(("error", traceback.format_exc()))
