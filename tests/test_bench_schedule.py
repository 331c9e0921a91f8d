"""The schedule benchmark (bench/schedule.py) runs end to end at a tiny size and reports what it claims.

1,500 records, 4 nights, keep-last 2: every night has a row per tool with positive sizes (restic's
say "skipped" when it is not installed), the repository was checked with --read-data and the
oldest kept snapshot restored byte for byte equal to the DB of its night. Timings are not asserted.
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
RECORDS, NIGHTS, KEEP = 1500, 4, 2
OURS, RESTIC = "chroma-snapshot", "restic"
PRUNE_ARGS = "--group-by host,path"


@pytest.fixture(scope="module")
def schedule(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("schedule")
    out = tmp / "report.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "schedule.py"), "--records", str(RECORDS), "--nights", str(NIGHTS),
         "--keep-last", str(KEEP), "--prune-args", PRUNE_ARGS, "--workdir", str(tmp / "work"),
         "--cache-dir", str(tmp / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for done in ("work", "cache"):  # DBs, repositories and restores; a failed run keeps them
        shutil.rmtree(tmp / done, ignore_errors=True)
    return json.loads(out.read_text()), proc.stdout


def test_every_night_has_both_tools(schedule: tuple[dict[str, Any], str]) -> None:
    report, _ = schedule
    assert (report["records"], report["nights"], report["keep_last"]) == (RECORDS, NIGHTS, KEEP)
    rows = report["night_rows"]
    assert [r["night"] for r in rows] == list(range(NIGHTS + 1))
    for r in rows:
        assert r["full"]["repo_bytes"] > 0 and len(r["snapshot_code"]) == 16
        ours = r["tools"][OURS]
        assert ours["repo_bytes"] > 0 and ours["ratio"] == pytest.approx(
            ours["repo_bytes"] / r["full"]["repo_bytes"], abs=1e-4)
        assert ours["create"]["seconds"] > 0 and ours["create"]["repo_bytes_added"] >= 0
        assert (ours["create"]["parent"] is None) == (r["night"] == 0)
        # --prune-args reaches the CLI; the kept set never exceeds --keep-last
        assert ours["prune"]["command"].endswith(PRUNE_ARGS)
        assert len(ours["prune"]["kept"]) == min(KEEP, r["night"] + 1)
        restic = r["tools"][RESTIC]
        if shutil.which("restic"):
            assert restic["repo_bytes"] > 0 and restic["ratio"] > 0
            assert restic["backup"]["id"] and restic["forget"]["seconds"] > 0
        else:
            assert "restic" in restic["skipped"]


def test_nightly_changes_follow_the_mix(schedule: tuple[dict[str, Any], str]) -> None:
    report, _ = schedule
    assert report["night_rows"][0]["change"] is None
    # 1% inserted, 0.5% updated, 0.2% deleted (of the initial records), every night
    for r in report["night_rows"][1:]:
        change = r["change"]
        assert (change["inserted"], change["updated"], change["deleted"]) == (15, 8, 3)
        assert sum(change["counts"].values()) == RECORDS + r["night"] * (15 - 3)


def test_check_and_oldest_restore_verified(schedule: tuple[dict[str, Any], str]) -> None:
    report, stdout = schedule
    check = report["verification"]["check"]
    assert check["ok"] is True and check["exit"] == 0 and check["problems"] == []
    assert check["snapshots"] == KEEP and check["frames_verified"] > 0
    oldest = report["verification"]["restore_oldest"]
    assert oldest["kept_nights"] == list(range(NIGHTS - KEEP + 1, NIGHTS + 1))
    assert oldest["night"] == NIGHTS - KEEP + 1
    assert oldest["byte_exact"] is True
    cmp_ = oldest["compare"]
    assert cmp_["identical"] == cmp_["files_compared"] > 0 and cmp_["identical_after_sqlite_header"] == []
    assert "check --read-data: OK" in stdout and "restored: byte-exact" in stdout


def test_summary_reports_ratios_and_target(schedule: tuple[dict[str, Any], str]) -> None:
    report, stdout = schedule
    s, last = report["summary"], report["night_rows"][-1]
    assert s["last_night"] == NIGHTS and s["ratio"] == last["tools"][OURS]["ratio"]
    assert s["target"]["met"] in (True, False) and s["target"]["verdict"] in stdout
    assert 0 < s["night1_added_vs_full"] < 1
    assert s["create_seconds_median"] > 0 and s["create_seconds_max"] >= s["create_seconds_median"]
    if shutil.which("restic"):
        assert s["restic_ratio"] == last["tools"][RESTIC]["ratio"] > 0
    assert f"night {NIGHTS}: chroma-snapshot" in stdout and "create wall time" in stdout


def test_a_missed_target_is_reported_not_an_error() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import schedule as sched
    finally:
        sys.path.remove(str(BENCH))

    def row(night: int, ratio: float) -> dict[str, Any]:
        return {"night": night, "full": {"repo_bytes": 100},
                "tools": {OURS: {"ratio": ratio, "repo_bytes": int(ratio * 100),
                                 "create": {"seconds": 1.0 + night, "repo_bytes_added": 2}},
                          RESTIC: {"skipped": "--no-restic"}}}

    s = sched.summary([row(0, 1.0), row(1, 1.5), row(2, 2.0)])
    assert s["target"]["met"] is False and s["target"]["verdict"].startswith("MISSED")
    assert s["restic_ratio"] is None and s["night1_added_vs_full"] == 0.02
    times = (s["create_seconds_median"], s["create_seconds_max"], s["create_seconds_max_night"])
    assert times == (2.5, 3.0, 2)
    assert sched.night_sizes(20_000) == {"insert": {"docs": 180, "notes": 20},
                                         "update": {"docs": 90, "notes": 10},
                                         "delete": {"docs": 36, "notes": 4}}
