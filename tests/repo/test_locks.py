"""Repository locks (snapshot.repo.locks), on a local folder and on S3 (a real moto server).

Time is injected: a clock the test moves and a sleep that records (or acts) instead of
sleeping. The one real-concurrency test shrinks the backoff to milliseconds.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_fixtures import *  # noqa: F403  (conftest.py imports it too; this lets the module run alone)
from s3_fixtures import s3_options

from snapshot.errors import IntegrityError, LockedError, StorageError
from snapshot.format import layout
from snapshot.repo.locks import (
    EXCLUSIVE,
    REFRESH_EVERY,
    SHARED,
    STALE_AFTER,
    LockInfo,
    RepositoryLock,
    acquire,
    format_age,
    list_locks,
    process_space,
    remove_stale_locks,
)
from snapshot.storage import Capabilities, LocalStore, ObjectInfo, ObjectKind, Store, open_store

HOST = socket.gethostname()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "repo")
    url = request.getfixturevalue("s3_repo_url")
    return open_store(url, s3_options(request.getfixturevalue("s3_endpoint")))


@pytest.fixture
def held() -> Iterator[list[RepositoryLock]]:
    """Locks a test took; released at the end so no refresh thread outlives the test."""
    locks: list[RepositoryLock] = []
    yield locks
    for lock in locks:
        lock.release()


class Clock:
    """A clock the test moves by hand, starting at the real time (the store's mtimes are real)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def later() -> float:
    """A clock past the stale time of every lock written during the test."""
    return time.time() + STALE_AFTER + 60


def lock_keys(store: Store) -> list[str]:
    return [o.key for o in store.list(layout.LOCKS_PREFIX)]


def plant(
    store: Store, *, kind: str = EXCLUSIVE, host: str = "elsewhere", pid: int = 4242, command: str = "prune",
    space: str | None = None,
) -> LockInfo:
    """A lock object as another process would have left it (no refresh thread behind it); by
    default from this process space, as a process of this machine writes it."""
    t = time.time()
    info = LockInfo(secrets.token_hex(16), kind, host, pid, command, t, t,
                    process_space() if space is None else space)
    store.put(layout.lock_key(info.id), info.to_json(), kind=ObjectKind.LOCK, create_only=True)
    return info


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: no zombie keeps the pid alive
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return proc.pid
    pytest.skip(f"pid {proc.pid} was reused at once")


class FlakyStore:
    """A store that fails plain puts or deletes on demand and signals each refresh write."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.stats = inner.stats
        self.fail_puts = False
        self.fail_deletes = False
        self.refreshed = threading.Event()

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def now(self) -> float:
        return self.inner.now()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(key, offset, length)

    def put(self, key: str, data: bytes, *, kind: ObjectKind, create_only: bool = False) -> None:
        if self.fail_puts and not create_only:
            raise StorageError(f"writing {key} to {self.url}: injected failure")
        self.inner.put(key, data, kind=kind, create_only=create_only)
        if not create_only:
            self.refreshed.set()

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        if self.fail_deletes:
            raise StorageError(f"deleting {key} from {self.url}: injected failure")
        self.inner.delete(key)


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds}s although no wait was asked for")


# -- compatibility ----------------------------------------------------------------------------


def test_shared_locks_coexist(store: Store, held: list[RepositoryLock]) -> None:
    a = acquire(store, SHARED, "create", sleep=no_sleep)
    held.append(a)
    b = acquire(store, SHARED, "copy", sleep=no_sleep)
    held.append(b)
    assert a.held and b.held and a.id != b.id
    assert sorted(lock_keys(store)) == sorted([a.key, b.key])
    a.check()
    b.check()
    a.release()
    b.release()
    assert lock_keys(store) == []


@pytest.mark.parametrize(
    ("holder_kind", "holder_cmd", "kind"),
    [(EXCLUSIVE, "prune", SHARED), (SHARED, "create", EXCLUSIVE), (EXCLUSIVE, "forget", EXCLUSIVE)],
)
def test_conflicting_lock_is_refused_naming_the_holder(
    store: Store, held: list[RepositoryLock], holder_kind: str, holder_cmd: str, kind: str
) -> None:
    holder = acquire(store, holder_kind, holder_cmd)
    held.append(holder)
    with pytest.raises(LockedError) as caught:
        acquire(store, kind, "other", sleep=no_sleep)
    msg = str(caught.value)
    assert f"repository is locked by {holder_cmd} ({holder_kind}) on {HOST} pid {os.getpid()}" in msg
    assert re.search(r"refreshed \d+s ago", msg), msg
    assert "--wait DURATION" in msg and "`chroma-snapshot unlock`" in msg
    assert caught.value.exit_code == 9
    assert lock_keys(store) == [holder.key]  # the refused locker removed its own object
    holder.check()


def test_message_counts_further_conflicts(store: Store) -> None:
    plant(store, kind=SHARED, command="create")
    plant(store, kind=SHARED, command="create")
    with pytest.raises(LockedError, match=r"create \(shared\) on elsewhere pid 4242.* and 1 other lock"):
        acquire(store, EXCLUSIVE, "prune", sleep=no_sleep)
    assert len(lock_keys(store)) == 2


def test_lock_written_between_our_write_and_list_makes_us_back_off(tmp_path: Path) -> None:
    """Write-then-list: a rival that wrote before our listing is seen, and we withdraw."""
    inner = LocalStore(tmp_path / "repo")
    rival: list[LockInfo] = []

    class RacingStore(FlakyStore):
        def list(self, prefix: str) -> Iterator[ObjectInfo]:
            if not rival:
                rival.append(plant(self.inner, host=HOST, pid=os.getpid(), command="prune"))
            return self.inner.list(prefix)

    with pytest.raises(LockedError, match="prune"):
        acquire(RacingStore(inner), EXCLUSIVE, "prune", sleep=no_sleep)
    assert lock_keys(inner) == [layout.lock_key(rival[0].id)]


# -- waiting ----------------------------------------------------------------------------------


def test_wait_succeeds_once_the_holder_releases(store: Store, held: list[RepositoryLock]) -> None:
    holder = acquire(store, EXCLUSIVE, "prune")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        holder.release()

    lock = acquire(store, SHARED, "create", wait=60, sleep=sleep)
    held.append(lock)
    assert len(slept) == 1 and 0 < slept[0] <= 60
    assert lock_keys(store) == [lock.key]
    lock.check()


def test_wait_runs_out(store: Store, held: list[RepositoryLock]) -> None:
    held.append(acquire(store, EXCLUSIVE, "prune"))
    clock = Clock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    with pytest.raises(LockedError, match=r"prune \(exclusive\).*\(waited 10s\)"):
        acquire(store, SHARED, "create", wait=10, clock=clock, sleep=sleep)
    assert len(slept) >= 3, "backs off and retries while the wait lasts"
    assert sum(slept) == pytest.approx(10)
    assert all(b >= a / 2 for a, b in itertools.pairwise(slept[:-1])), slept  # grows, jittered
    assert lock_keys(store) == [held[0].key]


def test_exclusive_locks_exclude_each_other_under_real_concurrency(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    guard = threading.Lock()
    active = {SHARED: 0, EXCLUSIVE: 0}
    violations: list[str] = []
    errors: list[BaseException] = []

    def worker(kind: str) -> None:
        try:
            for _ in range(4):
                with acquire(store, kind, kind, wait=60, sleep=lambda s: time.sleep(s / 1000)):
                    with guard:
                        active[kind] += 1
                        if active[EXCLUSIVE] > 1 or (active[EXCLUSIVE] and active[SHARED]):
                            violations.append(str(active))
                    list(store.list(layout.LOCKS_PREFIX))  # some I/O while holding it
                    with guard:
                        active[kind] -= 1
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in [EXCLUSIVE] * 3 + [SHARED] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not violations and not any(t.is_alive() for t in threads)
    assert lock_keys(store) == []


# -- staleness --------------------------------------------------------------------------------


def test_stale_by_age_is_ignored_and_removable(store: Store) -> None:
    crashed = plant(store, kind=EXCLUSIVE, command="prune")
    key = layout.lock_key(crashed.id)
    with pytest.raises(LockedError):
        acquire(store, SHARED, "create", sleep=no_sleep)
    assert list_locks(store)[0][0] == crashed and list_locks(store)[0][2] is False
    [(info, obj, stale)] = list_locks(store, clock=later)
    assert (info, obj.key, stale) == (crashed, key, True)

    with acquire(store, SHARED, "create", clock=later, sleep=no_sleep) as lock:
        assert sorted(lock_keys(store)) == sorted([key, lock.key])
    assert remove_stale_locks(store) == []
    assert remove_stale_locks(store, clock=later) == [key]
    assert lock_keys(store) == []


def test_dead_pid_on_this_host_is_stale_at_once(store: Store, held: list[RepositoryLock]) -> None:
    pid = dead_pid()
    dead = plant(store, kind=EXCLUSIVE, host=HOST, pid=pid, command="prune")
    alive_elsewhere = plant(store, kind=SHARED, host="other-host", pid=pid, command="create")
    judged = {info.id: stale for info, _, stale in list_locks(store) if info}
    assert judged == {dead.id: True, alive_elsewhere.id: False}
    lock = acquire(store, SHARED, "create", sleep=no_sleep)  # not blocked, and it cleans up:
    held.append(lock)
    assert sorted(lock_keys(store)) == sorted([layout.lock_key(alive_elsewhere.id), lock.key])
    lock.check()
    again = plant(store, kind=EXCLUSIVE, host=HOST, pid=pid, command="prune")
    assert remove_stale_locks(store) == [layout.lock_key(again.id)]


@pytest.mark.parametrize("space", ["pid:[4026530000]/another-boot", ""], ids=["other-namespace", "unknown"])
def test_a_dead_pid_of_another_process_space_is_not_judged_dead(store: Store, space: str) -> None:
    """Two containers (or machines) with one host name: the pid of the other one's process is
    not running *here*, which says nothing. Only age makes such a lock stale."""
    pid = dead_pid()
    other = plant(store, kind=EXCLUSIVE, host=HOST, pid=pid, command="prune", space=space)
    judged = {info.id: stale for info, _, stale in list_locks(store) if info}
    assert judged == {other.id: False}
    with pytest.raises(LockedError, match="prune"):
        acquire(store, SHARED, "create", sleep=no_sleep)
    assert remove_stale_locks(store) == []
    assert lock_keys(store) == [layout.lock_key(other.id)]
    assert remove_stale_locks(store, clock=later) == [layout.lock_key(other.id)]


def test_live_pid_on_this_host_is_not_stale(store: Store) -> None:
    plant(store, kind=EXCLUSIVE, host=HOST, pid=os.getpid(), command="prune")
    with pytest.raises(LockedError, match=f"on {re.escape(HOST)} pid {os.getpid()}"):
        acquire(store, SHARED, "create", sleep=no_sleep)
    assert remove_stale_locks(store) == []


def test_remove_all_removes_live_locks_too(store: Store) -> None:
    lock = acquire(store, SHARED, "create")
    other = plant(store, kind=SHARED)
    assert sorted(remove_stale_locks(store, all_locks=True)) == sorted([lock.key, layout.lock_key(other.id)])
    assert lock_keys(store) == []
    with pytest.raises(LockedError, match=r"lost the repository lock.*was removed"):
        lock.check()
    lock.release()


# -- malformed lock objects -------------------------------------------------------------------

GOOD = {
    "id": "a" * 32,
    "kind": "shared",
    "host": "h",
    "pid": 7,
    "command": "create",
    "created": 1.0,
    "refreshed": 2.5,
}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "pid"}).encode(), "no 'pid'"),
        (json.dumps({**GOOD, "pid": True}).encode(), "'pid' is not a positive integer"),
        (json.dumps({**GOOD, "pid": -3}).encode(), "'pid' is not a positive integer"),
        (json.dumps({**GOOD, "host": ""}).encode(), "'host' is not a non-empty string"),
        (json.dumps({**GOOD, "created": "yesterday"}).encode(), "'created' is not a time"),
        (b'{"created": NaN}', "no 'id'"),
        (json.dumps({**GOOD, "refreshed": float("inf")}).encode(), "'refreshed' is not a time"),
        (json.dumps({**GOOD, "kind": "weird"}).encode(), "lock kind 'weird'"),
        (json.dumps({**GOOD, "id": "A" * 32}).encode(), "not 32 hex digits"),
    ],
)
def test_from_json_is_strict(data: bytes, problem: str) -> None:
    with pytest.raises(IntegrityError, match=re.escape(problem)):
        LockInfo.from_json(data)


def test_json_round_trip_ignores_unknown_fields() -> None:
    info = LockInfo.from_json(json.dumps({**GOOD, "from_the_future": 1}).encode())
    assert info == LockInfo("a" * 32, SHARED, "h", 7, "create", 1.0, 2.5)
    assert LockInfo.from_json(info.to_json()) == info
    assert json.loads(info.to_json()) == {**GOOD, "space": ""}  # written by a version without it


@pytest.mark.parametrize(
    ("key", "data", "problem"),
    [
        (layout.lock_key("b" * 32), b"{truncated", "not JSON"),
        # nested deeper than Python recurses
        (layout.lock_key("d" * 32), b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (layout.lock_key("c" * 32), json.dumps(GOOD).encode(), "does not match its key"),
        ("locks/junk.txt", json.dumps(GOOD).encode(), "not a lock key"),
    ],
)
def test_malformed_lock_conflicts_until_stale(store: Store, key: str, data: bytes, problem: str) -> None:
    store.put(key, data, kind=ObjectKind.LOCK)
    with pytest.raises(LockedError, match=f"unreadable lock object {re.escape(key)} .*{problem}"):
        acquire(store, SHARED, "create", sleep=no_sleep)
    [(info, obj, stale)] = list_locks(store)
    assert (info, obj.key, stale) == (None, key, False)
    assert remove_stale_locks(store) == []
    with acquire(store, SHARED, "create", clock=later, sleep=no_sleep):
        pass
    assert remove_stale_locks(store, clock=later) == [key]
    assert lock_keys(store) == []


def test_folder_marker_is_not_a_lock(s3_repo_url: str, s3_endpoint: str) -> None:
    """S3 consoles create ``locks/`` and ``locks/sub/`` markers; a folder cannot hold such keys."""
    store = open_store(s3_repo_url, s3_options(s3_endpoint))
    store.put(layout.LOCKS_PREFIX, b"", kind=ObjectKind.LOCK)
    store.put(layout.LOCKS_PREFIX + "sub/", b"", kind=ObjectKind.LOCK)
    with acquire(store, EXCLUSIVE, "prune", sleep=no_sleep) as lock:
        assert [(i, o.key) for i, o, _ in list_locks(store)] == [(lock.info, lock.key)]
    assert remove_stale_locks(store, all_locks=True) == []


# -- holding: refresh, loss, release ----------------------------------------------------------


def test_refresh_rewrites_the_object(store: Store) -> None:
    clock = Clock()
    with acquire(store, SHARED, "create", clock=clock) as lock:
        created = clock.now
        clock.now += 90
        lock.refresh_now()
        stored = LockInfo.from_json(store.get(lock.key))
        assert (stored.created, stored.refreshed) == (created, created + 90)
        assert lock.info == stored
        clock.now += 90
        lock.check()  # written 90 s ago, within the refresh interval: only confirmed
        assert LockInfo.from_json(store.get(lock.key)).refreshed == created + 90
        clock.now += REFRESH_EVERY
        lock.check()  # older than the interval: check rewrites it
        assert LockInfo.from_json(store.get(lock.key)).refreshed == created + 180 + REFRESH_EVERY
        store.delete(lock.key)
        with pytest.raises(LockedError, match="removed"):
            lock.check()


def test_refresh_thread_rewrites_until_released(tmp_path: Path) -> None:
    store = FlakyStore(LocalStore(tmp_path / "repo"))
    lock = acquire(store, SHARED, "create", refresh_every=0.01)
    assert store.refreshed.wait(timeout=20), "the refresh thread never wrote the lock"
    lock.release()
    assert not any(t.name.startswith("chroma-snapshot-lock-") for t in threading.enumerate())
    store.refreshed.clear()
    assert lock_keys(store) == []
    assert not store.refreshed.is_set()


def test_release_stops_a_waiting_thread_at_once(store: Store) -> None:
    lock = acquire(store, SHARED, "create")  # the thread waits REFRESH_EVERY (5 min)
    started = time.monotonic()
    lock.release()
    assert time.monotonic() - started < 5
    assert not any(t.name == f"chroma-snapshot-lock-{lock.id[:8]}" for t in threading.enumerate())


def test_removed_lock_is_lost(store: Store) -> None:
    lock = acquire(store, EXCLUSIVE, "prune")
    store.delete(lock.key)  # someone ran `unlock --remove-all`
    lock.refresh_now()
    assert not lock.held
    assert lock_keys(store) == [], "a refresh never re-creates a removed lock"
    with pytest.raises(LockedError, match=r"lost the repository lock \(prune \(exclusive\).*was removed"):
        lock.check()
    lock.release()


def test_long_gap_without_refresh_loses_the_lock(store: Store) -> None:
    """A process suspended (or a store unreachable) for long: others may have seen it stale."""
    clock = Clock()
    lock = acquire(store, SHARED, "create", clock=clock)
    clock.now += STALE_AFTER - REFRESH_EVERY - 1
    lock.check()  # just within the margin
    clock.now += STALE_AFTER - REFRESH_EVERY + 1
    with pytest.raises(LockedError, match="not refreshed for 25m01s"):
        lock.check()
    lock.release()
    assert lock_keys(store) == []


def test_failed_refresh_is_reported_by_check_and_recovers(tmp_path: Path) -> None:
    store = FlakyStore(LocalStore(tmp_path / "repo"))
    clock = Clock()
    with acquire(store, SHARED, "create", clock=clock) as lock:
        store.fail_puts = True
        clock.now += REFRESH_EVERY
        lock.refresh_now()
        assert lock.held  # one failed write is retried, not fatal
        # a store failure, not a lost lock: exit 5, and the create may simply be run again
        with pytest.raises(StorageError, match=r"could not confirm the repository lock.*injected failure"):
            lock.check()
        store.fail_puts = False
        lock.check()


def test_release_is_idempotent(store: Store) -> None:
    lock = acquire(store, EXCLUSIVE, "prune")
    with lock:
        pass
    lock.release()
    lock.release()
    assert not lock.held and lock_keys(store) == []
    with pytest.raises(LockedError, match="already released"):
        lock.check()
    lock.refresh_now()
    assert lock_keys(store) == [], "a released lock is never written again"


def test_failed_release_can_be_retried_and_never_hides_the_real_error(tmp_path: Path) -> None:
    store = FlakyStore(LocalStore(tmp_path / "repo"))
    lock = acquire(store, SHARED, "create")
    store.fail_deletes = True
    with pytest.raises(RuntimeError, match="the real error"), lock:
        raise RuntimeError("the real error")
    with pytest.raises(StorageError, match="injected failure"):
        lock.release()
    store.fail_deletes = False
    lock.release()
    assert lock_keys(store) == []


# -- arguments and helpers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "readonly"}, "lock kind must be one of shared, exclusive"),
        ({"refresh_every": STALE_AFTER}, "refresh_every"),
        ({"refresh_every": 0.0}, "refresh_every"),
    ],
)
def test_acquire_checks_its_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    store = LocalStore(tmp_path / "repo")
    args: dict[str, Any] = {"kind": SHARED, **kwargs}
    kind = args.pop("kind")
    with pytest.raises(ValueError, match=match):
        acquire(store, kind, "create", **args)
    assert lock_keys(store) == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "0s"), (0.4, "0s"), (59, "59s"), (185, "3m05s"), (7440, "2h04m"), (266400, "3d02h")],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_constants_match_the_documented_defaults() -> None:
    assert (STALE_AFTER, REFRESH_EVERY) == (1800.0, 300.0)
