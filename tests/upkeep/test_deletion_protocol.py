"""The deletion protocol: whatever happens to locks and clocks, no committed snapshot ever
references a deleted object (snapshot/format/condemned.py).

Each of the four ways a prune's exclusive lock stops excluding becomes a race driven by pause
points: a prune (``--keep-last 1 --max-unused 0%``: it drops the oldest snapshot and repacks,
rewriting the kept root) is held right after its repack wrote new packs; the trigger lets a
create in (it reads the kept root *before* the prune rewrites it, so it reuses packs the repack
then empties); the create is held at its commit until the prune has listed the roots for the
last time, then commits; then the prune finishes. Days pass (``CHROMA_SNAPSHOT_CLOCK_SHIFT``)
and two more prunes run with the default 24 h bound. Every committed snapshot must restore
byte-exact, ``check --read-data`` must be clean, and nothing condemned may be left over.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become, grow, tree_digest
from conftest import CliResult, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot import errors
from snapshot.create import pipeline as snapshot_create
from snapshot.create.pipeline import create_snapshot
from snapshot.format.condemned import CondemnedRecord
from snapshot.repo import locks
from snapshot.repo.repository import CLOCK_SHIFT_ENV, Repository
from snapshot.repo.usage import Usage
from snapshot.storage.base import ObjectKind
from snapshot.util import pausepoints

DAY = 86400.0
PRUNE = ("prune", "--keep-last", "1", "--max-unused", "0%", "--grace", "0s", "--json")


# The same races on S3 (its clock, conditional writes) run in the whole suite, not the quick loop.
@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def repo(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("CHROMA_SNAPSHOT_DELETE_AFTER", raising=False)  # the default bound, 24 h
    if request.param == "local":
        return str(tmp_path / "snapshots")
    url: str = request.getfixturevalue("s3_repo_url")
    return url


def _shift(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setenv(CLOCK_SHIFT_ENV, str(seconds))


def _ok(repo: str, *args: Any) -> Any:
    res = run_cli("--repo", repo, *args)
    assert res.code == 0, res.stdout + res.stderr
    return res.json() if "--json" in args else res


class Race:
    """A prune in this thread and a create in another, interleaved at pause points."""

    def __init__(self, repo: str, source: Path) -> None:
        self.repo, self.source = repo, source
        self.create_code: int | None = None
        self.create_id: str | None = None
        self.create_error = ""
        self.ready = threading.Event()  # the create waits at its commit, or has ended
        self.go = threading.Event()  # the create may commit
        self.thread: threading.Thread | None = None

    def _create(self) -> None:
        try:
            result = create_snapshot(Repository.open(self.repo), self.source)
            self.create_code, self.create_id = 0, result.id
        except errors.SnapshotError as exc:
            self.create_code, self.create_error = exc.exit_code, str(exc)
        finally:
            self.ready.set()

    def _at_commit(self) -> None:
        self.ready.set()
        assert self.go.wait(120), "the prune never let the create commit"

    def start_create(self) -> None:
        self.thread = threading.Thread(target=self._create, name="racing-create")
        self.thread.start()
        assert self.ready.wait(120), "the create neither reached its commit nor ended"

    def let_commit(self) -> None:
        self.go.set()
        if self.thread is not None:
            self.thread.join(120)
            assert not self.thread.is_alive()

    def run(self, trigger: Callable[[], None], after: Callable[[], None] = lambda: None) -> CliResult:
        def at_repack() -> None:
            trigger()
            self.start_create()
            after()

        with pausepoints.on("repack.packs-written", at_repack), \
                pausepoints.on("create.before-commit", self._at_commit), \
                pausepoints.on("prune.before-delete", self.let_commit):
            pruned = run_cli("--repo", self.repo, *PRUNE)
        self.let_commit()  # the prune stopped before its deletes
        return pruned


@pytest.fixture(scope="module")
def grown(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The template grown by 60 docs, and by 60 more: built once, copied by each test."""
    base = tmp_path_factory.mktemp("grown")
    states = (base / "1" / "vector_db", base / "2" / "vector_db")
    shutil.copytree(chroma_template, states[0])
    grow(states[0], "docs", 60, seed=1)
    shutil.copytree(states[0], states[1])
    grow(states[1], "docs", 60, seed=2)
    return states


@pytest.fixture
def history(repo: str, chroma_dir: Path, grown: tuple[Path, Path]) -> Iterator[dict[str, dict[str, str]]]:
    """Two snapshots, and the source grown once more for the racing create."""
    trees: dict[str, dict[str, str]] = {}
    for state in grown:
        sid = _ok(repo, "create", chroma_dir, "--json")["id"]
        trees[sid] = tree_digest(chroma_dir)
        become(chroma_dir, state)
    yield trees


def _settle_and_verify(repo: str, trees: dict[str, dict[str, str]], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every snapshot restores byte-exact and check is clean, now and after two later prunes
    a day apart; then nothing condemned is left and every object is referenced."""
    def verify(tag: str) -> None:
        _ok(repo, "check", "--read-data")
        listed = [s["id"] for s in _ok(repo, "list", "--json")]
        assert set(listed) <= set(trees), (listed, trees.keys())
        for sid in listed:
            out = tmp_path / f"restored-{tag}-{sid}"
            _ok(repo, "restore", sid, out)
            assert tree_digest(out) == trees[sid], f"snapshot {sid} did not restore byte-exact ({tag})"

    verify("after-race")
    for day in (1, 2):
        _shift(monkeypatch, day * DAY + 3600)
        _ok(repo, "prune", "--keep-last", "10", "--json")
        verify(f"day-{day}")
    r = Repository.open(repo)
    assert not r.condemned().since, "something condemned was never deleted or rescued"
    usage = Usage(r)
    used = set().union(*(usage.objects(r.manifest(sid)) for sid in r.snapshot_ids()))
    stored = {oid for oid, _ in r.list_objects() if oid is not None}
    assert stored == used, f"unreferenced objects leaked: {sorted(stored - used)[:3]}"


def _record(race: Race, trees: dict[str, dict[str, str]], source: Path) -> None:
    assert race.create_code in (0, 9), race.create_error
    if race.create_code == 0:
        assert race.create_id is not None
        trees[race.create_id] = tree_digest(source)


def _race(repo: str, source: Path, history: dict[str, dict[str, str]], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch, trigger: Callable[[], None],
          after: Callable[[], None] | None = None, *, prune_code: int, create_code: int,
          prune_says: str = "") -> tuple[Race, CliResult]:
    """Run the race with ``trigger`` (and ``after`` once the create waits at its commit), check
    both exit codes and note the create's tree if it saved (_settle_and_verify checks it)."""
    race = Race(repo, source)
    pruned = race.run(trigger, after or (lambda: None))
    assert pruned.code == prune_code and prune_says in pruned.stderr, pruned.stderr
    assert race.create_code == create_code, race.create_error
    _record(race, history, source)
    return race, pruned


def test_an_operator_removes_the_prune_lock(repo: str, chroma_dir: Path, history: dict[str, dict[str, str]],
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The prune notices at its next step that deletes or rewrites: exit 9, nothing more done.
    _race(repo, chroma_dir, history, tmp_path, monkeypatch, lambda: _ok(repo, "unlock", "--remove-all"),
          prune_code=9, create_code=0, prune_says="lost the repository lock")
    _settle_and_verify(repo, history, tmp_path, monkeypatch)


def test_the_lock_vanishes_after_the_prune_last_looked(repo: str, chroma_dir: Path,
                                                      history: dict[str, dict[str, str]], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Worst case of the first trigger: the prune never sees the loss (its re-checks are
    defeated), runs to the end while the create reuses packs it empties. The create's root
    rescues them: the protocol alone keeps every snapshot whole."""
    monkeypatch.setattr(locks.RepositoryLock, "check", lambda self: None)
    race, pruned = _race(repo, chroma_dir, history, tmp_path, monkeypatch,
                         lambda: _ok(repo, "unlock", "--remove-all"), prune_code=0, create_code=0)
    out = pruned.json()
    assert out["repack"]["roots_rewritten"] >= 1 and out["objects_condemned"], out
    assert out["objects_removed"] == [], "nothing may be deleted in the run that condemns it"
    r = Repository.open(repo)
    rescued = Usage(r).objects(r.manifest(race.create_id or "")) & set(r.condemned().since)
    assert rescued, "the scenario should have the create reuse packs the prune condemned"
    _settle_and_verify(repo, history, tmp_path, monkeypatch)


def test_a_same_named_host_in_another_pid_namespace(repo: str, chroma_dir: Path,
                                                   history: dict[str, dict[str, str]], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The create runs in another container with the same host name: the prune's pid does not
    run *there*. The lock names its process space, so the create does not judge it dead."""
    space, running = locks.process_space, locks._pid_running

    def other_container() -> None:
        monkeypatch.setattr(locks, "process_space", lambda: space() + "-other")
        monkeypatch.setattr(locks, "_pid_running", lambda pid: False)

    def back_home() -> None:
        monkeypatch.setattr(locks, "process_space", space)
        monkeypatch.setattr(locks, "_pid_running", running)

    race, _ = _race(repo, chroma_dir, history, tmp_path, monkeypatch, other_container, back_home,
                    prune_code=0, create_code=9)
    assert "locked" in race.create_error, race.create_error
    _settle_and_verify(repo, history, tmp_path, monkeypatch)


def test_a_prune_suspended_past_the_stale_time(repo: str, chroma_dir: Path,
                                              history: dict[str, dict[str, str]], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The prune sleeps (VM pause, SIGSTOP) for 31 minutes: its lock looks stale by age and a
    create goes ahead. Waking up, the prune finds it could not refresh its lock in time."""
    _race(repo, chroma_dir, history, tmp_path, monkeypatch, lambda: _shift(monkeypatch, 31 * 60),
          prune_code=9, create_code=0, prune_says="not refreshed")
    _settle_and_verify(repo, history, tmp_path, monkeypatch)


def test_a_create_host_whose_clock_is_31_minutes_ahead(repo: str, chroma_dir: Path,
                                                      history: dict[str, dict[str, str]], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """On S3 lock ages are judged by S3's clock (its Date header), so the skewed host still sees
    a live lock; a local folder has only this host's clock, so the create goes ahead there and
    the protocol keeps its snapshot whole."""
    real = time.time

    def skewed() -> None:
        monkeypatch.setattr(time, "time", lambda: real() + 31 * 60)

    def fixed() -> None:
        monkeypatch.setattr(time, "time", real)

    _race(repo, chroma_dir, history, tmp_path, monkeypatch, skewed, fixed,
          prune_code=0, create_code=9 if repo.startswith("s3://") else 0)
    _settle_and_verify(repo, history, tmp_path, monkeypatch)


def test_a_create_refuses_to_commit_on_packs_condemned_for_half_the_bound(
    repo: str, chroma_dir: Path, history: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create that ran for more than half the bound while a prune condemned packs it uses
    commits nothing (a prune may delete them before its root is listed)."""
    monkeypatch.setattr(snapshot_create, "RECHECK_AFTER", 0.0)  # a create that ran for a while
    r = Repository.open(repo)
    parent = r.manifest(r.snapshot_ids()[-1])
    used = sorted(Usage(r).objects(parent))

    def a_prune_condemned_them_13_hours_ago() -> None:
        r.condemn(dict.fromkeys(used, r.now() - 13 * 3600), delete_after=DAY)

    with pausepoints.on("create.before-commit", a_prune_condemned_them_13_hours_ago):
        res = run_cli("--repo", repo, "create", chroma_dir)
    assert res.code == 9 and "condemned" in res.stderr, res.stderr
    assert len(Repository.open(repo).snapshot_ids()) == 2


def test_a_create_does_not_build_on_condemned_packs(repo: str, chroma_dir: Path,
                                                   history: dict[str, dict[str, str]]) -> None:
    """Frames in condemned packs are stored anew (and tables naming them are not reused)."""
    r = Repository.open(repo)
    parent = r.manifest(r.snapshot_ids()[-1])
    condemned = Usage(r).objects(parent)
    r.condemn(dict.fromkeys(condemned, r.now()), delete_after=DAY)
    sid = _ok(repo, "create", chroma_dir, "--json")["id"]
    r = Repository.open(repo)
    assert not Usage(r).objects(r.manifest(sid)) & condemned


def test_a_second_prune_deletes_what_the_first_condemned_once_the_bound_passed(
    repo: str, chroma_dir: Path, history: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = sorted(history)
    out = _ok(repo, "forget", second, "--json")
    assert out["objects_condemned"] and out["objects_removed"] == [], out
    assert out["condemned_waiting"] == len(out["objects_condemned"])
    r = Repository.open(repo)
    assert set(r.condemned().since) == set(out["objects_condemned"])
    _shift(monkeypatch, 23 * 3600)  # not yet
    again = _ok(repo, "prune", "--keep-last", "5", "--json")
    assert again["objects_removed"] == [] and again["condemned_waiting"] == len(out["objects_condemned"])
    dry = _ok(repo, "prune", "--keep-last", "5", "--json", "--dry-run", "--delete-after", "12h")
    assert sorted(dry["objects_removed"]) == sorted(out["objects_condemned"])
    _shift(monkeypatch, 25 * 3600)
    done = _ok(repo, "prune", "--keep-last", "5", "--json")
    assert sorted(done["objects_removed"]) == sorted(out["objects_condemned"])
    assert done["bytes_freed"] == out["bytes_condemned"] and done["condemned_waiting"] == 0
    assert not Repository.open(repo).condemned().since
    _ok(repo, "check", "--read-data")
    assert [s["id"] for s in _ok(repo, "list", "--json")] == [first]


# --- records are untrusted input ---------------------------------------------------------------


def test_a_forged_record_condemning_everything_long_ago_deletes_nothing_in_use(
    repo: str, chroma_dir: Path, history: dict[str, dict[str, str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever can write to the store can condemn any pack: a prune still deletes only what no
    root lists at that moment, so every snapshot restores; the forged record is consumed."""
    r = Repository.open(repo)
    every = {oid for oid, _ in r.list_objects() if oid is not None}
    r.condemn(dict.fromkeys(every, r.now() - 365 * DAY), delete_after=0.0)
    out = _ok(repo, "prune", "--keep-last", "10", "--json")
    assert out["objects_removed"] == [] and out["objects_rescued"] == len(every), out
    assert not Repository.open(repo).condemned().since
    _settle_and_verify(repo, history, tmp_path, monkeypatch)


def test_unreadable_records_condemn_nothing_and_are_replaced(repo: str, chroma_dir: Path,
                                                            history: dict[str, dict[str, str]]) -> None:
    r = Repository.open(repo)
    key = "condemned/" + "e" * 32 + ".json"
    r.store.put(key, b'{"format_version": 1, "objects": [[[[', kind=ObjectKind.CONDEMNED)
    assert r.condemned().unreadable == ("e" * 32,) and not r.condemned().since
    first, _ = sorted(history)
    out = _ok(repo, "forget", first, "--json")
    assert out["objects_removed"] == []
    after = Repository.open(repo).condemned()
    assert after.unreadable == () and set(after.since) == set(out["objects_condemned"])


@pytest.mark.slow  # 1500 examples
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=300),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40)),
                 lambda kids: st.one_of(st.lists(kids, max_size=4),
                                        st.dictionaries(st.text(max_size=12), kids, max_size=4)),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({
        "format_version": st.sampled_from([1, 2, "1", None]), "id": st.sampled_from(["a" * 32, "b" * 32, 7]),
        "created": st.one_of(st.floats(), st.integers(), st.text(max_size=4)),
        "delete_after": st.one_of(st.floats(), st.integers(min_value=-5, max_value=5)),
        "host": st.one_of(st.text(max_size=5), st.none()),
        "objects": st.dictionaries(st.sampled_from(["c" * 32, "x", "D" * 32]),
                                   st.one_of(st.floats(), st.integers(), st.booleans()), max_size=3),
    }).map(lambda d: json.dumps(d).encode()),
))
def test_any_record_bytes_parse_or_are_an_integrity_error(data: bytes) -> None:
    try:
        rec = CondemnedRecord.from_json(data, "a" * 32)
    except errors.IntegrityError:
        return
    assert rec.id == "a" * 32 and rec.delete_after >= 0
    assert all(len(oid) == 32 and math.isfinite(t) for oid, t in rec.objects.items())


def test_a_record_written_with_bound_0_makes_any_condemned_pack_unsafe(
    repo: str, chroma_dir: Path, history: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune with --delete-after 0 deletes what it condemns at once: a create must not count
    on a day's grace for packs such a record names."""
    monkeypatch.setattr(snapshot_create, "RECHECK_AFTER", 0.0)
    r = Repository.open(repo)
    used = sorted(Usage(r).objects(r.manifest(r.snapshot_ids()[-1])))

    def a_prune_with_bound_0_condemned_them() -> None:
        r.condemn(dict.fromkeys(used, r.now()), delete_after=0.0)

    with pausepoints.on("create.before-commit", a_prune_with_bound_0_condemned_them):
        res = run_cli("--repo", repo, "create", chroma_dir)
    assert res.code == 9 and "condemned" in res.stderr, res.stderr
