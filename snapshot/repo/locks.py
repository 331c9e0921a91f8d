"""Repository locks: writers (create, copy, repack) share one, prune takes it exclusively.

A lock is a small JSON object ``locks/<32 hex>.json`` (:class:`LockInfo`) in the repository.

Acquiring (restic's protocol):

1. write our own lock object, create-only, under a fresh random id;
2. list ``locks/``: a *conflict* is any other non-stale lock when we want the exclusive lock,
   or any other non-stale exclusive lock when we want a shared one. An unreadable lock object
   (bad JSON, a missing or mistyped field, a key that is not a lock key) counts as exclusive;
3. no conflict: we hold the lock. Otherwise delete our object again, then sleep with jittered
   backoff and go back to 1 while ``wait`` lasts, or raise :class:`LockedError` naming the holder.

Every locker writes before it lists, and the listing is strongly consistent (S3's is, and a
local folder's), so of two lockers that conflict the later writer lists after the earlier write
and sees it: both cannot proceed. Both may see each other and both back off; the jitter
separates them on the next try.

Staleness, one rule for every lock: a lock is stale when its object's mtime *as listed by the
store* is more than ``stale_after`` (:data:`STALE_AFTER`) before our clock, or when it names
this host and its pid is not running. "This host" means the same host name *and* the same
process space (pid namespace and boot, recorded in the lock as ``space``): two containers or
machines with one host name cannot see each other's pids, so a lock of another space (or one
written without ``space``) is never judged dead by its pid, only stale by age. Each refresh
rewrites the object, so the mtime is the
time of the last refresh, stamped by one clock (the store's) for every host: only the skew
between the judging host and the store matters (S3 refuses requests signed more than 15
minutes off), never the skew between two lockers' hosts. The ``refreshed`` field inside the
object is for people (``list``/``unlock`` output) and is not trusted. A reused pid only makes
a dead lock look alive until it is stale by age. Locks are an optimisation: deletion stays safe
when one stops excluding (snapshot/format/condemned.py), and prune re-checks its own before each step
that deletes.

Holding: a daemon thread rewrites our object every ``refresh_every`` (:data:`REFRESH_EVERY`).
The lock is *lost* when a refresh finds our object gone (someone ran ``unlock --remove-all``)
or when more than ``stale_after - refresh_every`` passed since the last successful write (a
suspended process, a store outage: another process may have judged it stale meanwhile). A
failed write alone is recorded and retried on the next tick. :meth:`RepositoryLock.check`
refreshes synchronously and raises :class:`LockedError` unless that write succeeded and the
lock is not lost; writers call it right before committing their manifest.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import Any

from snapshot.errors import IntegrityError, LockedError, NotFoundError, SnapshotError, StorageError
from snapshot.format import layout
from snapshot.storage.base import ObjectInfo, ObjectKind, Store
from snapshot.util import pausepoints

SHARED = "shared"
EXCLUSIVE = "exclusive"
KINDS = (SHARED, EXCLUSIVE)

#: Seconds after its last write (store clock) that a lock is stale: its holder stopped
#: refreshing it (crashed, was killed, lost its host). 30 minutes, as in restic.
STALE_AFTER = 30 * 60.0
#: Seconds between two refreshes of a held lock; far inside STALE_AFTER so that a few failed
#: refreshes in a row do not let a live lock look stale.
REFRESH_EVERY = 5 * 60.0

#: Retry delays while waiting for a lock: doubling from the first up to the cap, each drawn
#: from [delay/2, delay] so that two lockers that saw each other do not retry in step.
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class LockInfo:
    """The content of one lock object. Times are seconds since the epoch (holder's clock)."""

    id: str
    kind: str
    host: str
    pid: int
    command: str
    created: float
    refreshed: float
    #: The holder's process space (pid namespace and boot id); "" when written without one.
    space: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> LockInfo:
        """Parse a lock object; every field must be present with its type (unknown fields
        are ignored, for newer writers). Raises :class:`IntegrityError` saying what is wrong."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise IntegrityError(f"lock object is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise IntegrityError("lock object is not a JSON object")
        info = cls(
            id=_field(raw, "id", *_TEXT),
            kind=_field(raw, "kind", *_TEXT),
            host=_field(raw, "host", *_TEXT),
            pid=_field(raw, "pid", *_PID),
            command=_field(raw, "command", *_TEXT),
            created=float(_field(raw, "created", *_TIME)),
            refreshed=float(_field(raw, "refreshed", *_TIME)),
            space=raw["space"] if isinstance(raw.get("space"), str) else "",
        )
        if info.kind not in KINDS:
            raise IntegrityError(f"lock kind {info.kind!r} is not one of {', '.join(KINDS)}")
        try:
            layout.lock_key(info.id)
        except ValueError as exc:
            raise IntegrityError(f"lock id {info.id!r} is not 32 hex digits") from exc
        return info

    def describe(self) -> str:
        return f"{self.command} ({self.kind}) on {self.host} pid {self.pid}"


def _field(raw: dict[str, Any], name: str, valid: Callable[[Any], bool], what: str) -> Any:
    if name not in raw:
        raise IntegrityError(f"lock object has no {name!r}")
    value = raw[name]
    if isinstance(value, bool) or not valid(value):  # a bool is an int to Python, never to us
        raise IntegrityError(f"lock field {name!r} is not {what}: {value!r}")
    return value


_TEXT = (lambda v: isinstance(v, str) and v != "", "a non-empty string")
_PID = (lambda v: isinstance(v, int) and v > 0, "a positive integer")
_TIME = (lambda v: isinstance(v, (int, float)) and math.isfinite(v), "a time in seconds")


def format_age(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h04m``, ``3d02h``; negative ages (clock skew) show as ``0s``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _pid_running(pid: int) -> bool:
    """Whether ``pid`` runs on this host; True whenever that cannot be told."""
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it runs, as another user
    return True


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


def process_space() -> str:
    """Where this process's pid means something: its pid namespace and this boot (Linux), or
    the host itself where there are no pid namespaces. "" when it cannot be told."""
    if os.name == "nt":
        return ""
    if not os.path.exists("/proc/self/ns/pid"):
        return "host" if os.uname().sysname != "Linux" else ""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    return f"{ns}/{boot}" if boot else ""


def _dead(info: LockInfo, host: str, space: str) -> bool:
    """Held by a process of this host and process space that no longer runs."""
    return info.host == host and space != "" and info.space == space and not _pid_running(info.pid)


@dataclass(frozen=True)
class _Seen:
    """One object under ``locks/`` as a locker judged it. ``info`` is None when unreadable
    (``problem`` says why) or when it was stale by age and not read."""

    obj: ObjectInfo
    info: LockInfo | None
    problem: str | None
    stale: bool
    #: Held by a process of this host that no longer runs: certainly gone.
    dead: bool = False


def _read(store: Store, obj: ObjectInfo) -> tuple[LockInfo | None, str | None] | None:
    """(info, None), (None, what is wrong), or None when the object vanished meanwhile."""
    lock_id = layout.lock_id_from_key(obj.key)
    if lock_id is None:
        return None, "not a lock key"
    try:
        data = store.get(obj.key)
    except NotFoundError:
        return None
    try:
        info = LockInfo.from_json(data)
    except IntegrityError as exc:
        return None, str(exc)
    if info.id != lock_id:
        return None, f"lock id {info.id} does not match its key"
    return info, None


def _survey(
    store: Store, *, now: float, stale_after: float, skip: str | None = None, read_stale: bool = True
) -> list[_Seen]:
    """Every lock object but ``skip``, judged stale or not (module docstring)."""
    host, space = socket.gethostname(), process_space()
    seen: list[_Seen] = []
    for obj in list(store.list(layout.LOCKS_PREFIX)):
        if obj.key == skip or obj.key.endswith("/"):  # "locks/" folder markers from S3 consoles
            continue
        aged = now - obj.mtime > stale_after
        if aged and not read_stale:
            seen.append(_Seen(obj, None, None, stale=True))
            continue
        found = _read(store, obj)
        if found is None:
            continue
        info, problem = found
        dead = info is not None and _dead(info, host, space)
        seen.append(_Seen(obj, info, problem, stale=aged or dead, dead=dead))
    return seen


def _conflicts(kind: str, other: LockInfo | None) -> bool:
    return kind == EXCLUSIVE or other is None or other.kind == EXCLUSIVE


def _try_lock(store: Store, info: LockInfo, *, clock: Clock, stale_after: float) -> list[_Seen]:
    """Write our lock object, then list the others: [] means we hold the lock; otherwise our
    object is deleted again and the conflicting locks are returned."""
    key = layout.lock_key(info.id)
    store.put(key, info.to_json(), kind=ObjectKind.LOCK, create_only=True)
    try:
        seen = _survey(store, now=clock(), stale_after=stale_after, skip=key, read_stale=False)
        conflicts = [s for s in seen if not s.stale and _conflicts(info.kind, s.info)]
    except BaseException:
        with contextlib.suppress(SnapshotError):  # the error on its way out matters more
            store.delete(key)
        raise
    if conflicts:
        store.delete(key)
    for s in seen:  # a killed process of this host left it: nobody will ever release it
        if s.dead:
            with contextlib.suppress(SnapshotError):
                store.delete(s.obj.key)
    return conflicts


def _locked_message(conflicts: list[_Seen], now: float, waited: float) -> str:
    first = conflicts[0]
    if first.info is not None:
        who = first.info.describe()
    else:
        who = f"an unreadable lock object {first.obj.key} ({first.problem})"
    more = f" and {len(conflicts) - 1} other lock(s)" if len(conflicts) > 1 else ""
    after = f" (waited {format_age(waited)})" if waited > 0 else ""
    return (
        f"repository is locked by {who}, refreshed {format_age(now - first.obj.mtime)} ago"
        f"{more}{after}; wait, use --wait DURATION, or `chroma-snapshot unlock` if that process is gone"
    )


def acquire(
    store: Store,
    kind: str,
    command: str,
    *,
    wait: float = 0.0,
    stale_after: float = STALE_AFTER,
    refresh_every: float = REFRESH_EVERY,
    clock: Clock = time.time,
    sleep: Sleep = time.sleep,
) -> RepositoryLock:
    """Take a ``kind`` lock (:data:`SHARED` or :data:`EXCLUSIVE`) for ``command``, retrying
    for up to ``wait`` seconds; raises :class:`LockedError` naming a holder when that runs out.

    The lock is refreshed by a daemon thread until :meth:`RepositoryLock.release` (or the end
    of a ``with`` block). ``clock`` and ``sleep`` are injected by tests.
    """
    if kind not in KINDS:
        raise ValueError(f"lock kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not 0 < refresh_every < stale_after:
        raise ValueError(f"need 0 < refresh_every ({refresh_every}) < stale_after ({stale_after})")
    deadline = clock() + max(wait, 0.0)
    host, pid, space = socket.gethostname(), os.getpid(), process_space()
    attempt = 0
    while True:
        now = clock()
        info = LockInfo(secrets.token_hex(16), kind, host, pid, command, now, now, space)
        conflicts = _try_lock(store, info, clock=clock, stale_after=stale_after)
        if not conflicts:
            lock = RepositoryLock(
                store, info, stale_after=stale_after, refresh_every=refresh_every, clock=clock
            )
            lock._start()
            return lock
        remaining = deadline - clock()
        if remaining <= 0:
            raise LockedError(_locked_message(conflicts, clock(), max(wait, 0.0)))
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**attempt)
        pausepoints.point("lock.waiting")
        sleep(min(remaining, random.uniform(delay / 2, delay)))
        attempt += 1


class RepositoryLock:
    """A held repository lock (made by :func:`acquire`); a context manager that releases it.

    ``refresh_now()`` is what the refresh thread does each tick, callable directly (tests
    use it to refresh deterministically); ``check()`` refreshes now and raises
    :class:`LockedError` if the lock is lost or that refresh failed.
    """

    def __init__(
        self, store: Store, info: LockInfo, *, stale_after: float, refresh_every: float, clock: Clock
    ) -> None:
        self.id, self.key, self.kind = info.id, layout.lock_key(info.id), info.kind
        self._store = store
        self._info = info
        self._stale_after = stale_after
        self._refresh_every = refresh_every
        self._clock = clock
        self._last_ok = info.refreshed  # taken before the write: never later than the mtime
        self._lost: str | None = None
        self._error: str | None = None
        self._released = False
        self._mutex = threading.Lock()  # one refresh or release at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def info(self) -> LockInfo:
        """What our lock object holds now (``refreshed`` moves with each refresh)."""
        return self._info

    @property
    def held(self) -> bool:
        """Not released and not known to be lost (a pending refresh failure aside)."""
        return not self._released and self._lost is None

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._refresh_loop, name=f"chroma-snapshot-lock-{self.id[:8]}", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_every):  # an Event, so release() wakes it at once
            try:
                self.refresh_now()
            except Exception as exc:  # noqa: BLE001  (a thread must not die printing a traceback)
                self._error = f"refresh thread failed: {exc!r}"
                return
            if self._lost is not None:
                return

    def refresh_now(self) -> None:
        """Rewrite our lock object now. Records a lost lock or a failed write; raises nothing
        for store failures (:meth:`check` reports them)."""
        with self._mutex:
            if self._released or self._lost is not None:
                return
            started = self._clock()
            gap = started - self._last_ok
            if gap > self._stale_after - self._refresh_every:
                self._lost = (
                    f"it was not refreshed for {format_age(gap)}, so another process may have "
                    f"judged it stale (after {format_age(self._stale_after)})"
                )
                return
            info = replace(self._info, refreshed=started)
            try:
                if not self._store.exists(self.key):
                    self._lost = f"its object {self.key} was removed (by `chroma-snapshot unlock`?)"
                    return
                self._store.put(self.key, info.to_json(), kind=ObjectKind.LOCK)
            except SnapshotError as exc:
                self._error = str(exc)
                return
            self._info, self._last_ok, self._error = info, started, None

    def _confirm(self) -> None:
        """Our object is still there (one existence check). A lock written less than one
        refresh interval ago cannot have been judged stale, so it needs no rewrite: a short
        create then costs one lock PUT, not two."""
        with self._mutex:
            if self._released or self._lost is not None:
                return
            if self._clock() - self._last_ok >= self._refresh_every:
                fresh = False
            else:
                fresh = True
                try:
                    if not self._store.exists(self.key):
                        self._lost = f"its object {self.key} was removed (by `chroma-snapshot unlock`?)"
                except SnapshotError as exc:
                    self._error = str(exc)
        if not fresh:
            self.refresh_now()

    def check(self) -> None:
        """Raise :class:`LockedError` unless the lock is still ours: its object is there, and
        it was written within the refresh interval (else it is rewritten now)."""
        self._confirm()
        with self._mutex:
            released, lost, error = self._released, self._lost, self._error
        what = f"lost the repository lock ({self._info.describe()})"
        if released:
            raise LockedError(f"{what}: it was already released")
        if lost is not None:
            raise LockedError(f"{what}: {lost}; run the command again")
        if error is not None:  # the store failed, not the protocol: a storage error (exit 5)
            raise StorageError(f"could not confirm the repository lock ({self._info.describe()}): {error}")

    def release(self) -> None:
        """Stop refreshing and delete our lock object. Idempotent, and fine after a loss."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._mutex:
            if self._released:
                return
            self._store.delete(self.key)
            self._released = True

    def __enter__(self) -> RepositoryLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.release()
            return
        # An error is already on its way out: failing to delete our object must not hide it
        # (the object goes stale on its own, at once for `unlock` on this host: our pid ends).
        with contextlib.suppress(SnapshotError):
            self.release()


def list_locks(
    store: Store, *, clock: Clock = time.time, stale_after: float = STALE_AFTER
) -> list[tuple[LockInfo | None, ObjectInfo, bool]]:
    """Every object under ``locks/`` in key order: (its LockInfo, or None when unreadable;
    the listed object; whether it is stale)."""
    seen = _survey(store, now=clock(), stale_after=stale_after)
    return [(s.info, s.obj, s.stale) for s in seen]


def remove_stale_locks(
    store: Store, *, all_locks: bool = False, clock: Clock = time.time, stale_after: float = STALE_AFTER
) -> list[str]:
    """Delete stale lock objects (every lock object with ``all_locks``, also those of live
    processes: they find out at their next refresh). Returns the keys removed."""
    if all_locks:
        keys = [o.key for o in store.list(layout.LOCKS_PREFIX) if not o.key.endswith("/")]
    else:
        seen = _survey(store, now=clock(), stale_after=stale_after, read_stale=False)
        keys = [s.obj.key for s in seen if s.stale]
    for key in keys:
        store.delete(key)
    return keys
