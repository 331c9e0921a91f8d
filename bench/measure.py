"""Measuring child processes (wall time, peak RSS) and directories (bytes on disk, equality).

Peak RSS is taken two ways, both reported:

* ``peak_rss``: ``ru_maxrss`` from ``os.wait4`` on the child. Linux fills it with the larger of
  the child's own peak and the peaks of every descendant it reaped (RUSAGE_BOTH on the zombie),
  so it is "the biggest single process of the tree", not a sum.
* ``tree_rss``: the largest *sum* of VmRSS over the child and its live descendants, sampled
  every 50 ms from /proc. It counts a parent and the helper it waits for together (restore opens
  the result with chromadb in a child process), but can miss a spike shorter than a sample.

A budget on "the whole process" is checked against the larger of the two.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Proc:
    argv: tuple[str, ...]
    returncode: int
    seconds: float
    peak_rss: int
    tree_rss: int
    stdout: str
    stderr: str
    #: CPU time of the child (its threads; children it waited for included): user, system.
    user_seconds: float = 0.0
    system_seconds: float = 0.0

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def check(self, what: str) -> Proc:
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"{what} failed (exit {self.returncode}): {self.command}\n{tail}")
        return self

    def row(self) -> dict[str, float | int | str]:
        return {"seconds": round(self.seconds, 3), "peak_rss": self.peak_rss,
                "tree_rss": self.tree_rss, "user_seconds": round(self.user_seconds, 3),
                "system_seconds": round(self.system_seconds, 3), "command": self.command}


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        out.setdefault(int(fields[1]), []).append(int(name))
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreeSampler(threading.Thread):
    """Largest summed RSS of ``pid`` and its descendants seen while it runs."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop_event = threading.Event()
        self.enabled = os.path.isdir("/proc/self")

    def run(self) -> None:
        while self.enabled and not self._stop_event.is_set():
            children = _children_map()
            todo, total = [self.pid], 0
            while todo:
                p = todo.pop()
                total += _rss(p)
                todo.extend(children.get(p, ()))
            self.peak = max(self.peak, total)
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        shell: bool = False) -> Proc:
    """Run ``argv`` to completion with stdout/stderr captured; never raises on a non-zero exit.

    The child is reaped with ``os.wait4`` (not ``Popen.wait``) to get its resource usage.
    """
    os.sync()  # flush the previous step's writes so they are not billed to this one
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv) if not shell else argv[0], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=dict(env) if env else None,
                                cwd=cwd, shell=shell)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        tree = sampler.stop()
        out.seek(0)
        err.seek(0)
        return Proc(tuple(argv), proc.returncode, seconds, usage.ru_maxrss * 1024,
                    max(tree, 0), out.read().decode("utf-8", "replace"),
                    err.read().decode("utf-8", "replace"), usage.ru_utime, usage.ru_stime)


def dir_bytes(path: Path) -> int:
    """Apparent size of every regular file under ``path`` (``du -sb`` without the directories)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            total += st.st_size
    return total


def files_under(path: Path) -> dict[str, Path]:
    out = {}
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(path).as_posix()] = p
    return out


def _same(a: Path, b: Path, skip: int) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(skip)
        fb.seek(skip)
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


#: SQLite's 100-byte database header holds a change counter and the library version: a live
#: file and an online-backup copy of it differ there even when every page is the same.
SQLITE_HEADER = 100


def compare_trees(ours: Path, theirs: Path) -> dict[str, object]:
    """Which files of two restored trees are byte-identical (chroma.sqlite3 from byte 100 on)."""
    a, b = files_under(ours), files_under(theirs)
    identical, header_only, differ = [], [], []
    for rel in sorted(a.keys() & b.keys()):
        if _same(a[rel], b[rel], 0):
            identical.append(rel)
        elif rel.endswith("chroma.sqlite3") and _same(a[rel], b[rel], SQLITE_HEADER):
            header_only.append(rel)
        else:
            differ.append(rel)
    return {
        "files_compared": len(a.keys() & b.keys()),
        "identical": len(identical),
        "identical_after_sqlite_header": header_only,
        "differ": differ,
        "only_in_ours": sorted(a.keys() - b.keys()),
        "only_in_other": sorted(b.keys() - a.keys()),
        "match": not differ and a.keys() == b.keys(),
    }


@contextlib.contextmanager
def work_dir(given: Path | None, prefix: str, names: Sequence[str] = ()) -> Iterator[Path]:
    """A benchmark's work dir: ``given`` (kept afterwards; of what is in it, only ``names``,
    what the script itself puts there, is cleared first) or a temporary one removed at the end."""
    work = given.absolute() if given else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.rmtree(work / name, ignore_errors=True)
    try:
        yield work
    finally:
        if not given:
            shutil.rmtree(work, ignore_errors=True)
