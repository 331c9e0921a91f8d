"""A create killed (kill -9) after uploading part of its packs, then run again: the rerun takes
what the killed run had uploaded from its packs instead of uploading it again (the resume
journal, snapshot/repo/journal.py), also when a prune ran in between (the leftover packs are
then condemned, and the new root rescues them) and on S3; when a prune really deleted them, the
rerun notices and uploads them again. Every resumed snapshot restores byte-exact and
``check --read-data`` passes.

The killed create runs in a child process that SIGKILLs itself at a pause point
(CHROMA_SNAPSHOT_KILL_AT) after some packs were uploaded; packs are small (64 KiB: about one
frame each) so that a ~6 MB DB makes several.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become, tree_digest
from conftest import run_cli

from snapshot import errors
from snapshot.create.pipeline import CreateResult, create_snapshot
from snapshot.format.condemned import DEFAULT_DELETE_AFTER, Condemned
from snapshot.format.manifest import Frame
from snapshot.repo import locks
from snapshot.repo.journal import Journal, JournalFrame, JournalPack, usable_packs
from snapshot.repo.keys import KeySource
from snapshot.repo.packs import PendingFrame
from snapshot.repo.repository import CLOCK_SHIFT_ENV, Repository
from snapshot.util import pausepoints

PACK = 64 << 10
KILL_AT = "create.pack-uploaded#4"
PASSWORD = "resume-pw"
HOUR = 3600.0

CHILD = """
import sys
from snapshot.create.pipeline import create_snapshot
from snapshot.repo.keys import KeySource
from snapshot.repo.repository import Repository
url, src, pack, cache, password = sys.argv[1:6]
ks = KeySource.of(password) if password else None
repo = Repository.open(url, create=True, encrypt=bool(password), key_source=ks)
create_snapshot(repo, src, pack_size=int(pack), use_cache=cache == "cache")
"""


def _open(url: str, encrypted: bool = False) -> Repository:
    return Repository.open(url, create=True, encrypt=encrypted,
                           key_source=KeySource.of(PASSWORD) if encrypted else None)


def kill_create(
    url: str, src: Path, *, encrypted: bool = False, cache: bool = True, at: str = KILL_AT
) -> None:
    """A create in a child process that kills itself (SIGKILL) at ``at``."""
    env = {**os.environ, pausepoints.KILL_ENV: at}
    args = [url, str(src), str(PACK), "cache" if cache else "no-cache", PASSWORD if encrypted else ""]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == -signal.SIGKILL, f"{at} was never reached: {proc.stderr}"


def packs(url: str, encrypted: bool = False) -> dict[str, int]:
    """The packs the store holds (what has been PUT and landed): id -> size."""
    return {oid: info.size for oid, info in _open(url, encrypted).list_objects() if oid is not None}


def create(url: str, src: Path, *, encrypted: bool = False, cache: bool = True) -> CreateResult:
    return create_snapshot(_open(url, encrypted), src, pack_size=PACK, use_cache=cache)


def fresh_upload(tmp_path: Path, src: Path, **kw: Any) -> int:
    """What an uninterrupted create of ``src`` uploads into an empty repository."""
    return create(str(tmp_path / "fresh"), src, **kw).bytes_uploaded


def assert_sound(url: str, src: Path, dest: Path, *, encrypted: bool = False) -> None:
    pw: list[str] = []
    if encrypted:
        (dest.parent / "pw").write_text(PASSWORD)
        pw = ["--password-file", str(dest.parent / "pw")]
    res = run_cli("--repo", url, *pw, "check", "--read-data", "--json")
    assert res.code == 0 and res.json()["ok"], res.stdout + res.stderr
    res = run_cli("--repo", url, *pw, "restore", "latest", str(dest), "--json")
    assert res.code == 0, res.stderr
    assert tree_digest(dest) == tree_digest(src)


def prune(url: str, *args: str) -> Any:
    res = run_cli("--repo", url, "prune", "--keep-last", "1", "--grace", "0s", "--json", *args)
    assert res.code == 0, res.stdout + res.stderr
    return res.json()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "snapshots")
    s3: str = request.getfixturevalue("s3_repo_url")
    return s3


@pytest.fixture
def src(chroma_dir: Path) -> Path:
    return chroma_dir


def assert_resumed(result: CreateResult, left: dict[str, int], fresh: int) -> None:
    """Every pack the killed run had landed is used; what the rerun uploads again of it (beyond
    what an uninterrupted create uploads that the killed run had not) is at most 10%."""
    uploaded = sum(left.values())
    again = result.bytes_uploaded - (fresh - uploaded)
    assert uploaded > 0 and again <= 0.1 * uploaded, (result.bytes_uploaded, fresh, uploaded)
    assert result.bytes_resumed == uploaded


def test_a_killed_create_is_resumed_without_uploading_again(url: str, src: Path, tmp_path: Path) -> None:
    fresh = fresh_upload(tmp_path, src)
    kill_create(url, src)
    left = packs(url)
    assert len(left) >= 4

    result = create(url, src)

    assert_resumed(result, left, fresh)
    assert set(left) <= set(packs(url))
    assert_sound(url, src, tmp_path / "restored")
    assert not list((tmp_path / "base-cache").rglob("*.journal"))  # a saved snapshot ends the journal


def test_a_prune_between_kill_and_resume_loses_nothing(
    url: str, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHROMA_SNAPSHOT_DELETE_AFTER", raising=False)  # the default bound, 24 h
    fresh = fresh_upload(tmp_path, src)
    kill_create(url, src)
    left = packs(url)
    assert sorted(prune(url)["objects_condemned"]) == sorted(left)  # unreferenced leftovers

    result = create(url, src)

    assert_resumed(result, left, fresh)
    monkeypatch.setenv(CLOCK_SHIFT_ENV, str(2 * DEFAULT_DELETE_AFTER))  # long past the bound
    report = prune(url)
    assert report["objects_rescued"] == len(left) and report["objects_removed"] == []
    prune(url)
    assert set(left) <= set(packs(url))
    assert _open(url).condemned().since == {}
    assert_sound(url, src, tmp_path / "restored")


def test_leftovers_deleted_before_the_resume_are_uploaded_again(url: str, src: Path, tmp_path: Path) -> None:
    kill_create(url, src)
    left = packs(url)
    prune(url, "--delete-after", "0")
    assert packs(url) == {}

    result = create(url, src)

    assert result.bytes_resumed == 0 and result.chunks_resumed == 0
    assert set(left) <= set(packs(url))  # the same frames in the same packs, stored again
    assert_sound(url, src, tmp_path / "restored")


def test_leftovers_condemned_for_a_quarter_of_the_bound_are_stored_anew(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHROMA_SNAPSHOT_DELETE_AFTER", raising=False)
    url = str(tmp_path / "snapshots")
    kill_create(url, src)
    assert prune(url)["objects_condemned"]
    monkeypatch.setenv(CLOCK_SHIFT_ENV, str(7 * HOUR))  # past a quarter of 24 h

    result = create(url, src)

    assert result.bytes_resumed == 0
    assert_sound(url, src, tmp_path / "restored")


def test_a_resume_that_ran_past_half_the_bound_commits_nothing(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leftovers it reused were condemned when it started: before committing it reads the
    records again and finds them condemned for half the bound (a prune may delete them)."""
    monkeypatch.delenv("CHROMA_SNAPSHOT_DELETE_AFTER", raising=False)
    url = str(tmp_path / "snapshots")
    kill_create(url, src)
    prune(url)
    # A lock judged by the same clock would be lost first: as if it had stopped excluding.
    monkeypatch.setattr(locks.RepositoryLock, "check", lambda self: None)
    late = lambda: monkeypatch.setenv(CLOCK_SHIFT_ENV, str(13 * HOUR))  # noqa: E731
    with pausepoints.on("create.before-commit", late), pytest.raises(errors.LockedError, match="condemned"):
        create(url, src)
    assert _open(url).snapshot_ids() == []


def test_an_encrypted_create_is_resumed(src: Path, tmp_path: Path) -> None:
    url = str(tmp_path / "snapshots")
    fresh = fresh_upload(tmp_path, src, encrypted=True)
    kill_create(url, src, encrypted=True)
    left = packs(url, encrypted=True)

    result = create(url, src, encrypted=True)

    assert_resumed(result, left, fresh)
    assert_sound(url, src, tmp_path / "restored", encrypted=True)


def test_delta_frames_are_resumed_without_the_cache(src: Path, chroma_grown: Path, tmp_path: Path) -> None:
    """A second create (delta frames against the parent's chunks), killed and resumed with
    --no-cache: the journal lives beside the cache all the same."""
    url = str(tmp_path / "snapshots")
    create(url, src, cache=False)
    first = packs(url)
    become(src, chroma_grown)
    shutil.copytree(url, tmp_path / "fresh")
    fresh = create(str(tmp_path / "fresh"), src, cache=False).bytes_uploaded
    kill_create(url, src, cache=False, at="create.pack-uploaded#1")
    left = {oid: size for oid, size in packs(url).items() if oid not in first}

    result = create(url, src, cache=False)

    assert result.chunks_delta > 0 and result.chunks_resumed > 0
    assert_resumed(result, left, fresh)
    assert_sound(url, src, tmp_path / "restored")


# --- the journal itself ---------------------------------------------------------------------------

H1, H2, B = "1" * 32, "2" * 32, "b" * 32
P1, P2 = "a" * 32, "c" * 32


def test_journal_lines_torn_or_changed_are_skipped(tmp_path: Path) -> None:
    j = Journal(tmp_path, "repo", tmp_path / "db", "zstd")
    j.record(P1, 100, [(PendingFrame(0, 0, 60, "zstd", 1000, H1), None),
                       (PendingFrame(0, 60, 40, "zstd", 900, H2), B)])
    j.record(P2, 50, [(PendingFrame(1, 0, 50, "zstd", 10, H1), None)])
    lines = j.path.read_bytes().splitlines(keepends=True)
    assert [p.id for p in j.load()] == [P1, P2]
    assert j.load()[0].frames[1] == JournalFrame(Frame(P1, 60, 40, "zstd", 900, H2), B)
    j.path.write_bytes(lines[0].replace(b'"size":100', b'"size":101') + lines[1][:-9])
    assert j.load() == []
    j.path.write_bytes(lines[1] + b'{"torn')
    assert [p.id for p in j.load()] == [P2]
    assert Journal(tmp_path, "repo", tmp_path / "db", "gzip").load() == []  # another codec's frames


def test_which_leftover_packs_a_create_may_use() -> None:
    p1 = JournalPack(P1, 100, ())
    p2 = JournalPack(P2, 50, ())
    now = 1_000_000.0
    assert usable_packs([p1, p2], {P1: 100, P2: 49}, Condemned({}), now) == {P1}  # P2 did not land whole
    young = Condemned({P1: now - 5 * HOUR}, min_delete_after=DEFAULT_DELETE_AFTER)
    old = Condemned({P1: now - 7 * HOUR}, min_delete_after=DEFAULT_DELETE_AFTER)
    assert usable_packs([p1], {P1: 100}, young, now) == {P1}  # the root will rescue it
    assert usable_packs([p1], {P1: 100}, old, now) == set()
    assert usable_packs([p1], {P1: 100}, Condemned({P1: now}, min_delete_after=0.0), now) == set()
    assert usable_packs([p1], {P1: 100}, Condemned({P2: now}, min_delete_after=0.0), now) == {P1}


def test_the_journal_entry_is_written_as_json(tmp_path: Path) -> None:
    j = Journal(tmp_path, "repo", tmp_path / "db", "zstd")
    j.record(P1, 10, [(PendingFrame(0, 0, 10, "zstd", 5, H1), None)])
    entry = json.loads(j.path.read_bytes().split(b" ", 1)[1])
    assert entry == {"v": 1, "pack": P1, "size": 10, "frames": [[0, 10, "zstd", 5, H1, None]]}
