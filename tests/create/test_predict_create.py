"""create --dry-run predicts the requests, bytes and cost of a create; --json of the real one
reports that prediction beside what it took (snapshot/create/predict.py). On moto: request
counts exact, bytes within 5%."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become


def _check(predicted: dict[str, Any], actual: dict[str, Any]) -> None:
    assert predicted["requests"] == actual["requests"], (predicted["requests"], actual["requests"])
    up = actual["bytes_uploaded"]
    assert abs(predicted["bytes_up"] - up) <= 0.05 * up, (predicted["bytes_up"], up)


def _dry_run(cli, repo: str, source: Path, *extra: str) -> dict[str, Any]:
    res = cli("--repo", repo, "create", source, "--dry-run", "--json", *extra)
    assert res.code == 0, res.stderr
    body = res.json()
    assert body["dry_run"] is True and body["requests"].get("put", 0) == 0  # nothing written
    return body["predicted"]


def test_full_create_is_predicted(cli, s3_repo_url: str, chroma_dir: Path, chroma_grown: Path) -> None:
    # an empty repository: the config is written when a create initialises it, then predicted
    assert cli("--repo", s3_repo_url, "create", chroma_dir, "--json").code == 0
    become(chroma_dir, chroma_grown)
    predicted = _dry_run(cli, s3_repo_url, chroma_dir, "--no-delta", "--parent", "latest")
    res = cli("--repo", s3_repo_url, "create", chroma_dir, "--json", "--no-delta", "--parent", "latest")
    assert res.code == 0, res.stderr
    actual = res.json()
    _check(predicted, actual)
    _check(actual["predicted"], actual)
    assert predicted["cost"]["total"] > 0 and predicted["cost"]["pack_class"] == "STANDARD_IA"


@pytest.mark.parametrize("cache", [True, False], ids=["base-cache", "no-cache"])
def test_incremental_create_is_predicted(cli, s3_repo_url: str, chroma_dir: Path, chroma_grown: Path,
                                         cache: bool) -> None:
    extra = () if cache else ("--no-cache",)
    first = cli("--repo", s3_repo_url, "create", chroma_dir, "--json").json()
    _check(first["predicted"], first)
    become(chroma_dir, chroma_grown)
    predicted = _dry_run(cli, s3_repo_url, chroma_dir, *extra)
    res = cli("--repo", s3_repo_url, "create", chroma_dir, "--json", *extra)
    assert res.code == 0, res.stderr
    actual = res.json()
    assert actual["chunks_delta"] > 0 and actual["parent"] == first["id"]
    _check(predicted, actual)
    _check(actual["predicted"], actual)
    if not cache:  # the parent's chunk tables and the delta bases are read back, once
        assert actual["requests"]["get_range"] == predicted["requests"]["get_range"] > 0
        assert actual["bases_read"] > 0
    unchanged = _dry_run(cli, s3_repo_url, chroma_dir, *extra)
    # nothing new: no pack, only the lock and the root are written
    assert "put" not in unchanged["pack_requests"] and unchanged["requests"]["put"] == 2


def test_dry_run_needs_a_repository(cli, tmp_path: Path, chroma_dir: Path) -> None:
    res = cli("--repo", tmp_path / "none", "create", chroma_dir, "--dry-run")
    assert res.code == 3 and "no repository" in res.stderr
    assert not (tmp_path / "none").exists()
