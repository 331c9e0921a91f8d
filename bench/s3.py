"""S3 benchmark: create and restore through a slow link to a local S3 (moto behind a shaping proxy).

    python bench/s3.py [--records N] [--latency S] [--rate BYTES_PER_S] [--total-rate BYTES_PER_S]
                       [--connections C] [--repeat K] [--checkout DIR ...] [--json OUT]
                       [--workdir DIR] [--cache-dir DIR]

A moto server (tests/s3_fixtures.py) behind tests/shaping_proxy.py: every response waits
``--latency`` seconds before its first byte, each connection moves at most ``--rate`` bytes per
second each way (and all of them ``--total-rate``, if given). On the benchmark's DB (``--records``,
bench/dataset.py, cached like bench/run.py's), each run times, as its own process through the
proxy: a full ``create`` into a fresh repository, a ``create`` after a 1% insert (its parent the
full one; the base cache of the full one is there, as it is for a user), and ``restore latest``
into a fresh directory (compared byte for byte with the source). The proxy says what crossed it:
requests by method, bytes each way, connections opened, the most requests in flight at once.
Peak RSS is the sampled sum over the step's process tree (bench/measure.py's ``tree_rss``): the
kernel's own peak of a child counts what it inherited from this process, which holds the proxy.

The **link limit** of a step is the least time the link allows for what the step moved:
``bytes / bandwidth + serial requests x latency``, with bandwidth ``--total-rate`` or else
``--rate x --connections`` (the connections a client is expected to use), and as serial
requests those outside data/ (config, locks, listings, manifests: each waits for the one
before) plus one round trip for the data. ``time / link limit`` is how far a step is from it.

``--checkout DIR`` (repeatable) runs the code of that checkout (``PYTHONPATH=DIR``): with two,
each repeat runs A then B (paired, alternating), and the report gives the medians of each and B's
over A's. Without it, this checkout's code runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

from measure import MIB, compare_trees, run, work_dir  # noqa: E402
from report import text_table  # noqa: E402
from run import records_db  # noqa: E402
from s3_fixtures import _MotoServer  # noqa: E402
from shaping_proxy import ShapingProxy  # noqa: E402

STEPS = ("create full", "create 1% insert", "restore latest")
BUCKET = "bench"


def log(msg: str) -> None:
    print(f"[s3 {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def changed_db(cache: Path, n: int, base: Path) -> Path:
    """``base`` after bench/dataset.py's 1% insert, built once (cached beside it)."""
    home = cache / f"db-{n}-insert"
    if not (home / "vector_db").is_dir():
        log(f"building the 1% insert of db-{n} in {home}")
        tmp = cache / f"db-{n}-insert.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(base, tmp / "vector_db")
        run([sys.executable, str(BENCH / "dataset.py"), "insert", str(tmp / "vector_db"),
             "--records", str(n)], env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check("the 1% insert")
        os.rename(tmp, home)
    return home / "vector_db"


def link_limit(stats: Any, serial: int, args: argparse.Namespace) -> float:
    bandwidth = args.total_rate or args.rate * args.connections
    return (stats.bytes_up + stats.bytes_down) / bandwidth + (serial + 1) * args.latency


def step(name: str, argv: list[str], env: dict[str, str], cwd: Path, proxy: ShapingProxy,
         args: argparse.Namespace) -> dict[str, Any]:
    proxy.reset()
    t0 = time.monotonic()
    p = run(argv, env=env, cwd=cwd).check(name)
    stats = proxy.stats()
    exchanges = proxy.exchanges
    serial = sum(1 for ex in exchanges if "/data/" not in ex.path)
    data = [ex for ex in exchanges if "/data/" in ex.path]
    at_once = max((level for _t, level in proxy.in_flight_over(data)), default=0)
    limit = link_limit(stats, serial, args)
    return {
        "seconds": round(p.seconds, 3), "peak_rss": p.tree_rss, "requests": stats.requests,
        "by_method": stats.by_method, "bytes_up": stats.bytes_up, "bytes_down": stats.bytes_down,
        "connections": stats.connections, "max_in_flight": stats.max_in_flight,
        "data_in_flight": at_once, "link_limit": round(limit, 3),
        "over_limit": round(p.seconds / max(limit, 1e-3), 2), "command": p.command,
        # every request: method, key (past the prefix), started, response started, finished
        # (seconds since the step started), body bytes up and down
        "trace": [(ex.method, ex.path.partition("/repo/")[2][:40], round(ex.started - t0, 3),
                   round(ex.first_byte - t0, 3), round(ex.finished - t0, 3), ex.up, ex.down)
                  for ex in exchanges],
    }


def one_run(k: int, checkout: Path, base: Path, changed: Path, work: Path, proxy: ShapingProxy,
            moto: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    urllib.request.urlopen(urllib.request.Request(f"{moto}/moto-api/reset", method="POST", data=b""))
    _client(moto).create_bucket(Bucket=BUCKET)
    run_dir = work / f"run-{k}"
    shutil.rmtree(run_dir, ignore_errors=True)
    src, tmp, cache = run_dir / "src" / "vector_db", run_dir / "tmp", run_dir / "cache"
    shutil.copytree(base, src)
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # The checkout's code: on the path first, and not the current directory's (python -m puts
    # that first; the steps run in the run's directory).
    env.update(PYTHONPATH=str(checkout), AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(run_dir / "none"), AWS_SHARED_CREDENTIALS_FILE=str(run_dir / "none"))
    code = run([sys.executable, "-c", "import snapshot; print(snapshot.__file__)"], env=env, cwd=run_dir)
    if not code.stdout.startswith(str(checkout)):
        raise RuntimeError(f"the code of {checkout} does not run: {code.stdout or code.stderr}")
    cli = [sys.executable, "-m", "snapshot", "--repo", f"s3://{BUCKET}/repo", "--endpoint-url", proxy.url]
    create = [*cli, "create", str(src), "--json", "--tmp-dir", str(tmp), "--cache-dir", str(cache)]
    rows = {"create full": step("create full", create, env, run_dir, proxy, args)}
    shutil.rmtree(src)
    shutil.copytree(changed, src)
    rows["create 1% insert"] = step("create 1% insert", create, env, run_dir, proxy, args)
    target = run_dir / "restored"
    rows["restore latest"] = step("restore latest", [*cli, "restore", "latest", str(target), "--json"],
                                  env, run_dir, proxy, args)
    same = compare_trees(target, src)
    if not same["match"]:
        raise RuntimeError(f"the restore of run {k} differs from its source: {same}")
    shutil.rmtree(run_dir)
    return rows


def _client(endpoint: str) -> Any:
    import boto3

    session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench",
                                    region_name="us-east-1")
    return session.client("s3", endpoint_url=endpoint)


def report(runs: list[tuple[str, dict[str, dict[str, Any]]]], labels: list[str]) -> dict[str, Any]:
    medians: dict[str, dict[str, Any]] = {}
    for label in labels:
        mine = [rows for lab, rows in runs if lab == label]
        medians[label] = {s: {
            "seconds": statistics.median(r[s]["seconds"] for r in mine),
            "runs_seconds": [r[s]["seconds"] for r in mine],
            **{key: mine[-1][s][key] for key in ("requests", "by_method", "bytes_up", "bytes_down",
                                                  "connections", "max_in_flight", "data_in_flight",
                                                  "link_limit")},
            "peak_rss": max(r[s]["peak_rss"] for r in mine),
        } for s in STEPS}
    return medians


def print_report(medians: dict[str, Any], labels: list[str]) -> None:
    rows = []
    for label in labels:
        for s in STEPS:
            r = medians[label][s]
            rows.append([label, s, f"{r['seconds']:.2f}", f"{r['link_limit']:.2f}",
                         f"{r['seconds'] / max(r['link_limit'], 1e-3):.2f}", str(r["requests"]),
                         f"{r['bytes_up'] / MIB:.1f}", f"{r['bytes_down'] / MIB:.1f}",
                         str(r["connections"]), str(r["data_in_flight"]), f"{r['peak_rss'] / MIB:.0f}"])
    print(text_table(rows, ["code", "step", "median s", "link limit s", "x limit", "requests",
                            "MiB up", "MiB down", "conns", "data reqs at once", "peak RSS MiB"]))
    if len(labels) == 2:
        a, b = labels
        for s in STEPS:
            print(f"{s}: {b} {medians[b][s]['seconds']:.2f} s / {a} {medians[a][s]['seconds']:.2f} s = "
                  f"{medians[b][s]['seconds'] / medians[a][s]['seconds']:.2f}x")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000, help="records of the DB [%(default)s]")
    ap.add_argument("--latency", type=float, default=0.03, help="seconds before each response [%(default)s]")
    ap.add_argument("--rate", type=float, default=25e6, help="bytes/s per connection [%(default)s]")
    ap.add_argument("--total-rate", type=float, help="bytes/s of all connections together [no cap]")
    ap.add_argument("--connections", type=int, default=8,
                    help="connections the link limit assumes without --total-rate [%(default)s]")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each checkout [%(default)s]")
    ap.add_argument("--checkout", type=Path, action="append",
                    help="a checkout whose code runs (repeat for A/B) [this one]")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write every run and the medians to OUT")
    ap.add_argument("--workdir", type=Path, help="where sources, caches and restores go [a temporary dir]")
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache", help="built DBs [%(default)s]")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkouts = [c.resolve() for c in (args.checkout or [BENCH.parent])]
    labels = [str(c) for c in checkouts]
    base, _meta = records_db(args.cache_dir, args.records)
    changed = changed_db(args.cache_dir, args.records, base)
    moto = _MotoServer()
    runs: list[tuple[str, dict[str, dict[str, Any]]]] = []
    with work_dir(args.workdir, "chroma-s3-bench-", ("run-0",)) as work:
        endpoint = moto.acquire(work)
        try:
            with ShapingProxy(endpoint, latency=args.latency, rate=args.rate,
                              total_rate=args.total_rate) as proxy:
                for k in range(args.repeat):
                    for label, checkout in zip(labels, checkouts, strict=True):
                        log(f"run {k + 1}/{args.repeat}: {label}")
                        rows = one_run(k, checkout, base, changed, work, proxy, endpoint, args)
                        log("  " + ", ".join(f"{s} {r['seconds']:.2f} s" for s, r in rows.items()))
                        runs.append((label, rows))
        finally:
            moto.release()
    medians = report(runs, labels)
    print_report(medians, labels)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": runs, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
