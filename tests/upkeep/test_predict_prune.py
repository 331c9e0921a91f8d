"""prune --dry-run predicts the requests, bytes and cost of the prune; --json of the real one
reports that prediction beside what it took (snapshot/upkeep/prune_predict.py). On moto and on
a folder: request counts exact; bytes within 5%."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become, steps
from conftest import CliResult

Cli = Callable[..., CliResult]


def _night(src: Path, n: int) -> None:
    """30 records added, 20 updated, 5 deleted, in one chromadb run."""
    steps(
        src,
        ("add", {"name": "docs", "ids": [f"docs-n{n}-{i}" for i in range(30)], "seed": 100 + n}),
        ("update_metadata", {"name": "docs", "ids": [f"docs-{i}" for i in range(n * 20, n * 20 + 20)],
                             "value": n}),
        ("delete", {"name": "docs", "ids": [f"docs-{i}" for i in range(2000 + n * 5, 2000 + n * 5 + 5)]}),
    )


@pytest.fixture(scope="module")
def nights(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The template after nights 1, 2 and 3 (each built once)."""
    base = tmp_path_factory.mktemp("predict-nights")
    states = [chroma_template]
    for n in (1, 2, 3):
        path = base / str(n) / "vector_db"
        shutil.copytree(states[-1], path)
        _night(path, n)
        states.append(path)
    return states[1:]


def _history(cli: Cli, repo: str, chroma_dir: Path, nights: list[Path]) -> None:
    assert cli("--repo", repo, "create", chroma_dir, "--chunk-size", "65536").code == 0
    for state in nights:
        become(chroma_dir, state)
        res = cli("--repo", repo, "create", chroma_dir)
        assert res.code == 0, res.stderr


def _check(predicted: dict[str, Any], actual: dict[str, Any]) -> None:
    assert predicted["requests"] == actual["requests"], (predicted["requests"], actual["requests"])
    for key in ("bytes_up", "bytes_down"):
        assert abs(predicted[key] - actual[key]) <= 0.05 * actual[key], (key, predicted[key], actual[key])


def _predicted_then_done(cli: Cli, repo: str, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dry = cli("--repo", repo, "prune", *args, "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    plan = dry.json()
    assert plan["dry_run"] and "put" not in plan["requests"] and "delete" not in plan["requests"]
    res = cli("--repo", repo, "prune", *args, "--json")
    assert res.code == 0, res.stderr
    done = res.json()
    assert sorted(done["objects_removed"]) == sorted(plan["objects_removed"])
    return plan["predicted"], done


@pytest.mark.parametrize("where", ["s3", "folder"])
def test_a_prune_without_repack_is_predicted(cli: Cli, chroma_dir: Path, nights: list[Path], tmp_path: Path,
                                             request: pytest.FixtureRequest, where: str) -> None:
    repo = request.getfixturevalue("s3_repo_url") if where == "s3" else str(tmp_path / "repo")
    _history(cli, repo, chroma_dir, nights)
    predicted, done = _predicted_then_done(cli, repo, "--keep-last", "2", "--grace", "0s", "--delete-after",
                                           "0s", "--no-repack")
    assert done["objects_removed"] and done["repack"] is None
    _check(predicted, done)
    _check(done["predicted"], done)
    # a DELETE per object, then the two roots, the three probe keys, this run's condemned record
    # (replaced once its objects are deleted) and the lock
    assert predicted["requests"]["delete"] == len(done["objects_removed"]) + 2 + 3 + 1 + 1
    if where == "s3":
        assert predicted["cost"]["pack_class"] == "STANDARD_IA" and predicted["cost"]["total"] > 0
        assert "versioning" in predicted["requests"]
    else:
        assert "versioning" not in predicted["requests"]


@pytest.mark.parametrize("where", ["s3", "folder"])
def test_a_prune_that_repacks_is_predicted(cli: Cli, chroma_dir: Path, nights: list[Path], tmp_path: Path,
                                           request: pytest.FixtureRequest, where: str) -> None:
    repo = request.getfixturevalue("s3_repo_url") if where == "s3" else str(tmp_path / "repo")
    _history(cli, repo, chroma_dir, nights)
    predicted, done = _predicted_then_done(cli, repo, "--keep-last", "1", "--grace", "0s", "--max-unused", "0%",
                                           "--delete-after", "0s")
    rp = done["repack"]
    assert rp["chunks_rebased"] > 0 and rp["packs_repacked"] > 0 and rp["roots_rewritten"] == 1
    _check(predicted, done)
    _check(done["predicted"], done)
    # the re-based chains' frames are read as the ranges the repack plans: from S3 fewer than frames
    assert predicted["pack_requests"]["put"] >= 2 and predicted["pack_requests"]["get"] == rp["packs_repacked"]


def test_the_dry_run_prints_the_prediction(cli: Cli, chroma_dir: Path, nights: list[Path],
                                           s3_repo_url: str) -> None:
    _history(cli, s3_repo_url, chroma_dir, nights[:1])
    res = cli("--repo", s3_repo_url, "prune", "--keep-last", "1", "--dry-run")
    assert res.code == 0, res.stderr
    assert "predicted:" in res.stdout and "USD" in res.stdout and "dry run: nothing was changed" in res.stdout
    plain = cli("--repo", s3_repo_url, "prune", "--keep-last", "1", "--json")
    assert plain.code == 0 and plain.json()["predicted"] is not None
