"""The self-query of a collection copy's verification, held against the source's own index:
HNSW is approximate, so a copy fails only when its index misses clearly more than the
snapshot's own does (a damaged index misses most); a tie at the same distance is no miss.
Collections here are small stand-ins with chromadb's get/query/count surface, whose index
misses the records it is told to."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from snapshot.chroma.copy_verify import CopyMismatch, allowed_misses, verify

N = 2000


class Col:
    """``n`` records; a query for one of ``misses`` returns ten other records, nearer; one of
    ``ties`` returns another record at the same distance first, then itself."""

    def __init__(self, n: int, misses: set[str] | None = None, ties: set[str] | None = None) -> None:
        rng = np.random.default_rng(7)
        self.ids = [f"r{i}" for i in range(n)]
        self.vec = {rid: rng.standard_normal(8).astype(np.float32) for rid in self.ids}
        self.by_vec = {v.tobytes(): rid for rid, v in self.vec.items()}
        self.misses, self.ties = misses or set(), ties or set()
        self.metadata = {"k": 1}
        self.configuration_json = {"hnsw": {"space": "l2", "ef_search": 100}}

    def count(self) -> int:
        return len(self.ids)

    def get(self, ids: list[str] | None = None, offset: int = 0, limit: int | None = None,
            include: list[str] | None = None) -> dict[str, Any]:
        chosen = ids if ids is not None else self.ids[offset:offset + (limit or len(self.ids))]
        return {"ids": chosen, "embeddings": [self.vec[i] for i in chosen],
                "documents": [f"d {i}" for i in chosen], "metadatas": [{"i": i} for i in chosen],
                "uris": [None for _ in chosen]}

    def query(self, query_embeddings: list[Any], n_results: int, include: list[str]) -> dict[str, Any]:
        ids, dists = [], []
        for v in query_embeddings:
            rid = self.by_vec[np.asarray(v, dtype=np.float32).tobytes()]
            others = [o for o in self.ids[:n_results + 1] if o != rid]
            if rid in self.misses:
                ids.append(others[:n_results])
                dists.append([0.5] * n_results)
            elif rid in self.ties:
                ids.append([others[0], rid, *others[1:n_results - 1]])
                dists.append([0.0, 0.0] + [0.9] * (n_results - 2))
            else:
                ids.append([rid, *others[:n_results - 1]])
                dists.append([0.0] + [0.9] * (n_results - 1))
        return {"ids": ids, "distances": dists}


def sampled_ids(k: int, start: int = 0) -> set[str]:
    """``k`` of the records verify samples (1,000 spread evenly over N: every other one)."""
    return {f"r{2 * i}" for i in range(start, start + k)}


def test_a_copy_that_misses_about_as_often_as_the_source_passes() -> None:
    src = Col(N, misses=sampled_ids(158))
    dst = Col(N, misses=sampled_ids(170, start=100))  # another graph: other records missed
    checked = verify(src, dst, N, batch=300)
    assert (checked.sampled, checked.neighbour_misses, checked.source_misses) == (1000, 170, 158)


@pytest.mark.parametrize(("source", "copy"), [(0, 6), (158, 600), (0, 1000)])
def test_a_copy_whose_index_misses_clearly_more_fails(source: int, copy: int) -> None:
    assert copy > allowed_misses(source)
    said = f"{copy} of 1000 sampled embeddings .* against {source} in the source"
    with pytest.raises(CopyMismatch, match=said):
        verify(Col(N, misses=sampled_ids(source)), Col(N, misses=sampled_ids(copy)), N, batch=300)


def test_ties_are_not_misses_and_a_few_misses_are_allowed_where_the_source_has_none() -> None:
    checked = verify(Col(N), Col(N, misses=sampled_ids(5), ties=sampled_ids(50, start=10)), N, batch=300)
    assert (checked.neighbour_misses, checked.source_misses) == (5, 0)


def test_the_allowance() -> None:
    assert [allowed_misses(m) for m in (0, 1, 10, 158)] == [5, 2 + 6, 20 + 18, 316 + 72]
