"""copy: snapshots from one repository into another, verified, deduplicated by content,
resumable, and refused cleanly on bad input (real Chroma dirs; S3 through moto)."""

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
from conftest import CliResult, edit_manifest, one_line_error, run_cli

from snapshot.copy.pipeline import CopyOptions, copy_snapshots
from snapshot.create.pipeline import create_snapshot
from snapshot.format.manifest import manifest_to_dict
from snapshot.repo.repository import Repository
from snapshot.util import pausepoints

PASS = "copy-test-password"


@dataclass(frozen=True)
class Series:
    """A local repository with three snapshots of one source (full, grown, retagged)."""

    repo: Path
    ids: list[str]
    #: What each create uploaded (bytes).
    uploaded: list[int]
    #: The restored tree of each snapshot.
    trees: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def _series(chroma_template: Path, chroma_grown: Path, tmp_path_factory: pytest.TempPathFactory) -> Series:
    root = tmp_path_factory.mktemp("series")
    src, repo = root / "db", root / "src-repo"
    shutil.copytree(chroma_template, src)
    r = Repository.open(repo, create=True)
    ids, uploaded = [], []
    for change in (None, lambda: become(src, chroma_grown), lambda: retag(src, 7)):
        if change is not None:
            change()
        res = create_snapshot(r, src, tags=["nightly"], message="m", use_cache=False)
        ids.append(res.id)
        uploaded.append(res.bytes_uploaded)
    trees = {sid: _restored(repo, sid, root / f"restored-{sid}") for sid in ids}
    return Series(repo, ids, uploaded, trees)


@pytest.fixture
def series(_series: Series, tmp_path: Path) -> Series:
    repo = tmp_path / "src-repo"
    shutil.copytree(_series.repo, repo)
    return Series(repo, _series.ids, _series.uploaded, _series.trees)


def _restored(repo: Path | str, sid: str, target: Path, *extra: str) -> dict[str, str]:
    res = run_cli("--repo", str(repo), "restore", sid, str(target), *extra)
    assert res.code == 0, res.stderr
    tree = tree_digest(target)
    shutil.rmtree(target)
    return tree


def _copy(dest: Path | str, source: Path | str, *args: str) -> dict[str, Any]:
    res = run_cli("--repo", str(dest), "copy", "--from-repo", str(source), "--json", *args)
    assert res.code == 0, res.stdout + res.stderr
    out: dict[str, Any] = res.json()
    return out


def _init(repo: Path | str, *args: str) -> None:
    res = run_cli("--repo", str(repo), "init", *args)
    assert res.code == 0, res.stderr


def _checked(repo: Path | str, *extra: str) -> None:
    res = run_cli("--repo", str(repo), "check", "--read-data", "--json", *extra)
    assert res.code == 0, res.stdout + res.stderr


def _roots(repo: Path | str, ids: list[str], key: Any = None) -> dict[str, dict[str, Any]]:
    """Each root as a dict, without where its chunk tables are stored."""
    r = Repository.open(repo, key_source=key)
    out = {}
    for sid in ids:
        d = manifest_to_dict(r.manifest(sid))
        for f in d["files"]:
            f.pop("table", None)
        out[sid] = d
    return out


def test_a_series_goes_local_to_s3_to_local_unchanged(series: Series, s3_repo_url: str, tmp_path: Path) -> None:
    _init(s3_repo_url)
    first = _copy(s3_repo_url, series.repo)
    assert [s["status"] for s in first["snapshots"]] == ["copied"] * 3 and first["copied"] == 3
    assert first["bytes_read"] > 0 and first["requests"]["destination"]["total"] > 0
    back = tmp_path / "back"
    _init(back)
    _copy(back, s3_repo_url)
    assert Repository.open(back).snapshot_ids() == series.ids
    assert _roots(back, series.ids) == _roots(series.repo, series.ids) == _roots(s3_repo_url, series.ids)
    for sid in series.ids:
        assert _restored(back, sid, tmp_path / "t") == series.trees[sid]
        assert _restored(s3_repo_url, sid, tmp_path / "t") == series.trees[sid]
    for repo in (s3_repo_url, back):
        _checked(repo)
    again = _copy(s3_repo_url, series.repo)
    assert again["copied"] == 0 and again["skipped"] == 3 and again["bytes_stored"] == 0
    assert [s["status"] for s in again["snapshots"]] == ["present"] * 3
