"""Which frames share a pack, and how big packs are: a create packs its full frames apart from
its delta frames (they stop being needed at different times), and packs are sized to the
database (a 16 MiB pack is a quarter of a small repository), so that a prune can delete packs
whole instead of copying what is still needed out of half-dead ones."""

from __future__ import annotations

import random
from pathlib import Path

from chroma_helpers import build_db, update_metadata
from conftest import create_snapshot

from snapshot.format.codecs import compress
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk
from snapshot.repo.packs import ChunkReader, PackWriter, pack_size_for
from snapshot.repo.repository import Repository


def test_frames_of_two_lanes_fill_two_packs_each_frame_readable(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo", create=True)
    w = PackWriter(repo, pack_size=1 << 20)
    contents = [bytes([i]) * (3000 + i) for i in range(6)]
    pending = [w.add(compress(c, "zstd", 3), "zstd", len(c), digest(c), "a" if i % 2 else "b")
               for i, c in enumerate(contents)]
    w.close()
    frames = [w.resolve(pf) for pf in pending]
    assert w.objects_uploaded == 2 and len(set(w.object_ids)) == 2
    assert {fr.object for fr in frames[1::2]}.isdisjoint({fr.object for fr in frames[::2]})
    for lane in (frames[::2], frames[1::2]):  # each lane's frames back to back, in order
        assert [fr.offset for fr in lane] == [0, *(sum(f.length for f in lane[:k]) for k in range(1, 3))]
    reader = ChunkReader(repo)
    for c, fr in zip(contents, frames, strict=True):
        assert reader.read_chunk(Chunk(fr.hash, fr.size, (fr,))) == c


def test_a_pack_fills_up_per_lane(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo", create=True)
    w = PackWriter(repo, pack_size=5000)
    data = [bytes((i + k) % 256 for k in range(3072)) for i in range(4)]  # stored as given
    pending = [w.add(d, "zstd", len(d), digest(d), lane) for d, lane in zip(data, "aabb", strict=True)]
    w.close()
    # two frames fill a lane's pack, so each lane sealed one pack of exactly its two frames
    objects = [w.resolve(pf).object for pf in pending]
    assert objects[0] == objects[1] != objects[2] == objects[3]
    assert w.objects_uploaded == 2


def test_a_create_packs_its_full_frames_apart_from_its_deltas(chroma_dir: Path, repo_path: Path) -> None:
    """The second create stores new chunks (a new collection's files, the database's new
    pages) as full frames and changed chunks as deltas against the parent's: no pack holds
    both."""
    first = create_snapshot(repo_path, chroma_dir, "--chunk-size", "65536")
    build_db(chroma_dir, {"extra": 1200}, seed=5)
    update_metadata(chroma_dir, "docs", [f"docs-{i}" for i in range(50)], 3)
    second = create_snapshot(repo_path, chroma_dir)
    repo = Repository.open(repo_path)
    old = {fr.object for f in repo.manifest(first).files for c in repo.chunks(repo.manifest(first), f)
           for fr in c.frames}
    m = repo.manifest(second)
    fulls: set[str] = set()
    deltas: set[str] = set()
    for f in m.files:
        for c in repo.chunks(m, f):
            for i, fr in enumerate(c.frames):
                if fr.object not in old:  # written by the second create
                    (deltas if i else fulls).add(fr.object)
    assert fulls and deltas, (fulls, deltas)
    assert fulls.isdisjoint(deltas)


def test_packs_are_a_32nd_of_the_database_between_4_and_16_mib() -> None:
    mib = 1 << 20
    assert pack_size_for(0) == pack_size_for(100 * mib) == 4 * mib
    assert pack_size_for(256 * mib) == 8 * mib
    assert pack_size_for(512 * mib) == pack_size_for(770 * mib) == pack_size_for(1 << 40) == 16 * mib


def test_a_small_database_is_stored_in_4_mib_packs(chroma_dir: Path, repo_path: Path, tmp_path: Path) -> None:
    """24 MiB that do not compress (an --include'd file) beside a small database: packs of
    about 4 MiB (each sealed once it reaches the size, so at most a frame over), not 16."""
    extra = tmp_path / "blob.bin"
    extra.write_bytes(random.Random(7).randbytes(24 << 20))
    create_snapshot(repo_path, chroma_dir, "--include", str(extra))
    sizes = sorted(p.stat().st_size for p in (repo_path / "data").rglob("*") if p.is_file())
    assert len([s for s in sizes if s >= 4 << 20]) >= 5, sizes
    assert sizes[-1] <= (4 << 20) + (1 << 20) + 4096, sizes
