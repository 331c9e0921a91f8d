"""CreateOptions: what a create is told, checked when the options are built, and given to
create_snapshot either as the object or as the keywords of its older signature (not both)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Format1Repo

from snapshot import CreateOptions, Repository, create_snapshot, restore_snapshot
from snapshot.errors import UsageError
from snapshot.format import layout


@pytest.mark.parametrize(("fields", "named"), [
    ({"tags": "nightly"}, "tags is a list"),
    ({"includes": "extra.txt"}, "includes is a list"),
    ({"tags": ["a,b"]}, "bad tag"),
    ({"tags": [" x"]}, "bad tag"),
    ({"message": "two\nlines"}, r"control character U\+000A"),
    ({"message": None}, "message must be text"),
    ({"pack_size": 0}, "pack_size"),
    ({"pack_size": True}, "pack_size"),
    ({"wait": -1.0}, "wait"),
    ({"wait": float("nan")}, "wait"),
    ({"delta": "no"}, "delta must be True or False"),
    ({"use_cache": 0}, "use_cache must be True or False"),
])
def test_bad_options_are_refused_when_built(fields: dict, named: str) -> None:
    with pytest.raises(UsageError, match=named):
        CreateOptions(**fields)


def test_sequences_are_kept_as_tuples() -> None:
    o = CreateOptions(tags=["a", "b"], includes=[Path("x")])
    assert o.tags == ("a", "b") and o.includes == (Path("x"),)
    assert o == CreateOptions(tags=("a", "b"), includes=(Path("x"),))


def test_the_level_is_checked_against_the_repositorys_codec() -> None:
    CreateOptions(level=19).check_level("zstd")
    with pytest.raises(UsageError):
        CreateOptions(level=19).check_level("gzip")


@pytest.fixture
def source(format1_repo: Format1Repo, tmp_path: Path) -> Path:
    """A small Chroma persist dir: the fixture's newest snapshot, restored."""
    path = tmp_path / "vector_db"
    restore_snapshot(Repository.open(format1_repo.path), format1_repo.ids[-1], path)
    return path


def _root(repo: Path, sid: str) -> dict:
    return json.loads((repo / layout.snapshot_key(sid)).read_text())


def test_options_and_the_older_keywords_make_the_same_snapshot(source: Path, tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo", create=True)
    by_object = create_snapshot(repo, source, CreateOptions(tags=["a"], message="m", use_cache=False))
    by_keywords = create_snapshot(repo, source, tags=["a"], message="m", use_cache=False)
    for sid in (by_object.id, by_keywords.id):
        root = _root(tmp_path / "repo", sid)
        assert (root["tags"], root["message"]) == (["a"], "m")
    assert by_keywords.parent == by_object.id and by_keywords.chunks_new == 0


def test_options_and_keywords_together_are_refused_before_anything_is_written(
    source: Path, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo", create=True)
    with pytest.raises(UsageError, match="not both"):
        create_snapshot(repo, source, CreateOptions(tags=["a"]), message="m")
    assert repo.snapshot_ids() == [] and not list((tmp_path / "repo").glob("data/*/*"))


def test_a_keyword_that_is_no_option_is_a_type_error(source: Path, tmp_path: Path) -> None:
    """Format 1 is read, no longer written: ``format_version`` is not an option."""
    repo = Repository.open(tmp_path / "repo", create=True)
    with pytest.raises(TypeError, match="format_version"):
        create_snapshot(repo, source, format_version=1)
    with pytest.raises(TypeError, match="CreateOptions"):
        create_snapshot(repo, source, {"tags": ["a"]})  # type: ignore[arg-type]
    assert repo.snapshot_ids() == []


def test_a_bad_option_given_as_a_keyword_is_refused_before_anything_is_written(
    source: Path, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo", create=True)
    with pytest.raises(UsageError, match="tags is a list"):
        create_snapshot(repo, source, tags="nightly")
    assert repo.snapshot_ids() == []
