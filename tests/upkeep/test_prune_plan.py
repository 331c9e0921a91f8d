"""A prune's plan is what it does: the dry run reports the snapshots, condemned objects and
deleted objects that the real run then drops, condemns and deletes (hypothesis, over small
randomised histories: snapshots of a small Chroma DB whose metadata changes between them, with
and without deltas, some forgotten earlier, with or without grace, delete-after 0 and
repack)."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from chroma_helpers import build_db
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot.create.pipeline import create_snapshot
from snapshot.repo.repository import Repository
from snapshot.upkeep.prune import PruneResult, forget, prune
from snapshot.upkeep.repack import RepackOptions
from snapshot.upkeep.retention import RetentionPolicy

CHUNK = 64 << 10
PACK = 128 << 10
REPACKS = {"off": RepackOptions(enabled=False), "default": RepackOptions(pack_size=PACK),
           "all": RepackOptions(max_unused=0.0, pack_size=PACK)}


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "db"
    build_db(path, {"docs": 200, "notes": 60}, seed=11)
    return path


def _change(db: Path, step: int) -> None:
    """Rewrite some metadata in place (the pages Chroma would touch; counts stay consistent)."""
    conn = sqlite3.connect(db / "chroma.sqlite3")
    with conn:
        conn.execute("UPDATE embedding_metadata SET int_value = ? WHERE key = 'group' AND id % 3 != ?",
                     (1000 + step, step % 3))
    conn.close()


@dataclass(frozen=True)
class History:
    #: Per snapshot: whether the DB changed before it, its manifest format, delta frames or not.
    snapshots: list[tuple[bool, bool]]
    #: Index of a snapshot forgotten first with the default delete-after (its packs wait).
    forgotten_first: int | None
    #: None: prune --keep-last keep; else forget these indexes.
    keep: int
    forget: tuple[int, ...] | None
    grace: float | None
    delete_after: float | None
    repack: str


@st.composite
def histories(draw: st.DrawFn) -> History:
    n = draw(st.integers(2, 4))
    step = st.tuples(st.sampled_from([True, True, False]), st.booleans())
    snaps = draw(st.lists(step, min_size=n, max_size=n))
    first = draw(st.none() | st.integers(0, n - 2))
    later = [i for i in range(n) if i != first]
    targets = draw(st.none() | st.lists(st.sampled_from(later), min_size=1, max_size=len(later),
                                        unique=True).map(tuple))
    return History(snaps, first, draw(st.integers(1, 2)), targets, draw(st.sampled_from([0.0, None])),
                   draw(st.sampled_from([0.0, None])), draw(st.sampled_from(sorted(REPACKS))))


def _objects(repo: Repository) -> set[str]:
    return {oid for oid, _ in repo.list_objects() if oid is not None}


def _run(repo: Repository, h: History, ids: list[str], dry_run: bool) -> PruneResult:
    options = dict(dry_run=dry_run, grace=h.grace, delete_after=h.delete_after, repack=REPACKS[h.repack])
    if h.forget is None:
        return prune(repo, RetentionPolicy(last=h.keep), **options)  # type: ignore[arg-type]
    return forget(repo, [ids[i] for i in h.forget], **options)  # type: ignore[arg-type]


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(h=histories())
def test_the_dry_run_reports_what_the_run_then_does(small_db: Path, h: History) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "db"
        shutil.copytree(small_db, src)
        repo = Repository.open(Path(tmp) / "repo", create=True, chunk_size=CHUNK)
        ids = []
        for step, (changed, delta) in enumerate(h.snapshots):
            if changed:
                _change(src, step)
            ids.append(create_snapshot(repo, src, delta=delta, pack_size=PACK,
                                       use_cache=False).id)
        if h.forgotten_first is not None:
            forget(repo, [ids[h.forgotten_first]], grace=0.0, repack=REPACKS["off"])  # its packs wait a day
        snapshots, stored = set(repo.snapshot_ids()), _objects(repo)

        dry = _run(repo, h, ids, dry_run=True)
        assert (set(repo.snapshot_ids()), _objects(repo)) == (snapshots, stored)  # changed nothing
        real = _run(repo, h, ids, dry_run=False)

        assert dry.dry_run and not real.dry_run
        assert dry.removed == real.removed and set(repo.snapshot_ids()) == snapshots - set(real.removed)
        assert sorted(dry.objects_condemned) == sorted(real.objects_condemned)
        assert sorted(dry.objects_removed) == sorted(real.objects_removed)
        assert stored - _objects(repo) == set(real.objects_removed)  # it deleted what it reports
        assert (dry.condemned_waiting, dry.objects_rescued) == (real.condemned_waiting, real.objects_rescued)
        assert (dry.bytes_freed, dry.bytes_condemned) == (real.bytes_freed, real.bytes_condemned)
