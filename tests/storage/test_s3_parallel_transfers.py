"""Transfers to and from S3 use several connections at once: through a link that adds latency to
every response and caps each connection's bandwidth (tests/shaping_proxy.py, in front of moto),
a create keeps several pack uploads in flight and a restore several range reads of its packs,
instead of moving a snapshot at about one connection's speed. The proxy counts the requests in
flight; the assertions are on its counts, not on time."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from chroma_helpers import grow, tree_digest
from s3_fixtures import s3_options
from shaping_fixtures import shaping_proxy  # noqa: F401  (the fixture, used by name)
from shaping_proxy import Exchange, ShapingProxy

from snapshot.create.pipeline import create_snapshot
from snapshot.repo.repository import Repository
from snapshot.restore.pipeline import restore_snapshot
from snapshot.upkeep.prune import prune
from snapshot.upkeep.repack import RepackOptions
from snapshot.upkeep.retention import RetentionPolicy
from snapshot.upkeep.verify import check_repository

MiB = 1024 * 1024
#: A slow link: each request waits 20 ms for its answer, each connection moves 10 MB/s.
LATENCY, RATE = 0.02, 10e6


def _data(proxy: ShapingProxy, method: str) -> list[Exchange]:
    return [ex for ex in proxy.exchanges if ex.method == method and "/data/" in ex.path]


def _most_at_once(proxy: ShapingProxy, exchanges: list[Exchange]) -> int:
    return max(level for _at, level in proxy.in_flight_over(exchanges))


@pytest.fixture
def big_source(chroma_dir: Path) -> Path:
    """The test DB and a segment folder no collection names, holding 24 MiB that do not
    compress: created with ``include_orphans``, a snapshot of several packs of 4 MiB, the
    frames of that one file following each other in them (as a big HNSW file's do)."""
    orphan = chroma_dir / str(uuid.UUID(int=7))
    orphan.mkdir()
    (orphan / "data_level0.bin").write_bytes(os.urandom(24 * MiB))
    return chroma_dir


def test_create_and_restore_keep_several_requests_in_flight(
    shaping_proxy: ShapingProxy, s3_repo_url: str, big_source: Path, tmp_path: Path  # noqa: F811
) -> None:
    repo = Repository.open(s3_repo_url, s3_options(shaping_proxy.url), create=True)
    shaping_proxy.shape(latency=LATENCY, rate=RATE)
    shaping_proxy.reset()
    result = create_snapshot(repo, big_source, use_cache=False, include_orphans=True, pack_size=4 * MiB)
    puts = _data(shaping_proxy, "PUT")
    assert result.objects_uploaded == len(puts) >= 7
    assert _most_at_once(shaping_proxy, puts) >= 4  # 2 before: the uploads ran two at a time

    shaping_proxy.reset()
    target = tmp_path / "restored"
    restore_snapshot(Repository.open(s3_repo_url, s3_options(shaping_proxy.url)), "latest", target)
    assert tree_digest(target) == tree_digest(big_source)
    gets = _data(shaping_proxy, "GET")
    assert sum(ex.down for ex in gets) >= 24 * MiB
    # 4 before: a range was read only once a reader needed it, and the eight readers of the
    # chunks next in line needed about four ranges of those packs
    assert _most_at_once(shaping_proxy, gets) >= 6


def _compressible(size: int) -> bytes:
    """``size`` bytes that zstd shrinks about 4:1 (a quarter of each 4 KiB random), like a
    SQLite file's pages."""
    return b"".join(os.urandom(1024) + bytes(3072) for _ in range(size // 4096))


def test_a_restore_reads_ahead_by_bytes_not_chunks(
    shaping_proxy: ShapingProxy, s3_repo_url: str, chroma_dir: Path, tmp_path: Path  # noqa: F811
) -> None:
    """A file that compresses well still keeps every range reader busy: with chunks of 256 KiB,
    16 chunks ahead were 1 MiB of frames, and a restore of 32 MiB had one or two ranges in
    flight; read ahead by bytes, all eight readers read at once."""
    orphan = chroma_dir / str(uuid.UUID(int=8))
    orphan.mkdir()
    (orphan / "data_level0.bin").write_bytes(_compressible(32 * MiB))
    repo = Repository.open(s3_repo_url, s3_options(shaping_proxy.url), create=True, chunk_size=256 << 10)
    create_snapshot(repo, chroma_dir, use_cache=False, include_orphans=True, pack_size=4 * MiB)
    shaping_proxy.shape(latency=LATENCY, rate=RATE)
    shaping_proxy.reset()
    target = tmp_path / "restored"
    restore_snapshot(Repository.open(s3_repo_url, s3_options(shaping_proxy.url)), "latest", target)
    assert tree_digest(target) == tree_digest(chroma_dir)
    gets = _data(shaping_proxy, "GET")
    assert 6 * MiB <= sum(ex.down for ex in gets) <= 12 * MiB  # it did compress about 4:1
    assert _most_at_once(shaping_proxy, gets) >= 7  # 3 before


def test_check_read_data_reads_ranges_of_packs_several_at_once(
    shaping_proxy: ShapingProxy, s3_repo_url: str, big_source: Path  # noqa: F811
) -> None:
    """check --read-data from S3 plans its reads as restore does: ranges of packs, read ahead,
    several at once, not one request per frame (a round trip each: 2,717 GETs and 85 s for a
    200k snapshot through a 30 ms link, against restic's 114)."""
    repo = Repository.open(s3_repo_url, s3_options(shaping_proxy.url), create=True, chunk_size=256 << 10)
    create_snapshot(repo, big_source, use_cache=False, include_orphans=True, pack_size=4 * MiB)
    frames = {fr for m in repo.manifests() for f in m.files for c in repo.chunks(m, f) for fr in c.frames}
    shaping_proxy.shape(latency=LATENCY, rate=RATE)
    shaping_proxy.reset()
    result = check_repository(Repository.open(s3_repo_url, s3_options(shaping_proxy.url)), read_data=True)
    assert result.ok and result.frames_verified == len(frames) > 100
    gets = _data(shaping_proxy, "GET")
    files = sum(len(m.files) for m in repo.manifests())
    # a range per file's chunk table, twice (structure, then data), and a few ranges of packs;
    # before, one GET per frame on top
    assert len(gets) <= 2 * files + 30 < len(frames), (len(gets), files, len(frames))
    assert _most_at_once(shaping_proxy, gets) >= 4


def test_a_prune_reads_the_chains_it_re_bases_several_ranges_at_once(
    shaping_proxy: ShapingProxy, s3_repo_url: str, chroma_dir: Path  # noqa: F811
) -> None:
    """A prune that re-bases chains reads their frames as ranges of packs planned ahead, several
    at once, not a frame at a time (one round trip each: 385 GETs and 25 s for a 200k
    repository through a 30 ms link, against restic's 4.5 s)."""
    repo = Repository.open(s3_repo_url, s3_options(shaping_proxy.url), create=True, chunk_size=64 << 10)
    for night in range(5):
        if night:
            grow(chroma_dir, "docs", 60, seed=40 + night, prefix=f"n{night}")
        create_snapshot(repo, chroma_dir, use_cache=False, pack_size=4 * MiB)
    shaping_proxy.shape(latency=LATENCY, rate=RATE)
    shaping_proxy.reset()
    result = prune(Repository.open(s3_repo_url, s3_options(shaping_proxy.url)), RetentionPolicy(last=1),
                   grace=0.0, delete_after=0.0, repack=RepackOptions(max_unused=0.0))
    assert result.repack is not None and result.repack.chunks_rebased >= 8
    gets = _data(shaping_proxy, "GET")
    assert _most_at_once(shaping_proxy, gets) >= 4  # one at a time before
    target = Path(str(chroma_dir) + "-restored")
    restore_snapshot(Repository.open(s3_repo_url, s3_options(shaping_proxy.url)), "latest", target)
    assert tree_digest(target) == tree_digest(chroma_dir)
