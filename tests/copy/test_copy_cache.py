"""copy takes the bases of the deltas it verifies from local disk, not from the destination
(billed egress on S3): within a run from the contents it decoded (spilled to disk beyond the
memory bound), across runs from the image of the last snapshot copied of each source, kept in
the base cache (snapshot/copy/image.py). S3 to S3 through moto; the destination's range reads
are counted per object, so that reading its chunk tables (which the index of what it holds
needs) is told from reading its frames."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become, retag, tree_digest
from conftest import run_cli

from snapshot.copy import pipeline
from snapshot.copy.contents import Contents
from snapshot.copy.pipeline import CopyOptions, copy_snapshots
from snapshot.format.chunking import read_verified
from snapshot.format.layout import object_id_from_key
from snapshot.repo.basecache import BaseCache, default_root
from snapshot.repo.repository import Repository

#: Contents held in memory: one 64 KiB chunk, far below what the series' deltas build on.
MEMORY = 64 << 10


@dataclass(frozen=True)
class Four:
    """A local repository with four snapshots of one source (full, grown, retagged twice) and
    the restored tree of each."""

    repo: Path
    ids: list[str]
    trees: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def _four(chroma_template: Path, chroma_grown: Path, tmp_path_factory: pytest.TempPathFactory) -> Four:
    root = tmp_path_factory.mktemp("four")
    src, repo = root / "db", root / "repo"
    shutil.copytree(chroma_template, src)
    res = run_cli("--repo", str(repo), "init", "--chunk-size", str(64 << 10))
    assert res.code == 0, res.stderr
    r = Repository.open(repo)
    ids = []
    for change in (None, lambda: become(src, chroma_grown), lambda: retag(src, 7), lambda: retag(src, 8)):
        if change is not None:
            change()
        res = run_cli("--repo", str(repo), "create", str(src), "--no-cache", "--json")
        assert res.code == 0, res.stderr
        ids.append(res.json()["id"])
    assert r.snapshot_ids() == ids
    trees = {}
    for sid in ids:
        target = root / f"t-{sid}"
        assert run_cli("--repo", str(repo), "restore", sid, str(target)).code == 0
        trees[sid] = tree_digest(target)
        shutil.rmtree(target)
    return Four(repo, ids, trees)


@dataclass
class Buckets:
    source: str
    dest: str
    ids: list[str]
    trees: dict[str, dict[str, str]]


@pytest.fixture
def buckets(_four: Four, s3_repo_url: str, s3_client: Any) -> Buckets:
    """The four snapshots in one bucket, and an empty repository in another."""
    dest = s3_repo_url.replace("snap-test-", "snap-dest-")
    s3_client.create_bucket(Bucket=dest.split("/")[2])
    for url in (s3_repo_url, dest):
        assert run_cli("--repo", url, "init", "--chunk-size", str(64 << 10)).code == 0
    copy_snapshots(Repository.open(s3_repo_url), Repository.open(_four.repo))
    shutil.rmtree(default_root(), ignore_errors=True)  # the source bucket's own image: not under test
    return Buckets(s3_repo_url, dest, _four.ids, _four.trees)


@dataclass
class Reads:
    """The destination's range reads during a copy: (object id, bytes)."""

    ranges: list[tuple[str | None, int]]

    def frame_bytes(self, dest: Repository) -> int:
        """Bytes read of packs holding data frames (not chunk tables)."""
        data = {fr.object for sid in dest.snapshot_ids() for _f, chunks in dest.tables(dest.manifest(sid))
                for c in chunks for fr in c.frames}
        return sum(n for oid, n in self.ranges if oid in data)


def _copy(b: Buckets, refs: list[str], **options: Any) -> tuple[Any, Reads]:
    dest = Repository.open(b.dest)
    reads = Reads([])
    get_range = dest.store.get_range

    def counted(key: str, offset: int, length: int) -> bytes:
        data = get_range(key, offset, length)
        reads.ranges.append((object_id_from_key(key), len(data)))
        return data

    dest.store.get_range = counted  # type: ignore[method-assign]
    result = copy_snapshots(dest, Repository.open(b.source), refs, options=CopyOptions(**options))
    assert [s.status for s in result.snapshots] == ["copied"] * len(refs) or not refs
    return result, reads


def _exact(b: Buckets, sid: str, tmp_path: Path) -> None:
    res = run_cli("--repo", b.dest, "check", "--read-data", "--json")
    assert res.code == 0, res.stdout + res.stderr
    target = tmp_path / "restored"
    res = run_cli("--repo", b.dest, "restore", sid, str(target))
    assert res.code == 0, res.stderr
    assert tree_digest(target) == b.trees[sid]
    shutil.rmtree(target)


def _slot(b: Buckets) -> Path:
    [slot] = [p for p in (default_root() / Repository.open(b.dest).config.id).glob("copy-*") if p.is_dir()]
    return slot


def _image(b: Buckets) -> dict[str, Any]:
    index: dict[str, Any] = json.loads((_slot(b) / "cache.json").read_text())
    return index


def _image_chunks(b: Buckets) -> Iterator[tuple[Path, int, int, str]]:
    slot, index = _slot(b), _image(b)
    for h, (rel, offset, size) in index["chunks"].items():
        yield slot / index["files"][rel], offset, size, h


@pytest.mark.parametrize("spill", [None, 0])
def test_a_series_copied_in_one_run_reads_no_frame_of_the_destination(
        buckets: Buckets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill: int | None) -> None:
    """The deltas of the 2nd and 3rd snapshots build on contents the run decoded, far more
    than the memory bound: they come back from the spill on local disk, or with no spill from
    the image of the source the run builds (each chunk decoded, at its offset)."""
    made: list[Contents] = []

    class Recorded(Contents):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(pipeline, "Contents", Recorded)
    result, reads = _copy(buckets, buckets.ids[:3], cache_bytes=MEMORY, spill_bytes=spill)
    dest = Repository.open(buckets.dest)
    assert reads.frame_bytes(dest) == 0 and result.bytes_read_destination == 0, reads.ranges
    assert (made[0].unspilled > 2 * MEMORY) == (spill is None)
    assert not list((default_root() / dest.config.id).glob(".copy-spill-*"))  # the run removed its spill
    _exact(buckets, buckets.ids[2], tmp_path)


def test_the_next_incremental_copied_in_a_second_run_reads_no_frame_of_the_destination(
        buckets: Buckets, tmp_path: Path) -> None:
    """Its bases come from the image of the last snapshot copied (only the destination's
    chunk tables are read, to index what it holds); the prediction counts no base read."""
    _copy(buckets, buckets.ids[:3], cache_bytes=MEMORY)
    image = _image(buckets)
    assert image["snapshot"] == buckets.ids[2] and image["chunks"]
    dest = Repository.open(buckets.dest)
    m = dest.manifest(buckets.ids[2])
    assert BaseCache(default_root(), dest.config.id, Path(m.source_path)).snapshot_id is None  # not create's
    result, reads = _copy(buckets, buckets.ids[3:], cache_bytes=MEMORY, predict=True)
    assert reads.frame_bytes(Repository.open(buckets.dest)) == 0, reads.ranges
    assert sum(n for _o, n in reads.ranges) > 0  # its chunk tables
    predicted = result.predicted.destination.bytes_down
    assert abs(predicted - result.bytes_read_destination) <= 0.05 * result.bytes_read_destination
    assert _image(buckets)["snapshot"] == buckets.ids[3]
    fourth = {c.hash for _f, chunks in dest.tables(dest.manifest(buckets.ids[3])) for c in chunks}
    assert set(_image(buckets)["chunks"]) == fourth  # whole: its unchanged chunks from the old image
    assert all(read_verified(*place) is not None for place in _image_chunks(buckets))
    _exact(buckets, buckets.ids[3], tmp_path)
    again, _reads = _copy(buckets, [])  # nothing to copy: the image stays
    assert again.copied == 0 and _image(buckets)["snapshot"] == buckets.ids[3]


def test_a_damaged_image_means_reading_the_destination_and_the_copy_is_still_exact(
        buckets: Buckets, tmp_path: Path) -> None:
    _copy(buckets, buckets.ids[:3], cache_bytes=MEMORY)
    for path, offset, size, _h in _image_chunks(buckets):
        with open(path, "r+b") as fh:
            fh.seek(offset + size // 2)
            byte = fh.read(1)
            fh.seek(offset + size // 2)
            fh.write(bytes([byte[0] ^ 0xFF]))
    _result, reads = _copy(buckets, buckets.ids[3:], cache_bytes=MEMORY)
    assert reads.frame_bytes(Repository.open(buckets.dest)) > 0  # the bases came from there
    _exact(buckets, buckets.ids[3], tmp_path)
    assert all(read_verified(*place) is not None for place in _image_chunks(buckets))  # a sound new one


_CHILD = ("import sys; from snapshot.copy.pipeline import CopyOptions, copy_snapshots; "
          "from snapshot.repo.repository import Repository; "
          "copy_snapshots(Repository.open(sys.argv[1]), Repository.open(sys.argv[2]), sys.argv[3:])")


@pytest.mark.parametrize("point", ["copy.image-staged", "cache.swapping"])
def test_the_image_of_a_killed_copy_is_never_half_committed(
        buckets: Buckets, tmp_path: Path, point: str) -> None:
    """Killed once its 4th snapshot is saved, while its image is replaced: the image left is
    the old one, whole, or none; the next copy is exact and leaves a sound image."""
    _copy(buckets, buckets.ids[:3], cache_bytes=MEMORY)
    env = dict(os.environ, CHROMA_SNAPSHOT_KILL_AT=point, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.run([sys.executable, "-c", _CHILD, buckets.dest, buckets.source, buckets.ids[3]],
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    assert child.returncode == -9, child.stderr
    assert Repository.open(buckets.dest).snapshot_ids() == buckets.ids  # saved before the image
    area = default_root() / Repository.open(buckets.dest).config.id
    slots = [p for p in area.glob("copy-*") if p.is_dir()]
    if point == "copy.image-staged":
        assert _image(buckets)["snapshot"] == buckets.ids[2]
        assert all(read_verified(*place) is not None for place in _image_chunks(buckets))
    else:
        assert slots == []
    res = run_cli("--repo", buckets.dest, "forget", buckets.ids[3])  # to copy it again
    assert res.code == 0, res.stderr
    _result, reads = _copy(buckets, buckets.ids[3:], cache_bytes=MEMORY)
    assert (reads.frame_bytes(Repository.open(buckets.dest)) == 0) == (point == "copy.image-staged")
    _exact(buckets, buckets.ids[3], tmp_path)
    assert _image(buckets)["snapshot"] == buckets.ids[3]
    assert all(read_verified(*place) is not None for place in _image_chunks(buckets))
    assert not list(area.glob(".staging-*")) and not list(area.glob(".copy-spill-*"))  # swept
