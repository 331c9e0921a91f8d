"""The benchmark (bench/run.py) runs end to end at a small size and reports what it claims.

Timings are not asserted (the machine is shared); the structure, the verified restore and the
presence of every row are. With restic installed its rows must carry numbers; without it they
must say they were skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RECORDS = 3000
OURS, RESTIC, GZIP, ZSTD = "chroma-snapshot", "restic", "gzip -6 everything", "tar | zstd -1"


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "report.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--records", str(RECORDS), "--workdir", str(tmp / "work"),
         "--cache-dir", str(tmp / "cache"), "--json", str(out), "--no-gzip-incrementals"],
        capture_output=True, text=True, timeout=900, cwd=tmp,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def _measured(row: dict[str, Any]) -> None:
    assert "skipped" not in row
    assert row["seconds"] > 0
    assert row["peak_rss"] > 0
    assert isinstance(row["tree_rss"], int)
    assert row["command"]


def test_report_structure(bench_report: tuple[dict[str, Any], str]) -> None:
    report, stdout = bench_report
    assert report["records"] == RECORDS
    for key in ("machine", "dataset", "full", "incremental", "restore", "verification", "ratios",
                "targets", "table"):
        assert key in report
    assert report["machine"]["nproc"] >= 1
    assert report["dataset"]["bytes"] > 0
    assert list(report["full"]) == [OURS, RESTIC, GZIP, ZSTD]
    for tool in (OURS, GZIP, ZSTD):
        _measured(report["full"][tool])
        assert report["full"][tool]["repo_bytes"] > 0
    assert report["full"][OURS]["bytes_uploaded"] > 0
    assert report["full"][OURS]["bytes_total"] == report["dataset"]["bytes"]
    assert "operation" in stdout and "targets:" in stdout


def test_incremental_rows_for_the_three_changes(bench_report: tuple[dict[str, Any], str]) -> None:
    report, _ = bench_report
    steps = report["incremental"]
    assert [s["change"] for s in steps] == ["insert", "update", "delete"]
    full = report["full"][OURS]
    for step in steps:
        assert step["records"] == RECORDS // 100
        ours = step["rows"][OURS]
        _measured(ours)
        assert ours["parent"]  # incremental: it found the previous snapshot
        assert 0 <= ours["repo_bytes_added"] < full["repo_bytes"]
        assert ours["bytes_uploaded"] < full["bytes_uploaded"]
        assert RESTIC in step["rows"]
        # --no-gzip-incrementals: the old approach's row is the full gzip's size, marked as such
        gz = step["rows"][GZIP]
        assert gz["estimated"] is True and gz["repo_bytes_added"] == report["full"][GZIP]["repo_bytes"]
        ratio = report["ratios"]["incremental"][step["change"]]
        expected = ours["repo_bytes_added"] / full["repo_bytes"]
        assert ratio["added_vs_full"] == pytest.approx(expected, abs=1e-4)


def test_restore_verified_with_expected_counts(bench_report: tuple[dict[str, Any], str]) -> None:
    report, _ = bench_report
    v = report["verification"]
    # 90/10 split; insert 1% then delete 1% leaves the counts where they started
    assert v["expected_counts"] == {"docs": 2700, "notes": 300}
    assert v["chroma_checked"] == v["expected_counts"]
    assert v["counts_match"] is True
    assert v["restore_failed"] is None
    _measured(report["restore"][OURS])
    assert report["restore"][OURS]["chroma_checked"] == v["expected_counts"]
    assert report["restore"][OURS]["bytes_total"] > 0
    assert report["restore"][OURS + " --skip-chroma-check"]["chroma_checked"] == {}


def test_targets_are_reported(bench_report: tuple[dict[str, Any], str]) -> None:
    report, stdout = bench_report
    names = [t["target"] for t in report["targets"]]
    assert len(names) == 4
    assert any("peak RSS" in n for n in names) and any("incremental after insert" in n for n in names)
    for t in report["targets"]:
        assert t["met"] in (True, False, None)
        assert t["verdict"] in stdout
    rss = next(t for t in report["targets"] if "peak RSS" in t["target"])
    assert rss["met"] is not None and rss["value"] > 0
    ins = next(t for t in report["targets"] if "incremental" in t["target"])
    assert ins["met"] is not None


def test_restic_rows_match_its_presence(bench_report: tuple[dict[str, Any], str]) -> None:
    report, _ = bench_report
    rows = [report["full"][RESTIC], report["restore"][RESTIC]]
    rows += [s["rows"][RESTIC] for s in report["incremental"]]
    cmp_ = report["verification"]["restic_vs_ours"]
    restic_targets = [t for t in report["targets"] if "restic" in t["target"]]
    if shutil.which("restic"):
        for row in rows:
            _measured(row)
        assert report["full"][RESTIC]["repo_bytes"] > 0
        assert all(s["rows"][RESTIC]["repo_bytes_added"] >= 0 for s in report["incremental"])
        assert cmp_["match"] is True and cmp_["differ"] == []
        assert cmp_["identical"] + len(cmp_["identical_after_sqlite_header"]) == cmp_["files_compared"] > 0
        assert isinstance(report["ratios"]["full_create_time_vs_restic"], float)
        assert all(t["met"] is not None for t in restic_targets)
    else:
        for row in rows:
            assert "restic" in row["skipped"]
        assert "skipped" in cmp_
        assert all(t["met"] is None for t in restic_targets)


def test_missing_target_is_reported_not_hidden() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import report as rep
    finally:
        sys.path.remove(str(BENCH))
    missed = rep._target("restore <= 0.7x restic", 1.4, 0.7, "x")
    assert missed["met"] is False and missed["verdict"] == "MISSED: 2.00x the limit"
    assert rep._target("x", 0.5, 0.7, "x")["verdict"] == "MET"
    assert rep._target("x", None, 0.7, "x")["met"] is None
