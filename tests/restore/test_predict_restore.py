"""restore --dry-run predicts the requests and bytes of a restore; --json of the real one reports
that prediction beside what it took (snapshot/restore/predict.py). On moto: request counts
exact, bytes within 5%."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chroma_helpers import become


def _check(predicted: dict[str, Any], actual: dict[str, Any]) -> None:
    assert predicted["requests"] == actual["requests"], (predicted["requests"], actual["requests"])
    assert "put" not in predicted["requests"]
    down = actual["bytes_down"]
    assert actual["bytes_downloaded"] < down  # the frames; the chunk tables come on top
    assert abs(predicted["bytes_down"] - down) <= 0.05 * down, (predicted["bytes_down"], down)


def test_restore_is_predicted(cli, s3_repo_url: str, chroma_dir: Path, chroma_grown: Path,
                              tmp_path: Path) -> None:
    r1 = cli("--repo", s3_repo_url, "create", chroma_dir, "--json").json()
    become(chroma_dir, chroma_grown)
    r2 = cli("--repo", s3_repo_url, "create", chroma_dir, "--json").json()
    target = tmp_path / "restored"
    for ref, extra in ((r1["id"], ()), (r2["id"], ("--force",))):  # fresh, then re-hydrating
        dry = cli("--repo", s3_repo_url, "restore", ref, target, "--dry-run", "--json", *extra)
        assert dry.code == 0, dry.stderr
        predicted = dry.json()["predicted"]
        res = cli("--repo", s3_repo_url, "restore", ref, target, "--json", *extra)
        assert res.code == 0, res.stderr
        actual = res.json()
        _check(predicted, actual)
        _check(actual["predicted"], actual)
        assert predicted["cost"]["egress"] > 0 and predicted["pack_bytes_down"] == predicted["bytes_down"]
    assert actual["bytes_reused"] > 0  # the second one re-hydrated what the target held


def test_dry_run_prints_the_prediction(cli, s3_repo_url: str, chroma_dir: Path, tmp_path: Path) -> None:
    assert cli("--repo", s3_repo_url, "create", chroma_dir).code == 0
    res = cli("--repo", s3_repo_url, "restore", "latest", tmp_path / "t", "--dry-run")
    assert res.code == 0, res.stderr
    assert "predicted:" in res.stdout and "get_range" in res.stdout and "USD" in res.stdout
    assert not (tmp_path / "t").exists()
