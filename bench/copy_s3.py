"""Copy benchmark: a repository from one bucket to another (S3 -> S3) with chroma-snapshot's
``copy``, ``aws s3 sync`` of the same prefix and ``restic copy``, in one run.

    python bench/copy_s3.py [--records N] [--repeat K] [--latency S] [--rate BYTES_PER_S]
                            [--total-rate BYTES_PER_S] [--checkout DIR ...] [--json OUT]
                            [--workdir DIR] [--cache-dir DIR]

(Not ``bench/copy.py``: a script's folder comes first on ``sys.path``, and a ``copy.py`` there
would stand in for the standard library's ``copy`` module.)

Setup, once, not measured: the benchmark's DB (``--records``, bench/dataset.py, cached like
bench/run.py's) and its three changes applied one after another (insert, update, delete 1%;
each state cached as ``db-N-insert``, ``db-N-insert-update``, ...). One moto server
(tests/s3_fixtures.py) holds bucket ``src`` with a chroma-snapshot repository (``src/snap``: a
full snapshot of the DB and one incremental after each change) and a restic repository of the
same four states (``src/restic``, ``restic backup`` of the same path each time).

Each run, as its own processes through tests/shaping_proxy.py (``--latency`` before every
response, ``--rate`` bytes/s per connection, ``--total-rate`` for all), copies into fresh
destinations in bucket ``dst``, in two steps:

* **3 oldest**: the first three snapshots into an empty destination (chroma-snapshot
  ``copy ID1 ID2 ID3``; ``restic copy ID1 ID2 ID3`` into a repository initialised with
  ``--copy-chunker-params``; ``aws s3 sync`` of the prefix with the keys the fourth create
  added excluded);
* **the 4th**: everything again, so only the newest snapshot is new (``copy``, ``restic
  copy``, ``aws s3 sync``): the incremental copied after its parent.

Each step's wall time, peak RSS, and what crossed the proxy: requests by method, body bytes
each way. ``aws s3 sync`` within one endpoint copies server-side (CopyObject, UploadPartCopy):
its data does not cross the client's link, so its bytes are near 0, and it copies objects as
they are (no verification, no re-encryption). The destinations are checked (chroma-snapshot:
``check --read-data`` and the same snapshot ids; restic: ``check --read-data`` and 4
snapshots; sync: the same keys and sizes) and deleted after each run. The tools alternate who
goes first; the report gives the medians over ``--repeat`` runs, every run's time, and
chroma-snapshot's over each baseline in time, requests and bytes. ``--checkout DIR``
(repeatable) runs chroma-snapshot from those checkouts too (each its own row; the first is the
one the ratios use). Everything runs at nice 10.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

from dataset import CHANGES  # noqa: E402
from measure import MIB, run, work_dir  # noqa: E402
from report import text_table  # noqa: E402
from run import records_db  # noqa: E402
from s3_fixtures import _MotoServer  # noqa: E402
from shaping_proxy import ShapingProxy  # noqa: E402

SRC, DST = "src", "dst"
STEPS = ("3 oldest", "the 4th")
OURS, SYNC, RESTIC = "chroma-snapshot", "aws s3 sync", "restic"
RESTIC_PASSWORD = "copy-bench"


def log(msg: str) -> None:
    print(f"[copy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def states(cache: Path, n: int) -> list[Path]:
    """The DB and the state after each of dataset.py's changes, built once (cached beside it)."""
    base, _meta = records_db(cache, n)
    out, prev = [base], base
    for k in range(1, len(CHANGES) + 1):
        home = cache / f"db-{n}-{'-'.join(CHANGES[:k])}"
        if not (home / "vector_db").is_dir():
            log(f"building db-{n} after {'+'.join(CHANGES[:k])} in {home}")
            tmp = cache / f"{home.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(prev, tmp / "vector_db")
            env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
            run([sys.executable, str(BENCH / "dataset.py"), CHANGES[k - 1], str(tmp / "vector_db"),
                 "--records", str(n)], env=env).check(CHANGES[k - 1])
            os.rename(tmp, home)
        prev = home / "vector_db"
        out.append(prev)
    return out


def _client(endpoint: str) -> Any:
    import boto3

    session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench",
                                    region_name="us-east-1")
    return session.client("s3", endpoint_url=endpoint)


def keys(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Key (past ``prefix/``) -> size."""
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", ()):
            out[obj["Key"][len(prefix) + 1:]] = obj["Size"]
    return out


def delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    held = [f"{prefix}/{k}" for k in keys(client, bucket, prefix)]
    for i in range(0, len(held), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in held[i:i + 1000]]})


class Env:
    """What every child gets: fake credentials, no AWS config, nice 10, our cache in the work dir."""

    def __init__(self, work: Path) -> None:
        self.base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RESTIC_"))}
        self.base.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                         AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                         AWS_CONFIG_FILE=str(work / "none"), AWS_SHARED_CREDENTIALS_FILE=str(work / "none"),
                         ANONYMIZED_TELEMETRY="False", RESTIC_PASSWORD=RESTIC_PASSWORD,
                         RESTIC_FROM_PASSWORD=RESTIC_PASSWORD)
        self.work = work

    def ours(self, checkout: Path, cache: Path) -> dict[str, str]:
        return dict(self.base, PYTHONPATH=str(checkout), CHROMA_SNAPSHOT_CACHE=str(cache))


def nice(argv: list[str]) -> list[str]:
    return ["nice", "-n", "10", *argv]


def ours_cli(endpoint: str, repo: str) -> list[str]:
    return nice([sys.executable, "-m", "snapshot", "--repo", f"s3://{repo}", "--endpoint-url", endpoint])


def restic_cli(endpoint: str, repo: str, cache: Path) -> list[str]:
    return nice(["restic", "-r", f"s3:{endpoint}/{repo}", "--cache-dir", str(cache)])


def restic_snapshots(endpoint: str, repo: str, env: Env, cache: Path) -> list[str]:
    p = run([*restic_cli(endpoint, repo, cache), "snapshots", "--json"], env=env.base).check("snapshots")
    return [s["id"] for s in sorted(json.loads(p.stdout), key=lambda s: s["time"])]


def build_sources(dbs: list[Path], endpoint: str, env: Env, checkout: Path) -> dict[str, Any]:
    """The two source repositories in bucket ``src``; what each create/backup took; the keys the
    fourth create added to ``src/snap`` (excluded from the first sync)."""
    client = _client(endpoint)
    src = env.work / "setup" / "vector_db"
    cache = env.work / "setup-cache"
    ours_env = env.ours(checkout, cache)
    run([*ours_cli(endpoint, f"{SRC}/snap"), "init"], env=ours_env, cwd=env.work).check("init")
    run([*restic_cli(endpoint, f"{SRC}/restic", cache / "restic"), "init"], env=env.base).check("restic init")
    facts: dict[str, Any] = {"creates": [], "backups": []}
    before: dict[str, int] = {}
    for k, db in enumerate(dbs):
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(db, src)
        if k == len(dbs) - 1:
            before = keys(client, SRC, "snap")
        p = run([*ours_cli(endpoint, f"{SRC}/snap"), "create", str(src), "--json", "--tag", f"state-{k}"],
                env=ours_env, cwd=env.work).check("create")
        out = json.loads(p.stdout)
        facts["creates"].append({"id": out["id"], "bytes_uploaded": out["bytes_uploaded"],
                                 "seconds": round(p.seconds, 2)})
        p = run([*restic_cli(endpoint, f"{SRC}/restic", cache / "restic"), "backup", "--json", "--host",
                 "bench", str(src)], env=env.base).check("restic backup")
        summary = next(json.loads(x) for x in p.stdout.splitlines() if '"summary"' in x)
        facts["backups"].append({"id": summary["snapshot_id"], "data_added": summary.get("data_added"),
                                 "seconds": round(p.seconds, 2)})
        log(f"state {k}: created {out['bytes_uploaded'] / MIB:.1f} MiB, restic added "
            f"{(summary.get('data_added') or 0) / MIB:.1f} MiB")
    after = keys(client, SRC, "snap")
    facts["new_keys_4th"] = sorted(set(after) - set(before))
    facts["snap_bytes"] = sum(after.values())
    facts["restic_bytes"] = sum(keys(client, SRC, "restic").values())
    facts["restic_ids"] = restic_snapshots(endpoint, f"{SRC}/restic", env, cache / "restic")
    shutil.rmtree(src.parent, ignore_errors=True)
    return facts


def measured(argv: list[str], env: dict[str, str], proxy: ShapingProxy, what: str,
             cwd: Path | None = None) -> dict[str, Any]:
    proxy.reset()
    p = run(argv, env=env, cwd=cwd).check(what)
    stats = proxy.stats()
    # tree_rss: a child's ru_maxrss counts what it inherited from this process (the proxy)
    return {"seconds": round(p.seconds, 3), "peak_rss": p.tree_rss,
            "requests": stats.requests, "by_method": stats.by_method, "bytes_up": stats.bytes_up,
            "bytes_down": stats.bytes_down,
            "command": p.command, "stdout": p.stdout[-4000:]}


def run_ours(label: str, checkout: Path, k: int, facts: dict[str, Any], proxy: ShapingProxy, endpoint: str,
             env: Env) -> dict[str, dict[str, Any]]:
    tag = f"{k}-{checkout.name}"
    dest, cache = f"{DST}/snap-{tag}", env.work / f"cache-{tag}"
    e = env.ours(checkout, cache)
    run([*ours_cli(endpoint, dest), "init"], env=e, cwd=env.work).check("init the destination")
    copy = [*ours_cli(proxy.url, dest), "copy", "--from-repo", f"s3://{SRC}/snap", "--from-endpoint-url",
            proxy.url, "--json"]
    ids = [c["id"] for c in facts["creates"]]
    rows = {STEPS[0]: measured([*copy, *ids[:3]], e, proxy, f"{label} copy", env.work),
            STEPS[1]: measured(copy, e, proxy, f"{label} copy", env.work)}
    for row in rows.values():
        out = json.loads(row.pop("stdout"))
        row.update({key: out.get(key) for key in ("bytes_read", "bytes_written", "bytes_read_destination",
                                                  "bytes_stored", "copied", "skipped")})
    listed = run([*ours_cli(endpoint, dest), "list", "--json"], env=e, cwd=env.work).check("list")
    got = [s["id"] for s in json.loads(listed.stdout)]
    if got != ids:
        raise RuntimeError(f"{label}: the destination holds {got}, not {ids}")
    run([*ours_cli(endpoint, dest), "check", "--read-data", "--json"], env=e, cwd=env.work).check("check")
    rows[STEPS[1]]["dest_bytes"] = sum(keys(_client(endpoint), DST, dest.split("/", 1)[1]).values())
    delete_prefix(_client(endpoint), DST, dest.split("/", 1)[1])
    shutil.rmtree(cache, ignore_errors=True)
    return rows


def run_sync(k: int, facts: dict[str, Any], proxy: ShapingProxy, endpoint: str,
             env: Env) -> dict[str, dict[str, Any]]:
    dest = f"sync-{k}"
    sync = nice(["aws", "--endpoint-url", proxy.url, "s3", "sync", "--only-show-errors", f"s3://{SRC}/snap",
                 f"s3://{DST}/{dest}"])
    excluded = [arg for key in facts["new_keys_4th"] for arg in ("--exclude", key)]
    rows = {STEPS[0]: measured([*sync, *excluded], env.base, proxy, "aws s3 sync"),
            STEPS[1]: measured(sync, env.base, proxy, "aws s3 sync")}
    for row in rows.values():
        row.pop("stdout")
    client = _client(endpoint)
    if keys(client, DST, dest) != keys(client, SRC, "snap"):
        raise RuntimeError("aws s3 sync: the destination's keys differ from the source's")
    rows[STEPS[1]]["dest_bytes"] = sum(keys(client, DST, dest).values())
    delete_prefix(client, DST, dest)
    return rows


def run_restic(k: int, facts: dict[str, Any], proxy: ShapingProxy, endpoint: str,
               env: Env) -> dict[str, dict[str, Any]]:
    dest, cache = f"{DST}/restic-{k}", env.work / f"restic-cache-{k}"
    src = f"s3:{proxy.url}/{SRC}/restic"
    run([*restic_cli(endpoint, dest, cache), "init", "--copy-chunker-params", "--from-repo",
         f"s3:{endpoint}/{SRC}/restic"], env=env.base).check("restic init")
    copy = [*restic_cli(proxy.url, dest, cache), "copy", "--from-repo", src]
    ids = facts["restic_ids"]
    rows = {STEPS[0]: measured([*copy, *ids[:3]], env.base, proxy, "restic copy"),
            STEPS[1]: measured(copy, env.base, proxy, "restic copy")}
    for row in rows.values():
        row.pop("stdout")
    if len(restic_snapshots(endpoint, dest, env, cache)) != len(ids):
        raise RuntimeError("restic copy: the destination does not hold every snapshot")
    run([*restic_cli(endpoint, dest, cache), "check", "--read-data"], env=env.base).check("restic check")
    rows[STEPS[1]]["dest_bytes"] = sum(keys(_client(endpoint), DST, dest.split("/", 1)[1]).values())
    delete_prefix(_client(endpoint), DST, dest.split("/", 1)[1])
    shutil.rmtree(cache, ignore_errors=True)
    return rows


def medians(runs: list[dict[str, dict[str, dict[str, Any]]]], labels: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in labels:
        out[label] = {}
        for s in STEPS:
            rows = [r[label][s] for r in runs]
            last = rows[-1]
            out[label][s] = {**{key: v for key, v in last.items() if key != "command"},
                             "seconds": round(statistics.median(r["seconds"] for r in rows), 3),
                             "runs_seconds": [r["seconds"] for r in rows],
                             "peak_rss": max(r["peak_rss"] for r in rows), "command": last["command"]}
    return out


def _bytes(r: dict[str, Any]) -> int:
    return int(r["bytes_up"] + r["bytes_down"])


def ratios(med: dict[str, Any], ours: str) -> dict[str, dict[str, dict[str, float | None]]]:
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for base in (SYNC, RESTIC):
        out[base] = {}
        for s in STEPS:
            a, b = med[ours][s], med[base][s]
            out[base][s] = {"time": round(a["seconds"] / b["seconds"], 3) if b["seconds"] else None,
                            "requests": round(a["requests"] / b["requests"], 3) if b["requests"] else None,
                            "bytes": round(_bytes(a) / _bytes(b), 3) if _bytes(b) else None}
    return out


def print_report(med: dict[str, Any], labels: list[str], facts: dict[str, Any]) -> None:
    rows = []
    for label in labels:
        for s in STEPS:
            r = med[label][s]
            extra = ""
            if r.get("bytes_read") is not None:
                extra = f"read {r['bytes_read'] / MIB:.2f} / wrote {r['bytes_written'] / MIB:.2f} MiB"
                if r.get("bytes_read_destination") is not None:  # not reported before c0bfbe9
                    extra += f", dest read {r['bytes_read_destination'] / MIB:.2f}"
            rows.append([label, s, f"{r['seconds']:.2f}", " ".join(f"{x:.2f}" for x in r["runs_seconds"]),
                         str(r["requests"]), f"{r['bytes_down'] / MIB:.2f}", f"{r['bytes_up'] / MIB:.2f}",
                         f"{r['peak_rss'] / MIB:.0f}", extra])
    print(text_table(rows, ["tool", "step", "median s", "runs s", "requests", "MiB down", "MiB up",
                            "peak RSS MiB", "chroma-snapshot's own figures"]))
    uploaded = ", ".join(f"{c['bytes_uploaded'] / MIB:.2f}" for c in facts["creates"])
    print(f"source: chroma-snapshot {facts['snap_bytes'] / MIB:.1f} MiB (the creates uploaded {uploaded} "
          f"MiB), restic {facts['restic_bytes'] / MIB:.1f} MiB")
    for base, by_step in ratios(med, labels[0]).items():
        for s, r in by_step.items():
            print(f"{labels[0]} / {base}, {s}: time {r['time']}x, requests {r['requests']}x, "
                  f"bytes {r['bytes']}x")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000, help="records of the DB [%(default)s]")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool [%(default)s]")
    ap.add_argument("--latency", type=float, default=0.03, help="seconds before each response [%(default)s]")
    ap.add_argument("--rate", type=float, default=25e6, help="bytes/s per connection [%(default)s]")
    ap.add_argument("--total-rate", type=float, help="bytes/s of all connections together [no cap]")
    ap.add_argument("--checkout", type=Path, action="append",
                    help="a checkout whose chroma-snapshot runs (repeatable; the first is compared) [here]")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write every run and the medians to OUT")
    ap.add_argument("--workdir", type=Path, help="where caches and setup files go [a temporary dir]")
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache", help="built DBs [%(default)s]")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.nice(10)
    if not shutil.which("restic") or not shutil.which("aws"):
        raise SystemExit("bench/copy_s3.py needs restic and aws-cli on the PATH")
    checkouts = [c.resolve() for c in (args.checkout or [BENCH.parent])]
    ours = [OURS if len(checkouts) == 1 else f"{OURS} ({c.name})" for c in checkouts]
    labels = [*ours, SYNC, RESTIC]
    for c in checkouts:
        code = run([sys.executable, "-c", "import snapshot; print(snapshot.__file__)"],
                   env={"PYTHONPATH": str(c)}, cwd=Path("/"))
        if not code.stdout.startswith(str(c)):
            raise SystemExit(f"the code of {c} does not run: {code.stdout or code.stderr}")
    dbs = states(args.cache_dir, args.records)
    moto = _MotoServer()
    runs: list[dict[str, dict[str, dict[str, Any]]]] = []
    with work_dir(args.workdir, "chroma-copy-bench-") as work:
        endpoint = moto.acquire(work)
        try:
            env = Env(work)
            client = _client(endpoint)
            for bucket in (SRC, DST):
                client.create_bucket(Bucket=bucket)
            log(f"building the sources of db-{args.records} on {endpoint}")
            facts = build_sources(dbs, endpoint, env, checkouts[0])
            shaping = {"latency": args.latency, "rate": args.rate, "total_rate": args.total_rate}
            with ShapingProxy(endpoint, **shaping) as proxy:
                for k in range(args.repeat):
                    tools: list[tuple[str, Any]] = [
                        *((label, lambda k=k, c=c, label=label: run_ours(label, c, k, facts, proxy, endpoint,
                                                                         env))
                          for label, c in zip(ours, checkouts, strict=True)),
                        (SYNC, lambda k=k: run_sync(k, facts, proxy, endpoint, env)),
                        (RESTIC, lambda k=k: run_restic(k, facts, proxy, endpoint, env))]
                    shift = k % len(tools)
                    rows: dict[str, dict[str, dict[str, Any]]] = {}
                    for label, go in tools[shift:] + tools[:shift]:
                        rows[label] = go()
                        log(f"run {k + 1}/{args.repeat} {label}: " + ", ".join(
                            f"{s} {r['seconds']:.2f} s" for s, r in rows[label].items()))
                    runs.append(rows)
        finally:
            moto.release()
    med = medians(runs, labels)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "facts": facts,
                                         "runs": runs, "medians": med, "ratios": ratios(med, labels[0])},
                                        indent=2))
    print_report(med, labels, facts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
