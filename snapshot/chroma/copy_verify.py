"""The check at the end of a collection copy, run in the copying child against chromadb
collections (source and target): the count; every id of the source present in the target (the
counts being equal, the id sets are then equal); a sample of records equal field by field
(embedding as float32 bit for bit, document, metadata, uri; in cosine space chromadb 1.5 gives a
vector back rescaled from its normalised form, up to 1 unit in the last place off what was sent,
so there each component may differ by COSINE_ULPS); each sampled embedding's nearest
neighbour in the target is itself about as often as in the source's own index; the collection's
metadata and index configuration equal.

HNSW is approximate: on hard data (high-dimensional embeddings with little structure) an index
built by chromadb with its default settings does not return a record among the ten nearest to
its own embedding for a share of its records (measured: 316 of 2,000 for 200,000 random
384-dimensional unit vectors, in the snapshot's own index). So the sample is queried in both
indexes, and the copy fails only when its own misses are more than :func:`allowed_misses`: twice
the source's, plus four standard deviations of the difference of two such counts (at least
MISS_FLOOR). Two graphs of the same records differ (insertion order, threads) but miss alike;
a damaged or unbuilt index misses most.

Memory is bounded by a batch of ids and the sample, never the collection.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE = 1000
#: Top results a sampled embedding's own record is looked for among.
NEIGHBOURS = 10
#: Misses (a record not first among its embedding's NEIGHBOURS nearest, nor tied with the
#: first) the copy's index may always have beyond twice the source's.
MISS_FLOOR = 5
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
    #: Sampled embeddings whose own record the copy's index does not return first.
    neighbour_misses: int
    #: The same in the source's own index (the snapshot's, as it was restored).
    source_misses: int = 0


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
    misses = source_misses = 0
    ulps = COSINE_ULPS if space(src) == "cosine" else 0
    for start in range(0, len(wanted), batch):
        theirs, mine = _compare(src, dst, wanted[start:start + batch], n, ulps)
        misses, source_misses = misses + theirs, source_misses + mine
    if misses > allowed_misses(source_misses):
        raise CopyMismatch(f"{misses} of {len(wanted)} sampled embeddings do not find their own record first "
                           f"in the copy's index, against {source_misses} in the source's: its index is "
                           "not searchable as the source's is")
    return Checked(len(wanted), misses, source_misses)


def allowed_misses(source_misses: int) -> int:
    """The most self-query misses a copy's index may have when the source's has ``source_misses``
    on the same sample: twice as many, plus four standard deviations of the difference of two
    counts of that size (about sqrt(2 x source_misses) each), at least MISS_FLOOR."""
    return 2 * source_misses + max(MISS_FLOOR, math.ceil(4 * math.sqrt(2 * source_misses)))


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


def _compare(src: Any, dst: Any, ids: list[str], n: int, ulps: int) -> tuple[int, int]:
    """Compare the records ``ids`` field by field; query each embedding in both indexes; the
    misses (the copy's, the source's)."""
    if not ids:
        return 0, 0
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
    return _self_misses(dst, ids, vectors, n), _self_misses(src, ids, vectors, n)


def _self_misses(col: Any, ids: list[str], vectors: list[Any], n: int) -> int:
    """Of ``ids``, those whose embedding (``vectors``) does not return its own record first in
    ``col``'s index (an equally near record first is a tie, not a miss)."""
    res = col.query(query_embeddings=vectors, n_results=min(NEIGHBOURS, n), include=["distances"])
    misses = 0
    for rid, found, dists in zip(ids, res["ids"], res["distances"] or [[]] * len(ids), strict=True):
        if found and found[0] == rid:
            continue
        if rid in found and dists and dists[found.index(rid)] <= dists[0]:
            continue
        misses += 1
    return misses
