"""A repository on a versioned S3 bucket: prune says once that what it deletes stays as
noncurrent versions, stats counts them, and a snapshot forgotten by mistake (or a pack
overwritten) is brought back by ``undelete --before``. A folder or an unversioned bucket has
none of this and says so."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from chroma_helpers import grow, tree_digest
from conftest import one_line_error, run_cli
from test_s3_objlock import _keys, _ok, _split, _versions, next_second


def test_forgotten_snapshot_and_overwritten_pack_come_back(s3_client: Any, s3_repo_url: str, chroma_dir: Path,
                                                            tmp_path: Path) -> None:
    url = s3_repo_url
    bucket, prefix = _split(url)
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = _ok("--repo", url, "create", chroma_dir, "--no-cache")["id"]
    first_tree = tree_digest(chroma_dir)
    grow(chroma_dir, "docs", 20, seed=4)
    second = _ok("--repo", url, "create", chroma_dir, "--no-cache")["id"]
    before = next_second()
    packs = [k for k in _keys(s3_client, url) if "/data/" in k]

    res = run_cli("--repo", url, "forget", first, "--grace", "0", "--no-repack")
    assert res.code == 0, res.stderr
    assert res.stdout.count("the bucket keeps versions") == 1, res.stdout
    stats = _ok("--repo", url, "stats")["stats"]
    every = _versions(s3_client, url)
    old = [v for v in every if not v["marker"] and not v["IsLatest"]]
    assert stats["versioning"] == "Enabled"
    assert stats["noncurrent_versions"] == len(old) > 0
    assert stats["noncurrent_bytes"] == sum(v["Size"] for v in old)
    assert stats["delete_markers"] == sum(1 for v in every if v["marker"]) > 0

    pack = next(k for k in _keys(s3_client, url) if k in packs)  # one the second snapshot needs
    s3_client.put_object(Bucket=bucket, Key=pack, Body=b"overwritten")
    assert one_line_error(run_cli("--repo", url, "check", "--read-data"), 4)

    moment = datetime.datetime.fromtimestamp(before, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    plan = _ok("--repo", url, "undelete", "--before", moment, "--dry-run")
    assert plan["snapshots"] == [first] and plan["replaced"] == 1 and plan["config"] is None
    assert [s["id"] for s in _ok("--repo", url, "list")] == [second]  # the dry run changed nothing
    out = _ok("--repo", url, "undelete", "--before", moment)
    assert out == {**plan, "dry_run": False}
    assert [s["id"] for s in _ok("--repo", url, "list")] == [first, second]
    _ok("--repo", url, "check", "--read-data")
    _ok("--repo", url, "restore", first, tmp_path / "a")
    assert tree_digest(tmp_path / "a") == first_tree
    _ok("--repo", url, "restore", second, tmp_path / "b")
    assert tree_digest(tmp_path / "b") == tree_digest(chroma_dir)
    assert _ok("--repo", url, "undelete", "--before", moment)["snapshots"] == []  # nothing left to do


def test_without_versions_nothing_is_counted_or_brought_back(s3_repo_url: str, chroma_dir: Path,
                                                             tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for url in (s3_repo_url, str(repo)):
        _ok("--repo", url, "create", chroma_dir, "--no-cache")
        stats = _ok("--repo", url, "stats")["stats"]
        assert stats["versioning"] is None and stats["noncurrent_versions"] is None
        assert _ok("--repo", url, "forget", "latest")["versioned"] is (False if url == s3_repo_url else None)
        line = one_line_error(run_cli("--repo", url, "undelete", "--before", "1h"), 2)
        assert "keeps no versions" in line
    line = one_line_error(run_cli("--repo", str(repo), "undelete", "--before", "yesterday"), 2)
    assert "--before must be a time" in line
