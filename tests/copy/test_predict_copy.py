"""copy --dry-run predicts the requests, bytes and cost on each side; --json of the real copy
reports that prediction beside what it took (snapshot/copy/predict.py). S3 to S3 on moto and
folder to folder: request counts exact, bytes within 5%."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become
from conftest import CliResult

Cli = Callable[..., CliResult]


def _check(predicted: dict[str, Any], actual: dict[str, Any]) -> None:
    for side in ("source", "destination"):
        assert predicted[side]["requests"] == actual["requests"][side], \
            (side, predicted[side]["requests"], actual["requests"][side])
    for p, a in ((predicted["source"]["bytes_down"], actual["bytes_read"]),
                 (predicted["destination"]["bytes_up"], actual["bytes_written"]),
                 (predicted["destination"]["bytes_down"], actual["bytes_read_destination"])):
        assert abs(p - a) <= 0.05 * a, (p, a)


def _copy(cli: Cli, dest: str, source: str, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dry run's prediction, then the copy's report."""
    dry = cli("--repo", dest, "copy", "--from-repo", source, "--dry-run", "--json", *args)
    assert dry.code == 0, dry.stderr
    plan = dry.json()
    assert "put" not in plan["requests"]["destination"]
    res = cli("--repo", dest, "copy", "--from-repo", source, "--json", *args)
    assert res.code == 0, res.stderr
    done = res.json()
    return plan["predicted"], done


def _two_snapshots(cli: Cli, repo: str, chroma_dir: Path, chroma_grown: Path) -> list[str]:
    ids = [cli("--repo", repo, "create", chroma_dir, "--json").json()["id"]]
    become(chroma_dir, chroma_grown)
    ids.append(cli("--repo", repo, "create", chroma_dir, "--json").json()["id"])
    return ids


@pytest.mark.parametrize("where", ["s3", "folder"])
def test_a_copy_is_predicted_full_incremental_and_again(
        cli: Cli, chroma_dir: Path, chroma_grown: Path, tmp_path: Path, request: pytest.FixtureRequest,
        where: str) -> None:
    if where == "s3":
        source = request.getfixturevalue("s3_repo_url")
        client = request.getfixturevalue("s3_client")
        dest = source.replace("snap-test-", "snap-dest-")
        client.create_bucket(Bucket=dest.split("/")[2])
    else:
        source, dest = str(tmp_path / "source"), str(tmp_path / "dest")
    ids = _two_snapshots(cli, source, chroma_dir, chroma_grown)
    assert cli("--repo", dest, "init").code == 0
    for ref in ids:  # the full one, then the incremental whose parent the destination holds
        predicted, done = _copy(cli, dest, source, ref)
        assert done["copied"] == 1 and done["bytes_stored"] > 0
        _check(predicted, done)
        _check(done["predicted"], done)
    predicted, done = _copy(cli, dest, source)  # both again: nothing moves
    assert done["copied"] == 0 and done["bytes_stored"] == 0
    _check(predicted, done)
    assert "put" not in predicted["destination"]["pack_requests"]  # only the lock is written
    if where == "s3":
        cost = predicted["source"]["cost"]
        assert cost["pack_class"] == "STANDARD_IA" and cost["total"] > 0
        assert predicted["destination"]["cost"]["pack_class"] == "STANDARD_IA"


def test_a_series_copied_in_one_run_is_predicted(cli: Cli, chroma_dir: Path, chroma_grown: Path,
                                                 s3_repo_url: str, tmp_path: Path) -> None:
    """Both snapshots in one run, S3 to a folder: the second one's deltas are verified against
    contents this run decoded (read from neither side again)."""
    _two_snapshots(cli, s3_repo_url, chroma_dir, chroma_grown)
    dest = str(tmp_path / "dest")
    assert cli("--repo", dest, "init").code == 0
    predicted, done = _copy(cli, dest, s3_repo_url)
    assert done["copied"] == 2
    _check(predicted, done)


def test_the_dry_run_prints_both_sides(cli: Cli, chroma_dir: Path, tmp_path: Path, s3_repo_url: str) -> None:
    assert cli("--repo", s3_repo_url, "create", chroma_dir).code == 0
    dest = tmp_path / "dest"
    assert cli("--repo", dest, "init").code == 0
    res = cli("--repo", dest, "copy", "--from-repo", s3_repo_url, "--dry-run")
    assert res.code == 0, res.stderr
    assert "predicted (source):" in res.stdout and "predicted (destination):" in res.stdout
    assert "USD" in res.stdout
    assert not list((dest / "snapshots").glob("*.json"))
