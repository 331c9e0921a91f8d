"""A repack plan never drops a frame or chunk table a kept snapshot still needs.

Random histories of delta chains (frames shared between files and snapshots, as deduplicated
content is; chains of several depths, some at their limit) are planned with random options,
then rewritten as :func:`snapshot.upkeep.repack.execute_repack` rewrites them: every kept
chain, after its re-bases and moves, must decode to the same chunk and use no pack the plan
frees; every chunk table must be rewritten, moved or left in a pack that stays.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot.format.chains import location, rewrite_chain
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest, TableRef, Totals
from snapshot.upkeep.repack import RepackOptions, plan_repack


def _name(prefix: str, n: int) -> str:
    return f"{prefix}{n:031d}"


History = tuple[Any, list[Manifest], dict[str, int], dict[tuple[str, str], tuple[Chunk, ...]]]


@st.composite
def histories(draw: st.DrawFn) -> History:
    packs = [_name("p", i) for i in range(draw(st.integers(1, 5)))]
    ends: dict[str, int] = defaultdict(int)

    def frame(h: str, full: bool = False) -> Frame:
        pack = draw(st.sampled_from(packs))
        length = draw(st.integers(1, 10_000 if full else 1000))  # full frames are mostly the bigger
        fr = Frame(pack, ends[pack], length, "zstd", 4096, h)
        ends[pack] += length
        return fr

    # a lineage is one chunk's frames over time (a full frame, then deltas); chunks of any file
    # and snapshot take a prefix of one: the same frames in several files and snapshots; the
    # shortest prefix kept of a lineage may leave its first links dead
    lineages, shortest = [], []
    for k in range(draw(st.integers(1, 6))):
        lineages.append(tuple(frame(_name(f"h{k}x", i), i == 0) for i in range(draw(st.integers(1, 7)))))
        shortest.append(draw(st.integers(1, len(lineages[-1]))))
    manifests, chunks = [], {}
    for s in range(draw(st.integers(1, 4))):
        entries = []
        for f in range(draw(st.integers(1, 3))):
            path = f"file{f}.bin"
            taken = []
            for _ in range(draw(st.integers(1, 3))):
                k = draw(st.integers(0, len(lineages) - 1))
                lineage = lineages[k]
                depth = draw(st.integers(shortest[k], len(lineage)))
                taken.append(Chunk(lineage[depth - 1].hash, 4096, lineage[:depth]))
            sid = f"s{s}"
            chunks[(sid, path)] = tuple(taken)
            table = TableRef(_name(f"t{s}x{f}x", 0), 0, 20, 200, _name(f"t{s}x{f}h", 0))
            entries.append(FileEntry(path, 4096 * len(taken), 0o644, "f" * 32, "other", table=table,
                                     chunk_count=len(taken)))
        manifests.append(Manifest(sid, None, "2026-01-01T00:00:00Z", "0", None, "/db", "h", (), "", 4096,
                                  tuple(entries), (), Totals(len(entries), 4096, 1, 0, 0, 0)))
    sizes = {p: ends[p] + draw(st.integers(0, 2000)) for p in packs if ends[p]}
    sizes |= {e.table.object: 20 for m in manifests for e in m.files if e.table is not None}
    repo = SimpleNamespace(config=SimpleNamespace(codec="zstd", max_chain=draw(st.sampled_from([4, 8]))),
                           chunks=lambda m, f: chunks[(m.id, f.path)])
    return repo, manifests, sizes, chunks


options = st.one_of(
    st.builds(
        RepackOptions,
        max_unused=st.sampled_from([0.0, 0.05, 0.5]),
        repack_small=st.booleans(),
        rebase_ratio=st.sampled_from([-1.0, 0.0, 0.2, 1.0]),
        pack_size=st.just(1 << 20),
    ),
    # nothing copied: the re-bases stored over a chain's full frame stay so (a full frame in
    # a pack being emptied is re-based as a full frame)
    st.builds(RepackOptions, max_unused=st.just(float("inf")), rebase_ratio=st.sampled_from([0.2, 1.0]),
              pack_size=st.just(1 << 20)),
)


@pytest.mark.slow  # 300 examples; the literal case is in test_repack.py
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), options)
def test_a_plan_frees_no_pack_a_kept_chain_or_table_still_needs(history: Any, opts: RepackOptions) -> None:
    repo, kept, sizes, chunks = history
    plan, referenced = plan_repack(repo, kept, sizes, opts)
    assert plan.freed <= referenced
    rebased = {loc: Frame(_name("n", 0), i, 1, "zstd", 4096, chain[-1].hash)
               for i, (loc, chain) in enumerate(plan.rebases.items())}
    fulls = {fr for loc, fr in rebased.items() if loc not in plan.over}
    deltas = {fr: plan.over[loc] for loc, fr in rebased.items() if loc in plan.over}
    moved = {(oid, off): Frame(_name("m", 0), 10_000 * n + off, fr.length, fr.codec, fr.size, fr.hash)
             for n, (oid, frames) in enumerate(plan.repack.items()) for off, fr in frames.items()}
    for m in kept:
        for f in m.files:
            old = chunks[(m.id, f.path)]
            new = tuple(rewrite_chain(c.frames, rebased, moved, plan.over) for c in old)
            for c, frames in zip(old, new, strict=True):
                assert frames[-1].hash == c.hash
                # it starts with a full frame: a new one, or the one it had (perhaps moved),
                # and a re-base stored over a full frame follows that very frame
                assert frames[0] in fulls or frames[0].hash == c.frames[0].hash, (c.frames, frames)
                for i, fr in enumerate(frames):
                    if fr in deltas:
                        assert i == 1 and frames[0].hash == deltas[fr].hash, (c.frames, frames)
                assert not {fr.object for fr in frames} & plan.freed, (c.frames, frames, plan)
            assert f.table is not None
            if new == tuple(c.frames for c in old) and location(f.table.frame()) not in moved:
                assert f.table.object not in plan.freed  # a table kept as it is stays where it is
