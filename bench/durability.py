"""Durability benchmark: what a restore's final flush costs when another process is writing.

    python bench/durability.py --db DIR --checkout A --checkout B [--repeat 3] [--noise-mb 400]
                               [--workdir DIR] [--json OUT]

A restore ends by making what it wrote durable before it swaps it in. ``syncfs`` does that in
one call but flushes every dirty page of the whole filesystem, including other processes'
writes; an fsync per file and folder flushes only the restore's own. This takes one local
repository of ``--db`` (a Chroma persist dir; bench/dataset.py builds them) and restores it with
each checkout's code (``PYTHONPATH=DIR``), alternately A B A B, in two settings:

* **quiet**: ``sync`` first, nothing else writing;
* **busy**: a writer process has just written ``--noise-mb`` MB to a file on the same filesystem
  (not flushed: dirty pages) and keeps writing while the restore runs (the situation of a
  restore started right after a create, or on a host with a busy database).

Prints every run, the medians and B's over A's in each setting. A restore's output is compared
byte for byte with the source every time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import compare_trees

_WRITER = r"""
import os, sys, time
path, mb = sys.argv[1], int(sys.argv[2])
block = os.urandom(1 << 20)
with open(path, "wb", buffering=0) as f:
    for _ in range(mb):
        f.write(block)
    print("ready", flush=True)
    n = 0
    while True:  # keep dirtying pages at a modest rate until killed
        f.seek((n % mb) << 20)
        f.write(block)
        n += 1
        time.sleep(0.01)
"""


def log(msg: str) -> None:
    print(f"[durability {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cli(checkout: Path, *args: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "snapshot", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def restore_once(checkout: Path, repo: Path, target: Path, source: Path, noise: Path | None,
                 noise_mb: int) -> float:
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    writer = None
    if noise is not None:
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(noise), str(noise_mb)],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        writer.stdout.readline()  # its first noise_mb MB are written, not flushed
    try:
        seconds = cli(checkout, "--repo", str(repo), "restore", "latest", str(target))
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
    diff = compare_trees(source, target)
    if not diff["match"]:
        raise SystemExit(f"restore with {checkout} differs from the source: {diff}")
    if noise is not None:
        noise.unlink(missing_ok=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="a Chroma persist dir to snapshot and restore")
    ap.add_argument("--checkout", type=Path, action="append", required=True,
                    help="a checkout whose code runs (give two: A and B)")
    ap.add_argument("--repeat", type=int, default=3, help="pairs per setting [%(default)s]")
    ap.add_argument("--noise-mb", type=int, default=400, help="MB the writer dirties first [%(default)s]")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-durability"))
    ap.add_argument("--json", type=Path, metavar="OUT")
    args = ap.parse_args()
    if len(args.checkout) != 2:
        ap.error("give --checkout twice (A and B)")
    a, b = (c.resolve() for c in args.checkout)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    repo, target = work / "repo", work / "restored"
    log(f"snapshot of {args.db} into {repo}")
    cli(a, "--repo", str(repo), "create", str(args.db), "--no-cache")
    runs: dict[str, dict[str, list[float]]] = {"quiet": {"A": [], "B": []}, "busy": {"A": [], "B": []}}
    for i in range(args.repeat):
        for setting in ("quiet", "busy"):
            for name, checkout in (("A", a), ("B", b)):
                noise = work / "noise.bin" if setting == "busy" else None
                s = restore_once(checkout, repo, target, args.db, noise, args.noise_mb)
                runs[setting][name].append(s)
                log(f"run {i + 1} {setting} {name}: {s:.2f} s")
    report: dict[str, Any] = {"db": str(args.db), "A": str(a), "B": str(b), "noise_mb": args.noise_mb,
                              "loadavg_end": os.getloadavg(), "runs": runs, "medians": {}}
    print(f"restore of {args.db}; A = {a}, B = {b}; busy: {args.noise_mb} MB dirtied by another process")
    print("setting | A runs (s) | B runs (s) | A median | B median | B / A")
    for setting, r in runs.items():
        ma, mb = statistics.median(r["A"]), statistics.median(r["B"])
        report["medians"][setting] = {"A": ma, "B": mb, "B_over_A": mb / ma}
        runs_a, runs_b = (", ".join(f"{x:.2f}" for x in r[k]) for k in ("A", "B"))
        print(f"{setting} | {runs_a} | {runs_b} | {ma:.2f} | {mb:.2f} | {mb / ma:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
