"""Which snapshot an ID names under --tag/--host/--path: the pure rule on literal data, then
the commands that take an ID (show, restore, diff, forget) on a real repository."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_snapshot

from snapshot.errors import AmbiguousIdError, NotFoundError, UsageError
from snapshot.repo.selection import SnapshotFacts, SnapshotFilter, candidates, choose

SNAPS = [
    SnapshotFacts("20261126T015000-00000001", ("nightly",), "gpu-box", "/data/db"),
    SnapshotFacts("20261127T015000-00000002", ("nightly", "release"), "gpu-box", "/data/db"),
    SnapshotFacts("20261127T120000-00000003", ("test",), "laptop", "/home/me/db"),
    SnapshotFacts("20261128T015000-00000004", ("nightly",), "laptop", "/data/db"),
]
IDS = [s.id for s in SNAPS]
BY_ID = {s.id: s for s in SNAPS}


def pick(ref: str, ids: list[str] | None = None, **filters: tuple[str, ...]) -> str:
    ids = IDS if ids is None else ids
    found = (BY_ID[i] for i in candidates(ref, ids))
    return choose(ref, found, SnapshotFilter.parse(**filters), "repo")


def test_latest_is_the_newest_snapshot_that_passes_the_filters() -> None:
    assert pick("latest") == IDS[3]
    assert pick("latest", tags=("nightly",)) == IDS[3]
    assert pick("latest", hosts=("gpu-box",)) == IDS[1]
    assert pick("latest", tags=("test",)) == IDS[2]
    assert pick("latest", paths=("/data/db/",), hosts=("gpu-box",)) == IDS[1]  # paths compare normalised
    assert pick("latest", hosts=("gpu-box", "laptop"), tags=("test",)) == IDS[2]  # a repeated option: any


def test_tag_groups_need_every_tag_of_one_group() -> None:
    assert pick("latest", tags=("nightly,release",)) == IDS[1]
    with pytest.raises(NotFoundError, match="--tag release,test"):
        pick("latest", tags=("release,test",))
    assert pick("latest", tags=("release", "test")) == IDS[2]  # release, or test


def test_a_prefix_must_match_exactly_one_snapshot_that_passes() -> None:
    with pytest.raises(AmbiguousIdError, match="'20261127' matches 2 snapshots: 20261127T015000"):
        pick("20261127")
    assert pick("20261127", tags=("test",)) == IDS[2]
    assert pick("20261127", hosts=("gpu-box",)) == IDS[1]
    with pytest.raises(NotFoundError, match="no snapshot matches '20261126' with --host laptop in repo"):
        pick("20261126", hosts=("laptop",))  # the prefix matches, the snapshot does not pass
    with pytest.raises(AmbiguousIdError, match="with --tag nightly: 20261126T"):
        pick("2026", tags=("nightly",))
    assert pick(IDS[0], tags=("nightly",)) == IDS[0]
    with pytest.raises(NotFoundError):
        pick(IDS[0], tags=("test",))  # a full id that does not pass is not found either


def test_unfiltered_errors_are_unchanged() -> None:
    with pytest.raises(NotFoundError, match="^no snapshots in repo$"):
        pick("latest", ids=[])
    with pytest.raises(NotFoundError, match="^no snapshot matches '2025' in repo$"):
        pick("2025")
    with pytest.raises(UsageError, match="empty snapshot id"):
        pick("")


def test_latest_reads_no_further_than_its_match() -> None:
    read: list[str] = []

    def found() -> Iterator[SnapshotFacts]:
        for i in candidates("latest", IDS):
            read.append(i)
            yield BY_ID[i]

    assert choose("latest", found(), SnapshotFilter.parse(hosts=("gpu-box",)), "repo") == IDS[1]
    assert read == [IDS[3], IDS[2], IDS[1]]


@pytest.mark.parametrize("bad", [{"tags": ("a,",)}, {"tags": ("",)}, {"hosts": ("",)}, {"paths": (" ",)}])
def test_empty_filter_values_are_refused(bad: dict[str, tuple[str, ...]]) -> None:
    with pytest.raises(UsageError):
        SnapshotFilter.parse(**bad)


# ---------------------------------------------------------------- the commands


@pytest.fixture
def tagged(chroma_dir: Path, repo_path: Path, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Three snapshots: chroma_dir tagged nightly, then test; a copy elsewhere tagged nightly."""
    other = tmp_path / "other" / "vector_db"
    shutil.copytree(chroma_dir, other)
    ids = [create_snapshot(repo_path, chroma_dir, "--tag", "nightly"),
           create_snapshot(repo_path, chroma_dir, "--tag", "test"),
           create_snapshot(repo_path, other, "--tag", "nightly")]
    return chroma_dir, other, ids


def test_show_and_restore_select_by_tag_host_and_path(cli, repo_path, tagged, tmp_path, monkeypatch) -> None:
    source, other, (s1, s2, s3) = tagged
    repo = ("--repo", repo_path)

    def shown(*args: object) -> str:
        res = cli(*repo, "show", *args, "--json")
        assert res.code == 0, res.stderr
        return str(res.json()["id"])

    assert shown("latest", "--tag", "nightly") == s3
    assert shown("latest", "--tag", "nightly", "--path", source) == s1
    assert shown("latest", "--host", socket.gethostname(), "--tag", "test") == s2
    monkeypatch.chdir(source.parent)
    assert shown("latest", "--path", "vector_db") == s2  # a relative path is from the current dir
    assert shown("latest", "--path", f"{source}/") == s2
    assert shown(os.path.commonprefix([s1, s2, s3]), "--tag", "test") == s2
    ambiguous = cli(*repo, "show", os.path.commonprefix([s1, s2, s3]))
    assert ambiguous.code == 2 and "matches 3 snapshots" in ambiguous.stderr

    missing = cli(*repo, "show", "latest", "--host", "no-such-host")
    assert missing.code == 3 and missing.stderr.strip().splitlines() == [
        f"chroma-snapshot: error: no snapshot with --host no-such-host in {repo_path}"]
    assert cli(*repo, "show", s1[:20], "--tag", "test").code == 3

    plan = cli(*repo, "restore", "latest", tmp_path / "t", "--tag", "test", "--dry-run", "--json")
    assert plan.code == 0 and plan.json()["snapshot"] == s2, plan.stderr
    res = cli(*repo, "restore", "latest", tmp_path / "t", "--path", other, "--json")
    assert res.code == 0, res.stderr
    assert cli(*repo, "restore", "latest", tmp_path / "u", "--tag", "nope").code == 3
    assert not (tmp_path / "u").exists()


def test_diff_selects_both_sides(cli, repo_path, tagged) -> None:
    source, _, (s1, s2, s3) = tagged
    res = cli("--repo", repo_path, "diff", "latest", "latest", "--tag", "test", "--json")
    assert res.code == 0 and (res.json()["before"], res.json()["after"]) == (s2, s2), res.stderr
    res = cli("--repo", repo_path, "diff", "latest", source, "--tag", "nightly", "--path", source, "--json")
    assert res.code == 0 and res.json()["before"] == s1 and res.json()["after_is_path"], res.stderr


def test_forget_narrows_each_id_and_needs_one(cli, repo_path, tagged) -> None:
    _, other, (s1, s2, s3) = tagged
    repo = ("--repo", repo_path)
    res = cli(*repo, "forget", "--tag", "nightly")
    assert res.code == 2 and "Missing argument" in res.stderr
    dry = cli(*repo, "forget", "latest", "--tag", "test", "--dry-run", "--json")
    assert dry.code == 0 and dry.json()["removed"] == [s2], dry.stderr
    assert cli(*repo, "forget", "latest", "--tag", "nope").code == 3
    res = cli(*repo, "forget", "latest", "--tag", "nightly", "--path", other, "--json")
    assert res.code == 0 and res.json()["removed"] == [s3], res.stderr
    assert [s["id"] for s in cli(*repo, "list", "--json").json()] == [s1, s2]


def test_the_library_resolves_with_filters(repo_path, tagged) -> None:
    import snapshot

    _, other, (s1, s2, s3) = tagged
    repo = snapshot.Repository.open(repo_path)
    assert repo.get("latest", snapshot.SnapshotFilter.parse(tags=["test"])).id == s2
    host_and_path = SnapshotFilter.parse(hosts=[socket.gethostname()], paths=[str(other)])
    assert repo.resolve("latest", filters=host_and_path) == s3
    assert repo.resolve("latest") == s3
