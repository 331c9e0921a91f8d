"""The check at the end of a collection copy, run in the copying child against chromadb
collections (source and target): the count; every id of the source present in the target (the
counts being equal, the id sets are then equal); a sample of records equal field by field
(embedding as float32 bit for bit, document, metadata, uri; in cosine space chromadb 1.5 gives a
vector back rescaled from its normalised form, up to 1 unit in the last place off what was sent,
so there each component may differ by COSINE_ULPS); each sampled embedding's nearest
neighbour in the target is itself; the collection's metadata and index configuration equal.

Memory is bounded by a batch of ids and the sample, never the collection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE = 1000
#: Top results a sampled embedding's own record must be among.
NEIGHBOURS = 10
#: Share of the sample whose own record may rank below an equally near one's or, HNSW being
#: approximate, below a nearer one inside the top NEIGHBOURS (a damaged index misses most).
MISS_SHARE = 0.005
#: Configuration fields that must be equal (num_threads and batch_size are the host's choice).
HNSW_FIELDS = ("space", "ef_construction", "ef_search", "max_neighbors", "resize_factor", "sync_threshold")
ALL = ["embeddings", "documents", "metadatas", "uris"]
#: Units in the last place a component may differ by in cosine space (measured: 1).
COSINE_ULPS = 2


class CopyMismatch(Exception):
    """The target differs from the source; the message says how."""


@dataclass(frozen=True)
class Checked:
    sampled: int
    neighbour_misses: int


def sample_positions(n: int, k: int) -> list[int]:
    """``k`` positions spread evenly over ``0 .. n-1`` (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({i * n // k for i in range(k)})


def verify(src: Any, dst: Any, n: int, batch: int, sample: int = SAMPLE,
           tick: Callable[[int], None] = lambda _n: None) -> Checked:
    same_settings(src, dst)
    got = dst.count()
    if got != n:
        raise CopyMismatch(f"the copy holds {got} records, the source {n}")
    picks = sample_positions(n, sample)
    wanted: list[str] = []
    at = 0
    for offset in range(0, n, batch):
        ids = list(src.get(offset=offset, limit=batch, include=[])["ids"])
        present = set(dst.get(ids=ids, include=[])["ids"])
        missing = [i for i in ids if i not in present]
        if missing:
            raise CopyMismatch(f"{len(missing)} ids of the source are missing from the copy, "
                               f"e.g. {missing[:3]}")
        while at < len(picks) and picks[at] < offset + len(ids):
            wanted.append(ids[picks[at] - offset])
            at += 1
        tick(len(ids))
    misses = 0
    ulps = COSINE_ULPS if space(src) == "cosine" else 0
    for start in range(0, len(wanted), batch):
        misses += _compare(src, dst, wanted[start:start + batch], n, ulps)
    if misses > int(len(wanted) * MISS_SHARE):
        raise CopyMismatch(f"{misses} of {len(wanted)} sampled embeddings do not find their own record first")
    return Checked(len(wanted), misses)


def same_settings(src: Any, dst: Any) -> None:
    if (src.metadata or None) != (dst.metadata or None):
        raise CopyMismatch(f"the collection's metadata differs: {dst.metadata!r}, "
                           f"the source's {src.metadata!r}")
    a, b = src.configuration_json or {}, dst.configuration_json or {}
    ha, hb = a.get("hnsw") or {}, b.get("hnsw") or {}
    differ = [f for f in HNSW_FIELDS if f in ha and ha.get(f) != hb.get(f)]
    if differ:
        raise CopyMismatch(f"the collection's index settings differ ({', '.join(differ)})")
    if _function(a) != _function(b):
        raise CopyMismatch(f"the collection's embedding function setting differs: {_function(b)}, "
                           f"the source's {_function(a)}")


def _function(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The embedding-function setting; none and chromadb's "legacy" mean the same."""
    ef = cfg.get("embedding_function") or None
    return None if ef is None or ef.get("type") == "legacy" else dict(ef)


def space(col: Any) -> str:
    hnsw = (col.configuration_json or {}).get("hnsw") or {}
    return str(hnsw.get("space") or (col.metadata or {}).get("hnsw:space") or "l2")


def same_vector(a: bytes, b: bytes, ulps: int) -> bool:
    if a == b or not ulps or len(a) != len(b):
        return a == b
    x = np.frombuffer(a, dtype=np.int32).astype(np.int64)
    y = np.frombuffer(b, dtype=np.int32).astype(np.int64)
    return bool(np.all(np.sign(x) == np.sign(y)) and np.max(np.abs(x - y)) <= ulps)


def _rows(result: Any) -> dict[str, tuple[bytes, Any, Any, Any]]:
    out = {}
    embs, docs, metas, uris = (result.get(f) for f in ALL)
    for k, rid in enumerate(result["ids"]):
        vec = np.asarray(embs[k], dtype=np.float32).tobytes() if embs is not None else b""
        meta = (metas[k] or None) if metas else None
        out[rid] = (vec, docs[k] if docs else None, meta, uris[k] if uris else None)
    return out


def _compare(src: Any, dst: Any, ids: list[str], n: int, ulps: int) -> int:
    """Compare the records ``ids`` field by field; query each embedding; the misses."""
    if not ids:
        return 0
    want, have = _rows(src.get(ids=ids, include=ALL)), _rows(dst.get(ids=ids, include=ALL))
    for rid in ids:
        if rid not in have:
            raise CopyMismatch(f"record {rid!r} is missing from the copy")
        if not same_vector(want[rid][0], have[rid][0], ulps):
            raise CopyMismatch(f"record {rid!r}: its embedding differs from the source's")
        for field, a, b in zip(("document", "metadata", "uri"), want[rid][1:], have[rid][1:], strict=True):
            if a != b:
                raise CopyMismatch(f"record {rid!r}: its {field} differs from the source's")
    vectors = [np.frombuffer(want[rid][0], dtype=np.float32) for rid in ids]
    res = dst.query(query_embeddings=vectors, n_results=min(NEIGHBOURS, n), include=["distances"])
    misses = 0
    for rid, found, dists in zip(ids, res["ids"], res["distances"] or [[]] * len(ids), strict=True):
        if found and found[0] == rid:
            continue
        if rid not in found:
            raise CopyMismatch(f"record {rid!r}: its embedding does not find it among the nearest "
                               f"{len(found)}")
        if dists[found.index(rid)] > dists[0]:
            misses += 1  # an equally near record first is a tie, not a miss
    return misses
