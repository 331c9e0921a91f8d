"""Create's failure paths: a snapshot reported saved can be restored, and a refused or failed
create commits nothing, leaves no new repository and no temporary files. Races are driven with
the named pause points of snapshot.util.pausepoints."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from chroma_helpers import retag, tree_digest
from conftest import CliResult, create_snapshot, one_line_error, pack_files, run_cli

from snapshot.errors import AlreadyExistsError
from snapshot.storage.base import ObjectKind
from snapshot.storage.local import LocalStore
from snapshot.util import pausepoints


def _check_ok(repo: Path) -> None:
    res = run_cli("--repo", repo, "check", "--read-data")
    assert res.code == 0, res.stdout + res.stderr


def _ids(repo: Path) -> list[str]:
    return [s["id"] for s in run_cli("--repo", repo, "list", "--json").json()]


# -- what is not a Chroma dir, or not a valid create -------------------------------------------------


def test_bad_sources_are_refused_before_the_repository_is_initialised(
    repo_path: Path, tmp_path: Path
) -> None:
    one_line_error(run_cli("--repo", repo_path, "create", tmp_path / "nope"), 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("--repo", repo_path, "create", empty)
    one_line_error(res, 6)
    assert "not a Chroma persist dir" in res.stderr
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / "chroma.sqlite3")
    con.execute("create table t(x)")
    con.commit()
    con.close()
    res = run_cli("--repo", repo_path, "create", other)
    one_line_error(res, 6)
    assert "lacks Chroma's tables" in res.stderr
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "chroma.sqlite3").write_bytes(b"not sqlite at all" * 100)
    one_line_error(run_cli("--repo", repo_path, "create", garbage), 6)
    assert not repo_path.exists()


def test_bad_options_are_refused_before_the_repository_is_initialised(
    chroma_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "new-repo"
    one_line_error(run_cli("--repo", repo, "create", chroma_dir, "--level", "99"), 2)
    one_line_error(run_cli("--repo", repo, "create", chroma_dir, "--tag", "a,b"), 2)
    res = run_cli("--repo", repo, "create", chroma_dir, "--tmp-dir", tmp_path / "missing")
    line = one_line_error(res, 2)  # found by click: its one line points at --help too
    assert "does not exist" in line and "--help" in line
    assert not repo.exists()


def test_undecodable_names_are_refused_before_anything_is_uploaded(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    bad = os.fsdecode(b"caf\xe9")  # Latin-1 bytes on the command line arrive as a lone surrogate
    one_line_error(run_cli("--repo", repo_path, "create", chroma_dir, "-m", bad), 2)
    one_line_error(run_cli("--repo", repo_path, "create", chroma_dir, "--tag", bad), 2)
    assert not repo_path.exists()
    odd = tmp_path / bad
    odd.write_text("x")
    one_line_error(run_cli("--repo", repo_path, "create", chroma_dir, "--include", odd), 6)
    seg = next(p for p in chroma_dir.iterdir() if p.is_dir())
    stray = seg / bad
    stray.write_text("x")
    one_line_error(run_cli("--repo", repo_path, "create", chroma_dir), 6)
    assert pack_files(repo_path) == []  # refused before any upload
    stray.unlink()
    moved = tmp_path / f"db-{bad}"
    shutil.copytree(chroma_dir, moved)
    one_line_error(run_cli("--repo", repo_path, "create", moved), 2)
    sid = create_snapshot(repo_path, chroma_dir)
    target = tmp_path / f"restored-{bad}"  # a target path is only bytes to the OS: fine
    res = run_cli("--repo", repo_path, "restore", sid, target, "--skip-chroma-check")
    assert res.code == 0, res.stderr
    assert tree_digest(target) == tree_digest(chroma_dir)


# -- prune and create ------------------------------------------------------------------------------


def test_prune_and_forget_during_a_create_are_refused_and_the_create_commits(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    first = create_snapshot(repo_path, chroma_dir)
    retag(chroma_dir, 5)
    seen: dict[str, CliResult] = {}

    def meanwhile() -> None:
        seen["prune"] = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s")
        seen["forget"] = run_cli("--repo", repo_path, "forget", first, "--grace", "0s")

    with pausepoints.on("create.before-commit", meanwhile):
        res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    for name in ("prune", "forget"):
        line = one_line_error(seen[name], 9)
        assert "create (shared)" in line and str(os.getpid()) in line, line
    assert _ids(repo_path) == [first, res.json()["id"]]
    _check_ok(repo_path)
    # and once the create is done, the prune goes ahead and the kept snapshot restores
    assert run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s").code == 0
    _check_ok(repo_path)
    out = run_cli("--repo", repo_path, "restore", "latest", tmp_path / "out", "--skip-chroma-check")
    assert out.code == 0, out.stderr


def test_a_create_whose_lock_was_removed_commits_nothing(chroma_dir: Path, repo_path: Path) -> None:
    first = create_snapshot(repo_path, chroma_dir)
    retag(chroma_dir, 6)
    pruned: list[CliResult] = []

    def operator_forces_a_prune() -> None:
        assert run_cli("--repo", repo_path, "unlock", "--remove-all").code == 0
        pruned.append(run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s"))

    with pausepoints.on("create.before-commit", operator_forces_a_prune):
        res = run_cli("--repo", repo_path, "create", chroma_dir)
    assert pruned[0].code == 0, pruned[0].stderr
    assert "lost the repository lock" in one_line_error(res, 9)
    assert _ids(repo_path) == [first]
    _check_ok(repo_path)


def test_a_create_whose_objects_vanished_commits_nothing(chroma_dir: Path, repo_path: Path) -> None:
    create_snapshot(repo_path, chroma_dir)
    retag(chroma_dir, 7)
    before = set(pack_files(repo_path))

    def rogue_delete() -> None:
        new = set(pack_files(repo_path)) - before
        assert new
        for p in new:
            p.unlink()

    with pausepoints.on("create.before-commit", rogue_delete):
        res = run_cli("--repo", repo_path, "create", chroma_dir)
    assert "vanished" in one_line_error(res, 1)
    assert len(_ids(repo_path)) == 1
    _check_ok(repo_path)


def test_a_retried_create_reuses_the_leftover_packs_without_uploading_them(
    chroma_dir: Path, repo_path: Path
) -> None:
    """They keep their age (past the grace period here): a prune may condemn them while the
    retry runs, and the retry's root rescues them; once it is saved, a prune keeps them."""
    def crash() -> None:
        raise RuntimeError("killed before the commit")

    with pausepoints.on("create.before-commit", crash), pytest.raises(RuntimeError):
        run_cli("--repo", repo_path, "create", chroma_dir)
    leftovers = pack_files(repo_path)
    assert leftovers and not list((repo_path / "snapshots").glob("*.json"))
    old = time.time() - 7200
    for p in leftovers:
        os.utime(p, (old, old))
    res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    left = sum(p.stat().st_size for p in leftovers)
    assert res.json()["bytes_uploaded"] < 0.1 * left and res.json()["bytes_resumed"] > 0.9 * left
    assert set(leftovers) <= set(pack_files(repo_path))
    aged = [p for p in leftovers if p.stat().st_mtime < time.time() - 3600]  # not uploaded again
    assert sum(p.stat().st_size for p in aged) == res.json()["bytes_resumed"]
    prune = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--json")
    assert prune.code == 0 and prune.json()["objects_removed"] == [], prune.stdout
    _check_ok(repo_path)


def test_a_retried_commit_that_finds_its_own_manifest_is_success(
    chroma_dir: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = LocalStore.put

    def put_then_lose_the_response(self: LocalStore, key: str, data: bytes, *, kind: ObjectKind,
                                   create_only: bool = False) -> None:
        real_put(self, key, data, kind=kind, create_only=create_only)
        if key.startswith("snapshots/"):  # the retry of a PUT whose answer was lost gets 412
            raise AlreadyExistsError(f"{key} already exists")

    monkeypatch.setattr(LocalStore, "put", put_then_lose_the_response)
    res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    monkeypatch.undo()
    assert _ids(repo_path) == [res.json()["id"]]


# -- signals and a full disk -------------------------------------------------------------------------


def _cache_leftovers(cache: Path) -> list[str]:
    return [p.name for p in cache.rglob(".*") if p.is_dir() and p.name.startswith((".staging-", ".old-"))]


def test_sigterm_exits_143_and_removes_temporary_files(chroma_dir: Path, repo_path: Path) -> None:
    cache = Path(os.environ["CHROMA_SNAPSHOT_CACHE"])
    with pausepoints.on("create.captured", lambda: os.kill(os.getpid(), signal.SIGTERM)):
        res = run_cli("--repo", repo_path, "create", chroma_dir)
    assert "terminated" in one_line_error(res, 143)
    assert _cache_leftovers(cache) == [] and not list((repo_path / "snapshots").glob("*.json"))
    assert not list((repo_path / "locks").glob("*.json"))
    create_snapshot(repo_path, chroma_dir)


def test_sigint_after_the_commit_reports_the_saved_snapshot(chroma_dir: Path, repo_path: Path) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    with pausepoints.on("create.after-commit", interrupt):
        res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    sid = res.json()["id"]
    assert "saved" in res.stderr and sid in res.stderr
    assert _ids(repo_path) == [sid]


def test_a_full_disk_names_the_filesystem(
    chroma_dir: Path, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapshot.chroma.capture

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(snapshot.chroma.capture.shutil, "copyfile", no_space)
    line = one_line_error(run_cli("--repo", repo_path, "create", chroma_dir, "--tmp-dir", staging), 15)
    assert "no space left" in line and "filesystem at /" in line and str(chroma_dir) not in line
    assert list(staging.iterdir()) == []
