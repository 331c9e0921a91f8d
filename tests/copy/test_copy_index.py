"""The copy's per-chunk decision (snapshot/copy/index.py) on literal chains: reuse what the
destination holds by content, extend its chains with the source's delta frames, re-encode
what cannot be copied as it is."""

from __future__ import annotations

from snapshot.copy.index import ChainIndex
from snapshot.format.manifest import Chunk, Frame
from snapshot.repo.packs import PendingFrame


def fr(obj: str, content: str, codec: str = "zstd") -> Frame:
    return Frame(obj, 0, 10, codec, 100, content * 32)


def chunk(*frames: Frame) -> Chunk:
    return Chunk(frames[-1].hash, 100, frames)


A, B, C, D = "a", "b", "c", "d"


def test_a_chunk_whose_content_the_destination_holds_copies_nothing() -> None:
    index = ChainIndex("zstd", 16)
    dst = (fr("p1", A), fr("p2", B))
    index.add(dst)
    step = index.plan(chunk(fr("s1", A), fr("s2", B)))
    assert step.reuse == dst and step.copy == () and not step.stores


def test_the_shortest_chain_to_a_content_is_taken() -> None:
    index = ChainIndex("zstd", 16)
    index.add((fr("p1", A), fr("p2", B), fr("p3", C)))
    index.add((fr("p4", C),))
    assert index.get(C * 32) == (fr("p4", C),)
    assert index.get(B * 32) == (fr("p1", A), fr("p2", B))


def test_a_delta_after_a_known_content_extends_the_destination_chain() -> None:
    index = ChainIndex("zstd", 16)
    dst = (fr("p1", A), fr("p2", B))
    index.add(dst)
    src = chunk(fr("s1", A), fr("s2", B), fr("s3", C), fr("s4", D))
    step = index.plan(src)
    assert step.reuse == dst and step.copy == src.frames[2:]
    # only the frames copied are read: they are verified against B's content, rebuilt by dst
    assert step.reads(src) == src.frames[2:] and step.base == dst and step.base_hash(src) == B * 32


def test_nothing_known_copies_the_whole_chain() -> None:
    src = chunk(fr("s1", A), fr("s2", B))
    step = ChainIndex("zstd", 16).plan(src)
    assert step.reuse == () and step.copy == src.frames and not step.reencode


def test_frames_in_condemned_packs_are_never_built_on() -> None:
    index = ChainIndex("zstd", 16, condemned={"p2"})
    index.add((fr("p1", A), fr("p2", B), fr("p3", C)))
    assert A * 32 in index and B * 32 not in index and C * 32 not in index
    step = index.plan(chunk(fr("s1", A), fr("s2", B), fr("s3", C)))
    assert step.reuse == (fr("p1", A),) and len(step.copy) == 2


def test_a_chain_that_would_outgrow_max_chain_is_re_encoded() -> None:
    index = ChainIndex("zstd", 3)
    index.add((fr("p1", A), fr("p2", B)))
    step = index.plan(chunk(fr("s1", A), fr("s2", B), fr("s3", C), fr("s4", D)))
    assert step.reencode and step.reuse == () and step.copy == ()


def test_a_re_encoded_chunk_reads_only_the_frames_after_a_content_the_destination_holds() -> None:
    index = ChainIndex("gzip", 16)
    dst = (fr("p1", B, "gzip"),)
    index.add(dst)
    src = chunk(fr("s1", A), fr("s2", B), fr("s3", C))
    step = index.plan(src)
    assert step.reencode and step.reuse == () and step.base == dst
    assert step.reads(src) == src.frames[2:] and step.base_hash(src) == B * 32


def test_nothing_known_reads_the_whole_chain() -> None:
    src = chunk(fr("s1", A), fr("s2", B))
    for step in (ChainIndex("zstd", 16).plan(src), ChainIndex("gzip", 16).plan(src)):
        assert step.reads(src) == src.frames and step.base_hash(src) is None


def test_frames_of_another_codec_are_re_encoded() -> None:
    step = ChainIndex("gzip", 16).plan(chunk(fr("s1", A), fr("s2", B)))
    assert step.reencode
    gz = ChainIndex("gzip", 16).plan(chunk(fr("s1", A, "gzip")))
    assert not gz.reencode and gz.copy == (fr("s1", A, "gzip"),)


def test_pending_frames_are_resolved_to_where_they_were_stored() -> None:
    index = ChainIndex("zstd", 16)
    base = (fr("p1", A),)
    index.add(base)
    pf = PendingFrame(0, 0, 10, "zstd", 100, B * 32)
    index.add((*base, pf))
    stored = Frame("p9", 0, 10, "zstd", 100, B * 32)
    index.resolve({pf: stored})
    assert index.get(B * 32) == (fr("p1", A), stored)


def test_chains_of_a_failed_snapshot_are_forgotten() -> None:
    index = ChainIndex("zstd", 16)
    index.add((fr("p1", A),))
    index.add((fr("p1", A), PendingFrame(0, 0, 10, "zstd", 100, B * 32)))
    index.drop_pending()
    assert A * 32 in index and B * 32 not in index


def test_a_stored_delta_waits_for_a_chain_to_its_base() -> None:
    """A killed copy may have stored a delta whose base's pack never landed: once the base is
    stored again, the delta is used, not sent again."""
    index = ChainIndex("zstd", 16)
    delta = fr("p2", B)
    index.add_delta(A * 32, delta)
    assert B * 32 not in index
    base = PendingFrame(0, 0, 10, "zstd", 100, A * 32)
    index.add((base,))
    assert index.get(B * 32) == (base, delta)
