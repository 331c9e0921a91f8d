"""The scale benchmark (bench/scale.py) runs end to end at a tiny size and reports what it claims.

``--small``: a ~30 MiB synthetic DB grown from a real 1,500-record one, 4 snapshots (full,
unchanged, two nights), prune --keep-last 2, and 20 snapshots of a tiny DB for the list part.
Timings and RSS are not asserted (the machine is shared); the structure, the byte-exact restore
and the byte targets that hold at any size are: ``list`` reads <= 10 KiB per snapshot, an
unchanged DB's create adds <= 8 KiB. The synthetic DB itself must pass the tool's structural
checks (create would refuse it otherwise) and keep passing them after a night.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from snapshot.chroma.consistency import read_header, verify_dir

# the benchmarks run end to end (run before a commit, and in CI)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SNAPSHOTS, TINY, KEEP = 4, 20, 2
KIB = 1024


@pytest.fixture(scope="module")
def scale_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    tmp = tmp_path_factory.mktemp("scale")
    out = tmp / "report.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--small", "--workdir", str(tmp / "work"),
         "--cache-dir", str(tmp / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, tmp


def test_report_structure(scale_report: tuple[dict[str, Any], str, Path]) -> None:
    report, stdout, tmp = scale_report
    assert report["failed"] is None
    [size] = report["sizes"]
    assert size["snapshots"] == SNAPSHOTS
    assert list(size["rows"]) == ["create (full)", "create (unchanged)", "create (incremental)", "list",
                                  "restore", "check", "check --read-data", "prune --dry-run", "prune"]
    for row in size["rows"].values():
        assert row["seconds"] > 0 and row["peak_rss"] > 0 and row["command"]
    assert size["rows"]["create (incremental)"]["runs"] == SNAPSHOTS - 2
    assert size["dataset"]["bytes"] > 25 * (1 << 20)  # grown from a few MiB to ~0.03 GiB
    assert size["rows"]["create (full)"]["bytes_total"] == size["dataset"]["bytes"]
    assert len(size["nights"]) == SNAPSHOTS - 2
    assert all(n["blocks_changed"] >= 1 and n["records_updated"] >= 1 for n in size["nights"])
    assert all(n["repo_bytes_added"] > 0 for n in size["nights"])  # each night's create stores something
    assert len(size["rows"]["prune"]["out"]["removed"]) == SNAPSHOTS - KEEP
    m = size["manifests"]
    assert m["roots"] == SNAPSHOTS and m["root_bytes_mean"] > 0
    assert m["tables"] == m["files"] and m["table_bytes"] > 0 and m["chunks"] > 0
    assert report["tiny"]["snapshots"] == TINY
    assert len(report["table"]) == len(size["rows"]) + 4
    assert all(f"{t['target']}: {t['verdict']}" in stdout for t in report["targets"])
    assert not (tmp / "work" / "size-0.03g").exists()  # cleaned up without --keep


def test_restore_is_byte_exact(scale_report: tuple[dict[str, Any], str, Path]) -> None:
    cmp_ = scale_report[0]["sizes"][0]["restore_vs_source"]
    assert cmp_["match"] and not cmp_["identical_after_sqlite_header"] and not cmp_["differ"]
    assert cmp_["identical"] == cmp_["files_compared"] > 0


def test_byte_targets(scale_report: tuple[dict[str, Any], str, Path]) -> None:
    report = scale_report[0]
    size, tiny = report["sizes"][0], report["tiny"]
    for lst in (size["rows"]["list"], tiny["rows"]["list"]):
        assert lst["library_bytes_read"] > 0
        assert lst["bytes_per_snapshot"] <= 10 * KIB
    assert lst["snapshots"] == TINY
    assert size["rows"]["create (unchanged)"]["repo_bytes_added"] <= 8 * KIB
    assert tiny["rows"]["creates"]["repo_bytes_added_max"] <= 8 * KIB
    verdicts = {t["target"]: t for t in report["targets"]}
    for name, t in verdicts.items():
        if "KiB" in name:
            assert t["met"] is True, t


def test_synthetic_db_passes_the_structural_checks(tmp_path: Path,
                                                    scale_report: tuple[dict[str, Any], str, Path]) -> None:
    """Grown, then changed by a night, the DB still passes what create and restore check."""
    base = scale_report[2] / "cache" / "db-1500" / "vector_db"
    db = tmp_path / "vector_db"
    shutil.copytree(base, db)
    for args in (["grow", str(db), "--gib", "0.02"], ["night", str(db), "--night", "3"]):
        subprocess.run([sys.executable, str(BENCH / "synthetic.py"), *args], check=True, capture_output=True)
        v = verify_dir(db)
        assert v.ok, v.problems
    headers = [read_header(p) for p in db.glob("*/header.bin")]
    assert max(h.max_elements for h in headers) > max(h.count for h in headers)
