"""The benchmark (bench/run.py) runs end to end at a small size and reports what it claims.

Timings are not asserted (the machine is shared); the structure, the verified restores and the
presence of every row are. With restic installed its rows must carry numbers; without it they
must say they were skipped. Both scenarios run: ``records`` (3,000 records, three changes) and
``collections`` (40 tenants x 5 records: more than one ``--chroma-check`` batch).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# the benchmarks run end to end (run before a commit, and in CI)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RECORDS = 3000
COLLECTIONS, PER_COLLECTION = 40, 5
OURS, RESTIC, GZIP, ZSTD = "chroma-snapshot", "restic", "gzip -6 everything", "tar | zstd -1"
OURS_CHECK = OURS + " --chroma-check"


def _run_bench(tmp: Path, *args: str) -> tuple[dict[str, Any], str]:
    out = tmp / "report.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), *args, "--workdir", str(tmp / "work"),
         "--cache-dir", str(tmp / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for done in ("work", "cache"):  # DBs, repositories and restores; a failed run keeps them
        shutil.rmtree(tmp / done, ignore_errors=True)
    return json.loads(out.read_text()), proc.stdout


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    return _run_bench(tmp_path_factory.mktemp("bench"), "--records", str(RECORDS), "--no-gzip-incrementals")


@pytest.fixture(scope="module")
def collections_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    return _run_bench(tmp_path_factory.mktemp("bench-collections"), "--scenario", "collections",
                      "--collections", str(COLLECTIONS), "--records-per-collection", str(PER_COLLECTION))


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


def _restores_verified(report: dict[str, Any]) -> None:
    """Default and --chroma-check restores: measured, checked as the tool says, and verified by the
    benchmark itself (chromadb opening a copy; bytes against the source and the other restores)."""
    v = report["verification"]
    assert list(report["restore"]) == [OURS, OURS_CHECK, RESTIC]
    default, check = report["restore"][OURS], report["restore"][OURS_CHECK]
    for row in (default, check):
        _measured(row)
        assert row["bytes_total"] == report["dataset"]["bytes"]
    # default: hashes and the consistency checks, chromadb not opened by the tool
    assert default["checks"][0] == "hashes" and len(default["checks"]) > 1
    assert "chromadb" not in default["checks"]
    assert default["chroma_checked"] == {} and default["chroma_batches"] == 0
    assert "chromadb" in check["checks"] and check["chroma_batches"] >= 1
    assert check["chroma_checked"] == v["expected_counts"]
    assert v["restore_failed"] is None
    assert v["verified_by"].endswith("the default restore")
    assert v["independent_counts"] == v["expected_counts"] and v["counts_match"] is True
    assert v["chroma_checked_match"] is True
    assert v["independent_open"]["peak_rss"] > 0
    for key in ("source_vs_ours", "chroma_check_vs_default"):
        assert v[key]["match"] is True and v[key]["files_compared"] == report["dataset"]["files"]


def test_restore_verified_with_expected_counts(bench_report: tuple[dict[str, Any], str]) -> None:
    report, stdout = bench_report
    v = report["verification"]
    # 90/10 split; insert 1% then delete 1% leaves the counts where they started
    assert v["expected_counts"] == {"docs": 2700, "notes": 300}
    _restores_verified(report)
    assert report["restore"][OURS_CHECK]["chroma_batches"] == 1
    assert "restore verified by the benchmark" in stdout and "MISMATCH" not in stdout


def test_targets_are_reported(bench_report: tuple[dict[str, Any], str]) -> None:
    report, stdout = bench_report
    names = [t["target"] for t in report["targets"]]
    assert len(names) == 5
    assert any("restore (default) peak RSS" in n for n in names)
    assert any("create peak RSS" in n for n in names)
    assert any("incremental after insert" in n for n in names)
    assert any("restore (default) <= 0.7x" in n for n in names)
    for t in report["targets"]:
        assert t["met"] in (True, False, None)
        assert t["verdict"] in stdout
    rss = next(t for t in report["targets"] if "peak RSS" in t["target"])
    assert rss["met"] is not None and rss["value"] > 0
    ins = next(t for t in report["targets"] if "incremental" in t["target"])
    assert ins["met"] is not None


def test_restic_rows_match_its_presence(bench_report: tuple[dict[str, Any], str]) -> None:
    report, _ = bench_report
    _restic_rows(report)


def _restic_rows(report: dict[str, Any]) -> None:
    rows = [report["full"][RESTIC], report["restore"][RESTIC]]
    rows += [s["rows"][RESTIC] for s in report["incremental"]]
    cmp_ = report["verification"]["restic_vs_ours"]
    restic_targets = [t for t in report["targets"] if "restic" in t["target"]]
    assert restic_targets
    if shutil.which("restic"):
        for row in rows:
            _measured(row)
        assert report["full"][RESTIC]["repo_bytes"] > 0
        assert all(s["rows"][RESTIC]["repo_bytes_added"] >= 0 for s in report["incremental"])
        assert cmp_["match"] is True and cmp_["differ"] == []
        assert cmp_["identical"] + len(cmp_["identical_after_sqlite_header"]) == cmp_["files_compared"] > 0
        for key in ("full_create_time_vs_restic", "restore_time_vs_restic",
                    "restore_time_chroma_check_vs_restic"):
            assert isinstance(report["ratios"][key], float)
        assert all(t["met"] is not None for t in restic_targets)
    else:
        for row in rows:
            assert "restic" in row["skipped"]
        assert "skipped" in cmp_
        assert all(t["met"] is None for t in restic_targets)


def test_collections_scenario(collections_report: tuple[dict[str, Any], str]) -> None:
    report, _ = collections_report
    assert report["scenario"] == "collections"
    assert (report["collections"], report["records_per_collection"]) == (COLLECTIONS, PER_COLLECTION)
    v = report["verification"]
    assert len(v["expected_counts"]) == COLLECTIONS
    assert set(v["expected_counts"].values()) == {PER_COLLECTION}
    assert list(report["full"]) == [OURS, RESTIC, GZIP, ZSTD] and report["incremental"] == []
    _measured(report["full"][OURS])
    _restores_verified(report)
    _restic_rows(report)
    # --chroma-check opened the collections in batches, each a child process
    sys.path.insert(0, str(ROOT))
    try:
        from snapshot.chroma.trial_open import batches
    finally:
        sys.path.remove(str(ROOT))
    expected = [{"name": k, "records": n} for k, n in v["expected_counts"].items()]
    assert report["restore"][OURS_CHECK]["chroma_batches"] == len(batches(expected)) > 1


def test_collections_reference_and_targets(collections_report: tuple[dict[str, Any], str]) -> None:
    report, stdout = collections_report
    ref = report["reference"]
    one = ref["rows"][OURS_CHECK]
    _measured(one)
    assert one["chroma_checked"] == ref["expected_counts"] == {"tenant-0000": PER_COLLECTION}
    assert ref["independent_counts"] == ref["expected_counts"]
    assert report["verification"]["reference_counts_match"] is True
    _measured(ref["rows"]["chromadb alone"])
    r = report["ratios"]
    assert r["chroma_check_rss_vs_one_collection"] == pytest.approx(
        max(report["restore"][OURS_CHECK]["peak_rss"], report["restore"][OURS_CHECK]["tree_rss"])
        / max(one["peak_rss"], one["tree_rss"]), abs=1e-3)
    names = [t["target"] for t in report["targets"]]
    assert len(names) == 4
    assert any("restore (default) <= 1x restic" in n for n in names)
    assert any("opening ONE collection" in n for n in names)
    assert not any("incremental" in n for n in names)
    for t in report["targets"]:
        assert t["verdict"] in stdout
        if "restic" not in t["target"]:
            assert t["met"] is not None
    assert f"{COLLECTIONS} collections x {PER_COLLECTION} records" in stdout
    assert "restore 1-collection DB" in stdout


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


def test_encryption_benchmark_reports_both_modes_and_cpu_time(tmp_path: Path) -> None:
    out = tmp_path / "enc.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "encryption.py"), "--records", "1000", "--repeat", "2",
         "--workdir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for mode in ("unencrypted", "encrypted"):
        for op in ("create", "restore"):
            row = report["rows"][mode][op]
            _measured(row)
            assert len(row["runs_seconds"]) == 2 and row["user_seconds"] > 0
            assert len(row["runs_user_seconds"]) == 2
    assert report["rows"]["encrypted"]["restore"]["verified"]["match"]
    assert set(report["ratios"]["restore"]) >= {"seconds", "peak_rss", "user_seconds"}
    assert "user CPU time, encrypted / unencrypted" in proc.stdout
