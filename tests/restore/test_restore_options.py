"""RestoreOptions: given to restore_snapshot as the object or as the keywords of its older
signature (not both); a flag that is not a bool is refused, not read as true."""

from __future__ import annotations

from pathlib import Path

import pytest
from chroma_helpers import tree_digest
from conftest import Format1Repo

from snapshot import Repository, RestoreOptions, restore_snapshot
from snapshot.errors import TargetError, UsageError


@pytest.mark.parametrize("flag", ["force", "chroma_check", "strict"])
def test_a_flag_that_is_not_a_bool_is_refused(flag: str) -> None:
    with pytest.raises(UsageError, match=f"{flag} must be True or False"):
        RestoreOptions(**{flag: "no"})


def test_options_and_the_older_keywords_restore_alike(format1_repo: Format1Repo, tmp_path: Path) -> None:
    repo = Repository.open(format1_repo.path)
    first, last = format1_repo.snapshots[0], format1_repo.snapshots[-1]
    target = tmp_path / "t"
    restore_snapshot(repo, first["id"], target, RestoreOptions())
    assert tree_digest(target) == first["files"]
    with pytest.raises(TargetError):  # not empty, and no force
        restore_snapshot(repo, last["id"], target, RestoreOptions())
    restore_snapshot(repo, last["id"], target, RestoreOptions(force=True))
    assert tree_digest(target) == last["files"]
    restore_snapshot(repo, first["id"], target, force=True)
    assert tree_digest(target) == first["files"]


def test_options_and_keywords_together_leave_the_target_alone(format1_repo: Format1Repo, tmp_path: Path):
    repo = Repository.open(format1_repo.path)
    first, last = format1_repo.snapshots[0], format1_repo.snapshots[-1]
    target = tmp_path / "t"
    restore_snapshot(repo, first["id"], target)
    with pytest.raises(UsageError, match="not both"):
        restore_snapshot(repo, last["id"], target, RestoreOptions(force=True), strict=True)
    with pytest.raises(TypeError, match="skip_chroma_check"):
        restore_snapshot(repo, last["id"], target, force=True, skip_chroma_check=True)
    assert tree_digest(target) == first["files"]
