"""Which processes hold a persist dir's chroma.sqlite3 open (Linux: from /proc/*/fd).

Writing collections into a persist dir that a running Chroma (a ``chroma run`` server, an app's
PersistentClient) has open would let two Chroma processes keep their own caches of the same
files: each would overwrite the other's index files and bookkeeping. Such a directory is reached
through its server instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: chroma.sqlite3 and the files SQLite keeps beside it while a connection is open.
SQLITE_FILES = ("chroma.sqlite3", "chroma.sqlite3-wal", "chroma.sqlite3-journal", "chroma.sqlite3-shm")


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str


def holders(persist_dir: Path, proc: Path = Path("/proc"),
            exclude: frozenset[int] = frozenset()) -> list[Holder]:
    """The processes other than this one (and ``exclude``) with the DB's SQLite files open.
    Processes whose descriptors we may not read (another user's) are not seen; where there is
    no /proc the answer is empty."""
    wanted = {os.path.realpath(persist_dir / name) for name in SQLITE_FILES}
    skip = exclude | {os.getpid()}
    found: list[Holder] = []
    try:
        entries = [e for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return found
    for entry in entries:
        pid = int(entry.name)
        if pid in skip:
            continue
        try:
            fds = os.scandir(os.path.join(entry.path, "fd"))
        except OSError:
            continue  # gone, or not ours to look at
        with fds:
            for fd in fds:
                try:
                    link = os.readlink(fd.path)
                except OSError:
                    continue
                if link in wanted:
                    found.append(Holder(pid, _command(Path(entry.path))))
                    break
    return found


def _command(proc_pid: Path) -> str:
    """The program's name only (its arguments may hold secrets)."""
    try:
        return (proc_pid / "comm").read_text().strip() or "?"
    except OSError:
        return "?"
