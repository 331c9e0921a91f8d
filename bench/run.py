"""Benchmark chroma-snapshot against restic, the old gzip-everything approach and ``tar | zstd``.

    python bench/run.py [--records N] [--json OUT] [--workdir DIR] [--repeat K]
    python bench/run.py --scenario collections [--collections C] [--records-per-collection R] ...

Scenario ``records`` (the default) builds (once, cached by N) a Chroma persist dir, then on that
same directory: a full backup with every tool; three changes one after another (insert 1%,
update 1% of metadata, delete 1%), each followed by an incremental backup; restores of the
latest snapshot with chroma-snapshot (default, then ``--chroma-check``) and restic, checked
against the expected counts (the benchmark opens a copy with chromadb itself), the source and
each other. Scenario ``collections`` does the same full backup and restores on a multi-tenant DB
(C collections of R records) and measures the reference for ``--chroma-check``'s memory: the
same restore of a DB holding one of those collections. Prints a table and the ratios to the
baselines measured in the same run, and marks the targets. A missed target is reported, never
an error; a restore that does not verify exits 1. See bench/README.md.
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
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report as rep
from dataset import CHANGES, change_size, expected_counts, tenant_counts
from measure import compare_trees, dir_bytes, files_under, run, work_dir
from tools import BENCH, RESTIC_INSTALL, ChromaSnapshot, Restic, gzip_everything, zstd_method, zstd_pipe

DEFAULT_RECORDS = 200_000
DEFAULT_COLLECTIONS, DEFAULT_PER_COLLECTION = 500, 20


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


def cached_db(cache: Path, name: str, build_args: list[str],
              meta: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The persist dir ``cache/name/vector_db``, built by ``dataset.py build`` the first time."""
    home = cache / name
    meta_path = home / "meta.json"
    if meta_path.is_file():
        cached = json.loads(meta_path.read_text())
        if cached.get("chromadb") == _version("chromadb") and (home / "vector_db").is_dir():
            cached["cached"] = True
            return home / "vector_db", cached
        shutil.rmtree(home)
    log(f"building a Chroma dir ({' '.join(build_args)}) in {home} (cached for later runs)")
    tmp = cache / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    p = run([sys.executable, str(BENCH / "dataset.py"), "build", str(tmp / "vector_db"), *build_args],
            env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check("building the dataset")
    meta = {**meta, "chromadb": _version("chromadb"), "build": json.loads(p.stdout),
            "build_wall_seconds": round(p.seconds, 1), "build_peak_rss": p.peak_rss}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.rename(tmp, home)
    meta["cached"] = False
    return home / "vector_db", meta


def records_db(cache: Path, n: int) -> tuple[Path, dict[str, Any]]:
    return cached_db(cache, f"db-{n}", ["--records", str(n)], {"records": n})


def tenants_db(cache: Path, collections: int, per_collection: int) -> tuple[Path, dict[str, Any]]:
    return cached_db(cache, f"collections-{collections}x{per_collection}",
                     ["--collections", str(collections), "--records", str(per_collection)],
                     {"collections": collections, "records_per_collection": per_collection})


def copy_source(db: Path, src: Path) -> dict[str, Any]:
    """A fresh copy of a cached DB to back up (tools and changes never touch the cache)."""
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(db, src)
    return {"bytes": dir_bytes(src), "files": len(files_under(src)), "path": str(src)}


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The last run's row (its repository or restored dir is the one kept) with the median wall
    time; the first failed run's row instead when a run failed."""
    failed = [r for r in rows if "failed" in r]
    if failed:
        return {**failed[0], "failures": f"{len(failed)} of {len(rows)} runs"}
    row = dict(rows[-1])
    if len(rows) > 1:
        row["runs_seconds"] = [r["seconds"] for r in rows]
        row["seconds"] = round(statistics.median(r["seconds"] for r in rows), 3)
        for k in ("user_seconds", "system_seconds"):
            if all(k in r for r in rows):
                row[f"runs_{k}"] = [r[k] for r in rows]
                row[k] = round(statistics.median(r[k] for r in rows), 3)
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


def restores(work: Path, ours: ChromaSnapshot, restic: Restic, src: Path, repeat: int,
             name: str = "restore") -> dict[str, Any]:
    """The latest snapshot restored into fresh dirs under ``work/name`` by chroma-snapshot
    (default: hashes + consistency checks), chroma-snapshot --chroma-check and restic, ``repeat``
    times each (rotating who goes first); median wall time, max RSS, the last run's dir kept."""
    base = work / name
    shutil.rmtree(base, ignore_errors=True)
    steps: list[tuple[str, Path, Any]] = [
        (rep.OURS, base / "ours" / "vector_db", ours.restore),
        (rep.OURS_CHECK, base / "ours-chroma-check" / "vector_db",
         lambda t: ours.restore(t, chroma_check=True)),
    ]
    if restic.binary:
        steps.append((rep.RESTIC, base / "restic", lambda t: restic.restore(t, src)))
    runs: dict[str, list[dict[str, Any]]] = {tool: [] for tool, _, _ in steps}
    for i in range(repeat):
        k = i % len(steps)
        for tool, target, step in steps[k:] + steps[:k]:
            shutil.rmtree(target.parent if tool != rep.RESTIC else target, ignore_errors=True)
            log(f"{name} {i + 1}/{repeat}: {tool}")
            runs[tool].append(step(target))
    out = {tool: _median_row(rows) for tool, rows in runs.items()}
    out[rep.OURS].setdefault("note", "checks: " + ", ".join(out[rep.OURS]["checks"]))
    check = out[rep.OURS_CHECK]
    check.setdefault("note", f"chromadb opened {len(check['chroma_checked'])} collections in "
                     f"{check['chroma_batches']} child process(es)")
    if rep.RESTIC in out:
        out[rep.RESTIC]["bytes_total"] = dir_bytes(Path(out[rep.RESTIC]["restored_path"]))
        out[rep.RESTIC]["note"] = "restic restore, no --verify"
    else:
        out[rep.RESTIC] = {"skipped": RESTIC_INSTALL}
    return out


def independent_counts(restored: Path, work: Path) -> tuple[dict[str, int], dict[str, Any]]:
    """Open a throwaway copy of a restored dir with chromadb (it writes on open) and count every
    collection: (counts, the measured row of that chromadb process)."""
    scratch = work / "count-copy"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(restored, scratch)
    try:
        p = run([sys.executable, str(BENCH / "dataset.py"), "counts", str(scratch)],
                env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check("counting the restore")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    counts: dict[str, int] = json.loads(p.stdout)["counts"]
    return counts, {**p.row(), "note": "dataset.py counts: chromadb opens every collection, one process"}


def verification(expected: dict[str, int], restore: dict[str, Any], work: Path, src: Path) -> dict[str, Any]:
    """What the restores hold, checked by the benchmark itself rather than by the tool.

    * counts: a copy of the default restore (of the ``--chroma-check`` one if the default
      failed) opened with chromadb in a child process, against the counts expected from the
      dataset's parameters; ``--chroma-check``'s own ``chroma_checked`` must agree too;
    * bytes: the restored files against the source, restic's restore and the other restore
      (chroma.sqlite3 from byte 100 on, see measure.compare_trees)."""
    default, check = restore[rep.OURS], restore[rep.OURS_CHECK]
    failed = {tool: row["failed"] for tool, row in ((rep.OURS, default), (rep.OURS_CHECK, check))
              if "failed" in row}
    out: dict[str, Any] = {"expected_counts": expected, "restore_failed": failed or None,
                           "default_checks": default.get("checks", []),
                           "chroma_checked": check.get("chroma_checked", {}),
                           "chroma_checked_match": ("failed" not in check
                                                    and check["chroma_checked"] == expected)}
    counted = next((row for row in (default, check) if "failed" not in row), None)
    if counted is None:
        out.update(independent_counts={}, counts_match=False, verified_by="nothing: every restore failed")
        return out
    ours_dir = Path(counted["target"])
    out["independent_counts"], out["independent_open"] = independent_counts(ours_dir, work)
    out["counts_match"] = out["independent_counts"] == expected
    which = "default" if counted is default else "--chroma-check"
    out["verified_by"] = f"the benchmark: chromadb opened a copy of the {which} restore"
    out["source_vs_ours"] = compare_trees(ours_dir, src)
    if "restored_path" in restore.get(rep.RESTIC, {}):
        out["restic_vs_ours"] = compare_trees(ours_dir, Path(restore[rep.RESTIC]["restored_path"]))
    else:
        out["restic_vs_ours"] = {"skipped": RESTIC_INSTALL}
    if not failed:
        out["chroma_check_vs_default"] = compare_trees(Path(default["target"]), Path(check["target"]))
    return out


def verified(v: dict[str, Any]) -> bool:
    trees = [v.get(k, {}) for k in ("source_vs_ours", "restic_vs_ours", "chroma_check_vs_default")]
    return (bool(v["counts_match"]) and not v["restore_failed"] and bool(v["chroma_checked_match"])
            and all(t.get("match", True) for t in trees) and "source_vs_ours" in v)


def reference_round(work: Path, cache: Path, per_collection: int, repeat: int) -> dict[str, Any]:
    """What opening ONE collection costs: ``restore --chroma-check`` of a DB holding just the
    first tenant collection (its own repository), and chromadb alone opening that DB."""
    db, meta = tenants_db(cache, 1, per_collection)
    src = work / "ref-src" / "vector_db"
    meta.update(copy_source(db, src))
    ref = ChromaSnapshot(work / "ref-repo", work / "ref-cache")
    log("reference: chroma-snapshot create of the 1-collection DB")
    create = ref.create(src)
    target = work / "ref-restore" / "vector_db"
    rows = []
    for i in range(repeat):
        shutil.rmtree(target.parent, ignore_errors=True)
        log(f"reference restore {i + 1}/{repeat}: {rep.OURS_CHECK}")
        rows.append(ref.restore(target, chroma_check=True))
    row = _median_row(rows)
    row.setdefault("note", f"{rep.REF_NOTE}; chromadb opened {row['chroma_checked']}")
    counts: dict[str, int] = {}
    alone: dict[str, Any] = {"skipped": "the reference restore failed"}
    if "failed" not in row:
        counts, alone = independent_counts(target, work)
        alone["note"] = "chromadb alone: open + count the 1-collection DB, one process"
    return {"dataset": meta, "create": create, "rows": {rep.OURS_CHECK: row, "chromadb alone": alone},
            "expected_counts": tenant_counts(1, per_collection), "independent_counts": counts}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=("records", "collections"), default="records",
                    help="records: one DB of --records in 2 collections, with 3 changes; collections: "
                    "--collections tenants of --records-per-collection each [%(default)s]")
    ap.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="records in the DB [%(default)s]")
    ap.add_argument("--collections", type=int, default=DEFAULT_COLLECTIONS,
                    help="collections scenario: collections in the DB [%(default)s]")
    ap.add_argument("--records-per-collection", type=int, default=DEFAULT_PER_COLLECTION,
                    help="collections scenario: records in each [%(default)s]")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON to OUT")
    ap.add_argument("--workdir", type=Path, help="where copies, repositories and restores go (kept); "
                    "a temporary dir, removed at the end, otherwise")
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache", help="built DBs [%(default)s]")
    ap.add_argument("--repeat", type=int, default=1,
                    help="full creates and restores per tool; the median is used [1]")
    ap.add_argument("--no-gzip-incrementals", action="store_true",
                    help="do not re-gzip after each change; report the full gzip's size (what the "
                    "old approach uploads every time) without a time")
    return ap.parse_args(argv)


WORK_DIRS = ("src", "ours-repo", "ours-cache", "restic-repo", "restic-cache", "restore", "gzip-out",
             "count-copy", "ref-src", "ref-repo", "ref-cache", "ref-restore")


def records_scenario(report: dict[str, Any], args: argparse.Namespace, work: Path, ours: ChromaSnapshot,
                     restic: Restic, repeat: int) -> None:
    n = args.records
    report["records"] = n
    db, report["dataset"] = records_db(args.cache_dir.absolute(), n)
    src = work / "src" / "vector_db"
    report["dataset"].update(copy_source(db, src))
    report["full"] = full_round(work, src, ours, restic, repeat, os.cpu_count() or 1)
    parent = report["full"][rep.RESTIC].get("id")
    gzip_full = report["full"][rep.GZIP] if args.no_gzip_incrementals else None
    report["incremental"] = incremental_rounds(work, src, n, ours, restic, parent, gzip_full)
    report["restore"] = restores(work, ours, restic, src, repeat)
    report["verification"] = verification(expected_counts(n, list(CHANGES)), report["restore"], work, src)


def collections_scenario(report: dict[str, Any], args: argparse.Namespace, work: Path,
                         ours: ChromaSnapshot, restic: Restic, repeat: int) -> None:
    c, r = args.collections, args.records_per_collection
    report.update(collections=c, records_per_collection=r, records=c * r)
    db, report["dataset"] = tenants_db(args.cache_dir.absolute(), c, r)
    src = work / "src" / "vector_db"
    report["dataset"].update(copy_source(db, src))
    report["full"] = full_round(work, src, ours, restic, repeat, os.cpu_count() or 1)
    report["incremental"] = []
    report["restore"] = restores(work, ours, restic, src, repeat)
    report["reference"] = reference_round(work, args.cache_dir.absolute(), r, repeat)
    report["verification"] = verification(tenant_counts(c, r), report["restore"], work, src)
    ref = report["reference"]
    report["verification"]["reference_counts_match"] = ref["independent_counts"] == ref["expected_counts"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with work_dir(args.workdir, "chroma-snapshot-bench-", WORK_DIRS) as work:
        ours = ChromaSnapshot(work / "ours-repo", work / "ours-cache")
        restic = Restic(work / "restic-repo", work / "restic-cache")
        if not restic.binary:
            log(RESTIC_INSTALL + "; the restic rows are skipped")
        report: dict[str, Any] = {"scenario": args.scenario, "machine": machine_facts(restic),
                                  "workdir": str(work), "argv": sys.argv}
        scenario = records_scenario if args.scenario == "records" else collections_scenario
        scenario(report, args, work, ours, restic, max(1, args.repeat))
        report["ratios"] = rep.ratios(report)
        report["targets"] = rep.targets(report)
        report["table"] = rep.table_rows(report)
        report["machine"]["loadavg_end"] = os.getloadavg()
        end = tool_code()
        if end != report["machine"]["tool_code"]:
            report["machine"]["tool_code_changed_during_run"] = end
        report["seconds"] = round(time.monotonic() - started, 1)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    v = report["verification"]
    return 0 if verified(v) and v.get("reference_counts_match", True) else 1


def _tree_line(name: str, cmp_: dict[str, Any]) -> str:
    if "skipped" in cmp_:
        return f"{name}: skipped ({cmp_['skipped']})"
    return (f"{name}: {cmp_['identical']}/{cmp_['files_compared']} files identical, "
            f"{len(cmp_['identical_after_sqlite_header'])} identical after the 100-byte SQLite header, "
            f"differ: {cmp_['differ'] or 'none'}, only ours: {cmp_['only_in_ours'] or 'none'}, "
            f"only the other: {cmp_['only_in_other'] or 'none'}")


def _print(report: dict[str, Any]) -> None:
    m, d, v = report["machine"], report["dataset"], report["verification"]
    what = (f"{report['records']:,} records" if report["scenario"] == "records" else
            f"{report['collections']:,} collections x {report['records_per_collection']:,} records")
    print(f"chroma-snapshot benchmark, {what} ({d['bytes'] / rep.MIB:,.1f} MiB in "
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
    for tool, message in (v["restore_failed"] or {}).items():
        print(f"{tool} restore FAILED: {message}")
    if len(v["expected_counts"]) > 4:
        shown = {k: f"{len(x)} collections, {sum(x.values()):,} records, {min(x.values(), default=0)} to "
                 f"{max(x.values(), default=0)} each" for k, x in
                 (("got", v["independent_counts"]), ("expected", v["expected_counts"]))}
    else:
        shown = {"got": v["independent_counts"], "expected": v["expected_counts"]}
    print(f"restore verified by {v['verified_by']}: {shown['got']}, expected {shown['expected']}: "
          f"{'OK' if v['counts_match'] else 'MISMATCH'}")
    print(f"default restore checked: {', '.join(v['default_checks']) or '-'}; --chroma-check's own counts "
          f"{'agree' if v['chroma_checked_match'] else 'DISAGREE'}")
    if "reference_counts_match" in v:
        ref = report["reference"]
        print(f"reference (1 collection) verified: {ref['independent_counts']}: "
              f"{'OK' if v['reference_counts_match'] else 'MISMATCH'}")
    for key, name in (("source_vs_ours", "source vs ours"), ("restic_vs_ours", "restic vs ours"),
                      ("chroma_check_vs_default", "--chroma-check vs default")):
        if key in v:
            print(_tree_line(name, v[key]))
    print(f"total {report['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
