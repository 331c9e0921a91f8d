"""PruneOptions: how prune and forget remove, checked when built, given as the object or as the
keywords of their older signatures (not both)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Format1Repo

from snapshot import (
    PruneOptions,
    RepackOptions,
    Repository,
    RetentionPolicy,
    check_repository,
    forget_snapshots,
    prune_snapshots,
)
from snapshot.errors import UsageError


@pytest.mark.parametrize(("fields", "named"), [
    ({"grace": -1.0}, "the grace period cannot be negative"),
    ({"delete_after": -5}, "--delete-after cannot be negative"),
    ({"wait": -1}, "the lock wait cannot be negative"),
    ({"grace": "1h"}, "the grace period must be a number of seconds"),
    ({"wait": float("nan")}, "the lock wait must be a number of seconds"),
    ({"dry_run": "yes"}, "dry_run must be True or False"),
    ({"repack": {"enabled": False}}, "repack must be a RepackOptions"),
])
def test_bad_options_are_refused_when_built(fields: dict, named: str) -> None:
    with pytest.raises(UsageError, match=named):
        PruneOptions(**fields)


def _files(repo: Path) -> list[Path]:
    return sorted(p for p in repo.rglob("*") if p.is_file())


def test_options_and_the_older_keywords_plan_alike(format1_repo: Format1Repo) -> None:
    repo = Repository.open(format1_repo.path)
    ids = format1_repo.ids
    before = _files(format1_repo.path)
    policy = RetentionPolicy(last=1)
    by_object = prune_snapshots(repo, policy, PruneOptions(dry_run=True, grace=0.0), group_by="none")
    by_keywords = prune_snapshots(repo, policy, dry_run=True, grace=0.0, group_by="none")
    assert sorted(by_object.removed) == sorted(by_keywords.removed) == ids[:2]
    assert list(forget_snapshots(repo, [ids[0]], PruneOptions(dry_run=True)).removed) == [ids[0]]
    assert _files(format1_repo.path) == before  # dry runs


def test_forget_with_options_removes_and_keeps_the_rest_whole(format1_repo: Format1Repo) -> None:
    repo = Repository.open(format1_repo.path)
    ids = format1_repo.ids
    options = PruneOptions(grace=0.0, delete_after=0.0, repack=RepackOptions(enabled=False))
    result = forget_snapshots(repo, [ids[-1]], options)
    assert list(result.removed) == [ids[-1]] and repo.snapshot_ids() == ids[:2]
    assert check_repository(repo, read_data=True).ok


def test_options_and_keywords_together_remove_nothing(format1_repo: Format1Repo) -> None:
    repo = Repository.open(format1_repo.path)
    before = _files(format1_repo.path)
    with pytest.raises(UsageError, match="not both"):
        prune_snapshots(repo, RetentionPolicy(last=1), PruneOptions(grace=0.0), delete_after=0.0)
    with pytest.raises(UsageError, match="not both"):
        forget_snapshots(repo, format1_repo.ids, PruneOptions(), dry_run=True)
    with pytest.raises(TypeError, match="group_by"):
        forget_snapshots(repo, format1_repo.ids, group_by="none")
    assert _files(format1_repo.path) == before
