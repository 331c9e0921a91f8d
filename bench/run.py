"""Benchmark chroma-snapshot against restic, the old gzip-everything approach and ``tar | zstd``.

    python bench/run.py [--records N] [--json OUT] [--workdir DIR] [--repeat K]

Builds (once, cached by N) a Chroma persist dir, then on that same directory: a full backup with
every tool; three changes one after another (insert 1%, update 1% of metadata, delete 1%), each
followed by an incremental backup; a restore of the latest snapshot with chroma-snapshot and
restic, checked against the expected counts and against each other. Prints a table and the
ratios to the baselines measured in the same run, and marks the targets. A missed target is
reported, never an error; a restore that does not verify exits 1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report as rep
from dataset import CHANGES, change_size, expected_counts
from measure import compare_trees, dir_bytes, files_under, run
from tools import BENCH, RESTIC_INSTALL, ChromaSnapshot, Restic, gzip_everything, zstd_method, zstd_pipe

DEFAULT_RECORDS = 200_000


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_facts(restic: Restic) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    mem = ""
    with contextlib.suppress(OSError, StopIteration):
        mem = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal"))
    zstd = shutil.which("zstd")
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(), "cpu_model": cpu, "memory": " ".join(mem.split()[1:]),
        "platform": platform.platform(), "python": platform.python_version(),
        "chromadb": _version("chromadb"), "restic": restic.version or None,
        "zstd": subprocess.run([zstd, "--version"], capture_output=True, text=True).stdout.strip()
        if zstd else None,
        "zstd_pipe_method": zstd_method(),
        "gzip_method": "python gzip module (zlib) level 6, one file at a time, one core",
        "loadavg_start": os.getloadavg(),
        "tool_code": tool_code(),
    }


def tool_code() -> dict[str, Any]:
    """Which chroma-snapshot was measured: the checkout's commit and any uncommitted changes to
    the package (read-only git commands; the checkout is edited while benchmarks run)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(BENCH.parent), *args], capture_output=True,
                                  text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"version": _version("chroma-snapshot"), "commit": git("rev-parse", "--short", "HEAD"),
            "subject": git("log", "-1", "--format=%s"),
            "uncommitted": git("status", "--porcelain", "--", "snapshot").splitlines()}


def cached_db(cache: Path, n: int) -> tuple[Path, dict[str, Any]]:
    """The persist dir for ``n`` records, built by dataset.py the first time."""
    home = cache / f"db-{n}"
    meta_path = home / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("chromadb") == _version("chromadb") and (home / "vector_db").is_dir():
            meta["cached"] = True
            return home / "vector_db", meta
        shutil.rmtree(home)
    log(f"building a Chroma dir with {n:,} records in {home} (cached for later runs)")
    tmp = cache / f"db-{n}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    p = run([sys.executable, str(BENCH / "dataset.py"), "build", str(tmp / "vector_db"), "--records", str(n)],
            env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check("building the dataset")
    meta = {"records": n, "chromadb": _version("chromadb"), "build": json.loads(p.stdout),
            "build_wall_seconds": round(p.seconds, 1), "build_peak_rss": p.peak_rss}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.rename(tmp, home)
    meta["cached"] = False
    return home / "vector_db", meta


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The last run's row (its repository is the one kept) with the median wall time."""
    row = dict(rows[-1])
    if len(rows) > 1:
        row["runs_seconds"] = [r["seconds"] for r in rows]
        row["seconds"] = round(statistics.median(r["seconds"] for r in rows), 3)
        row["peak_rss"] = max(r["peak_rss"] for r in rows)
        row["tree_rss"] = max(r["tree_rss"] for r in rows)
    return row


def full_round(work: Path, src: Path, ours: ChromaSnapshot, restic: Restic, repeat: int,
               threads: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (rep.OURS, rep.RESTIC, rep.GZIP, rep.ZSTD)}
    for i in range(repeat):
        for path in (ours.repo, ours.cache, restic.repo, restic.cache):
            shutil.rmtree(path, ignore_errors=True)
        init = restic.init() if restic.binary else None

        def restic_backup(init: dict[str, Any] | None = init) -> dict[str, Any]:
            return {**restic.backup(src), "init": init}

        steps = [
            (rep.OURS, lambda: ours.create(src)),
            (rep.RESTIC, restic_backup if restic.binary else None),
        ]
        if i % 2:  # alternate which of the two goes first
            steps.reverse()
        steps.append((rep.ZSTD, lambda: zstd_pipe(src, work / "out.tar.zst", threads)))
        if i == 0:  # many times slower than the rest: one run is enough for a ratio
            steps.append((rep.GZIP, lambda: gzip_everything(src, work / "gzip-out")))
        for name, step in steps:
            if step is None:
                continue
            log(f"full create {i + 1}/{repeat}: {name}")
            runs[name].append(step())
    out = {k: _median_row(v) for k, v in runs.items() if v}
    if not restic.binary:
        out[rep.RESTIC] = {"skipped": RESTIC_INSTALL}
    out[rep.ZSTD]["note"] = "speed limit: read + fastest zstd, nothing else"
    shutil.rmtree(work / "gzip-out", ignore_errors=True)
    (work / "out.tar.zst").unlink(missing_ok=True)
    return dict(sorted(out.items(), key=lambda kv: list(runs).index(kv[0])))


def incremental_rounds(work: Path, src: Path, n: int, ours: ChromaSnapshot, restic: Restic,
                       parent: str | None, gzip_full: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The three changes, each followed by an incremental backup. With ``gzip_full`` the
    gzip-everything rows are not re-run but taken as that full run's size (what it uploads)."""
    steps = []
    for change in CHANGES:
        log(f"applying the change: {change} {change_size(n)} records")
        p = run([sys.executable, str(BENCH / "dataset.py"), change, str(src), "--records", str(n)],
                env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check(f"dataset {change}")
        rows: dict[str, Any] = {}
        log(f"incremental after {change}: {rep.OURS}")
        rows[rep.OURS] = ours.create(src)
        if restic.binary:
            log(f"incremental after {change}: {rep.RESTIC}")
            rows[rep.RESTIC] = restic.backup(src, parent=parent)
            parent = rows[rep.RESTIC]["id"]
        else:
            rows[rep.RESTIC] = {"skipped": RESTIC_INSTALL}
        if gzip_full is None:
            log(f"incremental after {change}: {rep.GZIP}")
            rows[rep.GZIP] = {**gzip_everything(src, work / "gzip-out"), "note": "uploads everything again"}
            shutil.rmtree(work / "gzip-out", ignore_errors=True)
        else:
            rows[rep.GZIP] = {"seconds": None, "peak_rss": None, "tree_rss": None, "estimated": True,
                              "repo_bytes_added": gzip_full["repo_bytes"],
                              "note": "not re-run: uploads a full gzip again (size of the full run)"}
        steps.append({"change": change, "records": change_size(n),
                      "change_seconds": json.loads(p.stdout)["seconds"], "rows": rows})
    return steps


def restores(work: Path, src: Path, ours: ChromaSnapshot, restic: Restic) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = work / "restore"
    shutil.rmtree(base, ignore_errors=True)
    log(f"restore: {rep.OURS}")
    out[rep.OURS] = ours.restore(base / "ours" / "vector_db")
    log(f"restore: {rep.OURS} --skip-chroma-check")
    nocheck = ours.restore(base / "ours-nocheck" / "vector_db", check=False)
    out[rep.OURS + " --skip-chroma-check"] = {**nocheck, "note": "hashes still verified"}
    if restic.binary:
        log(f"restore: {rep.RESTIC}")
        row = restic.restore(base / "restic", src)
        row["bytes_total"] = dir_bytes(Path(row["restored_path"]))
        row["note"] = "restic restore, no --verify"
        out[rep.RESTIC] = row
    else:
        out[rep.RESTIC] = {"skipped": RESTIC_INSTALL}
    return out


def independent_counts(restored: Path, work: Path) -> dict[str, int]:
    """Open a throwaway copy of a restored dir with chromadb (it writes on open) and count."""
    scratch = work / "restore" / "count-copy"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(restored, scratch)
    try:
        p = run([sys.executable, str(BENCH / "dataset.py"), "counts", str(scratch)],
                env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check("counting the restore")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    counts: dict[str, int] = json.loads(p.stdout)["counts"]
    return counts


def verification(n: int, restore: dict[str, Any], work: Path) -> dict[str, Any]:
    """Counts chromadb sees in our restore vs the expected ones; restic's files vs ours.

    When chroma-snapshot's own restore fails (its check refused the result) the benchmark opens
    a copy of the ``--skip-chroma-check`` restore itself, so the data is still verified and the
    failure is reported separately."""
    expected = expected_counts(n, list(CHANGES))
    ours, nocheck = restore[rep.OURS], restore[rep.OURS + " --skip-chroma-check"]
    out: dict[str, Any] = {"expected_counts": expected, "chroma_checked": ours["chroma_checked"],
                           "restore_failed": ours.get("failed")}
    if "failed" in ours:
        log("chroma-snapshot's restore failed; counting the --skip-chroma-check restore with chromadb")
        out["independent_counts"] = independent_counts(Path(nocheck["target"]), work)
        out["counts_match"] = out["independent_counts"] == expected
        out["verified_by"] = "the benchmark, opening a copy of the --skip-chroma-check restore"
        ours_dir = Path(nocheck["target"])
    else:
        out["counts_match"] = ours["chroma_checked"] == expected
        out["verified_by"] = "chroma-snapshot's restore check (chroma_checked)"
        ours_dir = Path(ours["target"])
    if "restored_path" in restore.get(rep.RESTIC, {}):
        out["restic_vs_ours"] = compare_trees(ours_dir, Path(restore[rep.RESTIC]["restored_path"]))
    else:
        out["restic_vs_ours"] = {"skipped": RESTIC_INSTALL}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="records in the DB [%(default)s]")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON to OUT")
    ap.add_argument("--workdir", type=Path, help="where copies, repositories and restores go (kept); "
                    "a temporary dir, removed at the end, otherwise")
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache", help="built DBs [%(default)s]")
    ap.add_argument("--repeat", type=int, default=1, help="full creates per tool; the median is used [1]")
    ap.add_argument("--no-gzip-incrementals", action="store_true",
                    help="do not re-gzip after each change; report the full gzip's size (what the "
                    "old approach uploads every time) without a time")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if args.workdir:
        work = args.workdir.absolute()
    else:
        work = Path(tempfile.mkdtemp(prefix="chroma-snapshot-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in ("src", "ours-repo", "ours-cache", "restic-repo", "restic-cache", "restore", "gzip-out"):
        shutil.rmtree(work / name, ignore_errors=True)  # only what this script puts there
    try:
        ours = ChromaSnapshot(work / "ours-repo", work / "ours-cache")
        restic = Restic(work / "restic-repo", work / "restic-cache")
        if not restic.binary:
            log(RESTIC_INSTALL + "; the restic rows are skipped")
        report: dict[str, Any] = {"records": args.records, "machine": machine_facts(restic),
                                  "workdir": str(work), "argv": sys.argv}
        db, report["dataset"] = cached_db(args.cache_dir.absolute(), args.records)
        src = work / "src" / "vector_db"
        shutil.copytree(db, src)
        report["dataset"].update(bytes=dir_bytes(src), files=len(files_under(src)), path=str(src))
        threads = os.cpu_count() or 1
        report["full"] = full_round(work, src, ours, restic, max(1, args.repeat), threads)
        parent = report["full"][rep.RESTIC].get("id")
        gzip_full = report["full"][rep.GZIP] if args.no_gzip_incrementals else None
        report["incremental"] = incremental_rounds(work, src, args.records, ours, restic, parent, gzip_full)
        report["restore"] = restores(work, src, ours, restic)
        report["verification"] = verification(args.records, report["restore"], work)
        report["ratios"] = rep.ratios(report)
        report["targets"] = rep.targets(report["ratios"], report["verification"]["restore_failed"])
        report["table"] = rep.table_rows(report)
        report["machine"]["loadavg_end"] = os.getloadavg()
        end = tool_code()
        if end != report["machine"]["tool_code"]:
            report["machine"]["tool_code_changed_during_run"] = end
        report["seconds"] = round(time.monotonic() - started, 1)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    v = report["verification"]
    ok = v["counts_match"] and not v["restore_failed"] and v["restic_vs_ours"].get("match", True)
    return 0 if ok else 1


def _print(report: dict[str, Any]) -> None:
    m, d, v = report["machine"], report["dataset"], report["verification"]
    print(f"chroma-snapshot benchmark, {report['records']:,} records ({d['bytes'] / rep.MIB:,.1f} MiB in "
          f"{d['files']} files), {m['date_utc']}, {m['nproc']} x {m['cpu_model']}, "
          f"load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}")
    code = m["tool_code"]
    print(f"chroma-snapshot {code['version']} at commit {code['commit']} ({code['subject']})"
          + (f", uncommitted: {' '.join(code['uncommitted'])}" if code["uncommitted"] else ""))
    if "tool_code_changed_during_run" in m:
        print(f"WARNING: the checkout changed during the run: now {m['tool_code_changed_during_run']}")
    print()
    print(rep.text_table(report["table"]))
    print()
    print(rep.summary_text(report))
    print()
    if v["restore_failed"]:
        print(f"chroma-snapshot restore FAILED: {v['restore_failed']}")
        print(f"restore verified by {v['verified_by']}: counts {v['independent_counts']}, expected "
              f"{v['expected_counts']}: {'OK' if v['counts_match'] else 'MISMATCH'}")
    else:
        print(f"restore verified: chroma opened it with {v['chroma_checked']}, expected "
              f"{v['expected_counts']}: {'OK' if v['counts_match'] else 'MISMATCH'}")
    cmp_ = v["restic_vs_ours"]
    if "skipped" in cmp_:
        print(f"restic vs ours: skipped ({cmp_['skipped']})")
    else:
        print(f"restic vs ours: {cmp_['identical']}/{cmp_['files_compared']} files identical, "
              f"{len(cmp_['identical_after_sqlite_header'])} identical after the 100-byte SQLite header, "
              f"differ: {cmp_['differ'] or 'none'}, only ours: {cmp_['only_in_ours'] or 'none'}, "
              f"only restic: {cmp_['only_in_other'] or 'none'}")
    print(f"total {report['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
