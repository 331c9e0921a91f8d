"""A restore from S3 keeps as many range reads in flight as the link carries, not a fixed count:
through a link with a long wait for each answer and a slow connection (tests/shaping_proxy.py,
in front of moto) it widens past the 8 reads of before; through a link whose whole rate is one
connection's it settles at a few. The assertions are on the proxy's counts and the widths the
restore reports, not on time."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from chroma_helpers import tree_digest
from s3_fixtures import s3_options
from shaping_fixtures import shaping_proxy  # noqa: F401  (the fixture, used by name)
from shaping_proxy import Exchange, ShapingProxy

from snapshot.create.pipeline import create_snapshot
from snapshot.repo.repository import Repository
from snapshot.restore.pipeline import RestoreResult, restore_snapshot

KiB, MiB = 1 << 10, 1 << 20


def _ranges(proxy: ShapingProxy) -> list[Exchange]:
    return [ex for ex in proxy.exchanges if ex.method == "GET" and "/data/" in ex.path]


def _levels(proxy: ShapingProxy, exchanges: list[Exchange]) -> list[int]:
    return [level for _at, level in proxy.in_flight_over(exchanges)]


def _restore_through(
    proxy: ShapingProxy, url: str, source: Path, target: Path, *, size: int, pack_size: int, **shape: float,
) -> RestoreResult:
    """A snapshot of ``source`` with a file of ``size`` random bytes in packs of ``pack_size`` (so
    a range of a pack is at most that), restored through the proxy shaped as ``shape`` says."""
    orphan = source / str(uuid.UUID(int=9))
    orphan.mkdir()
    (orphan / "data_level0.bin").write_bytes(os.urandom(size))
    repo = Repository.open(url, s3_options(proxy.url), create=True, chunk_size=pack_size)
    create_snapshot(repo, source, use_cache=False, include_orphans=True, pack_size=pack_size)
    proxy.shape(**shape)
    proxy.reset()
    result = restore_snapshot(Repository.open(url, s3_options(proxy.url)), "latest", target)
    assert tree_digest(target) == tree_digest(source)
    return result


def test_a_restore_widens_past_the_fixed_count_where_each_connection_is_slow(
    shaping_proxy: ShapingProxy, s3_repo_url: str, chroma_dir: Path, tmp_path: Path  # noqa: F811
) -> None:
    """60 ms before each answer, 2 MB/s per connection, no cap on the whole: 96 ranges of 256 KiB.
    Eight at a time (before) moved 16 MB/s; the link carries more for every connection added."""
    result = _restore_through(shaping_proxy, s3_repo_url, chroma_dir, tmp_path / "restored",
                              size=24 * MiB, pack_size=256 * KiB, latency=0.06, rate=2e6)
    ranges = _ranges(shaping_proxy)
    assert sum(ex.down for ex in ranges) >= 24 * MiB
    assert max(_levels(shaping_proxy, ranges)) >= 14, result.link  # 8 (and the readers' own) before
    assert result.link is not None and result.link.width_max >= 16
    assert result.link.latency_ms is not None and result.link.latency_ms >= 60


def test_a_restore_stays_narrow_where_the_whole_link_is_one_connections_rate(
    shaping_proxy: ShapingProxy, s3_repo_url: str, chroma_dir: Path, tmp_path: Path  # noqa: F811
) -> None:
    """The whole link capped at one connection's rate (8 MB/s, 5 ms before each answer): wider
    gains nothing, so after one probe upward the restore does not stay wider than it started
    (8) with its 64 ranges of 1 MiB. On a quiet machine it settles at the fewest that fill the
    link by Little's law (3-4); with the machine busy the latencies it measures are the CPU's
    as much as the link's (130 ms seen for 5 ms), and it may keep its starting width: the
    controller's own decisions are tested on a simulated link (test_link.py)."""
    result = _restore_through(shaping_proxy, s3_repo_url, chroma_dir, tmp_path / "restored",
                              size=64 * MiB, pack_size=MiB, latency=0.005, rate=8e6, total_rate=8e6)
    assert result.link is not None
    assert result.link.width_max <= 16  # the one probe upward
    assert result.link.width_final <= 8, result.link
    ranges = _ranges(shaping_proxy)
    assert max(_levels(shaping_proxy, ranges)) <= 17, result.link  # the probe, and a chunk table
    # the last ranges start once the probe's have drained (its window, then 15 in flight: about
    # 47 of the 64 requests, chunk tables included)
    assert max(_levels(shaping_proxy, ranges[-8:])) <= 8, (result.link, _levels(shaping_proxy, ranges[-8:]))


def test_a_create_uploads_more_packs_at_once_where_each_connection_is_slow(
    shaping_proxy: ShapingProxy, s3_repo_url: str, chroma_dir: Path  # noqa: F811
) -> None:
    """The same slow connections for 96 packs of 256 KiB: 4 uploads at a time before."""
    orphan = chroma_dir / str(uuid.UUID(int=10))
    orphan.mkdir()
    (orphan / "data_level0.bin").write_bytes(os.urandom(24 * MiB))
    repo = Repository.open(s3_repo_url, s3_options(shaping_proxy.url), create=True, chunk_size=256 * KiB)
    shaping_proxy.shape(latency=0.06, rate=2e6)
    shaping_proxy.reset()
    result = create_snapshot(repo, chroma_dir, use_cache=False, include_orphans=True, pack_size=256 * KiB)
    puts = [ex for ex in shaping_proxy.exchanges if ex.method == "PUT" and "/data/" in ex.path]
    assert len(puts) >= 96
    assert max(_levels(shaping_proxy, puts)) >= 8, result.link
    assert result.link is not None and result.link.width_max >= 8
    assert result.link.latency_ms is None  # a PUT's answer comes after its body
