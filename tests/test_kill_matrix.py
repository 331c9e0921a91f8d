"""kill -9 matrix: the real CLI in a child process SIGKILLs itself at a named pause point
(CHROMA_SNAPSHOT_KILL_AT, see snapshot/util/pausepoints.py) during create, prune, forget and restore.

After every kill: the repository passes ``check --read-data``, its snapshots restore, a restore
target holds exactly its old or exactly its new tree, and the next run of the same command
(not killed, not preceded by ``unlock``) succeeds and leaves nothing behind: no temp dirs in
TMPDIR, no staging dirs in the base cache, nothing beside the restore target, and no lock
object (the next locker removes the one a dead process of this host left).

Each case copies a repository (and DB) built once per module, so the whole matrix stays fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import grow, tree_digest
from conftest import exchange_supported, run_cli

from snapshot.repo.repository import Repository
from snapshot.util import pausepoints

# kill -9 at every pause point: dozens of child processes (run before a commit, and in CI)
pytestmark = pytest.mark.slow

GROWTH = 20  # docs added between two snapshots
CHILD_TIMEOUT = 120
# The CLI with the atomic exchange disabled: the two-rename swap used where renameat2 is missing.
NO_EXCHANGE = (
    "import sys; from snapshot import swap; swap.exchange = lambda a, b: False; "
    "from snapshot.cli import main; main()"
)


# --- the child process and the per-test sandbox ----------------------------------------------


@dataclass(frozen=True)
class Child:
    pid: int
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass(frozen=True)
class Box:
    """One test's repository, TMPDIR and base cache (the autouse fixture's CHROMA_SNAPSHOT_CACHE)."""

    root: Path
    repo: Path
    tmp: Path
    cache: Path

    def env(self, kill_at: str | None) -> dict[str, str]:
        drop = (pausepoints.KILL_ENV, "CHROMA_SNAPSHOT_REPO", "TMPDIR", "TEMP", "TMP")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(CHROMA_SNAPSHOT_CACHE=str(self.cache), TMPDIR=str(self.tmp))
        if kill_at is not None:
            env[pausepoints.KILL_ENV] = kill_at
        return env

    def run(
        self, *args: str | Path, kill_at: str | None = None, entry: Sequence[str] = ("-m", "snapshot")
    ) -> Child:
        cmd = [sys.executable, *entry, "--repo", str(self.repo), *map(str, args)]
        proc = subprocess.Popen(
            cmd, env=self.env(kill_at), cwd=self.root, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return Child(proc.pid, proc.returncode, out, err)

    def kill_at(self, point: str, *args: str | Path, entry: Sequence[str] = ("-m", "snapshot")) -> Child:
        """Run the CLI until it SIGKILLs itself at ``point``; fail if it never gets there."""
        child = self.run(*args, kill_at=point, entry=entry)
        assert child.code == -signal.SIGKILL, (
            f"{point} was never reached (exit {child.code}):\n{child.stdout}\n{child.stderr}"
        )
        return child

    def cli(self, *args: str | Path) -> Any:
        """Run the CLI in-process with --json; it must succeed."""
        res = run_cli("--repo", str(self.repo), *map(str, args), "--json")
        assert res.code == 0, res.stdout + res.stderr
        return res.json()


@pytest.fixture
def box(tmp_path: Path) -> Box:
    b = Box(tmp_path, tmp_path / "repo", tmp_path / "tmp", tmp_path / "base-cache")
    b.tmp.mkdir()
    assert os.environ["CHROMA_SNAPSHOT_CACHE"] == str(b.cache)  # conftest's autouse fixture
    return b


def nth(point: str, ordinal: str | None, last: int) -> str:
    """``point#N``; ordinal "last" is the last time the point is reached in this scenario."""
    if ordinal is None:
        return point
    return f"{point}#{last if ordinal == 'last' else int(ordinal)}"


# --- what must hold after every kill, and after the next run ---------------------------------


def snapshot_ids(box: Box) -> list[str]:
    return [s["id"] for s in box.cli("list")]


def check_repo(box: Box, *, read_data: bool = True) -> dict[str, Any]:
    res = run_cli("--repo", str(box.repo), "check", "--json", *(["--read-data"] if read_data else []))
    assert res.code == 0, res.stdout + res.stderr
    report: dict[str, Any] = res.json()
    assert report["ok"] and report["problems"] == []
    return report


def restore_all(box: Box, ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Restore each snapshot into a fresh dir (hash-verified by restore itself)."""
    out = {}
    for sid in ids:
        dest = box.root / "verify" / sid
        box.cli("restore", sid, dest, "--skip-chroma-check")
        out[sid] = tree_digest(dest)
        shutil.rmtree(dest)
    return out


def locks(box: Box) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((box.repo / "locks").glob("*.json"))]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_lock_left_by(box: Box, killed: Child) -> None:
    """The killed child held the repository lock: its object stays, naming a dead pid."""
    held = locks(box)
    assert [lk["pid"] for lk in held] == [killed.pid], held
    assert not pid_alive(killed.pid)


def debris(box: Box, target: Path | None = None) -> list[str]:
    """What killed runs leave: temp dirs in TMPDIR, staging dirs in the base cache, and the
    temp dirs and journal of a restore beside its target."""
    found = [p.name for p in box.tmp.iterdir() if p.name.startswith("chroma-snapshot-")]
    found += [str(p) for pattern in ("*/.staging-*", "*/.old-*") for p in box.cache.glob(pattern)]
    if target is not None:
        found += [n for n in os.listdir(target.parent) if n.startswith(f".{target.name}.")]
    return sorted(found)


def assert_no_leftovers(box: Box, killed: Child, target: Path | None = None) -> None:
    assert debris(box, target) == []
    if target is not None:
        assert os.listdir(target.parent) == [target.name]
    if box.repo.exists():
        # The next run found the dead child's lock object (same host, pid gone) and removed it.
        assert locks(box) == [], locks(box)


# --- create ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateBase:
    v1: Path  # the template DB
    v2: Path  # the template DB grown by GROWTH docs


@pytest.fixture(scope="module")
def create_base(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> CreateBase:
    v2 = tmp_path_factory.mktemp("create-base") / "vector_db"
    shutil.copytree(chroma_template, v2)
    grow(v2, "docs", GROWTH, seed=1)
    return CreateBase(chroma_template, v2)


V1_COUNTS = {"docs": 3000, "notes": 1000}
V2_COUNTS = {"docs": 3000 + GROWTH, "notes": 1000}

# (scenario, point, whether the snapshot is committed when the kill lands). "init": the create
# that initialises the repository; "second": a repository holding one snapshot of the source,
# with the base cache warm; "second-no-cache": the same with --no-cache (staging in TMPDIR).
# Each create uploads one pack (16 MiB packs, a ~7 MB DB): create.pack-uploaded#2 is never
# reached, so the cases use every other point instead.
CREATE_CASES = [
    ("init", "create.captured", False),
    ("init", "create.pack-uploaded#1", False),
    ("init", "create.before-commit", False),
    ("init", "create.after-commit", True),
    ("init", "create.cache-committed", True),
    ("second", "create.captured", False),
    ("second", "create.pack-uploaded#1", False),
    ("second", "create.before-commit", False),
    ("second", "create.after-commit", True),
    ("second", "create.cache-committed", True),
    ("second-no-cache", "create.captured", False),
    ("second-no-cache", "create.before-commit", False),
    ("second-no-cache", "create.after-commit", True),
]


@pytest.mark.parametrize(
    ("scenario", "point", "committed"), CREATE_CASES, ids=[f"{s}-{p}" for s, p, _ in CREATE_CASES]
)
def test_create_killed(box: Box, create_base: CreateBase, scenario: str, point: str, committed: bool) -> None:
    src = box.root / "data" / "vector_db"
    shutil.copytree(create_base.v1, src)
    if scenario != "init":
        box.cli("create", src)  # in-process, same cache dir and source path: the cache is warm
        shutil.rmtree(src)
        shutil.copytree(create_base.v2, src)
    before = snapshot_ids(box) if scenario != "init" else []
    args = ["create", src, "--json", *(["--no-cache"] if scenario == "second-no-cache" else [])]

    killed = box.kill_at(point, *args)

    # The staging dir survives the kill (in TMPDIR with --no-cache), unless the cache took it.
    assert bool(debris(box)) == (point != "create.cache-committed")
    after = snapshot_ids(box)
    assert after[: len(before)] == before
    assert len(after) == len(before) + committed  # the old set, or one more: never a broken one
    check_repo(box)
    restore_all(box, after)
    assert_lock_left_by(box, killed)

    again = box.run(*args)  # not blocked by the dead child's shared lock
    assert again.code == 0, again.stderr
    final = box.cli("list")
    assert [s["id"] for s in final] == [*after, again.json()["id"]]
    assert final[-1]["collections"] == (V1_COUNTS if scenario == "init" else V2_COUNTS)
    box.cli("prune", "--keep-last", "100")  # the exclusive lock is not blocked either
    report = check_repo(box)
    assert report["snapshots"] == len(after) + 1
    restore_all(box, [again.json()["id"]])
    assert_no_leftovers(box, killed)


# --- prune and forget --------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneBase:
    repo: Path
    ids: list[str]  # oldest first
    prune_objects: int  # objects `prune --keep-last 1 --grace 0s` deletes
    forget_objects: int  # objects forgetting FORGET_SLICE deletes


SNAPSHOTS = 6
FORGET_SLICE = slice(1, -1)  # every snapshot but the first and the newest
PRUNE_ARGS = ("prune", "--keep-last", "1", "--grace", "0s")


@pytest.fixture(scope="module")
def prune_base(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PruneBase]:
    """SNAPSHOTS snapshots of a growing DB. --no-delta: each create stores its changed chunks
    whole, so the packs of the dropped snapshots become unreferenced (with deltas the newest
    snapshot's chains reach back into every older pack and a prune deletes no object)."""
    root = tmp_path_factory.mktemp("prune-base")
    src, repo = root / "vector_db", root / "repo"
    shutil.copytree(chroma_template, src)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHROMA_SNAPSHOT_CACHE", str(root / "cache"))
        mp.setenv("CHROMA_SNAPSHOT_DELETE_AFTER", "0")  # as the tests' prunes (conftest)
        b = Box(root, repo, root, root / "cache")
        for k in range(SNAPSHOTS):
            if k:
                grow(src, "docs", GROWTH, seed=k)
            b.cli("create", src, "--no-delta")
        ids = snapshot_ids(b)
        prune_plan = b.cli(*PRUNE_ARGS, "--dry-run")
        forget_plan = b.cli("forget", *ids[FORGET_SLICE], "--grace", "0s", "--dry-run")
    assert len(ids) == SNAPSHOTS and locks(b) == []
    assert len(prune_plan["removed"]) == SNAPSHOTS - 1
    # At least three deletions, so that #1, #2 and #last are three different moments.
    assert len(prune_plan["objects_removed"]) >= 3, prune_plan
    assert len(forget_plan["objects_removed"]) >= 2, forget_plan
    yield PruneBase(repo, ids, len(prune_plan["objects_removed"]), len(forget_plan["objects_removed"]))


# (command, point, ordinal: "1", "2", "last" or None for a point reached once)
PRUNE_CASES = [
    ("prune", "prune.manifest-deleted", "1"),
    ("prune", "prune.manifest-deleted", "2"),
    ("prune", "prune.manifest-deleted", "last"),
    ("prune", "prune.newcomers-read", None),
    ("prune", "repository.object-deleted", "1"),
    ("prune", "repository.object-deleted", "2"),
    ("prune", "repository.object-deleted", "last"),
    # the two phases of the deletion protocol (--delete-after 0: both in one run)
    ("prune", "prune.condemned", None),
    ("prune", "prune.before-delete", None),
    ("prune", "repository.condemned-record-deleted", None),
    ("prune", "prune.records-replaced", None),
    ("forget", "prune.manifest-deleted", "1"),
    ("forget", "prune.manifest-deleted", "last"),
    ("forget", "prune.newcomers-read", None),
    ("forget", "repository.object-deleted", "1"),
    ("forget", "repository.object-deleted", "last"),
    ("forget", "prune.condemned", None),
    ("forget", "repository.condemned-record-deleted", None),
]


@pytest.mark.parametrize(
    ("command", "point", "ordinal"), PRUNE_CASES, ids=[f"{c}-{p}#{o or 1}" for c, p, o in PRUNE_CASES]
)
def test_prune_killed(box: Box, prune_base: PruneBase, command: str, point: str, ordinal: str | None) -> None:
    shutil.copytree(prune_base.repo, box.repo)
    ids = prune_base.ids
    dropped = ids[:-1] if command == "prune" else ids[FORGET_SLICE]
    objects = prune_base.prune_objects if command == "prune" else prune_base.forget_objects
    last = len(dropped) if point == "prune.manifest-deleted" else objects
    args = PRUNE_ARGS if command == "prune" else ("forget", *dropped, "--grace", "0s")

    killed = box.kill_at(nth(point, ordinal, last), *args)

    after = snapshot_ids(box)
    if point == "prune.manifest-deleted":  # dropped newest first, one manifest per hit
        hits = last if ordinal == "last" else int(ordinal or 1)
        assert after == [i for i in ids if i not in sorted(dropped, reverse=True)[:hits]]
    else:
        assert after == [i for i in ids if i not in dropped]
    check_repo(box)
    restore_all(box, after)
    assert_lock_left_by(box, killed)

    if command == "prune":
        again = box.run(*args)  # not blocked by the dead child's exclusive lock
    else:
        # forget resolves every ref before deleting anything: re-run verbatim, it refuses the
        # ids the killed run already dropped (exit 3) and changes nothing.
        gone = [i for i in dropped if i not in after]
        verbatim = box.run(*args)
        assert verbatim.code == 3 and gone[0] in verbatim.stderr, verbatim.stderr
        assert snapshot_ids(box) == after
        left = [i for i in dropped if i in after]
        # What the user does next: forget the rest, or collect what the killed run left.
        again = box.run(*(("forget", *left) if left else ("prune", "--keep-last", "2")), "--grace", "0s")
    assert again.code == 0, again.stderr
    assert snapshot_ids(box) == [i for i in ids if i not in dropped]
    report = check_repo(box)
    assert report["unreferenced"] == []  # grace 0s: nothing the killed run freed is left over
    # nothing stays condemned for ever: what the killed run condemned was deleted (or found gone)
    assert not Repository.open(box.repo).condemned().since
    restore_all(box, snapshot_ids(box))
    assert_no_leftovers(box, killed)


# --- repack (prune re-basing chains and copying live frames) -------------------------------------


@dataclass(frozen=True)
class RepackBase:
    repo: Path
    ids: list[str]  # oldest first
    kept: list[str]  # what `prune --keep-last 2` keeps
    trees: dict[str, dict[str, str]]  # every kept snapshot restored before any repack


REPACK_ARGS = ("prune", "--keep-last", "2", "--grace", "0s", "--max-unused", "1%")


@pytest.fixture(scope="module")
def repack_base(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RepackBase]:
    """Nightly changes with delta chains (64 KiB chunks): dropping all but the last two
    snapshots leaves chains whose first frames only dropped snapshots used, and packs that are
    mostly unused, so the prune re-bases chains, copies frames and rewrites both kept roots."""
    root = tmp_path_factory.mktemp("repack-base")
    src, repo = root / "vector_db", root / "repo"
    shutil.copytree(chroma_template, src)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHROMA_SNAPSHOT_CACHE", str(root / "cache"))
        b = Box(root, repo, root, root / "cache")
        for k in range(6):
            if k:
                grow(src, "docs", GROWTH, seed=40 + k)
            b.cli("create", src, *(("--chunk-size", "65536") if k == 0 else ()))
        ids = snapshot_ids(b)
        plan = b.cli(*REPACK_ARGS, "--dry-run")
        trees = restore_all(b, ids[-2:])
    assert plan["repack"]["chunks_rebased"] > 0 and plan["repack"]["packs_repacked"] > 0, plan
    yield RepackBase(repo, ids, ids[-2:], trees)


REPACK_POINTS = [
    "repack.packs-written",  # new packs written, nothing points at them
    "repack.tables-written",
    "repack.root-rewritten#1",  # one kept root rewritten, the other not
    "repack.roots-rewritten",  # every root rewritten, no old pack deleted, no snapshot removed
    "prune.manifest-deleted#1",
    "prune.before-delete",
    "repository.object-deleted#1",
]


@pytest.mark.parametrize("point", REPACK_POINTS)
def test_repack_killed(box: Box, repack_base: RepackBase, point: str) -> None:
    shutil.copytree(repack_base.repo, box.repo)
    killed = box.kill_at(point, *REPACK_ARGS)

    # the repack reads data, so it runs before anything is removed; then the dropped manifests go
    after = snapshot_ids(box)
    if point.startswith("repack."):
        assert after == repack_base.ids
    elif point == "prune.manifest-deleted#1":  # dropped newest first
        assert after == repack_base.ids[:-3] + repack_base.kept
    else:
        assert after == repack_base.kept
    check_repo(box)
    assert restore_all(box, repack_base.kept) == repack_base.trees
    assert_lock_left_by(box, killed)

    again = box.run(*REPACK_ARGS)
    assert again.code == 0, again.stderr
    report = check_repo(box)
    assert report["unreferenced"] == []
    assert not Repository.open(box.repo).condemned().since
    assert restore_all(box, repack_base.kept) == repack_base.trees
    assert_no_leftovers(box, killed)


def test_packs_of_a_killed_repack_are_condemned_then_deleted_a_day_later(
    box: Box, repack_base: RepackBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default bound: what a killed repack wrote is condemned by the next prune (not
    deleted under a create that might use it), deleted by one a day later; nothing leaks."""
    shutil.copytree(repack_base.repo, box.repo)
    box.kill_at("repack.packs-written", *REPACK_ARGS)
    left = {oid for oid, _ in Repository.open(box.repo).list_objects()}
    monkeypatch.delenv("CHROMA_SNAPSHOT_DELETE_AFTER")
    first = box.run(*REPACK_ARGS, "--json")
    assert first.code == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["objects_removed"] == [] and out["objects_condemned"], out
    condemned = set(Repository.open(box.repo).condemned().since)
    assert condemned and condemned <= left
    check_repo(box)
    monkeypatch.setenv("CHROMA_SNAPSHOT_CLOCK_SHIFT", str(25 * 3600))
    second = box.run("prune", "--keep-last", "2", "--json")
    assert second.code == 0, second.stderr
    assert set(json.loads(second.stdout)["objects_removed"]) == condemned
    assert check_repo(box)["unreferenced"] == []
    assert not Repository.open(box.repo).condemned().since
    assert restore_all(box, repack_base.kept) == repack_base.trees


# --- restore ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreBase:
    repo: Path
    old_target: Path  # snapshot 1 restored: what the target holds before each case
    old: dict[str, str]  # tree digests of snapshot 1 and 2 restored into fresh dirs
    new: dict[str, str]
    files: int  # files in the latest snapshot (restore.file-written is reached once per file)


@pytest.fixture(scope="module")
def restore_base(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestoreBase]:
    root = tmp_path_factory.mktemp("restore-base")
    src, repo = root / "vector_db", root / "repo"
    shutil.copytree(chroma_template, src)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHROMA_SNAPSHOT_CACHE", str(root / "cache"))
        b = Box(root, repo, root, root / "cache")
        first = b.cli("create", src)["id"]
        grow(src, "docs", GROWTH, seed=1)
        b.cli("create", src)
        b.cli("restore", first, root / "old" / "vector_db", "--skip-chroma-check")
        b.cli("restore", "latest", root / "new" / "vector_db", "--skip-chroma-check")
        files = len(b.cli("show", "latest")["files"])
    old, new = tree_digest(root / "old" / "vector_db"), tree_digest(root / "new" / "vector_db")
    assert old != new and files >= 6
    yield RestoreBase(repo, root / "old" / "vector_db", old, new, files)


# (swap mode, point, ordinal, what the target holds right after the kill). "exchange": the
# target holds snapshot 1 and is replaced by renameat2(RENAME_EXCHANGE); "renames": the same
# with the exchange disabled (two renames, as on file systems without it); "missing": the
# target does not exist yet.
RESTORE_CASES = [
    ("exchange", "restore.file-written", "1", "old"),
    ("exchange", "restore.file-written", "6", "old"),
    ("exchange", "restore.file-written", "last", "old"),
    ("exchange", "restore.verified", None, "old"),
    ("exchange", "swap.begin", None, "old"),
    ("exchange", "swap.journal-written", None, "old"),
    ("exchange", "swap.exchanged", None, "new"),
    ("exchange", "swap.old-renamed", None, "new"),
    ("exchange", "swap.synced", None, "new"),
    ("exchange", "swap.journal-removed", None, "new"),
    ("renames", "swap.journal-written", None, "old"),
    # The documented gap of the two-rename swap: the target is missing between the renames
    # (the journal is there, and the next restore puts the old tree back first).
    ("renames", "swap.old-renamed", None, "missing"),
    ("renames", "swap.new-renamed", None, "new"),
    ("renames", "swap.synced", None, "new"),
    ("missing", "swap.begin", None, "missing"),
    ("missing", "swap.new-renamed", None, "new"),
]
JOURNALLED = {"swap.journal-written", "swap.exchanged", "swap.old-renamed", "swap.new-renamed", "swap.synced"}


def target_state(target: Path, base: RestoreBase) -> str:
    if not os.path.lexists(target):
        return "missing"
    digest = tree_digest(target)
    return "old" if digest == base.old else "new" if digest == base.new else "mixed"


@pytest.mark.parametrize(
    ("mode", "point", "ordinal", "state"),
    RESTORE_CASES,
    ids=[f"{m}-{p}#{o or 1}" for m, p, o, _ in RESTORE_CASES],
)
def test_restore_killed(
    box: Box, restore_base: RestoreBase, mode: str, point: str, ordinal: str | None, state: str
) -> None:
    shutil.copytree(restore_base.repo, box.repo)
    target = box.root / "dst" / "vector_db"
    target.parent.mkdir()
    if mode == "exchange" and not exchange_supported(target.parent):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported here")
    if mode != "missing":
        shutil.copytree(restore_base.old_target, target)
        assert target_state(target, restore_base) == "old"
    entry = ("-c", NO_EXCHANGE) if mode == "renames" else ("-m", "snapshot")
    args = ("restore", "latest", target, "--force", "--skip-chroma-check", "--json")

    killed = box.kill_at(nth(point, ordinal, restore_base.files), *args, entry=entry)

    assert target_state(target, restore_base) == state
    # The built dir, the displaced old tree or the journal stays beside the target, except
    # when the built dir had just become the (new) target.
    assert bool(debris(box, target)) == ((mode, point) != ("missing", "swap.new-renamed"))
    journalled = (target.parent / f".{target.name}.swap.json").exists()
    assert journalled == (point in JOURNALLED and mode != "missing")
    check_repo(box)
    assert restore_all(box, ["latest"]) == {"latest": restore_base.new}
    assert locks(box) == []  # restore takes no repository lock

    again = box.run(*args)
    assert again.code == 0, again.stderr
    warnings = again.json()["warnings"]
    if journalled:  # the next restore first finished or rolled back the swap
        assert len(warnings) == 1
        assert ("finished" if state == "new" else "rolled back") in warnings[0], warnings
    else:
        assert warnings == []
    # A kill before the swap began left the staging dir: the next restore took what it held.
    if point.startswith("restore.") or point == "swap.begin":
        assert again.json()["bytes_resumed"] > 0
        if ordinal == "last" or point != "restore.file-written":  # every file was written
            assert again.json()["bytes_downloaded"] == 0
    assert target_state(target, restore_base) == "new"
    assert_no_leftovers(box, killed, target)
