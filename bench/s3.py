"""S3 benchmark: chroma-snapshot, restic's S3 backend and the gzip-everything way, each through
the same slow link to a local S3 (moto behind a shaping proxy).

    python bench/s3.py --records 200000 --cache-dir CACHE [--repeat 3] [--checkout A --checkout B]
                       [--latency 0.03] [--rate 25e6] [--total-rate R] [--connections 8]
                       [--tools ours,restic,gzip] [--json OUT] [--workdir DIR]

A moto server (tests/s3_fixtures.py) behind tests/shaping_proxy.py: every response waits
``--latency`` seconds before its first byte, each connection moves at most ``--rate`` bytes per
second each way (and all of them ``--total-rate``, if given). On the benchmark's DB (``--records``,
bench/dataset.py, cached), each run times, every step its own process through the proxy:

* chroma-snapshot: a full ``create`` into a fresh repository, three incremental creates (1%
  insert, then 1% update, then 1% delete; the base cache there, as for a user), ``restore latest``
  (three incrementals deep) into a fresh directory (compared byte for byte with the source),
  ``check --read-data``, ``prune --keep-last 1 --max-unused 0%`` (a prune that repacks) and
  ``list`` of a repository of 100 snapshots;
* restic (its S3 backend, default options): the same backups, ``restore latest``, ``check
  --read-data``, ``forget --keep-last 1 --prune --max-unused 0`` and ``snapshots`` of a repository
  of 100 snapshots;
* the gzip-everything way (bench/baselines.py): gzip -6 each file and ``upload_file`` each, one
  after another (as "create full"), then ``download_file`` each and gunzip (as "restore latest").

The two repositories of 100 snapshots (of a 100-record DB) are written once, straight to moto.
The proxy says what crossed it: requests by method, bytes each way, connections, the most data
requests in flight at once; "harness CPU" is what moto and the proxy burnt meanwhile (on a
machine of few cores they compete with the tool).

The **link limit** of a step is the least time the link allows for what the step moved:
``bytes / bandwidth + serial requests x latency``, with bandwidth ``--total-rate`` or else
``--rate x --connections``, and as serial requests those outside data/ (config, locks, listings,
manifests, indexes: each waits for the one before) plus one round trip for the data.

``--checkout DIR`` (repeatable) runs chroma-snapshot from that checkout: with two, each repeat
runs A then B (paired, alternating; restic and gzip once per repeat, after them), and the report
gives the medians of each. The report is Markdown, to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

from measure import MIB, compare_trees, run, work_dir  # noqa: E402
from run import records_db  # noqa: E402
from s3_fixtures import _MotoServer  # noqa: E402
from s3_tools import CHANGES, Ours, Restic, build_list_repos, drop_bucket, gzip_down, gzip_up, new_bucket  # noqa: E402
from shaping_proxy import ShapingProxy  # noqa: E402

STEPS = ("create full", *(f"create 1% {c}" for c in CHANGES), "restore latest", "check --read-data",
         "prune (repack)", "list 100 snapshots")
TOOLS = ("ours", "restic", "gzip")


def log(msg: str) -> None:
    print(f"[s3 {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def changed_dbs(cache: Path, n: int, base: Path) -> list[Path]:
    """``base`` after each of CHANGES in turn (bench/dataset.py's 1% changes), built once."""
    out, prev, name = [], base, f"db-{n}"
    for change in CHANGES:
        name += f"-{change}"
        home = cache / name
        if not (home / "vector_db").is_dir():
            log(f"building {home}")
            tmp = cache / f"{name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(prev, tmp / "vector_db")
            run([sys.executable, str(BENCH / "dataset.py"), change, str(tmp / "vector_db"),
                 "--records", str(n)], env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check(change)
            os.rename(tmp, home)
        prev = home / "vector_db"
        out.append(prev)
    return out


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Bench:
    def __init__(self, args: argparse.Namespace, proxy: ShapingProxy, moto: str, moto_pid: int) -> None:
        self.args, self.proxy, self.moto, self.moto_pid = args, proxy, moto, moto_pid

    def link_limit(self, moved: int, serial: int) -> float:
        bandwidth = self.args.total_rate or self.args.rate * self.args.connections
        return moved / bandwidth + (serial + 1) * self.args.latency

    def step(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
        proxy = self.proxy
        proxy.reset()
        harness = _cpu_of(self.moto_pid) + _own_cpu()
        p = run(argv, env=env, cwd=cwd).check(name)
        stats = proxy.stats()
        harness = _cpu_of(self.moto_pid) + _own_cpu() - harness
        exchanges = proxy.exchanges
        serial = sum(1 for ex in exchanges if "/data/" not in ex.path)
        data = [ex for ex in exchanges if "/data/" in ex.path]
        limit = self.link_limit(stats.bytes_up + stats.bytes_down, serial)
        return {
            "seconds": round(p.seconds, 3), "cpu": round(p.user_seconds + p.system_seconds, 2),
            "harness_cpu": round(harness, 2), "peak_rss": p.tree_rss, "requests": stats.requests,
            "by_method": stats.by_method, "bytes_up": stats.bytes_up, "bytes_down": stats.bytes_down,
            "connections": stats.connections,
            "data_in_flight": max((level for _t, level in proxy.in_flight_over(data)), default=0),
            "link_limit": round(limit, 3), "command": p.command,
            # every request: method, key, started, response started, finished (seconds since the
            # first request), body bytes up and down
            "trace": [(ex.method, ex.path[-48:], round(ex.started - exchanges[0].started, 3),
                       round(ex.first_byte - exchanges[0].started, 3),
                       round(ex.finished - exchanges[0].started, 3), ex.up, ex.down) for ex in exchanges],
        }

    def ours(self, k: int, checkout: Path, dbs: list[Path], work: Path, listed: str) -> dict[str, Any]:
        home = work / f"run-{k}"
        shutil.rmtree(home, ignore_errors=True)
        (home / "tmp").mkdir(parents=True)
        tool = Ours(checkout, self.proxy.url, new_bucket(self.moto, f"ours-{k}"), home)
        tool.check_code()
        src = home / "src" / "vector_db"
        rows: dict[str, Any] = {}
        for name, db in zip(STEPS[:4], dbs, strict=True):
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(db, src)
            rows[name] = self.step(name, tool.create(src), tool.env, home)
        target = home / "restored"
        rows["restore latest"] = self.step("restore latest", tool.restore(target), tool.env, home)
        same(target, src, "chroma-snapshot")
        rows["check --read-data"] = self.step("check", tool.check(), tool.env, home)
        rows["prune (repack)"] = self.step("prune", tool.prune(), tool.env, home)
        rows["list 100 snapshots"] = self.step("list", tool.list(listed), tool.env, home)
        drop_bucket(self.moto, tool.bucket)
        shutil.rmtree(home)
        return rows

    def restic(self, k: int, dbs: list[Path], work: Path, listed: str) -> dict[str, Any]:
        home = work / f"restic-{k}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        bucket = new_bucket(self.moto, f"restic-{k}")
        Restic(self.moto, bucket, home).init()
        tool = Restic(self.proxy.url, bucket, home)
        src = home / "src" / "vector_db"
        rows: dict[str, Any] = {}
        for name, db in zip(STEPS[:4], dbs, strict=True):
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(db, src)
            rows[name] = self.step(name, tool.backup(src), tool.env, home)
        target = home / "restored"
        rows["restore latest"] = self.step("restic restore", tool.restore(target), tool.env, home)
        same(target / src.relative_to(src.anchor), src, "restic")
        rows["check --read-data"] = self.step("restic check", tool.check(), tool.env, home)
        rows["prune (repack)"] = self.step("restic prune", tool.prune(), tool.env, home)
        rows["list 100 snapshots"] = self.step("restic snapshots", tool.list(listed), tool.env, home)
        drop_bucket(self.moto, bucket)
        shutil.rmtree(home)
        return rows

    def gzip(self, k: int, dbs: list[Path], work: Path) -> dict[str, Any]:
        home = work / f"gzip-{k}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        bucket = new_bucket(self.moto, f"gzip-{k}")
        env = Ours(BENCH.parent, self.proxy.url, bucket, home).env
        rows = {"create full": self.step("gzip up", gzip_up(self.proxy.url, bucket, dbs[0], home), env, home)}
        target = home / "restored"
        rows["restore latest"] = self.step("gzip down", gzip_down(self.proxy.url, bucket, target), env, home)
        same(target, dbs[0], "gzip")
        drop_bucket(self.moto, bucket)
        shutil.rmtree(home)
        return rows


def same(restored: Path, src: Path, who: str) -> None:
    verdict = compare_trees(restored, src)
    if not verdict["match"]:
        raise RuntimeError(f"{who}'s restore differs from its source: {verdict}")


def medians(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """label -> step -> the last run's row with the median time and every run's time."""
    out: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(lab for lab, _ in runs):
        mine = [rows for lab, rows in runs if lab == label]
        out[label] = {}
        for s in STEPS:
            if s in mine[-1]:
                times = [r[s]["seconds"] for r in mine]
                out[label][s] = {**{k: v for k, v in mine[-1][s].items() if k != "trace"},
                                 "seconds": statistics.median(times), "runs_seconds": times,
                                 "peak_rss": max(r[s]["peak_rss"] for r in mine)}
    return out


def _methods(r: dict[str, Any]) -> str:
    return " ".join(f"{m} {n}" for m, n in sorted(r["by_method"].items()))


def markdown(med: dict[str, dict[str, Any]], args: argparse.Namespace, load: tuple[float, float]) -> str:
    bw = args.total_rate or args.rate * args.connections
    lines = [
        f"## S3 through a shaping proxy: {args.records:,} records, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"`python bench/s3.py --records {args.records} --repeat {args.repeat} --latency {args.latency} "
        f"--rate {args.rate:g}{f' --total-rate {args.total_rate:g}' if args.total_rate else ''} "
        f"--connections {args.connections}`{''.join(f' --checkout {c}' for c in args.checkout or [])}; "
        f"link: {args.latency * 1000:.0f} ms before each response, {args.rate / 1e6:g} MB/s per connection, "
        f"link limit at {bw / 1e6:g} MB/s; {os.cpu_count()} cores, load {load[0]:.2f} -> {load[1]:.2f}.",
        "",
        "| step | tool | median s | every run s | link limit s | x limit | x restic | requests | "
        "MiB up / down | conns | data at once | peak RSS MiB | CPU s | harness CPU s |",
        "|---|---|--:|---|--:|--:|--:|---|---|--:|--:|--:|--:|--:|",
    ]
    restic = med.get("restic", {})
    for s in STEPS:
        for label, steps in med.items():
            r = steps.get(s)
            if r is None:
                continue
            vs = restic.get(s)
            x_restic = f"{r['seconds'] / vs['seconds']:.2f}" if vs and label != "restic" else ""
            every = ", ".join(f"{t:.2f}" for t in r["runs_seconds"])
            lines.append(
                f"| {s} | {label} | {r['seconds']:.2f} | {every} | "
                f"{r['link_limit']:.2f} | {r['seconds'] / max(r['link_limit'], 1e-3):.2f} | "
                f"{x_restic} | "
                f"{r['requests']} ({_methods(r)}) | "
                f"{r['bytes_up'] / MIB:.1f} / {r['bytes_down'] / MIB:.1f} | "
                f"{r['connections']} | {r['data_in_flight']} | {r['peak_rss'] / MIB:.0f} | {r['cpu']:.1f} | "
                f"{r['harness_cpu']:.1f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000, help="records of the DB [%(default)s]")
    ap.add_argument("--latency", type=float, default=0.03, help="seconds before each response [%(default)s]")
    ap.add_argument("--rate", type=float, default=25e6, help="bytes/s per connection [%(default)s]")
    ap.add_argument("--total-rate", type=float, help="bytes/s of all connections together [no cap]")
    ap.add_argument("--connections", type=int, default=8,
                    help="connections the link limit assumes without --total-rate [%(default)s]")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each checkout [%(default)s]")
    ap.add_argument("--checkout", type=Path, action="append",
                    help="a checkout whose chroma-snapshot runs (repeat for A/B) [this one]")
    ap.add_argument("--tools", default=",".join(TOOLS), help="which of ours,restic,gzip run [all]")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write every run and the medians to OUT")
    ap.add_argument("--workdir", type=Path, help="where sources, caches and restores go [a temporary dir]")
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache", help="built DBs [%(default)s]")
    args = ap.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    if unknown := set(args.tools) - set(TOOLS):
        ap.error(f"unknown tools {sorted(unknown)} (choose from {', '.join(TOOLS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkouts = [c.resolve() for c in (args.checkout or [BENCH.parent])]
    base, _meta = records_db(args.cache_dir, args.records)
    dbs = [base, *changed_dbs(args.cache_dir, args.records, base)]
    tiny, _meta = records_db(args.cache_dir, 100)
    load0 = os.getloadavg()[0]
    moto = _MotoServer()
    runs: list[tuple[str, dict[str, Any]]] = []
    with work_dir(args.workdir, "chroma-s3-bench-") as work:
        endpoint = moto.acquire(work)
        try:
            assert moto.proc is not None
            listed = ("", "")
            if {"ours", "restic"} & set(args.tools):
                log("writing the two repositories of 100 snapshots")
                listed = build_list_repos(endpoint, tiny, work / "list", args.tools)
            with ShapingProxy(endpoint, latency=args.latency, rate=args.rate,
                              total_rate=args.total_rate) as proxy:
                bench = Bench(args, proxy, endpoint, moto.proc.pid)
                for k in range(args.repeat):
                    jobs: list[tuple[str, Any]] = []
                    if "ours" in args.tools:
                        jobs += [(str(c) if len(checkouts) > 1 else "chroma-snapshot",
                                  lambda c=c, k=k: bench.ours(k, c, dbs, work, listed[0])) for c in checkouts]
                    if "restic" in args.tools:
                        jobs.append(("restic", lambda k=k: bench.restic(k, dbs, work, listed[1])))
                    if "gzip" in args.tools:
                        jobs.append(("gzip-everything", lambda k=k: bench.gzip(k, dbs, work)))
                    for label, job in jobs:
                        log(f"run {k + 1}/{args.repeat}: {label}")
                        rows = job()
                        log("  " + ", ".join(f"{s} {r['seconds']:.2f} s" for s, r in rows.items()))
                        runs.append((label, rows))
        finally:
            moto.release()
    med = medians(runs)
    print(markdown(med, args, (load0, os.getloadavg()[0])))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": runs, "medians": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
