"""Space over time: a month of nightly backups with a keep-last retention, chroma-snapshot and restic.

    python bench/schedule.py [--records N] [--nights K] [--keep-last L] [--json OUT] [--workdir DIR]
                             [--cache-dir DIR] [--no-restic] [--prune-args "ARGS"]
    python bench/schedule.py night PATH --records N --night K     # one night's changes alone

Night 0 backs up the DB of bench/dataset.py (N records, 2 collections, cached like run.py's).
Each night 1..K a child process (it exits before the backups, so Chroma has flushed and closed its
files) inserts 1% new records, updates the metadata of 0.5% and deletes 0.2% (of N, seeded by
the night); then ``chroma-snapshot create`` + ``prune --keep-last L --grace 0s [--prune-args]``
(with the default ``--delete-after 24h``: each night runs a day later on the repository's clock,
``CHROMA_SNAPSHOT_CLOCK_SHIFT``, so what one night's prune condemns the next night's deletes)
and ``restic backup`` + ``forget --keep-last L --prune``, both through their CLIs as a user runs
them. "full" is the size of ``tar | zstd -1`` of that night's DB; each repository's size on disk
(apparent bytes of every file) is reported against it. At the end ``check --read-data`` must
pass and the oldest kept snapshot must restore byte for byte equal to the DB of its night (the
``tar | zstd`` outputs of the last L+1 nights are kept for that); otherwise exit 1. A ratio over
the target is reported, never an error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report as rep
from dataset import SEED, _add, client, split
from measure import MIB, compare_trees, dir_bytes, run, work_dir
from run import copy_source, log, records_db
from tools import BENCH, RESTIC_INSTALL, ROOT, ChromaSnapshot, Restic, zstd_method, zstd_pipe

DEFAULT_RECORDS, DEFAULT_NIGHTS, DEFAULT_KEEP = 20_000, 30, 7
#: each night's changes, as shares of the initial N, applied in this order
NIGHTLY = (("insert", 0.01), ("update", 0.005), ("delete", 0.002))
TARGET = 1.3  # chroma-snapshot's repository at the last night, in fulls
OURS, RESTIC = rep.OURS, rep.RESTIC
WORK_DIRS = ("src", "ours-repo", "ours-cache", "restic-repo", "restic-cache", "nights", "restore",
             "expected")


def night_sizes(n: int) -> dict[str, dict[str, int]]:
    """Records inserted, updated and deleted each night, per collection (90/10 like the records)."""
    return {change: split(max(1, round(n * share))) for change, share in NIGHTLY}


def apply_night(path: Path, n: int, night: int) -> dict[str, Any]:
    """One night's changes. New ids carry the night, so they never collide; updates and deletes
    are disjoint picks among the records that existed before the night (sorted ids, seeded)."""
    import numpy as np

    started = time.monotonic()
    sizes = night_sizes(n)
    counts: dict[str, int] = {}
    with client(path) as c:
        batch = c.get_max_batch_size()
        for k, (name, base) in enumerate(split(n).items()):
            col = c.get_collection(name)
            rng = np.random.default_rng([SEED, 7, night, k])
            live = sorted(col.get(include=[])["ids"])
            ins, upd, dele = (sizes[change][name] for change, _ in NIGHTLY)
            if ins:
                tag = f"{name}-night{night:03d}"
                _add(col, [f"{tag}-{i}" for i in range(ins)], rng, base + (night - 1) * ins, tag, batch)
            picks = [live[int(i)] for i in rng.choice(len(live), size=min(upd + dele, len(live)),
                                                      replace=False)]
            updated, deleted = picks[:upd], picks[upd:]
            for lo in range(0, len(updated), batch):
                part = updated[lo:lo + batch]
                metas = [{"reviewed": True, "night": night, "score": round(float(x), 4)}
                         for x in rng.random(len(part))]
                col.update(ids=part, metadatas=metas)
            for lo in range(0, len(deleted), batch):
                col.delete(ids=deleted[lo:lo + batch])
            counts[name] = col.count()
    return {"night": night, "inserted": sum(sizes["insert"].values()),
            "updated": sum(sizes["update"].values()), "deleted": sum(sizes["delete"].values()),
            "counts": counts, "seconds": round(time.monotonic() - started, 3)}


def code_fingerprint() -> str:
    """sha256 of snapshot/'s sources: which code ran (the checkout is edited while benchmarks run)."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "snapshot").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def facts(restic: Restic) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nproc": os.cpu_count(),
            "loadavg_start": os.getloadavg(), "chromadb": version("chromadb"),
            "chroma_snapshot": version("chroma-snapshot"), "snapshot_code_sha256": code_fingerprint(),
            "restic": restic.version or None, "full_method": zstd_method()}


class Schedule:
    """The nightly loop on one work dir: the DB copy, both repositories, the kept night tars."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.src = work / "src" / "vector_db"
        self.tars = work / "nights"
        self.tars.mkdir(parents=True)
        self.ours = ChromaSnapshot(work / "ours-repo", work / "ours-cache")
        self.restic = Restic(work / "restic-repo", work / "restic-cache")
        self.restic_skip = "--no-restic" if args.no_restic else None if self.restic.binary else RESTIC_INSTALL
        self.restic_parent: str | None = None
        self.night_of: dict[str, int] = {}  # snapshot id -> night

    def change(self, night: int) -> dict[str, Any]:
        p = run([sys.executable, str(Path(__file__).resolve()), "night", str(self.src),
                 "--records", str(self.args.records), "--night", str(night)],
                env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check(f"night {night} changes")
        return {**json.loads(p.stdout), "wall_seconds": round(p.seconds, 3)}

    def full(self, night: int) -> dict[str, Any]:
        """``tar | zstd -1`` of tonight's DB, kept for the last keep-last + 1 nights."""
        row = zstd_pipe(self.src, self.tars / f"night-{night:03d}.tar.zst", os.cpu_count() or 1)
        (self.tars / f"night-{night - self.args.keep_last - 1:03d}.tar.zst").unlink(missing_ok=True)
        return row

    def ours_night(self, night: int) -> dict[str, Any]:
        self.ours.env["CHROMA_SNAPSHOT_CLOCK_SHIFT"] = str(night * 86400)
        create = self.ours.create(self.src)
        self.night_of[create["id"]] = night
        argv = ["prune", "--keep-last", str(self.args.keep_last), "--grace", "0s", "--json",
                *shlex.split(self.args.prune_args)]
        p = self.ours._cli(*argv).check("chroma-snapshot prune")
        out = json.loads(p.stdout)
        prune = {**p.row(), "removed": list(out["removed"]), "kept": [d["id"] for d in out["kept"]],
                 "objects_removed": len(out["objects_removed"]), "bytes_freed": out["bytes_freed"],
                 "objects_in_grace": out["objects_in_grace"],
                 "objects_condemned": len(out["objects_condemned"]),
                 "bytes_condemned": out["bytes_condemned"], "repack": out["repack"]}
        # Condemned packs still take space (deleted by the next night's prune): counted in
        # repo_bytes, and reported apart.
        return {"create": create, "prune": prune, "repo_bytes": dir_bytes(self.ours.repo),
                "condemned_bytes": out["bytes_condemned_waiting"]}

    def restic_night(self, night: int) -> dict[str, Any]:
        if self.restic_skip:
            return {"skipped": self.restic_skip}
        init = self.restic.init() if night == 0 else None
        backup = {**self.restic.backup(self.src, parent=self.restic_parent), "init": init}
        self.restic_parent = backup["id"]
        forget = self.restic._run("forget", "--keep-last", str(self.args.keep_last), "--prune")
        return {"backup": backup, "forget": forget.check("restic forget --prune").row(),
                "repo_bytes": dir_bytes(self.restic.repo)}

    def night(self, night: int) -> dict[str, Any]:
        change = self.change(night) if night else None
        full = self.full(night)
        row: dict[str, Any] = {"night": night, "change": change, "full": full, "tools": {},
                               "snapshot_code": code_fingerprint()}
        for tool, step in ((OURS, self.ours_night), (RESTIC, self.restic_night)):
            log(f"night {night}: {tool}")
            out = step(night)
            if "repo_bytes" in out:
                out["ratio"] = round(out["repo_bytes"] / full["repo_bytes"], 4)
            row["tools"][tool] = out
        return row

    def check(self) -> dict[str, Any]:
        p = self.ours._cli("check", "--read-data", "--json")
        try:
            out = json.loads(p.stdout)
        except ValueError:
            out = {}
        return {**p.row(), "exit": p.returncode, "ok": p.returncode == 0 and out.get("ok") is True,
                "snapshots": out.get("snapshots"), "frames_verified": out.get("frames_verified"),
                "files_verified": out.get("files_verified"), "problems": out.get("problems", []),
                "error": out.get("error") or (None if p.returncode == 0 else p.stderr.strip()[-2000:])}

    def restore_oldest(self) -> dict[str, Any]:
        """The oldest kept snapshot restored and compared with the DB of its night, every byte."""
        ids = [s["id"] for s in json.loads(self.ours._cli("list", "--json").check("list").stdout)]
        oldest = ids[0]
        night = self.night_of.get(oldest)
        out: dict[str, Any] = {"kept": ids, "kept_nights": [self.night_of.get(i) for i in ids],
                               "id": oldest, "night": night}
        target = self.work / "restore" / "vector_db"
        p = self.ours._cli("restore", oldest, str(target), "--json")
        out["restore"] = p.row()
        tar = self.tars / f"night-{night:03d}.tar.zst" if night is not None else None
        if p.returncode != 0 or tar is None or not tar.is_file():
            out["byte_exact"] = False
            out["error"] = (p.stderr.strip()[-2000:] if p.returncode else f"no copy of night {night}'s DB")
            return out
        expected = self.work / "expected"
        untar(tar, expected)
        cmp_: dict[str, Any] = compare_trees(target, expected)
        out["compare"] = cmp_
        out["byte_exact"] = bool(cmp_["match"]) and cmp_["identical"] == cmp_["files_compared"] > 0
        return out


def untar(archive: Path, dest: Path) -> None:
    import zstandard

    dest.mkdir(parents=True)
    with open(archive, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as zr, \
            tarfile.open(fileobj=zr, mode="r|") as tar:
        tar.extractall(dest, filter="data")


def summary(nights: list[dict[str, Any]]) -> dict[str, Any]:
    last, first = nights[-1], nights[1] if len(nights) > 1 else None
    ours = last["tools"][OURS]
    restic = last["tools"][RESTIC]
    creates = [r["tools"][OURS]["create"]["seconds"] for r in nights[1:]]
    slowest = max(nights[1:], key=lambda r: r["tools"][OURS]["create"]["seconds"], default=None)
    return {
        "last_night": last["night"], "ratio": ours["ratio"], "restic_ratio": restic.get("ratio"),
        "condemned_bytes": ours.get("condemned_bytes", 0),
        "ratio_without_condemned": round((ours["repo_bytes"] - ours.get("condemned_bytes", 0))
                                         / last["full"]["repo_bytes"], 4),
        "ours_vs_restic": round(ours["repo_bytes"] / restic["repo_bytes"], 4) if "ratio" in restic else None,
        "target": rep._target(f"chroma-snapshot repository at night {last['night']} <= {TARGET:g}x full",
                              ours["ratio"], TARGET, "x"),
        "night1_added_vs_full": round(first["tools"][OURS]["create"]["repo_bytes_added"]
                                      / first["full"]["repo_bytes"], 5) if first else None,
        "create_seconds_night0": nights[0]["tools"][OURS]["create"]["seconds"],
        "create_seconds_median": round(statistics.median(creates), 3) if creates else None,
        "create_seconds_max": max(creates, default=None),
        "create_seconds_max_night": slowest["night"] if slowest else None,
    }


def table(nights: list[dict[str, Any]]) -> str:
    headers = ["night", "records", "full MiB", "ours MiB", "ours/full", "condemned MiB", "added MiB",
               "create s",
               "restic MiB", "restic/full", "restic s"]
    rows = []
    for r in nights:
        ours, restic = r["tools"][OURS], r["tools"][RESTIC]
        counts = (r["change"] or {}).get("counts")
        rows.append([str(r["night"]), f"{sum(counts.values()):,}" if counts else "initial",
                     f"{r['full']['repo_bytes'] / MIB:.1f}", f"{ours['repo_bytes'] / MIB:.1f}",
                     f"{ours['ratio']:.2f}x", f"{ours.get('condemned_bytes', 0) / MIB:.1f}",
                     f"{ours['create']['repo_bytes_added'] / MIB:.2f}",
                     f"{ours['create']['seconds']:.2f}"]
                    + ([f"{restic['repo_bytes'] / MIB:.1f}", f"{restic['ratio']:.2f}x",
                        f"{restic['backup']['seconds'] + restic['forget']['seconds']:.2f}"]
                       if "ratio" in restic else ["skipped", "-", "-"]))
    return rep.text_table(rows, headers)


def _print(report: dict[str, Any]) -> None:
    f, s, v = report["facts"], report["summary"], report["verification"]
    print(f"chroma-snapshot schedule: {report['records']:,} records, {report['nights']} nights, keep-last "
          f"{report['keep_last']}, prune args {report['prune_args']!r}; {f['date_utc']}, {f['nproc']} cores, "
          f"load {f['loadavg_start'][0]:.2f} -> {f['loadavg_end'][0]:.2f}; "
          f"snapshot code {f['snapshot_code_sha256']}")
    if f.get("snapshot_code_changed_to"):
        print(f"WARNING: snapshot/ changed during the run (now {f['snapshot_code_changed_to']}; "
              f"before night(s) {f['snapshot_code_changed_at_nights'] or 'none: during the checks'})")
    print()
    print(table(report["night_rows"]))
    print()
    skipped = report["night_rows"][-1]["tools"][RESTIC].get("skipped")
    restic = (f"restic skipped ({skipped})" if skipped else
              f"restic {s['restic_ratio']:.2f}x, chroma-snapshot/restic {s['ours_vs_restic']:.2f}")
    print(f"night {s['last_night']}: chroma-snapshot {s['ratio']:.2f}x full (of which "
          f"{s['condemned_bytes'] / MIB:.1f} MiB condemned, deleted by the next prune; "
          f"{s['ratio_without_condemned']:.2f}x without them), {restic}")
    print(f"target: {s['target']['target']}: {s['target']['verdict']}")
    if s["night1_added_vs_full"] is not None:
        print(f"night 1 incremental (1% insert + 0.5% update + 0.2% delete): "
              f"{s['night1_added_vs_full']:.2%} of full")
        print(f"create wall time: night 0 (full) {s['create_seconds_night0']:.2f} s; "
              f"nights 1..{s['last_night']} median {s['create_seconds_median']:.2f} s, "
              f"max {s['create_seconds_max']:.2f} s "
              f"(night {s['create_seconds_max_night']})")
    c, r = v["check"], v["restore_oldest"]
    print(f"check --read-data: {'OK' if c['ok'] else 'FAILED'} ({c['snapshots']} snapshots, "
          f"{c['frames_verified']} frames verified)"
          + ("" if c["ok"] else f": {c['problems'] or c['error']}"))
    cmp_ = r.get("compare", {})
    print(f"oldest kept snapshot {r['id']} (night {r['night']}; kept nights {r['kept_nights']}) restored: "
          + (f"byte-exact, {cmp_['identical']}/{cmp_['files_compared']} files identical" if r["byte_exact"]
             else f"NOT byte-exact: {r.get('error') or cmp_}"))
    print(f"total {report['seconds']:.0f} s")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="records in the DB [%(default)s]")
    ap.add_argument("--nights", type=int, default=DEFAULT_NIGHTS, help="nights after night 0 [%(default)s]")
    ap.add_argument("--keep-last", type=int, default=DEFAULT_KEEP,
                    help="snapshots kept by both tools [%(default)s]")
    ap.add_argument("--workdir", type=Path, help="where the DB copy, repositories and restores go (kept); "
                    "a temporary dir, removed at the end, otherwise")
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache", help="built DBs [%(default)s]")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON to OUT")
    ap.add_argument("--no-restic", action="store_true", help="chroma-snapshot only")
    ap.add_argument("--prune-args", default="", metavar="ARGS",
                    help="extra arguments for chroma-snapshot prune, split like a shell does [none]")
    args = ap.parse_args(argv)
    if args.nights < 1 or args.keep_last < 1:
        ap.error("--nights and --keep-last must be at least 1")
    return args


def _night_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="apply one night's changes (run in a child process)")
    ap.add_argument("path", type=Path)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--night", type=int, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(apply_night(args.path, args.records, args.night), sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["night"]:
        return _night_main(argv[1:])
    args = parse_args(argv)
    started = time.monotonic()
    with work_dir(args.workdir, "chroma-snapshot-schedule-", WORK_DIRS) as work:
        s = Schedule(args, work)
        report: dict[str, Any] = {"records": args.records, "nights": args.nights, "keep_last": args.keep_last,
                                  "prune_args": args.prune_args, "nightly_shares": dict(NIGHTLY),
                                  "facts": facts(s.restic), "workdir": str(work), "argv": sys.argv}
        db, report["dataset"] = records_db(args.cache_dir.absolute(), args.records)
        report["dataset"].update(copy_source(db, s.src))
        rows: list[dict[str, Any]] = []
        for night in range(args.nights + 1):
            rows.append(s.night(night))
            t = rows[-1]["tools"]
            log(f"night {night}: chroma-snapshot {t[OURS]['ratio']:.2f}x full"
                + (f", restic {t[RESTIC]['ratio']:.2f}x" if "ratio" in t[RESTIC] else ""))
        report["night_rows"] = rows
        log("check --read-data, then the oldest kept snapshot restored")
        report["verification"] = {"check": s.check(), "restore_oldest": s.restore_oldest()}
        report["summary"] = summary(rows)
        report["facts"]["loadavg_end"] = os.getloadavg()
        codes = [report["facts"]["snapshot_code_sha256"], *(r["snapshot_code"] for r in rows),
                 code_fingerprint()]
        if len(set(codes)) > 1:
            report["facts"]["snapshot_code_changed_to"] = codes[-1]
            report["facts"]["snapshot_code_changed_at_nights"] = [
                r["night"] for r, before in zip(rows, codes, strict=False) if r["snapshot_code"] != before]
        report["seconds"] = round(time.monotonic() - started, 1)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    v = report["verification"]
    return 0 if v["check"]["ok"] and v["restore_oldest"]["byte_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
