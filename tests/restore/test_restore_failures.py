"""Restore's failure paths: damaged or missing data, hostile manifests, targets it may not
replace, signals, a full disk, a chromadb that cannot open the result. Each is a one-line error
with its exit code, and the target is exactly as it was (nothing half-written beside it)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from chroma_helpers import delete_collection, retag, stand_in_persist_dir, tree_digest
from conftest import CliResult, Seeded, create_snapshot, edit_manifest, one_line_error, pack_files, run_cli

from snapshot.chroma.schema import chromadb_version
from snapshot.errors import mount_point


@pytest.fixture
def existing_target(tmp_path: Path) -> Path:
    return stand_in_persist_dir(tmp_path / "app" / "vector_db", "0badc0de-0000-4000-8000-00000000000a")


def _leftovers(target: Path) -> list[str]:
    return [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]


# -- damaged or missing data -------------------------------------------------------------------


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_a_flipped_byte_in_any_pack_fails_before_chroma_and_leaves_every_target(
    seeded: Seeded, existing_target: Path, tmp_path: Path, where: float
) -> None:
    before = tree_digest(existing_target)
    fresh = tmp_path / "fresh"
    for pack in pack_files(seeded.repo):
        data = bytearray(pack.read_bytes())
        pos = int(len(data) * where)
        data[pos] ^= 0xFF
        pack.write_bytes(bytes(data))
        res = run_cli("--repo", seeded.repo, "restore", "latest", existing_target, "--force")
        one_line_error(res, 4)
        assert "chroma check" not in res.stderr.lower()
        assert any(name in res.stderr for name in ("chroma.sqlite3", ".bin", ".pickle")), res.stderr
        assert tree_digest(existing_target) == before and _leftovers(existing_target) == []
        one_line_error(run_cli("--repo", seeded.repo, "restore", "latest", fresh), 4)
        assert not fresh.exists() and _leftovers(fresh) == []
        data[pos] ^= 0xFF
        pack.write_bytes(bytes(data))


def test_missing_objects_are_not_found(seeded: Seeded, existing_target: Path) -> None:
    before = tree_digest(existing_target)
    for pack in pack_files(seeded.repo):
        pack.unlink()
    res = run_cli("--repo", seeded.repo, "restore", "latest", existing_target, "--force")
    one_line_error(res, 3)
    assert "chroma.sqlite3" in res.stderr and "missing" in res.stderr
    assert tree_digest(existing_target) == before


def test_a_truncated_object_is_an_integrity_error(seeded: Seeded, existing_target: Path) -> None:
    before = tree_digest(existing_target)
    pack = pack_files(seeded.repo)[0]
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    one_line_error(run_cli("--repo", seeded.repo, "restore", "latest", existing_target, "--force"), 4)
    assert tree_digest(existing_target) == before


def test_a_result_that_fails_the_consistency_checks_leaves_the_target(
    seeded: Seeded, existing_target: Path
) -> None:
    edit_manifest(seeded.repo, seeded.sid, lambda d: d["collections"][0].update(records=12345))
    before = tree_digest(existing_target)
    res = run_cli("--repo", seeded.repo, "restore", seeded.sid, existing_target, "--force")
    one_line_error(res, 4)
    assert "12345" in res.stderr
    assert tree_digest(existing_target) == before and _leftovers(existing_target) == []


@pytest.mark.parametrize("bad", ["../x", "../../etc/evil", "/tmp/abs", "a/../../x", "./x", "a//b", "C:/x"])
def test_an_unsafe_manifest_path_is_refused(seeded: Seeded, tmp_path: Path, bad: str) -> None:
    edit_manifest(seeded.repo, seeded.sid, lambda d: d["files"][0].update(path=bad))
    target = tmp_path / "deep" / "target"
    outside_before = tree_digest(tmp_path)
    res = run_cli("--repo", seeded.repo, "restore", seeded.sid, target)
    one_line_error(res, 4)
    assert "unsafe path" in res.stderr
    assert not target.exists()
    assert tree_digest(tmp_path) == outside_before


# -- targets a restore may not replace -----------------------------------------------------------


def test_a_target_restore_may_not_replace_is_left_untouched(
    seeded: Seeded, existing_target: Path, tmp_path: Path
) -> None:
    before = tree_digest(existing_target)
    res = run_cli("--repo", seeded.repo, "restore", "latest", existing_target)  # not empty: needs --force
    one_line_error(res, 7)
    assert "--force" in res.stderr and tree_digest(existing_target) == before
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(run_cli("--repo", seeded.repo, "restore", "latest", f, "--force"), 7)
    assert f.read_text() == "x"
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    one_line_error(run_cli("--repo", seeded.repo, "restore", "latest", link, "--force"), 7)
    assert link.is_symlink() and list(real.iterdir()) == []


def test_symlinks_in_an_old_target_are_not_followed(seeded: Seeded, tmp_path: Path) -> None:
    repo = seeded.repo
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.sqlite3"
    secret.write_bytes(b"do not touch")
    target = tmp_path / "target"
    target.mkdir()
    (target / "chroma.sqlite3").symlink_to(secret)
    # a symlinked chroma.sqlite3 does not make a Chroma persist dir: refused, nothing touched
    one_line_error(run_cli("--repo", repo, "restore", "latest", target, "--force"), 7)
    assert secret.read_bytes() == b"do not touch" and (target / "chroma.sqlite3").is_symlink()

    (target / "chroma.sqlite3").unlink()
    (target / "chroma.sqlite3").write_bytes(b"old")
    m = run_cli("--repo", repo, "show", "latest", "--json").json()
    seg_file = next(f["path"] for f in m["files"] if f["role"] == "segment")
    (target / seg_file).parent.mkdir()
    (target / seg_file).symlink_to(secret)  # re-hydration must not read or write through it
    res = run_cli("--repo", repo, "restore", "latest", target, "--force", "--skip-chroma-check")
    assert res.code == 0, res.stderr
    assert secret.read_bytes() == b"do not touch"
    assert not (target / seg_file).is_symlink() and not (target / "chroma.sqlite3").is_symlink()


def test_force_replaces_only_a_chroma_persist_dir(
    seeded: Seeded, tmp_path: Path, existing_target: Path
) -> None:
    (existing_target / "keep.txt").write_text("not Chroma's")
    before = tree_digest(existing_target)
    res = run_cli("--repo", seeded.repo, "restore", "latest", existing_target, "--force")
    one_line_error(res, 7)
    assert "keep.txt" in res.stderr and tree_digest(existing_target) == before
    # the repository inside the target (issue: `restore latest backups --force` wiped it)
    backups = tmp_path / "backups"
    inner = backups / "repo"
    shutil.copytree(seeded.repo, inner)
    repo_before = tree_digest(backups)
    one_line_error(run_cli("--repo", inner, "restore", "latest", backups, "--force"), 7)
    one_line_error(run_cli("--repo", inner, "restore", "latest", inner, "--force"), 7)
    assert tree_digest(backups) == repo_before
    one_line_error(run_cli("--repo", seeded.repo, "restore", "latest", "", "--force"), 2)
    one_line_error(run_cli("--repo", seeded.repo, "restore", "latest", "/", "--force"), 7)
    one_line_error(run_cli("--repo", seeded.repo, "restore", "latest", Path.home(), "--force"), 7)
    assert _leftovers(existing_target) == []


def test_force_refuses_what_is_not_chromas_inside_segment_folders(
    seeded: Seeded, chroma_dir: Path, tmp_path: Path
) -> None:
    repo, first = seeded.repo, seeded.sid
    target = tmp_path / "db"
    assert run_cli("--repo", repo, "restore", first, target, "--skip-chroma-check").code == 0
    segment = min(p for p in target.iterdir() if p.is_dir())
    stray = target / "0badc0de-0000-4000-8000-00000000000b"
    for make, named in [
        (lambda: (segment / "notes.txt").write_text("mine"), f"{segment.name}/notes.txt"),
        (lambda: (stray.mkdir(), (stray / "notes.txt").write_text("?")), stray.name),
    ]:
        make()
        before = tree_digest(target)
        res = run_cli("--repo", repo, "restore", first, target, "--force", "--skip-chroma-check")
        one_line_error(res, 7)
        assert f"'{named}'" in res.stderr, res.stderr
        assert tree_digest(target) == before and _leftovers(target) == []
        shutil.rmtree(target / named) if (target / named).is_dir() else (target / named).unlink()
    # A folder of Chroma's files alone that nobody names (a deleted collection's) is dropped, and
    # the restore says so.
    stray.mkdir()
    (stray / "header.bin").write_text("?")
    res = run_cli("--repo", repo, "restore", first, target, "--force", "--skip-chroma-check")
    assert res.code == 0 and f"drops segment folder {stray.name}" in res.stderr, res.stderr
    assert not stray.exists()
    # A segment folder the snapshot does not restore but the target's database names is Chroma's.
    folders = {p.name for p in target.iterdir() if p.is_dir()}
    delete_collection(chroma_dir, "notes")
    second = create_snapshot(repo, chroma_dir)
    res = run_cli("--repo", repo, "restore", second, target, "--force", "--skip-chroma-check")
    assert res.code == 0, res.stderr
    assert {p.name for p in target.iterdir() if p.is_dir()} < folders  # the notes collection's went


# -- which chromadb can open the result ----------------------------------------------------------


def test_compatibility_is_judged_by_schema_not_package_version(
    seeded: Seeded, chroma_dir: Path, tmp_path: Path
) -> None:
    repo = seeded.repo
    # a snapshot taken where a much newer chromadb was installed, of a DB whose schema the
    # installed chromadb knows: no warning
    edit_manifest(repo, seeded.sid, lambda d: d.update(tool_chromadb_version="99.1.0"))
    res = run_cli("--repo", repo, "restore", seeded.sid, tmp_path / "t")
    assert res.code == 0 and "warning" not in res.stderr, res.stderr
    # a DB that a newer Chroma migrated, snapshotted where the same chromadb as here was
    # installed: the warning speaks of the DB's schema, not of the snapshotting side's package
    with sqlite3.connect(chroma_dir / "chroma.sqlite3") as conn:
        conn.execute("INSERT INTO migrations (dir, version, filename, sql, hash) "
                     "VALUES ('metadb', 99, '00099-from-the-future.sqlite.sql', '', '')")
    sid = create_snapshot(repo, chroma_dir)
    res = run_cli("--repo", repo, "restore", sid, tmp_path / "u")
    assert res.code == 0 and "warning" in res.stderr and "00099-from-the-future" in res.stderr
    installed = chromadb_version()
    assert (f"its database has applied migration metadb 00099-from-the-future.sqlite.sql that the "
            f"installed chromadb {installed} does not know: a newer chromadb wrote it") in res.stderr
    assert "made with" not in res.stderr and "upgrade chromadb" in res.stderr
    res = run_cli("--repo", repo, "restore", sid, tmp_path / "v", "--strict")
    one_line_error(res, 4)
    assert not (tmp_path / "v").exists()


def _as_a_newer_chromadb_writes(db: Path) -> None:
    """A migration the installed chromadb lacks, and a collection configuration it cannot
    parse (chromadb 0.5 reading what 1.x wrote fails with a bare '_type')."""
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO migrations (dir, version, filename, sql, hash) "
                     "VALUES ('sysdb', 99, '00099-collection-config-v9.sqlite.sql', '', '')")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(collections)")}
        future = json.dumps({"_type": "CollectionConfigurationV9", "vector_index": 7})
        for column in {"config_json_str", "schema_str"} & columns:
            conn.execute(f"UPDATE collections SET {column} = ?", (future,))


@pytest.mark.slow  # chromadb in a child process
def test_chroma_check_of_a_db_from_a_newer_chromadb_says_what_to_install(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    _as_a_newer_chromadb_writes(chroma_dir / "chroma.sqlite3")
    sid = create_snapshot(repo_path, chroma_dir)
    res = run_cli("--repo", repo_path, "restore", sid, tmp_path / "t", "--chroma-check")
    assert res.code == 4 and "Traceback" not in res.stderr, res.stderr
    error = res.stderr.strip().splitlines()[-1]
    installed = chromadb_version()
    assert error.startswith(
        f"chroma-snapshot: error: Chroma check failed: the installed chromadb {installed} cannot open the "
        "restored database: a newer chromadb wrote it (the DB has applied sysdb "
        f"00099-collection-config-v9.sqlite.sql, which chromadb {installed} does not know)"), error
    assert "install a chromadb at least as new as the one that wrote it" in error
    assert "(chromadb said: collection " in error  # chromadb's own words come last
    assert not (tmp_path / "t").exists() and not _leftovers(tmp_path / "t")


# -- signals ---------------------------------------------------------------------------------------


@pytest.mark.slow  # a restore with --chroma-check in a child process
def test_a_restore_killed_after_its_chroma_check_leaves_nothing_behind_the_next(
    seeded: Seeded, chroma_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "t"
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, CHROMA_SNAPSHOT_KILL_AT="restore.verified",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    args = ["--repo", str(seeded.repo), "restore", seeded.sid, str(target), "--chroma-check"]
    killed = subprocess.run([sys.executable, "-m", "snapshot", *args], env=env, capture_output=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(_leftovers(target)) >= 1  # the built dir (and the copies the repair uses)
    assert run_cli("--repo", seeded.repo, "restore", seeded.sid, target).code == 0
    assert _leftovers(target) == []  # both swept at once: their owner is gone
    assert sorted(tree_digest(target)) == sorted(tree_digest(chroma_dir))


#: The CLI in a child process: at pause point argv[1] it says "paused" and waits for a line.
_PAUSING_CLI = """
import sys
from snapshot.util import pausepoints
from snapshot.cli import main

def pause():
    print("paused", flush=True)
    sys.stdin.readline()

with pausepoints.on(sys.argv[1], pause):
    main(sys.argv[2:])
"""


def _sigterm_at(point: str, *args: object) -> CliResult:
    """Run the CLI in a child, send it a real SIGTERM while it waits at ``point``, let it go on."""
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_CLI, point, *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    said = []
    for line in proc.stdout:
        if line == "paused\n":
            break
        said.append(line)
    else:
        proc.wait(timeout=60)
        err = proc.stderr.read() if proc.stderr else ""
        pytest.fail(f"never reached {point}: exit {proc.returncode}: {err}")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate("\n", timeout=120)  # the signal is handled while it waits
    return CliResult(proc.returncode, "".join(said) + out, err)


@pytest.mark.slow  # a restore in a child process, signalled
def test_sigterm_once_a_restore_stands_is_not_a_failure(
    seeded: Seeded, chroma_dir: Path, tmp_path: Path
) -> None:
    repo, first = seeded.repo, seeded.sid
    retag(chroma_dir, 99)
    second = create_snapshot(repo, chroma_dir)
    digests = {}
    for sid in (first, second):
        assert run_cli("--repo", repo, "restore", sid, tmp_path / sid, "--skip-chroma-check").code == 0
        digests[sid] = tree_digest(tmp_path / sid)
    assert digests[first] != digests[second]
    target = tmp_path / "db"
    assert run_cli("--repo", repo, "restore", first, target, "--skip-chroma-check").code == 0

    # Before the swap: the restore fails, says nothing of success, and the target is as it was.
    res = _sigterm_at("restore.verified", "--repo", repo, "restore", second, target, "--force",
                      "--skip-chroma-check")
    assert "terminated" in one_line_error(res, 143) and res.stdout == ""
    assert tree_digest(target) == digests[first]
    # Once the swap stands (journal gone; swap returned; result printed): success, exit 0.
    holds = first
    for point in ("swap.journal-removed", "restore.swapped", "restore.reported"):
        sid = second if holds == first else first
        res = _sigterm_at(point, "--repo", repo, "restore", sid, target, "--force", "--skip-chroma-check")
        assert (res.code, res.stderr) == (0, ""), point
        assert res.stdout.startswith(f"restored {sid} into {target}"), (point, res.stdout)
        assert tree_digest(target) == digests[sid], point
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".db.")] == [], point
        holds = sid


# -- a full disk -----------------------------------------------------------------------------------


def test_a_full_disk_during_a_restore_names_the_file_and_the_filesystem(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapshot.restore.materialise

    repo, sid = seeded.repo, seeded.sid
    target = tmp_path / "db"
    assert run_cli("--repo", repo, "restore", sid, target, "--skip-chroma-check").code == 0
    before = tree_digest(target)

    def no_space(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as os.write raises it: no file name

    monkeypatch.setattr(snapshot.restore.materialise, "_write_all", no_space)
    for where in (target, tmp_path / "fresh"):
        res = run_cli("--repo", repo, "restore", sid, where, "--force", "--skip-chroma-check")
        line = one_line_error(res, 15)
        assert f"no space left on the filesystem at {mount_point(tmp_path)} (writing {tmp_path}/." in line
        assert "?" not in line
    assert tree_digest(target) == before and not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing beside it
