"""Benchmark the per-collection operations against plain chromadb scripts run in the same sitting.

    python bench/collections.py [--collections 500] [--records-per-collection 20]
                                [--records 222222] [--repeat 2] [--workdir DIR]
                                [--cache-dir DIR] [--json OUT]

Three measurements, each a ratio to a baseline measured in the same run, on the same data:

(i) ``restore SNAP DIR --collection tenant-K`` of one collection of a C-collection snapshot
    (C x R records, ``dataset.py build --collections``): the bytes it reads from the repository
    against that collection's share of the snapshot (the stored bytes of its segment folders, frames and chunk tables)
    plus chroma.sqlite3, which every collection restore reads whole. Target: read <= 2 x the
    share + chroma.sqlite3. The full restore of the same snapshot is timed beside it.
(ii) ``restore SNAP http://HOST:PORT --collection docs --as docs-ours-K`` into a running
    ``chroma run`` server (started here on a free localhost port), against a plain script that
    copies the same collection with chromadb's client: pages of ``collection.get`` from a
    PersistentClient over a restored copy of the snapshot, each ``add``\\ ed to an HttpClient
    collection, batches of the server's ``max_batch_size``. Ours reads the snapshot from the
    repository and verifies the copy (count, ids, 1,000 records field by field, self-query);
    the script does neither. Target: ours <= 1.25 x the script.
(iii) ``export SNAP --collection docs OUT.jsonl`` of the ``docs`` collection (90% of --records
    records; the default makes it 200,000) against a plain script that pages ``collection.get``
    over a restored copy and writes one JSON object per record. Target: ours <= 1.2 x the
    script, peak RSS of ours (its whole process tree) <= 256 MiB.

Runs are paired, ours then the script, ``--repeat`` times (A B A B); the report gives every
run, the medians and the ratio of the medians. The datasets are built once into ``--cache-dir``
(200k records take about 15 minutes here). Run it at a low priority on a shared machine
(``nice -n 10``). A missed target is reported, not an error; a result that does not verify
(wrong count) exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataset import split, tenant_counts
from measure import MIB, Proc, run, work_dir

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
TARGETS = {"read_over_allowed": 1.0, "server_ratio": 1.25, "export_ratio": 1.2, "export_rss_mib": 256}

COPY_SCRIPT = """
import sys, chromadb
from chromadb.config import Settings
src_dir, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = Settings(anonymized_telemetry=False)
src = chromadb.PersistentClient(path=src_dir, settings=s).get_collection("docs", embedding_function=None)
client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=s)
dst = client.create_collection(name, metadata=src.metadata, embedding_function=None)
batch, n = client.get_max_batch_size(), src.count()
for offset in range(0, n, batch):
    page = src.get(offset=offset, limit=batch, include=["embeddings", "documents", "metadatas", "uris"])
    dst.add(ids=page["ids"], embeddings=page["embeddings"], documents=page["documents"],
            metadatas=page["metadatas"], uris=page["uris"])
print(dst.count())
"""

EXPORT_SCRIPT = """
import json, sys, chromadb
from chromadb.config import Settings
src_dir, out = sys.argv[1], sys.argv[2]
col = chromadb.PersistentClient(path=src_dir, settings=Settings(anonymized_telemetry=False)).get_collection(
    "docs", embedding_function=None)
n, written = col.count(), 0
with open(out, "w", encoding="utf-8") as fh:
    for offset in range(0, n, 1000):
        page = col.get(offset=offset, limit=1000, include=["embeddings", "documents", "metadatas", "uris"])
        for i, rid in enumerate(page["ids"]):
            fh.write(json.dumps({"id": rid, "embedding": page["embeddings"][i].tolist(),
                                 "document": page["documents"][i], "metadata": page["metadatas"][i],
                                 "uri": page["uris"][i]}) + "\\n")
            written += 1
print(written)
"""


def log(msg: str) -> None:
    print(f"[collections {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dataset(cache: Path, name: str, *args: str) -> Path:
    """``dataset.py build`` once into ``cache/name`` (a ``built`` marker says it finished)."""
    folder = cache / name
    if not (folder / "built").exists():
        shutil.rmtree(folder, ignore_errors=True)
        log(f"building {name} (once)")
        run([PY, str(BENCH / "dataset.py"), "build", str(folder / "vector_db"), *args]).check(f"build {name}")
        (folder / "built").touch()
    return folder / "vector_db"


class Ours:
    """``python -m snapshot`` of this checkout on one repository, its cache in the work dir."""

    def __init__(self, repo: Path, cache: Path) -> None:
        self.repo = repo
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), ANONYMIZED_TELEMETRY="False",
                        CHROMA_SNAPSHOT_CACHE=str(cache))

    def cli(self, *args: str) -> Proc:
        return run([PY, "-m", "snapshot", "--repo", str(self.repo), *args], env=self.env, cwd=ROOT)

    def json(self, what: str, *args: str) -> tuple[Proc, dict[str, Any]]:
        p = self.cli(*args, "--json").check(what)
        return p, json.loads(p.stdout)


def snapshot_of(db: Path, work: Path, ours: Ours) -> str:
    src = work / f"src-{db.parent.name}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(db, src)
    _p, out = ours.json("create", "create", str(src), "--no-cache")
    shutil.rmtree(src)
    return str(out["id"])


def stored_bytes(ours: Ours, sid: str) -> dict[str, int]:
    """path -> the bytes that hold it in the repository: its frames and its chunk table (a
    restore reads both; format 1 keeps the chunks in the root and has no table)."""
    p = ours.cli("show", sid, "--files", "--json").check("show --files")
    files = [json.loads(line) for line in p.stdout.splitlines()]
    root = json.loads(ours.cli("show", sid, "--json").check("show").stdout)
    tables = {f["path"]: f["table"]["length"] for f in root["files"] if f.get("table")}
    return {f["path"]: sum(fr["length"] for c in f["chunks"] for fr in c["frames"]) + tables.get(f["path"], 0)
            for f in files}


def paired(a: Any, b: Any, repeat: int) -> tuple[list[Any], list[Any]]:
    """``a(k)`` then ``b(k)``, ``repeat`` times: A B A B."""
    ours, theirs = [], []
    for k in range(repeat):
        ours.append(a(k))
        theirs.append(b(k))
    return ours, theirs


def median(rows: list[dict[str, Any]], key: str = "seconds") -> float:
    return float(statistics.median(r[key] for r in rows))


def rss(row: dict[str, Any]) -> int:
    return max(int(row["peak_rss"]), int(row["tree_rss"]))


# ------------------------------------------------------------------ (i) one of many collections


def one_of_many(work: Path, cache: Path, collections: int, per: int, repeat: int) -> dict[str, Any]:
    db = dataset(cache, f"tenants-{collections}x{per}", "--collections", str(collections),
                 "--records", str(per))
    ours = Ours(work / "repo-tenants", work / "cache-tenants")
    sid = snapshot_of(db, work, ours)
    name = sorted(tenant_counts(collections, per))[collections // 2]
    shown = json.loads(ours.cli("show", sid, "--json").check("show").stdout)
    [segments] = [c["segments"] for c in shown["collections"] if c["name"] == name]
    stored = stored_bytes(ours, sid)
    share = sum(n for p, n in stored.items() if p.split("/", 1)[0] in segments)
    sqlite = stored["chroma.sqlite3"]

    def one(k: int) -> dict[str, Any]:
        target = work / f"one-{k}"
        shutil.rmtree(target, ignore_errors=True)
        p, out = ours.json("restore --collection", "restore", sid, str(target), "--collection", name)
        if out["collections"] != {name: per}:
            raise RuntimeError(f"restore --collection restored {out['collections']}")
        return {**p.row(), "bytes_downloaded": out["bytes_downloaded"], "files": out["files"]}

    def whole(k: int) -> dict[str, Any]:
        target = work / f"all-{k}"
        shutil.rmtree(target, ignore_errors=True)
        p, out = ours.json("restore", "restore", sid, str(target))
        return {**p.row(), "bytes_downloaded": out["bytes_downloaded"]}

    runs, full = paired(one, whole, repeat)
    read = max(r["bytes_downloaded"] for r in runs)
    return {"snapshot": sid, "collection": name, "collections": collections, "records_per_collection": per,
            "stored_total": sum(stored.values()), "stored_collection": share, "stored_sqlite": sqlite,
            "read": read, "allowed": 2 * share + sqlite, "read_over_allowed": read / (2 * share + sqlite),
            "read_over_full_restore": read / median(full, "bytes_downloaded"),
            "seconds_over_full_restore": median(runs) / median(full), "runs": runs, "full_restore": full}


# ------------------------------------------------------------------ (ii) and (iii)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def chroma_server(path: Path, log_file: Path) -> Iterator[int]:
    """``chroma run`` on a free localhost port until the block ends; its port."""
    port = free_port()
    with open(log_file, "ab") as out:
        proc = subprocess.Popen([str(Path(PY).parent / "chroma"), "run", "--path", str(path), "--host",
                                 "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2) as resp:
                if resp.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chroma run did not start; see {log_file}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fresh_copy(restored: Path, work: Path, name: str) -> Path:
    """A copy of the restored dir for one script run (chromadb writes to what it opens)."""
    copy = work / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(restored, copy)
    return copy


def into_server(work: Path, ours: Ours, sid: str, restored: Path, n: int, repeat: int) -> dict[str, Any]:
    with chroma_server(work / "server-db", work / "chroma-run.log") as port:
        def mine(k: int) -> dict[str, Any]:
            p, out = ours.json("restore into a server", "restore", sid, f"http://127.0.0.1:{port}",
                               "--collection", "docs", "--as", f"docs-ours-{k}")
            [copy] = out["copies"]
            if copy["records"] != n or copy["records_sent"] != n:
                raise RuntimeError(f"restore into the server copied {copy}")
            return {**p.row(), "sampled": copy["sampled"], "batch_size": copy["batch_size"]}

        def script(k: int) -> dict[str, Any]:
            src = fresh_copy(restored, work, "script-src")
            p = run([PY, "-c", COPY_SCRIPT, str(src), str(port), f"docs-plain-{k}"],
                    env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check("copy script")
            if int(p.stdout.split()[-1]) != n:
                raise RuntimeError(f"the copy script's collection holds {p.stdout.strip()} records, not {n}")
            shutil.rmtree(src)
            return p.row()

        runs, base = paired(mine, script, repeat)
    return {"records": n, "runs": runs, "script": base, "ratio": median(runs) / median(base)}


def export(work: Path, ours: Ours, sid: str, restored: Path, n: int, repeat: int) -> dict[str, Any]:
    def mine(k: int) -> dict[str, Any]:
        out_file = work / "export-ours.jsonl"
        p, out = ours.json("export", "export", sid, "--collection", "docs", str(out_file), "--force")
        with open(out_file, "rb") as fh:
            lines = sum(1 for _ in fh)
        if out["records"] != n or lines != n:
            raise RuntimeError(f"export wrote {lines} lines, reported {out['records']}, expected {n}")
        out_file.unlink()
        return {**p.row(), "bytes_written": out["bytes_written"], "bytes_downloaded": out["bytes_downloaded"]}

    def script(k: int) -> dict[str, Any]:
        src = fresh_copy(restored, work, "script-src")
        out_file = work / "export-plain.jsonl"
        p = run([PY, "-c", EXPORT_SCRIPT, str(src), str(out_file)],
                env=dict(os.environ, ANONYMIZED_TELEMETRY="False")).check("export script")
        if int(p.stdout.split()[-1]) != n:
            raise RuntimeError(f"the export script wrote {p.stdout.strip()} records, not {n}")
        size = out_file.stat().st_size
        out_file.unlink()
        shutil.rmtree(src)
        return {**p.row(), "bytes_written": size}

    runs, base = paired(mine, script, repeat)
    return {"records": n, "runs": runs, "script": base, "ratio": median(runs) / median(base),
            "peak_rss_mib": max(rss(r) for r in runs) / MIB}


# ------------------------------------------------------------------ report


def targets(report: dict[str, Any]) -> list[tuple[str, float, float, bool]]:
    rows = [("(i) read / (2 x share + chroma.sqlite3)", report["one_of_many"]["read_over_allowed"],
             TARGETS["read_over_allowed"]),
            ("(ii) into a server / plain copy script", report["into_server"]["ratio"],
             TARGETS["server_ratio"]),
            ("(iii) export / plain export script", report["export"]["ratio"], TARGETS["export_ratio"]),
            ("(iii) export peak RSS, MiB", report["export"]["peak_rss_mib"], TARGETS["export_rss_mib"])]
    return [(name, value, limit, value <= limit) for name, value, limit in rows]


def render(report: dict[str, Any]) -> list[str]:
    i, ii, iii = report["one_of_many"], report["into_server"], report["export"]
    out = [f"(i) {i['collection']} of {i['collections']} x {i['records_per_collection']}: stored "
           f"{i['stored_total'] / MIB:.2f} MiB, its segment folders {i['stored_collection'] / 1024:.1f} KiB, "
           f"chroma.sqlite3 {i['stored_sqlite'] / MIB:.2f} MiB; read {i['read'] / MIB:.2f} MiB "
           f"({i['read_over_full_restore']:.2f}x a full restore's read)"]
    for k, (a, b) in enumerate(zip(i["runs"], i["full_restore"], strict=True)):
        out.append(f"    run {k + 1}: one collection {a['seconds']:.2f} s {rss(a) / MIB:.0f} MiB, "
                   f"whole snapshot {b['seconds']:.2f} s {rss(b) / MIB:.0f} MiB")
    for label, part in (("(ii) into a server", ii), ("(iii) export to JSONL", iii)):
        out.append(f"{label}, {part['records']} records: ours {median(part['runs']):.2f} s, plain script "
                   f"{median(part['script']):.2f} s (medians): {part['ratio']:.2f}x")
        for k, (a, b) in enumerate(zip(part["runs"], part["script"], strict=True)):
            ratio = a["seconds"] / b["seconds"]
            out.append(f"    run {k + 1}: ours {a['seconds']:.2f} s {rss(a) / MIB:.0f} MiB, "
                       f"script {b['seconds']:.2f} s {rss(b) / MIB:.0f} MiB: {ratio:.2f}x")
    out.append("targets:")
    out += [f"    {name}: {value:.2f} (<= {limit}) {'met' if ok else 'MISSED'}"
            for name, value, limit, ok in report["targets"]]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collections", type=int, default=500)
    ap.add_argument("--records-per-collection", type=int, default=20)
    ap.add_argument("--records", type=int, default=222_222, help="records of the docs/notes DB (docs: 90%%)")
    ap.add_argument("--repeat", type=int, default=2, help="pairs of runs (ours, then the script)")
    ap.add_argument("--server-repeat", type=int,
                    help="pairs of runs of (ii) [--repeat]; each copies the whole docs collection twice")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache", help="where the datasets are kept")
    ap.add_argument("--json", type=Path, help="write the report here too")
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with work_dir(args.workdir, "bench-collections-") as work:
        report: dict[str, Any] = {"started_utc": started, "nproc": os.cpu_count(),
                                  "loadavg_start": os.getloadavg()}
        log("(i) one collection of many")
        report["one_of_many"] = one_of_many(work, args.cache_dir, args.collections,
                                            args.records_per_collection, args.repeat)
        db = dataset(args.cache_dir, f"records-{args.records}", "--records", str(args.records))
        n = split(args.records)["docs"]
        ours = Ours(work / "repo-records", work / "cache-records")
        sid = snapshot_of(db, work, ours)
        restored = work / "restored"
        shutil.rmtree(restored, ignore_errors=True)
        ours.json("restore", "restore", sid, str(restored))
        log(f"(ii) docs ({n} records) into a server")
        report["into_server"] = into_server(work, ours, sid, restored, n, args.server_repeat or args.repeat)
        log(f"(iii) export of docs ({n} records)")
        report["export"] = export(work, ours, sid, restored, n, args.repeat)
        report["targets"] = targets(report)
        report["loadavg_end"] = os.getloadavg()
    print("\n".join(render(report)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
