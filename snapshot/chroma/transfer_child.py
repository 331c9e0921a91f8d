"""The child process of :mod:`snapshot.chroma.transfer`: copies collections from a local persist
dir into a persist dir or a server through chromadb's public client API (the only module of
the package that writes through chromadb).

Run as ``python -m snapshot.chroma.transfer_child`` with the request as one JSON line on stdin
(so that credentials never appear in a process listing). It connects to the target, refuses a
name clash there (with the dimension the snapshot records), answers ``ready`` and waits for a
second line naming the source (``{"source": PATH}``: the parent reads the snapshot's files only
then; end of input instead ends the child). It answers with JSON lines on its stdout (what
chromadb itself prints goes to stderr): ``ready``, ``phase``, ``advance``, ``warn``, then
``done`` with the copies, or ``error`` with a kind and a one-line message.

Per collection: the copy is built under a temporary name, in batches of the source's records in
the source's order, each upserted (idempotent by id) and then counted in the journal; verified;
then renamed to its name (with ``replace``, the old collection of that name is dropped first).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from snapshot.chroma.copy_verify import ALL, CopyMismatch, verify
from snapshot.chroma.transfer_journal import COPYING, VERIFIED, Entry, Journal
from snapshot.util import pausepoints

#: A batch's records are held twice (as read, as sent): about this many bytes of them at most.
BATCH_BYTES = 64 << 20
#: What a record's document, metadata and uri are guessed to need beside its embedding.
RECORD_EXTRA = 2048
HNSW_KEYS = ("space", "ef_construction", "ef_search", "max_neighbors", "resize_factor", "sync_threshold")


class Refused(Exception):
    """Ends the child with an ``error`` answer of ``kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Out:
    stream: TextIO

    def send(self, event: str, **fields: Any) -> None:
        # A parent that died closes the pipe: the write fails and this child ends with it.
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()


def connect(target: dict[str, Any]) -> Any:
    import chromadb
    from chromadb.config import Settings

    location: str = target["location"]
    settings = Settings(anonymized_telemetry=False, **target.get("settings", {}))
    kw = {k: target[k] for k in ("tenant", "database") if target.get(k)}
    if location.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        url = urlsplit(location)
        ssl = url.scheme == "https"
        port = url.port or (443 if ssl else 80)
        client = chromadb.HttpClient(host=url.hostname or "localhost", port=port, ssl=ssl,
                                     headers=dict(target.get("headers", {})), settings=settings, **kw)
        client.heartbeat()
        return client
    return chromadb.PersistentClient(path=location, settings=settings, **kw)


def open_source(path: str) -> Any:
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def existing(client: Any, name: str) -> Any | None:
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):
        return None


def dimension(col: Any) -> int | None:
    got = col.get(limit=1, include=["embeddings"])
    embs = got["embeddings"]
    return len(embs[0]) if embs is not None and len(embs) else None


def recorded_embedding_function(spec: dict[str, Any]) -> Any:
    """An object that carries the source's embedding-function setting (name and config) into
    the new collection's configuration without building or ever calling the function."""
    name, config = spec["name"], dict(spec.get("config") or {})

    class Recorded:
        @classmethod
        def name(cls) -> str:
            return str(name)

        def get_config(self) -> dict[str, Any]:
            return config

        def is_legacy(self) -> bool:
            return False

        def default_space(self) -> str:
            return "l2"

        def supported_spaces(self) -> list[str]:
            return ["cosine", "l2", "ip"]

        def __call__(self, input: Any) -> Any:
            raise RuntimeError("a copied collection's embedding function is never called")

    return Recorded()


def configuration(src: Any, out: Out) -> dict[str, Any]:
    """The create-time configuration that reproduces the source's (index settings, embedding
    function setting); warns when this chromadb does not know that embedding function."""
    cfg = dict(src.configuration_json or {})
    result: dict[str, Any] = {}
    if cfg.get("hnsw"):
        result["hnsw"] = {k: v for k, v in cfg["hnsw"].items() if k in HNSW_KEYS and v is not None}
    elif cfg.get("spann"):
        result["spann"] = cfg["spann"]
    ef = cfg.get("embedding_function") or {}
    if ef.get("type") == "known" and ef.get("name"):
        from chromadb.utils.embedding_functions import known_embedding_functions

        if ef["name"] not in known_embedding_functions:
            out.send("warn", message=(
                f"collection {src.name!r} was created with the embedding function {ef['name']!r}, which "
                "this chromadb does not know: its records are copied, but querying it by text needs "
                "that function"))
        result["embedding_function"] = recorded_embedding_function(ef)
    return result


def batch_size(client: Any, src: Any, asked: int | None) -> int:
    dim = dimension(src) or 0
    by_memory = max(1, BATCH_BYTES // (2 * (dim * 8 + RECORD_EXTRA)))
    return max(1, min(int(client.get_max_batch_size()), by_memory, asked or by_memory))


def temp_name(final: str) -> str:
    return f"{final[:480]}-restoring-{secrets.token_hex(4)}"


def _clash(final: str, mine: int | None, there: Any) -> Refused:
    theirs = dimension(there)
    clash = (f"; its embeddings have dimension {theirs}, the copy's {mine}, so the two cannot be "
             "merged" if mine and theirs and mine != theirs else "")
    return Refused("target", f"the target already has a collection named {final!r}{clash}: "
                   "use --replace to replace it, or --as NAME to copy under another name")


def probe(client: Any, journal: Journal, final: str, replace: bool, mine: int | None) -> None:
    """The refusal that needs only the target and what the snapshot records of the collection
    (``mine``: its dimension): a name clash, asked before the snapshot's files are read. A
    caller that names no dimension has its source at hand: the preflight asks then."""
    if mine is not None and journal.load() is None and not replace:
        there = existing(client, final)
        if there is not None:
            raise _clash(final, mine, there)


def preflight(client: Any, src: Any, journal: Journal, final: str, replace: bool) -> None:
    """Refuse before anything is written: a name clash, or a copy in progress whose collection
    someone else now holds or whose dimension is not the source's."""
    entry = journal.load()
    if entry is None:
        there = existing(client, final)
        if there is not None and not replace:
            raise _clash(final, dimension(src), there)
        return
    building = existing(client, entry.temp_name)
    if building is None:
        return
    if entry.temp_id and str(building.id) != entry.temp_id:
        raise Refused("target", f"the target's collection {entry.temp_name!r}, where an interrupted copy was "
                      "being built, was replaced by another one; delete it and run again")
    mine, theirs = dimension(src), dimension(building)
    if mine and theirs and mine != theirs:
        raise Refused("target", f"dimension clash: the target's collection {entry.temp_name!r} holds "
                      f"{theirs}-dimensional embeddings, the source's {mine}")


def build(client: Any, src: Any, journal: Journal, entry: Entry, out: Out) -> tuple[Any, Entry]:
    """The collection being built and its journal entry (created, or found again)."""
    col = existing(client, entry.temp_name)
    if col is None and entry.temp_id:
        out.send("warn", message=f"the partial copy {entry.temp_name!r} is gone; copying {entry.source!r} "
                 "again")
        entry = entry.but(temp_name=temp_name(entry.target_name), temp_id=None, sent=0)
        journal.save(entry)
    if col is None:
        col = client.create_collection(entry.temp_name, configuration=configuration(src, out),
                                       metadata=src.metadata or None, embedding_function=None)
    if entry.temp_id != str(col.id):
        entry = entry.but(temp_id=str(col.id))
        journal.save(entry)
    return col, entry


def send_batches(src: Any, col: Any, journal: Journal, entry: Entry, n: int, batch: int,
                 out: Out) -> tuple[Entry, int]:
    sent = 0
    while entry.sent < n:
        page = src.get(offset=entry.sent, limit=batch, include=ALL)
        ids = list(page["ids"])
        if not ids:
            break
        metas = page["metadatas"]
        col.upsert(ids=ids, embeddings=page["embeddings"], documents=page["documents"],
                   metadatas=[m or None for m in metas] if metas is not None else None, uris=page["uris"])
        pausepoints.point("transfer.batch")
        entry = entry.but(sent=entry.sent + len(ids))
        journal.save(entry)
        sent += len(ids)
        out.send("advance", n=len(ids))
    return entry, sent


def swap_in(client: Any, journal: Journal, entry: Entry) -> bool:
    """Give the verified copy its name; whether an old collection of that name was dropped."""
    from chromadb.errors import NotFoundError

    there = existing(client, entry.target_name)
    if there is not None and str(there.id) == entry.temp_id:
        return False  # renamed already, before a kill
    building = existing(client, entry.temp_name)
    if building is None:
        journal.remove()
        raise Refused("target", f"the verified copy {entry.temp_name!r} disappeared from the target; "
                      "run again")
    dropped = False
    if there is not None:
        if not entry.replace:
            client.delete_collection(entry.temp_name)
            journal.remove()
            raise Refused("target", f"a collection named {entry.target_name!r} appeared in the target "
                          "during the copy: use --replace to replace it")
        pausepoints.point("transfer.drop")
        with contextlib.suppress(NotFoundError):
            client.delete_collection(entry.target_name)
        dropped = True
        pausepoints.point("transfer.dropped")
    building.modify(name=entry.target_name)
    pausepoints.point("transfer.renamed")
    return dropped


def copy_one(client: Any, source: Any, name: str, req: dict[str, Any], out: Out) -> dict[str, Any]:
    final = req["rename"] or name
    journal = Journal(Path(req["journal_dir"]), req["journal_key"], name, final)
    src = source.get_collection(name, embedding_function=None)
    n = src.count()
    entry = journal.load()
    resumed = entry.sent if entry else 0
    if entry is None:
        entry = Entry(req["journal_key"], name, final, temp_name(final), None, 0, COPYING,
                      bool(req["replace"]))
        journal.save(entry)
    batch = batch_size(client, src, req.get("batch_size"))
    sent = 0
    checked = None
    if entry.phase == COPYING:
        col, entry = build(client, src, journal, entry, out)
        out.send("phase", name=f"copy {name}", total=n)
        out.send("advance", n=min(entry.sent, n))
        entry, sent = send_batches(src, col, journal, entry, n, batch, out)
        out.send("phase", name=f"check {name}", total=n)
        try:
            checked = verify(src, col, n, batch, req.get("sample") or 1000,
                             lambda k: out.send("advance", n=k))
        except CopyMismatch as exc:
            client.delete_collection(entry.temp_name)
            journal.remove()
            raise Refused("integrity", f"the copy of {name!r} does not match its source: {exc}") from exc
        pausepoints.point("transfer.verified")
        entry = entry.but(phase=VERIFIED)
        journal.save(entry)
    replaced = swap_in(client, journal, entry)
    journal.remove()
    return {"source": name, "name": final, "records": n, "records_sent": sent, "resumed_at": resumed,
            "batch_size": batch, "sampled": checked.sampled if checked else 0,
            "neighbour_misses": checked.neighbour_misses if checked else 0, "replaced": replaced,
            "source_neighbour_misses": checked.source_misses if checked else 0}


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, one line) for what chromadb or the network raised."""
    import httpx
    from chromadb.errors import AuthorizationError, ChromaAuthError

    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    if any(isinstance(c, AuthorizationError | ChromaAuthError) for c in chain) or any(
            w in text for w in ("401", "403", "Unauthorized", "Forbidden")):
        return "auth", f"the server refused the credentials given ({text[:200]})"
    if "Could not connect" in text or any(
            isinstance(c, httpx.TransportError | ConnectionError) for c in chain):
        return "unreachable", f"cannot reach the Chroma server ({text[:200]})"
    return "error", f"chromadb failed: {text[:300]}"


def _die_with_parent() -> None:
    """A copy must not go on writing after its parent was killed (Linux PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def main() -> int:
    _die_with_parent()
    out = Out(os.fdopen(os.dup(sys.stdout.fileno()), "w"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # chromadb's own prints must not mix in
    req = json.loads(sys.stdin.readline())
    if os.getppid() != req["parent"]:
        return 1  # the parent died before the death signal was armed
    try:
        client = connect(req["target"])
        dimensions = req.get("dimensions") or {}
        for name in req["names"]:
            final = req["rename"] or name
            probe(client, Journal(Path(req["journal_dir"]), req["journal_key"], name, final), final,
                  bool(req["replace"]), dimensions.get(name))
        out.send("ready")
        line = sys.stdin.readline()
        if not line:
            return 0  # the parent gave up before it had the source (a refusal of its own, Ctrl-C)
        req["source"] = json.loads(line)["source"]
        source = open_source(req["source"])
        for name in req["names"]:
            final = req["rename"] or name
            src = source.get_collection(name, embedding_function=None)
            preflight(client, src, Journal(Path(req["journal_dir"]), req["journal_key"], name, final), final,
                      bool(req["replace"]))
        copies = [copy_one(client, source, name, req, out) for name in req["names"]]
    except Refused as exc:
        out.send("error", kind=exc.kind, message=str(exc))
        return 0
    except Exception as exc:  # noqa: BLE001 - reported as one line; the parent raises it
        kind, message = classify(exc)
        out.send("error", kind=kind, message=message)
        return 0
    out.send("done", copies=copies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
