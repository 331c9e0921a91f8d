"""Delta chains on literal data: each chunk's depth limit, and how a prune's re-based and moved
frames rewrite a chain without changing what it decodes to (snapshot/format/chains.py)."""

from __future__ import annotations

import pytest

from snapshot.format.chains import (
    chain_limit,
    live_frames,
    location,
    rebases_at,
    rewrite_chain,
    rewrite_chunks,
)
from snapshot.format.manifest import Chunk, Frame

A, B, C = "a" * 32, "b" * 32, "c" * 32  # packs
H = [f"{i:032x}" for i in range(8)]  # contents: H[i] is what frame i of a chain decodes to


def _frame(pack: str, offset: int, i: int, length: int = 100) -> Frame:
    return Frame(pack, offset, length, "zstd", 4096, H[i])


#: A chain of four frames in pack A: a full frame, then three deltas.
CHAIN = tuple(_frame(A, 1000 * i, i) for i in range(4))


# -- chain_limit ---------------------------------------------------------------------------------


def test_chain_limits_spread_between_three_quarters_of_the_bound_and_the_bound() -> None:
    limits = [chain_limit(16, f"seg/{p}.bin", i) for p in ("data_level0", "link_lists") for i in range(200)]
    assert min(limits) >= 16 - 16 // 4 and max(limits) <= 16
    # the point of the spread: chunks do not all reach their limit on the same night
    assert set(limits) == set(range(12, 17))


def test_a_chunk_keeps_its_limit_and_neighbours_differ() -> None:
    assert chain_limit(16, "chroma.sqlite3", 7) == chain_limit(16, "chroma.sqlite3", 7)
    assert len({chain_limit(16, "chroma.sqlite3", i) for i in range(8)}) > 1
    assert len({chain_limit(16, p, 0) for p in ("a.bin", "b.bin", "c.bin", "d.bin", "e.bin")}) > 1


@pytest.mark.parametrize("max_chain", [0, 1, 2, 3])
def test_a_bound_below_four_is_every_chunks_limit(max_chain: int) -> None:
    assert {chain_limit(max_chain, "chroma.sqlite3", i) for i in range(50)} == {max_chain}


def test_a_bound_of_four_spreads_over_three_and_four() -> None:
    assert {chain_limit(4, "chroma.sqlite3", i) for i in range(100)} == {3, 4}


# -- rewrite_chain -------------------------------------------------------------------------------


def test_location_is_pack_and_offset() -> None:
    assert location(CHAIN[2]) == (A, 2000)


def test_nothing_rebased_or_moved_leaves_the_chain() -> None:
    assert rewrite_chain(CHAIN, {}, {}) == CHAIN


def test_a_rebased_frame_replaces_the_prefix_up_to_it() -> None:
    full = Frame(B, 0, 900, "zstd", 4096, H[2])  # frame 2's content as one full frame
    out = rewrite_chain(CHAIN, {(A, 2000): full}, {})
    assert out == (full, CHAIN[3])
    assert out[-1].hash == CHAIN[-1].hash  # still decodes to the chunk


def test_the_deepest_rebased_frame_wins() -> None:
    full1 = Frame(B, 0, 800, "zstd", 4096, H[1])
    full3 = Frame(B, 800, 900, "zstd", 4096, H[3])
    assert rewrite_chain(CHAIN, {(A, 1000): full1, (A, 3000): full3}, {}) == (full3,)


def test_a_rebased_first_frame_is_replaced_in_place() -> None:
    full0 = Frame(C, 50, 100, "gzip", 4096, H[0])
    assert rewrite_chain(CHAIN, {(A, 0): full0}, {}) == (full0, *CHAIN[1:])


def test_moved_frames_get_their_new_place_and_keep_their_content() -> None:
    moved = {(A, 1000): Frame(C, 0, 100, "zstd", 4096, H[1]),
             (A, 3000): Frame(C, 100, 100, "zstd", 4096, H[3])}
    out = rewrite_chain(CHAIN, {}, moved)
    assert [location(f) for f in out] == [(A, 0), (C, 0), (A, 2000), (C, 100)]
    assert [f.hash for f in out] == [f.hash for f in CHAIN]


def test_a_rebased_frame_that_was_also_moved_elsewhere_is_moved_too() -> None:
    # the new full frame sits where a later step of the same prune moves it
    full = Frame(B, 0, 900, "zstd", 4096, H[2])
    there = Frame(C, 4000, 900, "zstd", 4096, H[2])
    assert rewrite_chain(CHAIN, {(A, 2000): full}, {(B, 0): there}) == (there, CHAIN[3])


def test_frames_of_other_chains_are_not_touched() -> None:
    other = {(B, 2000): Frame(C, 0, 1, "zstd", 4096, H[7])}
    assert rewrite_chain(CHAIN, other, other) == CHAIN


def test_rewrite_chunks_rewrites_each_chunk_and_keeps_hash_and_size() -> None:
    single = Chunk(H[5], 10, (Frame(B, 0, 20, "zstd", 10, H[5]),))
    chained = Chunk(H[3], 4096, CHAIN)
    full = Frame(C, 0, 900, "zstd", 4096, H[2])
    moved = Frame(C, 900, 20, "zstd", 10, H[5])
    out = rewrite_chunks((chained, single), {(A, 2000): full}, {(B, 0): moved})
    assert out == (Chunk(H[3], 4096, (full, CHAIN[3])), Chunk(H[5], 10, (moved,)))
    assert rewrite_chunks((), {(A, 2000): full}, {}) == ()


# -- re-bases over the chain's full frame ---------------------------------------------------------


def _lineage(*lengths: int) -> tuple[Frame, ...]:
    """One chunk's frames over time in pack A: a full frame, then deltas of these lengths."""
    return tuple(_frame(A, 1000 * i, i, length) for i, length in enumerate(lengths))


def _decide(chains: set[tuple[Frame, ...]], limit: int = 8, ratio: float = 0.2) -> tuple[dict, dict, dict]:
    out: dict = {}
    optional: dict = {}
    over: dict = {}
    rebases_at(chains, limit, ratio, out, optional, over)
    return out, optional, over


def test_a_chain_at_its_depth_limit_that_changed_little_is_re_based_over_its_full_frame() -> None:
    """Kept snapshots end at frames 5 and 6 of a chain of limit 8 (one create away from it):
    its links cost 5% of the full frame, so frame 5's content is stored as a delta against the
    full frame, which stays, rather than as a new full frame (whose old one would be condemned)."""
    ch = _lineage(1000, 10, 10, 10, 10, 10, 10)
    out, optional, over = _decide({ch[:6], ch})
    assert out == {location(ch[5]): ch[:6]}
    assert over == {location(ch[5]): ch[0]} and optional == {}


def test_a_chain_whose_dead_links_cost_its_share_gets_a_new_full_frame() -> None:
    ch = _lineage(1000, 100, 100, 5, 5)  # kept from frame 3 on: 200 of dead links, 20%
    out, _, over = _decide({ch[:4], ch})
    assert out == {location(ch[3]): ch[:4]} and over == {}


def test_a_chain_at_its_depth_limit_that_changed_much_gets_a_new_full_frame() -> None:
    # dead links 4 x 30 = 12%, but with the frame kept snapshots start at, 12% + 10% >= 20%
    ch = _lineage(1000, 30, 30, 30, 30, 100, 10)
    out, _, over = _decide({ch[:6], ch})
    assert out == {location(ch[5]): ch[:6]} and over == {}


def test_a_chain_below_its_depth_limit_with_cheap_links_is_only_optional() -> None:
    ch = _lineage(1000, 10, 10, 10)
    out, optional, over = _decide({ch[:3], ch})
    assert out == {} and over == {} and optional == {location(ch[0]): ch[:3]}


def test_a_re_base_over_the_full_frame_keeps_it_and_frees_the_links() -> None:
    new = Frame(B, 0, 40, "zstd", 4096, H[2])  # frame 2's content, a delta against frame 0's
    out = rewrite_chain(CHAIN, {(A, 2000): new}, {}, {(A, 2000): CHAIN[0]})
    assert out == (CHAIN[0], new, CHAIN[3])
    assert live_frames(CHAIN, {(A, 2000): CHAIN[:3]}, {(A, 2000): CHAIN[0]}) == (CHAIN[0], CHAIN[3])
    assert live_frames(CHAIN, {(A, 2000): CHAIN[:3]}) == (CHAIN[3],)  # a new full frame: nothing kept


def test_a_kept_full_frame_that_is_moved_is_moved_in_the_rewritten_chain_too() -> None:
    new = Frame(B, 0, 40, "zstd", 4096, H[2])
    there = Frame(C, 0, 100, "zstd", 4096, H[0])
    out = rewrite_chain(CHAIN, {(A, 2000): new}, {(A, 0): there}, {(A, 2000): CHAIN[0]})
    assert out == (there, new, CHAIN[3])
