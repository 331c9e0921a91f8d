"""Where chroma-snapshot's create and restore spend their time, for the findings in RESULTS.md.

    python bench/profile_ops.py SRC --workdir DIR [--top 20]

SRC is a Chroma persist dir (e.g. bench/.cache/db-200000/vector_db; it is only read). Runs, in
this process, a full create into DIR/repo (base cache in DIR/cache) and two restores of it into
DIR/restore (default, then --chroma-check) under cProfile (main thread only: the zstd worker
threads are invisible to it, so the CPU time of the process is printed too), with each phase
timed through the library's reporter; then times the building blocks one by one on the same
files: copying them, xxh3-128, zstd level 3 per 1 MiB chunk on one thread, and the import of
chromadb that `restore --chroma-check` pays in each child process.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snapshot import Repository, create_snapshot, restore_snapshot  # noqa: E402

CHUNK = 1 << 20


class PhaseTimer:
    """A Reporter that remembers when each phase started (the library's progress hook)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: list[tuple[str, float]] = []

    def phase(self, name: str, total: int) -> None:
        self.marks.append((name, time.perf_counter() - self.t0))

    def advance(self, amount: int) -> None:
        pass

    def warn(self, message: str) -> None:
        print(f"  warning: {message}")

    def done(self) -> None:
        self.marks.append(("done", time.perf_counter() - self.t0))


def _profiled(label: str, fn, top: int):  # type: ignore[no-untyped-def]
    timer = PhaseTimer()
    cpu0, t0 = os.times(), time.perf_counter()
    prof = cProfile.Profile()
    try:
        result = prof.runcall(fn, timer)
    except Exception as exc:  # noqa: BLE001 - a failing operation is still worth its profile
        result = exc
        print(f"\n!! {label} raised {type(exc).__name__}: {exc}")
    wall, cpu1 = time.perf_counter() - t0, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(f"\n== {label}: wall {wall:.2f} s, CPU of this process {cpu:.2f} s (all threads; "
          f"children excluded)")
    print("   phases (start offsets): " + ", ".join(f"{n} @{t:.2f}s" for n, t in timer.marks))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if "ncalls" in ln)
    print("\n".join(lines[start:start + top + 1]))
    return result


def _files(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file())


def building_blocks(src: Path, work: Path) -> None:
    import xxhash
    import zstandard

    files = _files(src)
    total = sum(p.stat().st_size for p in files)
    print(f"\n== building blocks over {total / (1 << 20):,.1f} MiB in {len(files)} files (one thread each)")
    t = time.perf_counter()
    for p in files:
        with open(p, "rb") as fh:
            while fh.read(CHUNK):
                pass
    print(f"   read (page cache):            {time.perf_counter() - t:6.2f} s")
    dst = work / "copy"
    shutil.rmtree(dst, ignore_errors=True)
    t = time.perf_counter()
    for p in files:
        q = dst / p.relative_to(src)
        q.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, q)
    os.sync()
    print(f"   copy to staging + sync:       {time.perf_counter() - t:6.2f} s")
    shutil.rmtree(dst, ignore_errors=True)
    t = time.perf_counter()
    n = 0
    for p in files:
        with open(p, "rb") as fh:
            while data := fh.read(CHUNK):
                xxhash.xxh3_128(data).digest()
                n += 1
    print(f"   read + xxh3-128:              {time.perf_counter() - t:6.2f} s ({n} chunks)")
    cctx = zstandard.ZstdCompressor(level=3)
    t = time.perf_counter()
    out = 0
    for p in files:
        with open(p, "rb") as fh:
            while data := fh.read(CHUNK):
                out += len(cctx.compress(data))
    print(f"   read + zstd-3 per chunk:      {time.perf_counter() - t:6.2f} s -> {out / (1 << 20):,.1f} MiB")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import chromadb"], check=True)
    print(f"   python -c 'import chromadb':  {time.perf_counter() - t:6.2f} s "
          "(--chroma-check pays it per batch)")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snapshot", "--version"], check=True, cwd=ROOT,
                   capture_output=True)
    print(f"   python -m snapshot --version: {time.perf_counter() - t:6.2f} s (CLI start-up)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    work = args.workdir.absolute()
    for name in ("repo", "restore", "cache"):
        shutil.rmtree(work / name, ignore_errors=True)
    os.environ["CHROMA_SNAPSHOT_CACHE"] = str(work / "cache")  # not ~/.cache
    repo = Repository.open(work / "repo", create=True)
    _profiled("create (full)", lambda r: create_snapshot(repo, args.src, reporter=r), args.top)
    _profiled("restore (default: hashes + consistency checks)",
              lambda r: restore_snapshot(repo, "latest", work / "restore" / "default", reporter=r), args.top)
    _profiled("restore --chroma-check",
              lambda r: restore_snapshot(repo, "latest", work / "restore" / "vector_db", chroma_check=True,
                                         reporter=r), args.top)
    building_blocks(args.src, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
