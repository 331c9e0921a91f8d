"""The journalled swap of a restore target: every step killed with SIGKILL in a child process
and then recovered, every step failed in-process, the exchange and the two-rename paths, and
what sweeping beside a target may and may not remove."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import exchange_supported

from snapshot.errors import TargetError
from snapshot.restore import swap
from snapshot.util import pausepoints, tempdirs

OLD = {"chroma.sqlite3": b"old database", "3f0c1a2b-0000-4000-8000-000000000001/data.bin": b"old"}
NEW = {"chroma.sqlite3": b"new database", "sub/dir/x.bin": b"new" * 1000, "notes.txt": b""}

# Run in a child process: build NEW beside the target and swap it in. The test picks where it
# dies with CHROMA_SNAPSHOT_KILL_AT=swap.<step>, or blocks it at a step (BLOCK_AT) until told.
CHILD = """
import json, os, sys
from pathlib import Path
from snapshot.restore import swap

if os.environ.get("NO_EXCHANGE"):
    swap.exchange = lambda a, b: False
block_at = os.environ.get("BLOCK_AT")

def hook(step):
    swap._hook(step)
    if step == block_at:
        print("ready", flush=True)
        sys.stdin.readline()

swap._pause_hook = hook
target = Path(sys.argv[1])
built = swap.temp_beside(target, "restore")
for rel, data in json.loads(sys.argv[2]).items():
    (built / rel).parent.mkdir(parents=True, exist_ok=True)
    (built / rel).write_bytes(bytes.fromhex(data))
swap.swap_into_place(built, target)
"""

EXCHANGE_STEPS = ["begin", "journal-written", "exchanged", "old-renamed", "synced", "journal-removed"]
RENAME_STEPS = ["begin", "journal-written", "old-renamed", "new-renamed", "synced", "journal-removed"]
# Steps after which the new data is at the target: recovery rolls forward from there. (With
# two renames, "old-renamed" is the moment the target is missing: that rolls back.)
NEW_AT_TARGET = {"exchanged", "old-renamed", "new-renamed", "synced", "journal-removed"}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (pausepoints.KILL_ENV, "NO_EXCHANGE", "BLOCK_AT")}
    env.update(extra)
    return env


def child_args(target: Path) -> list[str]:
    files = {rel: data.hex() for rel, data in NEW.items()}
    return [sys.executable, "-c", CHILD, str(target), json.dumps(files)]


def kill_child_at(target: Path, step: str, *, no_exchange: bool = False) -> None:
    env = child_env(**{pausepoints.KILL_ENV: f"swap.{step}"}, **({"NO_EXCHANGE": "1"} if no_exchange else {}))
    proc = subprocess.run(child_args(target), env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """``parent/db`` holding OLD; nothing else in ``parent``."""
    t = tmp_path / "parent" / "db"
    write_tree(t, OLD)
    return t


@pytest.fixture
def built(target: Path) -> Path:
    b = swap.temp_beside(target, "restore")
    write_tree(b, NEW)
    return b


@pytest.fixture
def failing_at() -> Iterator[Callable[[str, BaseException], None]]:
    """Make the swap raise ``exc`` when it reaches ``step``."""
    saved = swap._pause_hook

    def arm(step: str, exc: BaseException) -> None:
        def hook(s: str) -> None:
            if s == step:
                raise exc

        swap._pause_hook = hook

    yield arm
    swap._pause_hook = saved


def use(how: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Swap by exchange (skipped where unsupported) or, as where it is, by two renames."""
    if how == "exchange" and not exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    if how == "renames":
        monkeypatch.setattr(swap, "exchange", lambda a, b: False)


@pytest.fixture(params=["exchange", "renames"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    use(request.param, monkeypatch, tmp_path)
    return str(request.param)


def beside(target: Path) -> list[str]:
    return sorted(os.listdir(target.parent))


# --- kill -9 at every step, then recover --------------------------------------------------


@pytest.mark.parametrize(
    ("no_exchange", "step"),
    [(False, s) for s in EXCHANGE_STEPS] + [(True, s) for s in RENAME_STEPS],
    ids=[f"exchange-{s}" for s in EXCHANGE_STEPS] + [f"renames-{s}" for s in RENAME_STEPS],
)
def test_kill_at_each_step_then_recover(target: Path, tmp_path: Path, no_exchange: bool, step: str) -> None:
    if not no_exchange and not exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    kill_child_at(target, step, no_exchange=no_exchange)
    journalled = step not in ("begin", "journal-removed")
    assert swap.journal_path(target).exists() == journalled
    message = swap.recover(target)
    assert (message is not None) == journalled
    swap.sweep_beside(target)
    expected = NEW if step in NEW_AT_TARGET and (step, no_exchange) != ("old-renamed", True) else OLD
    assert read_tree(target) == expected
    assert beside(target) == ["db"]
    if message is not None:
        assert ("finished" in message) == (expected is NEW)
    assert swap.recover(target) is None  # recovering twice is harmless


@pytest.mark.parametrize("step", ["begin", "new-renamed"])
def test_kill_with_no_previous_target(tmp_path: Path, step: str) -> None:
    target = tmp_path / "parent" / "db"
    target.parent.mkdir()
    kill_child_at(target, step)
    assert swap.recover(target) is None
    swap.sweep_beside(target)  # the built dir of the dead child is still marked: it goes
    if step == "begin":
        assert beside(target) == []
    else:
        assert beside(target) == ["db"]
        assert read_tree(target) == NEW


# --- failures inside the process ----------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "step"),
    [("exchange", s) for s in EXCHANGE_STEPS[:-1]] + [("renames", s) for s in RENAME_STEPS[:-1]],
)
def test_failure_before_commit_puts_old_back(
    target: Path, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, step: str,
    failing_at: Callable[[str, BaseException], None],
) -> None:  # fmt: skip
    use(how, monkeypatch, tmp_path)
    failing_at(step, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        swap.swap_into_place(built, target)
    assert read_tree(target) == OLD
    built_files = read_tree(built)
    built_files.pop(tempdirs.MARKER, None)  # still there when it failed before the journal
    assert built_files == NEW
    assert beside(target) == sorted(["db", built.name])


def test_interrupt_after_exchange_is_rolled_back(
    target: Path, built: Path, tmp_path: Path, failing_at: Callable[[str, BaseException], None]
) -> None:
    if not exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    failing_at("exchanged", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        swap.swap_into_place(built, target)
    assert read_tree(target) == OLD
    assert read_tree(built) == NEW


def test_failure_after_commit_keeps_new(
    target: Path, built: Path, mode: str, failing_at: Callable[[str, BaseException], None]
) -> None:
    failing_at("journal-removed", RuntimeError("late"))
    with pytest.raises(RuntimeError, match="late"):
        swap.swap_into_place(built, target)
    assert read_tree(target) == NEW
    assert beside(target) == ["db"]  # the old data was removed all the same


def test_failed_rollback_leaves_journal_that_recover_finishes(
    target: Path, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    failing_at: Callable[[str, BaseException], None],
) -> None:  # fmt: skip
    if not exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    real = swap.exchange
    calls = []

    def exchange_once(a: Path, b: Path) -> bool:
        calls.append((a, b))
        if len(calls) > 1:
            raise OSError(errno.EIO, "I/O error")
        return real(a, b)

    monkeypatch.setattr(swap, "exchange", exchange_once)
    failing_at("old-renamed", RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        swap.swap_into_place(built, target)
    assert swap.journal_path(target).exists()  # could not roll back: left for recover()
    assert not built.exists()
    message = swap.recover(target)  # the journal is this process's, but no swap is running
    assert message is not None and "finished" in message
    assert read_tree(target) == NEW
    assert beside(target) == ["db"]


# --- the normal paths ---------------------------------------------------------------------


def test_swap_replaces_target(target: Path, built: Path, mode: str) -> None:
    old_ino = target.stat().st_ino
    swap.swap_into_place(built, target)
    assert read_tree(target) == NEW  # no owner marker nor journal came along
    assert target.stat().st_ino != old_ino
    assert beside(target) == ["db"]


def test_swap_into_missing_target(tmp_path: Path) -> None:
    target = tmp_path / "db"
    built = swap.temp_beside(target, "restore")
    write_tree(built, NEW)
    swap.swap_into_place(built, target)
    assert read_tree(target) == NEW
    assert sorted(os.listdir(tmp_path)) == ["db"]


def test_journal_records_names_and_inodes(target: Path, built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    new_ino, old_ino = built.stat().st_ino, target.stat().st_ino

    def hook(step: str) -> None:
        if step == "journal-written":
            seen.update(json.loads(swap.journal_path(target).read_text()))
            seen["marker"] = (built / tempdirs.MARKER).exists()

    monkeypatch.setattr(swap, "_pause_hook", hook)
    swap.swap_into_place(built, target)
    assert seen["format"] == 1
    assert (seen["target"], seen["built"]) == ("db", built.name)
    assert str(seen["old"]).startswith(f".db.old-{os.getpid()}-")
    assert (seen["new_ino"], seen["old_ino"]) == (new_ino, old_ino)
    assert isinstance(seen["owner"], dict) and seen["owner"]["pid"] == os.getpid()
    assert seen["marker"] is False


def test_swap_rejects_what_it_cannot_do(tmp_path: Path, built: Path, target: Path) -> None:
    with pytest.raises(ValueError, match="sibling"):
        swap.swap_into_place(built, tmp_path / "elsewhere" / "db")
    afile = target.parent / "file"
    afile.write_text("x")
    with pytest.raises(TargetError, match="not a directory"):
        swap.swap_into_place(built, afile)
    assert read_tree(built)[tempdirs.MARKER]  # untouched


# --- concurrency: journals of live swaps are left alone -----------------------------------


def test_recover_refuses_a_swap_running_in_this_process(
    target: Path, built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = []

    def hook(step: str) -> None:
        if step in ("journal-written", "old-renamed"):
            try:
                swap.recover(target)
            except TargetError as exc:
                errors.append(str(exc))

    monkeypatch.setattr(swap, "_pause_hook", hook)
    swap.swap_into_place(built, target)
    assert errors and "swapping it in right now" in errors[0]
    assert read_tree(target) == NEW


def test_live_swap_in_another_process_is_left_alone(target: Path) -> None:
    env = child_env(BLOCK_AT="journal-written")
    proc = subprocess.Popen(
        child_args(target), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        before = beside(target)
        with pytest.raises(TargetError, match="swapping it in right now"):
            swap.recover(target)
        assert swap.sweep_beside(target) == []
        other = swap.temp_beside(target, "restore")
        write_tree(other, OLD)
        with pytest.raises(TargetError, match="swapping it in right now"):
            swap.swap_into_place(other, target)
        assert beside(target) == sorted([*before, other.name])
        assert read_tree(target) == OLD
    finally:
        _out, err = proc.communicate(b"\n", timeout=120)
    assert proc.returncode == 0, err.decode()
    assert read_tree(target) == NEW


def test_unreadable_journal_touches_nothing(target: Path, tmp_path: Path) -> None:
    stale = target.parent / f".db.old-1-{'ab' * 6}"
    write_tree(stale, OLD)
    swap.journal_path(target).write_text("{not json")
    with pytest.raises(TargetError, match="cannot read the journal"):
        swap.recover(target)
    assert swap.sweep_beside(target) == []
    assert stale.exists()


def test_target_changed_since_the_kill_is_not_touched(target: Path) -> None:
    kill_child_at(target, "journal-written")
    jpath = swap.journal_path(target)
    target.rename(target.parent / "moved-away")
    write_tree(target, {"other": b"someone else's"})
    with pytest.raises(TargetError, match="changed since"):
        swap.recover(target)
    assert jpath.exists()
    assert read_tree(target) == {"other": b"someone else's"}
    assert read_tree(target.parent / "moved-away") == OLD


# --- sweeping beside a target -------------------------------------------------------------


def test_sweep_beside_removes_only_garbage(target: Path, built: Path) -> None:
    parent = target.parent
    garbage_old = parent / f".db.old-1-{'cd' * 6}"
    write_tree(garbage_old, OLD)
    other_target_old = parent / f".db.old-x.old-1-{'cd' * 6}"  # belongs to target "db.old-x"
    other_target_old.mkdir()
    afile = parent / f".db.old-2-{'cd' * 6}"
    afile.write_text("not a dir")
    elsewhere = parent.parent / "elsewhere"
    write_tree(elsewhere, OLD)
    (parent / f".db.old-3-{'cd' * 6}").symlink_to(elsewhere)
    removed = swap.sweep_beside(target)
    assert removed == [garbage_old]
    assert read_tree(elsewhere) == OLD
    assert built.exists() and other_target_old.exists() and afile.exists()


def test_sweep_beside_keeps_dirs_named_by_the_journal(target: Path) -> None:
    kill_child_at(target, "old-renamed", no_exchange=True)  # target gone, old data in .db.old-*
    assert not target.exists()
    assert swap.sweep_beside(target) == []
    assert swap.recover(target) is not None
    assert read_tree(target) == OLD


# --- exchange() itself --------------------------------------------------------------------


def test_exchange_swaps_two_directories(tmp_path: Path) -> None:
    if not exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    write_tree(tmp_path / "a", {"f": b"A"})
    write_tree(tmp_path / "b", {"f": b"B"})
    assert swap.exchange(tmp_path / "a", tmp_path / "b") is True
    assert (tmp_path / "a" / "f").read_bytes() == b"B"
    assert (tmp_path / "b" / "f").read_bytes() == b"A"


def test_exchange_raises_real_errors(tmp_path: Path) -> None:
    if not exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    (tmp_path / "a").mkdir()
    with pytest.raises(OSError) as info:
        swap.exchange(tmp_path / "a", tmp_path / "missing")
    assert info.value.errno == errno.ENOENT


def test_exchange_unsupported_is_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swap, "_renameat2", lambda: None)  # no renameat2 in the C library
    assert swap.exchange(tmp_path / "a", tmp_path / "b") is False

    def failing(code: int) -> Callable[..., int]:
        def fn(*args: object) -> int:
            ctypes.set_errno(code)
            return -1

        return fn

    for code in (errno.ENOSYS, errno.EINVAL):  # old kernel; filesystem without exchange
        monkeypatch.setattr(swap, "_renameat2", lambda code=code: failing(code))
        assert swap.exchange(tmp_path / "a", tmp_path / "b") is False
    monkeypatch.setattr(swap, "_renameat2", lambda: failing(errno.EACCES))
    with pytest.raises(PermissionError):
        swap.exchange(tmp_path / "a", tmp_path / "b")
