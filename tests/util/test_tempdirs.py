"""Owned temporary directories: the owner marker, telling a live owner from a dead one (pid
gone, pid reused, rebooted, another host, no marker), and what sweeping may remove."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from snapshot.errors import DiskFullError
from snapshot.util import tempdirs

PREFIX = ".db.restore-"
HOUR_AGO = time.time() - 3600


def dead_owned_dir(parent: Path, prefix: str = PREFIX) -> Path:
    """A directory made by owned_dir in a process that has exited since."""
    code = (
        "import sys; from pathlib import Path; from snapshot.util.tempdirs import owned_dir; "
        "print(owned_dir(Path(sys.argv[1]), sys.argv[2]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(parent), prefix], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def marked(parent: Path, record: dict[str, Any], name: str = f"{PREFIX}4242-abcdef") -> Path:
    path = parent / name
    path.mkdir()
    (path / tempdirs.MARKER).write_text(json.dumps(record))
    return path


def test_owned_dir_is_private_named_and_marked(tmp_path: Path) -> None:
    path = tempdirs.owned_dir(tmp_path, PREFIX)
    assert path.parent == tmp_path
    assert re.fullmatch(rf"{re.escape(PREFIX)}{os.getpid()}-[0-9a-f]+", path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    record = json.loads((path / tempdirs.MARKER).read_text())
    assert record["pid"] == os.getpid()
    assert record["host"] == socket.gethostname()
    if Path(f"/proc/{os.getpid()}/stat").exists():
        assert isinstance(record["start"], int) and record["start"] == tempdirs.process_start(os.getpid())
    if Path("/proc/sys/kernel/random/boot_id").exists():
        assert record["boot"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert tempdirs.owned_dir(tmp_path, PREFIX) != path


def test_owned_dir_reports_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: object) -> dict[str, Any]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempdirs, "owner_record", no_space)
    with pytest.raises(DiskFullError) as info:
        tempdirs.owned_dir(tmp_path, PREFIX)
    assert info.value.exit_code == 15
    assert os.listdir(tmp_path) == []  # the half-made directory went


def test_release_drops_the_marker(tmp_path: Path) -> None:
    path = tempdirs.owned_dir(tmp_path, PREFIX)
    tempdirs.release(path)
    tempdirs.release(path)  # twice is fine
    assert os.listdir(path) == []


def test_own_directory_is_alive(tmp_path: Path) -> None:
    assert tempdirs.owner_alive(tempdirs.owned_dir(tmp_path, PREFIX))


def test_exited_owner_is_dead(tmp_path: Path) -> None:
    assert not tempdirs.owner_alive(dead_owned_dir(tmp_path))


def test_reused_pid_is_dead(tmp_path: Path) -> None:
    record = tempdirs.owner_record()
    if record["start"] is None:
        pytest.skip("no /proc/<pid>/stat here")
    record["start"] += 1  # our pid, but a process that started at another time
    assert not tempdirs.owner_alive(marked(tmp_path, record))


def test_other_boot_is_dead(tmp_path: Path) -> None:
    record = tempdirs.owner_record()
    if record["boot"] is None:
        pytest.skip("no boot id here")
    record["boot"] = "00000000-0000-0000-0000-000000000000"
    assert not tempdirs.owner_alive(marked(tmp_path, record))


def test_other_host_counts_as_alive(tmp_path: Path) -> None:
    dead = json.loads((dead_owned_dir(tmp_path) / tempdirs.MARKER).read_text())
    dead["host"] = socket.gethostname() + "-elsewhere"
    assert tempdirs.owner_alive(marked(tmp_path, dead))


def test_live_other_process_is_alive(tmp_path: Path) -> None:
    assert tempdirs.owner_alive(marked(tmp_path, tempdirs.owner_record(os.getppid())))


@pytest.mark.parametrize("marker", [None, b"{trunc", b"[1, 2]", b"{}"])
def test_unmarked_directory_is_alive_until_old(tmp_path: Path, marker: bytes | None) -> None:
    path = tmp_path / f"{PREFIX}4242-abcdef"
    path.mkdir()
    if marker is not None:
        (path / tempdirs.MARKER).write_bytes(marker)
    assert tempdirs.owner_alive(path)  # the owner may be about to write its marker
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    assert not tempdirs.owner_alive(path)


def test_sweep_removes_only_dead_owners(tmp_path: Path) -> None:
    dead = dead_owned_dir(tmp_path)
    dead_elsewhere = dead_owned_dir(tmp_path, ".other.restore-")
    mine = tempdirs.owned_dir(tmp_path, PREFIX)
    live = marked(tmp_path, tempdirs.owner_record(os.getppid()), f"{PREFIX}{os.getppid()}-aa")
    unmarked_fresh = tmp_path / f"{PREFIX}1-bb"
    unmarked_fresh.mkdir()
    unmarked_old = tmp_path / f"{PREFIX}1-cc"
    unmarked_old.mkdir()
    os.utime(unmarked_old, (HOUR_AGO, HOUR_AGO))
    assert sorted(tempdirs.sweep(tmp_path, PREFIX)) == sorted([dead, unmarked_old])
    assert all(p.is_dir() for p in (dead_elsewhere, mine, live, unmarked_fresh))


def test_sweep_never_touches_links_files_foreign_names_or_own_pid(tmp_path: Path) -> None:
    elsewhere = dead_owned_dir(tmp_path, "x-")
    link = tmp_path / f"{PREFIX}1-dd"
    link.symlink_to(elsewhere)  # a symlink to a dead owner's dir: neither goes
    afile = tmp_path / f"{PREFIX}1-ee"
    afile.write_text("a file")
    os.utime(afile, (HOUR_AGO, HOUR_AGO))
    foreign = tmp_path / f"{PREFIX}data"  # not a name owned_dir makes
    foreign.mkdir()
    os.utime(foreign, (HOUR_AGO, HOUR_AGO))
    own_unmarked = tmp_path / f"{PREFIX}{os.getpid()}-ff"
    own_unmarked.mkdir()
    os.utime(own_unmarked, (HOUR_AGO, HOUR_AGO))
    assert tempdirs.sweep(tmp_path, PREFIX) == []
    assert link.is_symlink() and (elsewhere / tempdirs.MARKER).exists()
    assert afile.exists() and foreign.exists() and own_unmarked.exists()


def test_sweep_keeps_what_it_is_told_to(tmp_path: Path) -> None:
    dead = dead_owned_dir(tmp_path)
    assert tempdirs.sweep(tmp_path, PREFIX, keep=[dead]) == []
    assert tempdirs.sweep(tmp_path, PREFIX) == [dead]


def test_sweep_survives_a_directory_vanishing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = dead_owned_dir(tmp_path)

    def raced(path: Path) -> bool:
        shutil.rmtree(path)  # another sweep got there first
        return False

    monkeypatch.setattr(tempdirs, "owner_alive", raced)
    assert tempdirs.sweep(tmp_path, PREFIX) == []
    assert not dead.exists()
    assert tempdirs.sweep(tmp_path / "missing", PREFIX) == []


def test_process_start_survives_odd_command_names() -> None:
    """The command name in /proc/<pid>/stat may hold spaces and parentheses."""
    if tempdirs.process_start(os.getpid()) is None:
        pytest.skip("no /proc here")
    code = (
        "import sys\n"
        "print('plain', flush=True); sys.stdin.readline()\n"
        "open('/proc/self/comm', 'w').write('a) b (c')\n"
        "print('renamed', flush=True); sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "plain\n"
        before = tempdirs.process_start(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "renamed\n"
        assert ") b (" in Path(f"/proc/{proc.pid}/stat").read_text()
        after = tempdirs.process_start(proc.pid)
    finally:
        proc.communicate("\n", timeout=60)
    own = tempdirs.process_start(os.getpid())
    assert isinstance(before, int) and isinstance(own, int) and before >= own
    assert after == before


def test_a_dead_owners_directory_is_claimed_once_with_its_purpose(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from snapshot.util.tempdirs import owned_dir; "
        "d = owned_dir(Path(sys.argv[1]), sys.argv[2], {'restore_target': '/srv/db'}); "
        "(d / 'work').write_text('done'); print(d)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), PREFIX], check=True, capture_output=True,
                         text=True)
    left = Path(out.stdout.strip())
    assert not tempdirs.owner_alive(left) and tempdirs.purpose_of(left) == {"restore_target": "/srv/db"}
    mine = tempdirs.claim(left, PREFIX)
    assert mine is not None and not left.exists()
    assert tempdirs.name_pid(mine.name, PREFIX) == os.getpid()
    record = tempdirs.read_marker(mine)
    assert tempdirs.owner_alive(mine) and record is not None and record["pid"] == os.getpid()
    assert tempdirs.purpose_of(mine) == {"restore_target": "/srv/db"}
    assert (mine / "work").read_text() == "done"
    assert sorted(p.name for p in mine.iterdir()) == sorted([tempdirs.MARKER, "work"])
    assert tempdirs.claim(left, PREFIX) is None  # taken: a second claimer gets nothing
    assert tempdirs.sweep(tmp_path, PREFIX) == []  # ours now


def test_a_directory_without_a_purpose_has_none(tmp_path: Path) -> None:
    assert tempdirs.purpose_of(tempdirs.owned_dir(tmp_path, PREFIX)) is None
    assert tempdirs.purpose_of(marked(tmp_path, {"pid": 1, "host": "h", "purpose": "not an object"})) is None
