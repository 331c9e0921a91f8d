"""Copying collections into an existing persist dir (snapshot/chroma/transfer.py): the copy
equals its source, every other collection keeps its records, and bad input is refused before
anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import delete, delete_collection, grow, run_chroma, update_metadata
from chroma_server_fixtures import (
    assert_same_collection,
    chroma_server,  # noqa: F401 - a fixture
    collections_of,
    three_collections,  # noqa: F401 - a fixture
)

from snapshot.chroma.transfer import ChromaTarget, copy_collections
from snapshot.errors import TargetError, UsageError


class Counting:
    """A reporter that adds up the records reported per phase."""

    def __init__(self) -> None:
        self.counted: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.warnings: list[str] = []
        self._phase = ""
        self.finished = False

    def phase(self, name: str, total: int) -> None:
        self._phase, self.totals[name] = name, total
        self.counted.setdefault(name, 0)

    def advance(self, amount: int) -> None:
        self.counted[self._phase] += amount

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def done(self) -> None:
        self.finished = True


@pytest.fixture
def source(three_collections: Path, tmp_path: Path) -> Path:  # noqa: F811
    path = tmp_path / "source"
    shutil.copytree(three_collections, path)
    return path


@pytest.fixture
def target(three_collections: Path, tmp_path: Path) -> Path:  # noqa: F811
    path = tmp_path / "target"
    shutil.copytree(three_collections, path)
    return path


def copy(source: Path, target: Path | str, names: list[str], tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("rename", None)
    kw.setdefault("replace", False)
    return copy_collections(source, names, ChromaTarget(str(target)), journal_dir=tmp_path / "journal",
                            journal_key="snap-1", **kw)


@pytest.mark.slow  # chromadb opens
def test_copy_into_a_dir_where_the_collection_was_deleted_since(source: Path, target: Path,
                                                                tmp_path: Path) -> None:
    delete_collection(target, "docs")
    grow(target, "notes", 30, seed=4)
    before = collections_of(target)
    want = collections_of(source, "docs")["docs"]
    progress = Counting()

    [done] = copy(source, target, ["docs"], tmp_path, reporter=progress, batch_size=700)

    after = collections_of(target)
    assert sorted(after) == ["docs", "notes", "tasks"]  # no temporary collection left
    assert_same_collection(after["docs"], want)
    assert after["notes"] == before["notes"] and after["tasks"] == before["tasks"]
    assert (done.records, done.records_sent, done.resumed_at) == (3000, 3000, 0)
    assert done.batch_size == 700 and not done.replaced
    assert done.sampled == 1000 and done.neighbour_misses == 0
    assert progress.totals["copy docs"] == 3000 and progress.counted["copy docs"] == 3000
    assert progress.counted["check docs"] == 3000 and progress.finished
    assert not list((tmp_path / "journal").iterdir())


@pytest.mark.slow  # chromadb opens
def test_replace_a_modified_collection(source: Path, target: Path, tmp_path: Path) -> None:
    ids = [f"docs-{i}" for i in range(0, 3000, 10)]
    update_metadata(target, "docs", ids[:100], 7)
    delete(target, "docs", ids[100:])
    grow(target, "docs", 50, seed=9)
    before = collections_of(target, "notes", "tasks")
    want = collections_of(source, "docs")["docs"]

    [done] = copy(source, target, ["docs"], tmp_path, replace=True)

    after = collections_of(target)
    assert sorted(after) == ["docs", "notes", "tasks"]
    assert_same_collection(after["docs"], want)
    assert {k: after[k] for k in before} == before
    assert done.replaced and done.records == 3000


@pytest.mark.slow  # chromadb opens
def test_copy_under_a_new_name_carries_metadata_and_settings(source: Path, target: Path,
                                                             tmp_path: Path) -> None:
    before = collections_of(target)
    progress = Counting()

    [done] = copy(source, target, ["tasks"], tmp_path, rename="tasks-restored", reporter=progress, batch_size=10**9)

    after = collections_of(target)
    assert sorted(after) == ["docs", "notes", "tasks", "tasks-restored"]
    assert_same_collection(after["tasks-restored"], before["tasks"])
    hnsw = after["tasks-restored"]["hnsw"]
    assert (hnsw["space"], hnsw["ef_construction"], hnsw["max_neighbors"]) == ("cosine", 120, 12)
    assert after["tasks-restored"]["metadata"] == {"owner": "ops", "tier": 2}
    assert after["tasks-restored"]["embedding_function"]["name"] == "default"
    assert {k: after[k] for k in before} == before
    assert done.name == "tasks-restored" and not progress.warnings
    assert done.batch_size == 5461  # a batch never exceeds the target's max_batch_size


def test_a_name_clash_without_replace_is_refused_before_writing(source: Path, target: Path,
                                                                tmp_path: Path) -> None:
    before = collections_of(target)
    with pytest.raises(TargetError) as err:
        copy(source, target, ["notes", "docs"], tmp_path)
    assert err.value.exit_code == 7
    assert "already has a collection named 'notes'" in str(err.value) and "--replace" in str(err.value)
    assert collections_of(target) == before


@pytest.mark.slow  # chromadb opens
def test_a_dimension_clash_is_named(source: Path, target: Path, tmp_path: Path) -> None:
    delete_collection(target, "docs")
    run_chroma("make", target, name="docs", n=5, dim=32)
    with pytest.raises(TargetError) as err:
        copy(source, target, ["docs"], tmp_path)
    assert err.value.exit_code == 7
    assert "dimension 32, the copy's 64" in str(err.value)
    assert len(collections_of(target, "docs")["docs"]["records"]) == 5


@pytest.mark.slow  # chromadb opens
def test_a_dir_a_running_chroma_holds_open_is_refused(source: Path, target: Path, tmp_path: Path,
                                                      chroma_server: Any) -> None:  # noqa: F811
    delete_collection(target, "docs")
    server = chroma_server(target)
    with pytest.raises(TargetError) as err:
        copy(source, target, ["docs"], tmp_path)
    assert err.value.exit_code == 7
    assert "open in another process" in str(err.value) and f"pid {server.proc.pid}" in str(err.value)
    assert "server URL" in str(err.value)
    assert sorted(collections_of(server.url)) == ["notes", "tasks"]


@pytest.mark.parametrize(("names", "rename", "said"), [
    (["docs", "notes"], "both", "a new name is for one collection; 2 were named"),
    (["docs"], "-bad", "invalid collection name '-bad'"),
    (["docs"], "ab", "invalid collection name 'ab'"),
    ([], None, "no collection named"),
])
def test_bad_names_are_refused(tmp_path: Path, names: list[str], rename: str | None, said: str) -> None:
    with pytest.raises(UsageError, match=said) as err:
        copy(tmp_path / "source", tmp_path / "target", names, tmp_path, rename=rename)
    assert err.value.exit_code == 2


def test_a_target_that_is_not_a_persist_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TargetError, match="is not a Chroma persist dir"):
        copy(tmp_path / "source", tmp_path / "empty", ["docs"], tmp_path)
