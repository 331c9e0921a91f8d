"""Temporary directories owned by one process, and sweeping of those whose owner is gone.

A directory made by :func:`owned_dir` is named ``<prefix><pid>-<hex>`` and holds an owner
marker (:data:`MARKER`): pid, hostname, the process's start time and the boot id. Together
they tell a later run whether the owner is still alive even after the pid was reused or the
machine rebooted, so that :func:`sweep` removes what a killed run left behind and nothing a
running one still uses. The marker may also say what the directory is for (``purpose``), so
that a later run can :func:`claim` a dead owner's directory and carry on with its work.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from snapshot.errors import disk_full

#: Prefix of the scratch directories create and diff make in the system temp dir.
TEMP_PREFIX = "chroma-snapshot-"
#: The owner marker inside an owned directory. Not ``.owner``: a snapshot's own files must
#: never collide with it.
MARKER = ".chroma-snapshot.owner"
#: A directory without a readable marker counts as abandoned once it is this old (seconds):
#: a kill can land between the mkdir and the marker write, and nothing else tells us more.
UNMARKED_GRACE = 600.0

_SUFFIX = re.compile(r"(\d+)-[0-9a-f]+")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except (OSError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    text = _read("/proc/sys/kernel/random/boot_id")
    if text is None or not text.strip():
        return None
    return text.strip()


def owner_record(pid: int | None = None) -> dict[str, Any]:
    """What identifies process ``pid`` (default: this one) across pid reuse and reboots."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": socket.gethostname(), "start": process_start(pid), "boot": boot_id()}


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours to signal
    except OSError:
        return True  # unknown: keep its files
    return True


def record_alive(record: Mapping[str, Any]) -> bool:
    """Whether the process an :func:`owner_record` describes may still be running.

    Only a same-host record can be judged; anything unclear counts as alive (keeping a stale
    directory costs disk space, removing a live one breaks a running restore)."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(host, str):
        return True
    if host != socket.gethostname():
        return True
    boot = boot_id()
    if record.get("boot") and boot and record["boot"] != boot:
        return False  # the machine rebooted since: every process of that boot is gone
    if not _pid_exists(pid):
        return False
    start = record.get("start")
    now = process_start(pid)
    return not (isinstance(start, int) and now is not None and now != start)


def read_marker(path: Path) -> dict[str, Any] | None:
    """The owner record inside directory ``path``, or None when missing or unreadable."""
    try:
        fd = os.open(path / MARKER, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read(4096))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("pid"), int) and isinstance(data.get("host"), str):
        return data
    return None  # not a marker we wrote: judge the directory by its age instead


def owner_alive(path: Path) -> bool:
    """Whether the process owning directory ``path`` may still be using it."""
    record = read_marker(path)
    if record is not None:
        return record_alive(record)
    try:
        age = time.time() - os.lstat(path).st_mtime
    except OSError:
        return False  # vanished
    return age < UNMARKED_GRACE


def _mark(purpose: Mapping[str, Any] | None) -> dict[str, Any]:
    record = owner_record()
    if purpose is not None:
        record["purpose"] = dict(purpose)
    return record


def owned_dir(parent: Path, prefix: str, purpose: Mapping[str, Any] | None = None) -> Path:
    """A new directory ``parent/<prefix><pid>-<hex>`` (mode 0700) marked as ours; ``purpose``
    (JSON) is kept in the marker for :func:`purpose_of`."""
    path = parent / f"{prefix}{os.getpid()}-{secrets.token_hex(6)}"
    try:
        path.mkdir(mode=0o700)
    except OSError as exc:
        full = disk_full(exc, parent)
        if full is not None:
            raise full from exc
        raise
    try:
        fd = os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(_mark(purpose), fh)
    except BaseException as exc:
        shutil.rmtree(path, ignore_errors=True)
        full = disk_full(exc, path) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from exc
        raise
    return path


def purpose_of(path: Path) -> dict[str, Any] | None:
    """What the marker of directory ``path`` says it is for, or None."""
    record = read_marker(path)
    purpose = record.get("purpose") if record is not None else None
    return purpose if isinstance(purpose, dict) else None


def claim(path: Path, prefix: str) -> Path | None:
    """Take over directory ``path``, named ``<prefix><pid>-<hex>``, whose owner is gone (the
    caller checked): it is renamed to a name of this process, so that of two processes
    claiming it one wins, and then marked as ours with the same purpose. Returns the new path,
    or None when it vanished or another process took it first. (Between the rename and the new
    marker a sweep by another process may still remove it: the work in it is then lost, never
    mixed up.)"""
    purpose = purpose_of(path)
    new = path.parent / f"{prefix}{os.getpid()}-{secrets.token_hex(6)}"
    try:
        os.rename(path, new)
    except OSError:
        return None
    tmp = new / f"{MARKER}.{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(_mark(purpose), fh)
        os.replace(tmp, new / MARKER)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return new


def release(path: Path) -> None:
    """Drop the owner marker: ``path`` is about to become permanent (e.g. a restore target)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / MARKER)


def name_pid(name: str, prefix: str) -> int | None:
    """The pid in ``<prefix><pid>-<hex>``, or None when ``name`` is not such a name."""
    if not name.startswith(prefix):
        return None
    m = _SUFFIX.fullmatch(name[len(prefix) :])
    return int(m.group(1)) if m else None


def is_real_dir(path: Path) -> bool:
    """A directory and not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def sweep(parent: Path, prefix: str, *, keep: Collection[Path] = ()) -> list[Path]:
    """Remove every ``parent/<prefix><pid>-<hex>`` directory whose owner is gone; return them.

    Only names :func:`owned_dir` makes are considered (a user's ``chroma-snapshot-data`` in
    /tmp is not ours), symlinks and files are never touched, nor is anything of this process
    or listed in ``keep``."""
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    kept = {os.path.abspath(p) for p in keep}
    removed = []
    for name in names:
        pid = name_pid(name, prefix)
        path = parent / name
        if pid is None or pid == os.getpid() or os.path.abspath(path) in kept:
            continue
        if not is_real_dir(path) or owner_alive(path):
            continue
        if remove_tree(path):
            removed.append(path)
    return removed


def remove_tree(path: Path) -> bool:
    """Best-effort removal of a stale directory; True if this call removed it."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        shutil.rmtree(path, ignore_errors=True)  # another sweep is at it: it reports it
        return False
    except OSError:
        return False  # what cannot go now stays for a later sweep
    return True
