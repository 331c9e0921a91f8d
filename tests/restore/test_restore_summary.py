"""A restore's survey on literal data (``summarise``, what ``restore --dry-run`` prints): which
chunks the target already holds, and how many bytes of frames must be read, from a folder or as
ranges of packs from a remote store."""

from __future__ import annotations

from pathlib import Path

from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest, Totals
from snapshot.restore.materialise import Local, LocalChunk
from snapshot.restore.pipeline import RestoreSummary, summarise

CS = 4096
P, Q = "a" * 32, "b" * 32
H = [f"{i:032x}" for i in range(1, 9)]

# chroma.sqlite3: a full chunk, a chunk stored as a full frame plus a delta, and a 10-byte tail
# whose frame lies 51 bytes past the others in the same pack
DB = (
    Chunk(H[0], CS, (Frame(P, 0, 700, "zstd", CS, H[0]),)),
    Chunk(H[2], CS, (Frame(P, 700, 800, "zstd", CS, H[1]), Frame(P, 1500, 30, "zstd", CS, H[2]))),
    Chunk(H[3], 10, (Frame(P, 1600, 19, "zstd", 10, H[3]),)),
)
# two small files with the same content: one frame, in another pack
SMALL = (Chunk(H[4], 100, (Frame(Q, 0, 50, "zstd", 100, H[4]),)),)

FILES = (
    FileEntry("chroma.sqlite3", 2 * CS + 10, 0o644, H[5], "db", chunk_count=3),
    FileEntry("seg/header.bin", 100, 0o644, H[4], "segment", chunk_count=1),
    FileEntry("seg/length.bin", 100, 0o644, H[4], "segment", chunk_count=1),
)
M = Manifest("20261128T015012-1a2b3c4d", None, "2026-11-28T01:50:12Z", "0.3.0", None, "/src", "host",
             (), "", CS, FILES, (), Totals(3, 2 * CS + 210, 5, 5, 1669, 2))


def _held(*hashes: str) -> Local:
    return {h: LocalChunk(Path("/target/x"), 0, 1) for h in hashes}


def test_an_empty_target_reads_every_frame() -> None:
    files = [(DB, _held()), (SMALL, _held()), (SMALL, _held())]
    assert summarise(M, files) == RestoreSummary(
        M.id, files=3, bytes_total=2 * CS + 210, chunks_local=0, bytes_local=0,
        chunks_remote=5, bytes_remote=2 * CS + 210,
        bytes_to_download=700 + 800 + 30 + 19 + 50 + 50)  # from a folder: each frame it reads


def test_a_remote_store_reads_ranges_that_span_gaps_and_read_a_shared_frame_once() -> None:
    files = [(DB, _held()), (SMALL, _held()), (SMALL, _held())]
    summary = summarise(M, files, remote=True)
    assert summary.bytes_to_download == 1619 + 50  # pack P 0..1619 with its gap, Q's frame once
    assert (summary.chunks_remote, summary.bytes_remote) == (5, 2 * CS + 210)


def test_chunks_and_delta_bases_the_target_holds_are_not_read() -> None:
    # the target holds the first chunk, the base of the second's delta, and one small file
    files = [(DB, _held(H[0], H[1])), (SMALL, _held(H[4])), (SMALL, _held())]
    local = summarise(M, files)
    assert (local.chunks_local, local.bytes_local) == (2, CS + 100)
    assert (local.chunks_remote, local.bytes_remote) == (3, CS + 10 + 100)
    assert local.bytes_to_download == 30 + 19 + 50  # the delta, the tail, one small file
    assert summarise(M, files, remote=True).bytes_to_download == (1619 - 1500) + 50


def test_a_target_holding_everything_reads_nothing() -> None:
    files = [(DB, _held(H[0], H[2], H[3])), (SMALL, _held(H[4])), (SMALL, _held(H[4]))]
    for remote in (False, True):
        s = summarise(M, files, remote=remote)
        assert (s.chunks_local, s.bytes_local, s.chunks_remote, s.bytes_remote) == (5, 2 * CS + 210, 0, 0)
        assert s.bytes_to_download == 0


def test_what_a_killed_restore_left_counts_as_resumed_not_as_the_targets() -> None:
    staged = {h: LocalChunk(Path("/.x.restore-1-ab/x"), 0, 1, staged=True) for h in (H[0], H[2])}
    files = [(DB, {**_held(H[3]), **staged}), (SMALL, _held()), (SMALL, _held())]
    s = summarise(M, files)
    assert (s.chunks_resumed, s.bytes_resumed) == (2, 2 * CS)
    assert (s.chunks_local, s.bytes_local) == (1, 10)
    assert (s.chunks_remote, s.bytes_remote) == (2, 200)
    assert s.bytes_to_download == 50 + 50
