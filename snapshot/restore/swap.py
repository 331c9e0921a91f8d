"""Atomic replacement of a restore target by a fully built sibling directory, recoverable
after kill -9 or a power cut; and the temporary directories a restore keeps beside its target.

Replacing an existing target is journalled. Before anything moves, ``.<name>.swap.json``
beside the target records (as names in that directory) the built dir, the target and where
the displaced data goes, plus the inode number of the new data (the built dir) and of the old
data (the target). Renames keep inode numbers, so whatever a kill leaves, :func:`recover`
reads the state off the disk: the new inode at the target means the swap happened (the old
data is removed); otherwise it did not (the old data is put back, the new data removed).
Both inodes stay alive until the journal is gone, so neither can be reused meanwhile.

Where the kernel and filesystem support it, the swap is one ``renameat2(RENAME_EXCHANGE)`` and
the target never disappears; elsewhere two renames leave it missing for a moment.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapshot.errors import TargetError, disk_full
from snapshot.util import pausepoints, tempdirs
from snapshot.util.fsync import fsync_path

JOURNAL_SUFFIX = ".swap.json"
_FORMAT = 1
#: Written inside the built dir first, so that a kill before the journal exists leaves it
#: in a directory that sweeping removes anyway.
_JOURNAL_TMP = ".chroma-snapshot.restore.swap-journal"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# What renameat2 reports when the kernel or the filesystem cannot exchange.
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


def _hook(step: str) -> None:
    pausepoints.point(f"swap.{step}")


#: Called at each step of a swap ("begin", "journal-written", "exchanged", "old-renamed",
#: "new-renamed", "synced", "journal-removed"). Tests replace it (raising fails the swap
#: there); the default lets CHROMA_SNAPSHOT_KILL_AT=swap.<step> kill the process there.
_pause_hook: Callable[[str], None] = _hook

# Journals of swaps running in this process: recover() must leave those alone, but may fix
# one this process left behind when a rollback failed.
_active: set[Path] = set()
_active_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange ``a`` and ``b`` (both must exist). False when the C library, the
    kernel or the filesystem cannot; any other failure raises OSError."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def journal_path(target: Path) -> Path:
    return target.parent / f".{target.name}{JOURNAL_SUFFIX}"


def temp_beside(target: Path, what: str) -> Path:
    """A fresh directory owned by this process beside ``target`` (same filesystem)."""
    return tempdirs.owned_dir(target.parent, f".{target.name}.{what}-")


@dataclass(frozen=True)
class _Journal:
    path: Path
    target: Path
    built: Path
    old: Path
    new_ino: int
    old_ino: int
    owner: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "target": self.target.name,
                "built": self.built.name,
                "old": self.old.name,
                "new_ino": self.new_ino,
                "old_ino": self.old_ino,
                "owner": self.owner,
            },
            sort_keys=True,
        )


def _ino(path: Path) -> int | None:
    """The inode number of directory ``path`` (not following a symlink), else None."""
    return os.lstat(path).st_ino if tempdirs.is_real_dir(path) else None


def _name(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or "/" in value or value in ("", ".", ".."):
        raise ValueError(f"bad {key!r}")
    return value


def _load(jpath: Path, target: Path) -> _Journal:
    try:
        fd = os.open(jpath, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read(1 << 16))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("unknown format")
        if _name(data, "target") != target.name:
            raise ValueError("it names another target")
        inos = [data.get("new_ino"), data.get("old_ino")]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in inos):
            raise ValueError("bad inode numbers")
        owner = data.get("owner")
        p = target.parent
        return _Journal(
            jpath, target, p / _name(data, "built"), p / _name(data, "old"),
            data["new_ino"], data["old_ino"], owner if isinstance(owner, dict) else {},
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        raise TargetError(
            f"{target}: cannot read the journal {jpath} of an interrupted restore ({exc}); check "
            f"{target} and the .{target.name}.old-* directories beside it, then remove the journal"
        ) from exc


def _busy(target: Path, jpath: Path) -> TargetError:
    return TargetError(
        f"{target}: another restore is swapping it in right now (journal {jpath}); "
        "wait for it to finish, or remove the journal if that process is gone"
    )


@contextlib.contextmanager
def _registered(jpath: Path) -> Iterator[None]:
    with _active_lock:
        _active.add(jpath)
    try:
        yield
    finally:
        with _active_lock:
            _active.discard(jpath)


def _raise_if_full(exc: BaseException, path: Path) -> None:
    full = disk_full(exc, path) if isinstance(exc, OSError) else None
    if full is not None:
        raise full from exc


def _write_journal(j: _Journal) -> None:
    """Make ``j`` durable at ``j.path``, or raise with no journal there (never replacing one)."""
    tmp = j.built / _JOURNAL_TMP
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(j.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, j.path)  # fails if a journal is there: two swaps must not mix
        except FileExistsError:
            raise _busy(j.target, j.path) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            if os.path.lexists(j.path):  # no hard links on this filesystem: check, then rename
                raise _busy(j.target, j.path) from None
            os.rename(tmp, j.path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_if_full(exc, j.path)
        raise
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # neither it nor the owner marker may end up in the target
        tempdirs.release(j.built)
        fsync_path(j.built)
        fsync_path(j.path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(j.path)
        _raise_if_full(exc, j.path)
        raise


def _move(j: _Journal) -> None:
    """Put the new data at the target and the old data at ``j.old``."""
    if exchange(j.built, j.target):
        _pause_hook("exchanged")
        os.rename(j.built, j.old)
        _pause_hook("old-renamed")
    else:
        os.rename(j.target, j.old)
        _pause_hook("old-renamed")
        os.rename(j.built, j.target)
        _pause_hook("new-renamed")


def _find(j: _Journal, ino: int) -> Path | None:
    return next((p for p in (j.built, j.old) if _ino(p) == ino), None)


def _undo(j: _Journal) -> None:
    """After a failed swap in this process: the old data back at the target, the new data at
    ``j.built``, no journal. If that fails too the journal stays for :func:`recover`."""
    try:
        held_old = _find(j, j.old_ino)
        if _ino(j.target) == j.new_ino and held_old is not None:
            if exchange(held_old, j.target):
                if held_old != j.built:
                    os.rename(held_old, j.built)
            else:
                os.rename(j.target, j.built)
                os.rename(held_old, j.target)
        elif not os.path.lexists(j.target) and held_old is not None:
            os.rename(held_old, j.target)
        if _ino(j.target) == j.old_ino:
            fsync_path(j.target.parent)
            os.unlink(j.path)
    except OSError:
        pass  # the caller's exception is the one to report; the journal tells recover()


def _commit(step: Callable[[], None], done: Callable[[], bool], on_commit: Callable[[], None]) -> None:
    """Take the step after which a swap stands, then call ``on_commit``. An interrupt that
    lands as the step returns, before ``on_commit`` has run, undoes nothing: it is not taken
    for a failure (``done`` says whether the step happened)."""
    try:
        step()
        on_commit()
    except KeyboardInterrupt:
        if not done():
            raise
        on_commit()


def swap_into_place(built: Path, target: Path, on_commit: Callable[[], None] = lambda: None) -> None:
    """Replace directory ``target`` by directory ``built``, its sibling (see :func:`temp_beside`).

    If it raises, the target holds its previous data and ``built`` the new data, for the caller
    to remove. Should even putting things back fail, the journal stays and :func:`recover`
    settles the target as wholly old or wholly new; removing ``built`` is still safe then.
    ``on_commit`` is called the moment the swap stands (what follows only tidies up): from
    then on the caller has succeeded, and the CLI no longer takes a signal for a failure."""
    built, target = Path(os.path.abspath(built)), Path(os.path.abspath(target))
    if built.parent != target.parent or built == target:
        raise ValueError(f"{built} must be a sibling of {target}")
    _pause_hook("begin")
    jpath = journal_path(target)
    if os.path.lexists(jpath):
        raise _busy(target, jpath)
    if not os.path.lexists(target):
        tempdirs.release(built)
        fsync_path(built)
        _commit(lambda: os.rename(built, target), lambda: not os.path.lexists(built), on_commit)
        fsync_path(target.parent)
        _pause_hook("new-renamed")
        return
    new_ino, old_ino = _ino(built), _ino(target)
    if old_ino is None:
        raise TargetError(f"{target} exists and is not a directory")
    if new_ino is None:
        raise ValueError(f"{built} is not a directory")
    old = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(6)}"
    j = _Journal(jpath, target, built, old, new_ino, old_ino, tempdirs.owner_record())
    with _registered(jpath):
        _write_journal(j)
        try:
            _pause_hook("journal-written")
            _move(j)
            fsync_path(target.parent)
            _pause_hook("synced")
        except BaseException:
            _undo(j)
            raise
        # the commit point: from here on the swap stands
        _commit(lambda: os.unlink(jpath), lambda: not os.path.lexists(jpath), on_commit)
    try:
        _pause_hook("journal-removed")
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _is_self(owner: dict[str, Any]) -> bool:
    me = tempdirs.owner_record()
    return all(owner.get(k) == me[k] for k in ("pid", "host", "start"))


def recover(target: Path) -> str | None:
    """Finish or roll back a swap into ``target`` that a killed process left half done.

    Returns what was done in one line, or None when there was nothing to do. Raises
    TargetError while a live process is swapping, or when the disk no longer matches the
    journal (then nothing is touched)."""
    target = Path(os.path.abspath(target))
    jpath = journal_path(target)
    if not os.path.lexists(jpath):
        return None
    with _active_lock:
        running = jpath in _active
    j = _load(jpath, target)
    if running or (tempdirs.record_alive(j.owner) and not _is_self(j.owner)):
        raise _busy(target, jpath)
    at_target = _ino(target)
    if at_target == j.new_ino:
        done = f"finished an interrupted restore: {target} holds the restored data"
        leftover = _find(j, j.old_ino)
    else:
        if at_target is None and not os.path.lexists(target):
            held_old = _find(j, j.old_ino)
            if held_old is not None:
                os.rename(held_old, target)
                fsync_path(target.parent)
        if _ino(target) != j.old_ino:
            raise TargetError(
                f"{target} changed since a restore into it was interrupted (journal {jpath}); "
                "check it and the directories beside it, then remove the journal"
            )
        done = f"rolled back an interrupted restore: {target} holds its previous data again"
        leftover = _find(j, j.new_ino)
    if leftover is not None:
        shutil.rmtree(leftover, ignore_errors=True)
    os.unlink(jpath)
    fsync_path(target.parent)
    return done


def journal_refs(target: Path) -> set[Path] | None:
    """The directories beside ``target`` an unfinished swap into it needs (none without a
    journal), or None when its journal cannot be read (then nothing there may be touched)."""
    jpath = journal_path(target)
    if not os.path.lexists(jpath):
        return set()
    try:
        j = _load(jpath, target)
    except TargetError:
        return None
    return {j.built, j.old}


def sweep_beside(target: Path) -> list[Path]:
    """Remove what killed restores left beside ``target``: ``.<name>.restore-*`` dirs whose
    owner is gone, and ``.<name>.old-*`` dirs no journal refers to (a swap that is not done
    always has its journal). Returns what was removed."""
    target = Path(os.path.abspath(target))
    parent, prefix = target.parent, f".{target.name}.old-"
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    # Read the journal after listing: an old dir seen above was made after its journal was
    # written, so if that swap is still unfinished its journal is seen here.
    refs = journal_refs(target)
    if refs is None:
        return []  # cannot tell what it protects: touch nothing
    removed = tempdirs.sweep(parent, f".{target.name}.restore-", keep=refs)
    for name in names:
        path = parent / name
        if tempdirs.name_pid(name, prefix) is None or path in refs or not tempdirs.is_real_dir(path):
            continue
        if tempdirs.remove_tree(path):
            removed.append(path)
    return removed
