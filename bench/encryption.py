"""What client-side encryption costs: full create and restore of the same DB into an encrypted
and an unencrypted repository, in the same run, alternating which goes first.

    python bench/encryption.py [--records N] [--repeat K] [--workdir DIR] [--cache-dir DIR] [--json OUT]

The DB is the records scenario's (bench/run.py, cached in bench/.cache/db-N). Each run uses a
fresh repository and base cache; the encrypted one derives its key at the real scrypt cost
(once per command). Every restore is compared with the source byte for byte (chroma.sqlite3
from byte 100 on) and must match. Prints a table and the ratios encrypted / unencrypted (wall
time: medians; peak RSS: max).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report as rep
from measure import compare_trees, work_dir
from run import _median_row, copy_source, log, machine_facts, records_db
from tools import BENCH, ChromaSnapshot, Restic

MODES = ("unencrypted", "encrypted")


def one_run(work: Path, src: Path, mode: str, i: int) -> dict[str, dict[str, Any]]:
    repo, cache, target = work / f"{mode}-repo", work / f"{mode}-cache", work / f"{mode}-restore-{i}"
    for path in (repo, cache, target):
        shutil.rmtree(path, ignore_errors=True)
    ours = ChromaSnapshot(repo, cache, work / "password" if mode == "encrypted" else None)
    create = ours.create(src)
    restore = ours.restore(target)
    if "failed" in restore:
        raise SystemExit(f"{mode} restore failed: {restore['failed']}")
    same = compare_trees(target, src)
    if not same["match"]:
        raise SystemExit(f"{mode} restore differs from the source: {same}")
    shutil.rmtree(target)
    return {"create": create, "restore": {**restore, "verified": same}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with work_dir(args.workdir, "bench-enc-") as work:
        (work / "password").write_text("benchmark password\n")
        db, dataset = records_db(args.cache_dir.absolute(), args.records)
        source = copy_source(db, work / "src" / "vector_db")
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {"create": [], "restore": []} for m in MODES}
        for i in range(args.repeat):
            for mode in MODES if i % 2 == 0 else reversed(MODES):
                log(f"run {i + 1}/{args.repeat}: {mode}")
                for op, row in one_run(work, work / "src" / "vector_db", mode, i).items():
                    runs[mode][op].append(row)
        rows = {m: {op: _median_row(r) for op, r in ops.items()} for m, ops in runs.items()}
        ratio = {op: {k: rows["encrypted"][op][k] / rows["unencrypted"][op][k]
                      for k in ("seconds", "peak_rss", "user_seconds") if rows["unencrypted"][op].get(k)}
                 for op in ("create", "restore")}
        stored = {m: rows[m]["create"]["repo_bytes"] for m in MODES}
        ratio["create"]["repo_bytes"] = stored["encrypted"] / stored["unencrypted"]
        report = {"records": args.records, "repeat": args.repeat, "dataset": dataset, "source": source,
                  "machine": machine_facts(Restic(work / "no-restic", work / "no-restic-cache")),
                  "rows": rows, "ratios": ratio, "loadavg_end": os.getloadavg(),
                  "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    table = []
    for mode in MODES:
        tool = f"chroma-snapshot {mode}"
        table.append(rep._fmt_row("full create", tool, rows[mode]["create"], "repo_bytes"))
        table.append(rep._fmt_row("restore latest", tool, rows[mode]["restore"], "bytes_total"))
    print(f"{args.records:,} records ({source['bytes'] / rep.MIB:,.0f} MiB in {source['files']} files), "
          f"medians of {args.repeat} runs; every restore matched the source")
    print(rep.text_table(table))
    print(f"encrypted / unencrypted: full create {ratio['create']['seconds']:.3f}x time, "
          f"{ratio['create']['peak_rss']:.3f}x peak RSS, {ratio['create']['repo_bytes']:.4f}x stored bytes; "
          f"restore {ratio['restore']['seconds']:.3f}x time, {ratio['restore']['peak_rss']:.3f}x peak RSS")
    # Wall time here swings by 10-40% from run to run with the VM's disk (system time); user
    # CPU time is where the cryptography's own cost shows, and it hardly varies.
    print(f"user CPU time, encrypted / unencrypted: full create {ratio['create']['user_seconds']:.3f}x, "
          f"restore {ratio['restore']['user_seconds']:.3f}x")
    for op in ("create", "restore"):
        print(f"  {op}: wall s per run: " + "; ".join(
            f"{m} {', '.join(f'{x:.2f}' for x in rows[m][op].get('runs_seconds', [rows[m][op]['seconds']]))}"
            for m in MODES))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
