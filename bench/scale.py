"""Scale benchmark: chroma-snapshot on a synthetic large Chroma dir (1, 5, 20 GiB) and on a
repository of many tiny snapshots.

    python bench/scale.py [--sizes 1,5] [--snapshots 30] [--tiny-snapshots 200] [--json OUT]
                          [--workdir DIR] [--cache-dir DIR] [--base-records N] [--small] [--low-disk]

Per size: a real small Chroma DB (``dataset.py build``, cached) grown to the size by
``synthetic.py`` (HNSW capacity raised, realistic element content; it passes create's
structural checks as it is), then ``--snapshots`` creates: a full one, one of the unchanged DB,
and one after each "night" (~1% of the 1 MiB blocks and of the records changed in place).
Then ``list``, ``show``, a restore compared byte for byte with the source, ``check``,
``check --read-data``, ``prune --dry-run`` and ``prune --keep-last 7 --grace 0s``. Apart:
``--tiny-snapshots`` creates of a tiny DB, then ``list``, ``check`` and ``prune --dry-run``
on that repository. Every command is its own measured process (wall time, peak RSS of the
process tree; bench/measure.py). Prints a table and marks the targets; a missed target is
reported, never an error; a failed command or a restore that is not byte-exact exits 1.
``--low-disk`` (for 20 GiB on a disk of about 45 GB): creates read the DB in place
(``create --in-place``: no staging copy, no base cache), and once the creates are done the
source's files are hashed and the source removed before the restore, which is then compared
with those hashes. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MIB, compare_trees, dir_bytes, run, work_dir
from report import rss, text_table
from run import records_db
from tools import BENCH, ROOT, ChromaSnapshot

KIB = 1 << 10
GIB = 1 << 30
RSS_LIMIT = 256 * MIB
LIST_BYTES_LIMIT = 10 * KIB  # per snapshot
LIST_SECONDS_LIMIT = 2.0  # for the tiny repository's snapshots
UNCHANGED_LIMIT = 8 * KIB
#: Keys under which ``list --json`` may report what it read (it reports nothing at 2026-11-30).
LIST_BYTES_KEYS = ("bytes_down", "request_bytes", "bytes_read")
RSS_ROWS = ("create (full)", "create (unchanged)", "create (incremental)", "list", "restore",
            "check --read-data", "prune")


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """The machine and the code measured. No git command runs: the commit is read from .git,
    the sources are fingerprinted (run.py's machine_facts runs git, so it is not used)."""
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nproc": os.cpu_count(),
            "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
            "memory": _proc_field("/proc/meminfo", "MemTotal"),
            "platform": platform.platform(), "python": platform.python_version(),
            "chromadb": _chromadb_version(), "loadavg_start": os.getloadavg(), "commit": head_commit(),
            "tool_version": tool_version(), "snapshot_code_sha256": code_fingerprint()}


def _chromadb_version() -> str | None:
    try:
        return metadata.version("chromadb")
    except metadata.PackageNotFoundError:
        return None


def _proc_field(path: str, key: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith(key)), "")


def head_commit() -> str | None:
    """The checkout's commit, read from .git without running git (in a worktree, .git is a
    file naming its own git dir, whose ``commondir`` holds the refs)."""
    git = here = ROOT / ".git"
    try:
        if git.is_file():
            here = Path(git.read_text().split("gitdir:", 1)[1].strip())
            common = here / "commondir"
            git = (here / common.read_text().strip()).resolve() if common.is_file() else here
        head = (here / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return None


def tool_version() -> str | None:
    """The checkout's __version__ (snapshot/version.py), read without importing the package."""
    m = re.search(r"__version__\s*=\s*[\"']([^\"']+)", (ROOT / "snapshot" / "version.py").read_text())
    return m.group(1) if m else None


def code_fingerprint() -> str:
    """sha256 of snapshot/'s sources (as bench/schedule.py): which code ran; the checkout is
    edited while benchmarks run, so it is taken at the start and end of every size."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "snapshot").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ child processes


def child(argv: list[str]) -> int:
    """What runs in a measured child with the checkout on PYTHONPATH: ``creates REPO SRC N``
    (N library creates, the repository's growth after each) or ``list-bytes REPO`` (what a
    listing reads, from the store's own request counters)."""
    from snapshot import Repository, create_snapshot

    action, repo_path = argv[0], argv[1]
    if action == "creates":
        src, n = argv[2], int(argv[3])
        repo = Repository.open(repo_path, create=True)
        added, ids = [], []
        for _ in range(n):
            before = dir_bytes(Path(repo_path))
            ids.append(create_snapshot(repo, src).id)
            added.append(dir_bytes(Path(repo_path)) - before)
        print(json.dumps({"ids": ids, "bytes_added": added}))
    elif action == "list-bytes":
        repo = Repository.open(repo_path)
        snaps = repo.list_snapshots()
        stats = repo.store.stats
        print(json.dumps({"snapshots": len(snaps), "bytes_down": stats.bytes_down,
                          "requests": stats.as_dict()}))
    else:
        raise SystemExit(f"unknown child action {action!r}")
    return 0


def run_child(ours: ChromaSnapshot, *args: str) -> dict[str, Any]:
    p = run([sys.executable, str(BENCH / "scale.py"), "child", *args], env=ours.env, cwd=ROOT)
    p.check(f"scale.py child {args[0]}")
    return {**p.row(), "out": json.loads(p.stdout)}


# ------------------------------------------------------------------ commands


def cli(ours: ChromaSnapshot, what: str, *args: str, parse: str = "json") -> dict[str, Any]:
    """One measured ``python -m snapshot`` run; raises (the benchmark fails) if it fails."""
    p = ours._cli(*args).check(f"chroma-snapshot {what}")
    row: dict[str, Any] = p.row()
    if parse == "json":
        row["out"] = json.loads(p.stdout)
    elif parse == "lines":
        row["out"] = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return row


def list_bytes_reported(out: Any) -> int | None:
    """The bytes ``list --json`` says it read, wherever it reports them (None if it does not)."""
    if not isinstance(out, dict):
        return None
    for scope in (out, out.get("requests"), out.get("stats"), out.get("measurement")):
        if isinstance(scope, dict):
            for key in LIST_BYTES_KEYS:
                if isinstance(scope.get(key), int):
                    return int(scope[key])
    return None


def listing(ours: ChromaSnapshot, expected: int) -> dict[str, Any]:
    """``list --json`` (time, RSS) and the bytes a listing reads: as the CLI reports them when it
    does, and always as the store's request counters see them in a library
    ``Repository.list_snapshots``."""
    row = cli(ours, "list", "list", "--json", "--stats")
    out = row.pop("out")
    snaps = out if isinstance(out, list) else out.get("snapshots", [])
    if len(snaps) != expected:
        raise RuntimeError(f"list shows {len(snaps)} snapshots, expected {expected}")
    lib = run_child(ours, "list-bytes", str(ours.repo))["out"]
    reported = list_bytes_reported(out)
    used = reported if reported is not None else lib["bytes_down"]
    return {**row, "snapshots": len(snaps), "cli_bytes_read": reported,
            "library_bytes_read": lib["bytes_down"], "library_requests": lib["requests"],
            "bytes_per_snapshot": round(used / max(1, len(snaps))),
            "bytes_source": "list --json" if reported is not None else
            "library Repository.list_snapshots() request counters (list --json reports none)"}


def manifest_sizes(ours: ChromaSnapshot) -> dict[str, Any]:
    """Root manifest bytes (snapshots/*.json) and the latest snapshot's chunk tables (``show
    latest --json``: each file's table frame, stored and raw)."""
    roots = [p.stat().st_size for p in (ours.repo / "snapshots").glob("*.json")]
    show = cli(ours, "show", "show", "latest", "--json")
    files = show.pop("out")["files"]
    tables = [f["table"] for f in files if f.get("table")]
    return {"root_bytes_mean": round(statistics.mean(roots)), "root_bytes_max": max(roots),
            "root_bytes_total": sum(roots), "roots": len(roots), "files": len(files),
            "table_bytes": sum(t["length"] for t in tables),
            "table_bytes_raw": sum(t["size"] for t in tables),
            "tables": len(tables), "chunks": sum(f.get("chunk_count", 0) for f in files), "show": show}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Many runs of one command: median wall time and bytes added, max RSS, the worst run."""
    worst = max(rows, key=rss)
    return {"seconds": round(statistics.median(r["seconds"] for r in rows), 3),
            "seconds_max": max(r["seconds"] for r in rows), "peak_rss": max(r["peak_rss"] for r in rows),
            "tree_rss": max(r["tree_rss"] for r in rows), "runs": len(rows),
            "repo_bytes_added": round(statistics.median(r["repo_bytes_added"] for r in rows)),
            "repo_bytes_added_max": max(r["repo_bytes_added"] for r in rows),
            "command": worst["command"]}


# ------------------------------------------------------------------ one size


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    out = {}
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        with open(p, "rb") as fh:
            out[p.relative_to(root).as_posix()] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def compare_hashes(target: Path, expected: dict[str, str]) -> dict[str, Any]:
    """compare_trees' answer for a restore against the source's hashes taken before it was removed."""
    got = tree_hashes(target)
    both = sorted(got.keys() & expected.keys())
    differ = [rel for rel in both if got[rel] != expected[rel]]
    return {"files_compared": len(both), "identical": len(both) - len(differ),
            "identical_after_sqlite_header": [], "differ": differ,
            "only_in_ours": sorted(got.keys() - expected.keys()),
            "only_in_other": sorted(expected.keys() - got.keys()),
            "match": not differ and got.keys() == expected.keys(), "by": "sha256 of the source, taken before "
            "it was removed"}


def size_round(work: Path, base: Path, gib: float, snapshots: int, keep_last: int,
               low_disk: bool = False) -> dict[str, Any]:
    home = work / f"size-{gib:g}g"
    shutil.rmtree(home, ignore_errors=True)
    src = home / "src" / "vector_db"
    shutil.copytree(base, src)
    log(f"{gib:g} GiB: growing the synthetic DB")
    p = run([sys.executable, str(BENCH / "synthetic.py"), "grow", str(src), "--gib", str(gib)]).check("grow")
    out: dict[str, Any] = {"gib": gib, "dataset": {**json.loads(p.stdout), "path": str(src)},
                           "snapshots": snapshots, "snapshot_code": [code_fingerprint()]}
    ours = ChromaSnapshot(home / "repo", home / "cache", create_args=("--in-place",) if low_disk else ())
    out["low_disk"] = low_disk
    rows: dict[str, Any] = {}
    log(f"{gib:g} GiB: create 1/{snapshots} (full)")
    rows["create (full)"] = ours.create(src)
    log(f"{gib:g} GiB: create 2/{snapshots} (unchanged DB)")
    rows["create (unchanged)"] = ours.create(src)
    nights = []
    for k in range(1, snapshots - 1):
        change = run([sys.executable, str(BENCH / "synthetic.py"), "night", str(src), "--night", str(k)])
        change.check(f"night {k}")
        log(f"{gib:g} GiB: create {k + 2}/{snapshots} after night {k}")
        nights.append({**ours.create(src), "night": json.loads(change.stdout)})
    if nights:
        rows["create (incremental)"] = summarise(nights)
    log(f"{gib:g} GiB: list, show, restore, check, prune")
    rows["list"] = listing(ours, snapshots)
    out["manifests"] = manifest_sizes(ours)
    hashes = None
    if low_disk:
        log(f"{gib:g} GiB: hashing the source, then removing it")
        hashes = tree_hashes(src)
        shutil.rmtree(src)
    target = home / "restore" / "vector_db"
    rows["restore"] = ours.restore(target)
    if "failed" in rows["restore"]:
        raise RuntimeError(f"restore failed: {rows['restore']['failed']}")
    out["restore_vs_source"] = (compare_trees(target, src) if hashes is None
                                else compare_hashes(target, hashes))
    shutil.rmtree(target.parent, ignore_errors=True)
    rows["check"] = cli(ours, "check", "check", "--json")
    rows["check --read-data"] = cli(ours, "check --read-data", "check", "--read-data", "--json")
    prune_args = ("prune", "--keep-last", str(keep_last), "--grace", "0s", "--json")
    rows["prune --dry-run"] = cli(ours, "prune --dry-run", *prune_args, "--dry-run")
    before = dir_bytes(ours.repo)
    rows["prune"] = cli(ours, "prune", *prune_args)
    rows["prune"]["repo_bytes_freed"] = before - dir_bytes(ours.repo)
    out["repo_bytes_final"] = dir_bytes(ours.repo)
    out["nights"] = [{"seconds": n["seconds"], "peak_rss": n["peak_rss"], "tree_rss": n["tree_rss"],
                      "repo_bytes_added": n["repo_bytes_added"], "chunks_new": n.get("chunks_new"),
                      "chunks_delta": n.get("chunks_delta"), **n["night"]} for n in nights]
    out["rows"] = rows
    out["snapshot_code"].append(code_fingerprint())
    return out


# ------------------------------------------------------------------ tiny snapshots


def tiny_round(work: Path, base: Path, n: int, keep_last: int) -> dict[str, Any]:
    home = work / "tiny"
    shutil.rmtree(home, ignore_errors=True)
    src = home / "src" / "vector_db"
    shutil.copytree(base, src)
    ours = ChromaSnapshot(home / "repo", home / "cache")
    log(f"tiny DB: {n} creates (library, one process)")
    made = run_child(ours, "creates", str(ours.repo), str(src), str(n))
    added = made.pop("out")["bytes_added"]
    rows: dict[str, Any] = {"creates": {**made, "runs": n, "repo_bytes_added_first": added[0]}}
    if len(added) > 1:
        rows["creates"].update(repo_bytes_added=round(statistics.median(added[1:])),
                               repo_bytes_added_max=max(added[1:]))
    rows["list"] = listing(ours, n)
    rows["check"] = cli(ours, "check", "check", "--json")
    rows["prune --dry-run"] = cli(ours, "prune --dry-run", "prune", "--keep-last", str(keep_last),
                                  "--grace", "0s", "--dry-run", "--json")
    roots = [p.stat().st_size for p in (ours.repo / "snapshots").glob("*.json")]
    return {"snapshots": n, "db_bytes": dir_bytes(src), "root_bytes_mean": round(statistics.mean(roots)),
            "rows": rows}


# ------------------------------------------------------------------ verdicts and table


def _shown(v: float, unit: str) -> str:
    if unit == "MiB":
        return f"{v / MIB:,.0f} MiB"
    return f"{v / KIB:,.2f} KiB" if unit == "KiB" else f"{v:.2f} s"


def _target(name: str, value: float | None, limit: float, unit: str) -> dict[str, Any]:
    if value is None:
        return {"target": name, "value": None, "limit": limit, "met": None, "verdict": "n/a"}
    met = value <= limit
    return {"target": name, "value": value, "limit": limit, "met": met,
            "verdict": f"{'MET' if met else 'MISSED'}: {_shown(value, unit)} (limit {_shown(limit, unit)})"}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in report["sizes"]:
        label = f"{s['gib']:g} GiB"
        for name in RSS_ROWS:
            if name in s["rows"]:
                out.append(_target(f"{label}: {name} peak RSS <= 256 MiB", rss(s["rows"][name]),
                                   RSS_LIMIT, "MiB"))
        out.append(_target(f"{label}: list reads <= 10 KiB per snapshot ({s['snapshots']} snapshots)",
                           s["rows"]["list"]["bytes_per_snapshot"], LIST_BYTES_LIMIT, "KiB"))
        out.append(_target(f"{label}: unchanged DB's create adds <= 8 KiB",
                           s["rows"]["create (unchanged)"]["repo_bytes_added"], UNCHANGED_LIMIT, "KiB"))
    t = report.get("tiny")
    if t:
        n = t["snapshots"]
        out.append(_target(f"tiny: list of {n} snapshots <= 2 s", t["rows"]["list"]["seconds"],
                           LIST_SECONDS_LIMIT, "s"))
        out.append(_target(f"tiny: list reads <= 10 KiB per snapshot ({n} snapshots)",
                           t["rows"]["list"]["bytes_per_snapshot"], LIST_BYTES_LIMIT, "KiB"))
        out.append(_target("tiny: unchanged DB's create adds <= 8 KiB (max over creates 2..N)",
                           t["rows"]["creates"].get("repo_bytes_added_max"), UNCHANGED_LIMIT, "KiB"))
    return out


def _mib(n: Any) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def _note(name: str, row: dict[str, Any]) -> str:
    if name == "list":
        return f"{row['bytes_per_snapshot']:,} B read per snapshot ({row['snapshots']} snapshots)"
    if name.startswith("create"):
        extra = f", median of {row['runs']}, max {row['seconds_max']:.1f} s" if "runs" in row else ""
        return f"+{row.get('repo_bytes_added', 0) / KIB:,.1f} KiB to the repository{extra}"
    if name == "prune":
        freed = row["repo_bytes_freed"] / MIB
        return f"removed {len(row['out']['removed'])} snapshots; repository {-freed:+,.1f} MiB"
    if name == "restore":
        return f"{row['bytes_total'] / MIB:,.1f} MiB restored"
    return ""


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for s in report["sizes"]:
        for name, row in s["rows"].items():
            rows.append([f"{s['gib']:g} GiB", name, f"{row['seconds']:.2f}", _mib(row["peak_rss"]),
                         _mib(row["tree_rss"]), _note(name, row)])
    t = report.get("tiny")
    if t:
        c = t["rows"]["creates"]
        rows.append([f"tiny x{t['snapshots']}", "creates (one process)", f"{c['seconds']:.2f}",
                     _mib(c["peak_rss"]), _mib(c["tree_rss"]),
                     f"unchanged creates add median {c.get('repo_bytes_added', 0):,} B, max "
                     f"{c.get('repo_bytes_added_max', 0):,} B"])
        for name in ("list", "check", "prune --dry-run"):
            row = t["rows"][name]
            rows.append([f"tiny x{t['snapshots']}", name, f"{row['seconds']:.2f}", _mib(row["peak_rss"]),
                         _mib(row["tree_rss"]), _note(name, row)])
    return rows


HEADERS = ["size", "operation", "wall s", "peak RSS MiB", "tree RSS MiB", "note"]


def _print(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"chroma-snapshot scale benchmark, {m['date_utc']}, {m['nproc']} x {m['cpu_model']}, "
          f"chroma-snapshot {m['tool_version']} at {m['commit']} (snapshot/ sources "
          f"{m['snapshot_code_sha256']}), load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}")
    codes = [c for s in report["sizes"] for c in s["snapshot_code"]]
    if len(set([m["snapshot_code_sha256"], *codes])) > 1:
        print(f"WARNING: snapshot/ changed during the run: {' -> '.join(dict.fromkeys(codes))}")
    for s in report["sizes"]:
        d, mf, r = s["dataset"], s["manifests"], s["restore_vs_source"]
        print(f"{s['gib']:g} GiB: {d['bytes'] / GIB:.2f} GiB synthetic DB grown in {d['seconds']:.0f} s; "
              f"{s['snapshots']} snapshots; roots {mf['root_bytes_mean']:,} B mean / "
              f"{mf['root_bytes_max']:,} B max; latest's chunk tables {mf['table_bytes']:,} B stored "
              f"({mf['table_bytes_raw']:,} B raw) "
              f"for {mf['chunks']:,} chunks in {mf['files']} files; restore vs source: "
              f"{r['identical']}/{r['files_compared']} identical{'' if exact(r) else ' NOT EXACT'}")
    print()
    print(text_table(report["table"], HEADERS))
    print()
    print("targets:")
    for t in report["targets"]:
        print(f"  {t['target']}: {t['verdict']}")
    print(f"total {report['seconds']:.0f} s")


def exact(cmp_: dict[str, Any]) -> bool:
    return bool(cmp_["match"]) and not cmp_["identical_after_sqlite_header"]


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1", help="synthetic DB sizes in GiB, comma-separated [%(default)s]")
    ap.add_argument("--snapshots", type=int, default=30, help="snapshots per size (>= 2) [%(default)s]")
    ap.add_argument("--tiny-snapshots", type=int, default=200,
                    help="snapshots of the tiny DB for the list part; 0 skips it [%(default)s]")
    ap.add_argument("--base-records", type=int, default=5000,
                    help="records of the real DB the synthetic one grows from [%(default)s]")
    ap.add_argument("--keep-last", type=int, default=7,
                    help="prune --keep-last N --grace 0s after the snapshots of each size [%(default)s]")
    ap.add_argument("--tiny-records", type=int, default=200, help="records of the tiny DB [%(default)s]")
    ap.add_argument("--small", action="store_true",
                    help="a quick run (tests): --sizes 0.03 --snapshots 4 --tiny-snapshots 20 "
                    "--base-records 1500 --keep-last 2 unless given")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON to OUT")
    ap.add_argument("--workdir", type=Path, help="where DBs, repositories and restores go; each size's "
                    "part is removed when it is done unless --keep (default: a temporary dir)")
    ap.add_argument("--keep", action="store_true", help="keep each size's DB and repository")
    ap.add_argument("--low-disk", action="store_true",
                    help="creates read the DB in place (--in-place), and the source is hashed and removed "
                    "before the restore, which is compared with those hashes")
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache", help="built DBs [%(default)s]")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(raw)
    if args.small:
        for flag, value in (("--sizes", "0.03"), ("--snapshots", 4), ("--tiny-snapshots", 20),
                            ("--base-records", 1500), ("--keep-last", 2)):
            if flag not in raw:
                setattr(args, flag[2:].replace("-", "_"), value)
    args.size_list = [float(x) for x in str(args.sizes).split(",") if x.strip()]
    if args.snapshots < 2:
        ap.error("--snapshots must be at least 2 (a full and an unchanged create)")
    return args


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["child"]:
        return child(raw[1:])
    args = parse_args(raw)
    started = time.monotonic()
    report: dict[str, Any] = {"machine": machine(), "argv": sys.argv, "sizes": [], "failed": None}
    code = 0
    with work_dir(args.workdir, "chroma-snapshot-scale-") as work:
        report["workdir"] = str(work)
        try:
            cache = args.cache_dir.absolute()
            if args.size_list:
                base, report["base_db"] = records_db(cache, args.base_records)
                for gib in args.size_list:
                    report["sizes"].append(size_round(work, base, gib, args.snapshots, args.keep_last,
                                                      args.low_disk))
                    if not args.keep:
                        shutil.rmtree(work / f"size-{gib:g}g", ignore_errors=True)
            if args.tiny_snapshots:
                tiny, report["tiny_db"] = records_db(cache, args.tiny_records)
                report["tiny"] = tiny_round(work, tiny, args.tiny_snapshots, args.keep_last)
                if not args.keep:
                    shutil.rmtree(work / "tiny", ignore_errors=True)
        except RuntimeError as exc:
            report["failed"] = str(exc)
            log(f"FAILED: {exc}")
            code = 1
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["targets"] = targets(report) if not report["failed"] else []
    report["table"] = table_rows(report) if not report["failed"] else []
    if not report["failed"]:
        _print(report)
        if not all(exact(s["restore_vs_source"]) for s in report["sizes"]):
            code = 1
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
