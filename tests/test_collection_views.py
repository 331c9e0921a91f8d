"""One collection across snapshots: ``list --collection NAME`` (its record count in each
snapshot, from the roots alone) and ``diff A B --collection NAME [--records]`` (only its count,
its segment folders' files and its record ids)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become, steps
from conftest import create_snapshot, one_line_error

from snapshot.diff import Tree, TreeFile, diff_trees, restrict
from snapshot.errors import NotFoundError
from snapshot.format.manifest import CollectionInfo

CHANGED = [f"docs-{i}" for i in range(5)]


@pytest.fixture(scope="module")
def history(chroma_template: Path, chroma_grown: Path,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str, str]]:
    """s1: the template (docs 3000, notes 1000); s2: docs grown by 40; s3: notes deleted and
    the metadata of 5 docs changed."""
    base = tmp_path_factory.mktemp("collection-views")
    live, repo = base / "vector_db", base / "snapshots"
    shutil.copytree(chroma_template, live)
    s1 = create_snapshot(repo, live)
    become(live, chroma_grown)
    s2 = create_snapshot(repo, live)
    steps(live, ("delete_collection", {"name": "notes"}),
          ("update_metadata", {"name": "docs", "ids": CHANGED, "value": 5}))
    s3 = create_snapshot(repo, live)
    return repo, (s1, s2, s3)


def test_list_collection_gives_its_count_in_each_snapshot(cli, history) -> None:
    repo, (s1, s2, s3) = history
    res = cli("--repo", repo, "list", "--collection", "notes", "--json")
    assert res.code == 0, res.stderr
    assert [(r["id"], r["records"]) for r in res.json()] == [(s1, 1000), (s2, 1000), (s3, None)]
    res = cli("--repo", repo, "list", "--collection", "docs")
    rows = [line.split() for line in res.stdout.splitlines()[1:]]
    assert [(r[0], r[-1]) for r in rows] == [(s1, "3000"), (s2, "3040"), (s3, "3040")]
    res = cli("--repo", repo, "list", "--collection", "notes")
    assert res.stdout.splitlines()[-1].split()[-1] == "absent"


def test_list_collection_that_no_snapshot_has_names_the_collections(cli, history) -> None:
    repo, _ = history
    line = one_line_error(cli("--repo", repo, "list", "--collection", "nope"), 3)
    assert "'nope'" in line and "docs, notes" in line


def _diff(cli: Any, repo: Path, *args: str) -> dict[str, Any]:
    res = cli("--repo", repo, "diff", *args, "--json")
    assert res.code == 0, res.stderr
    out: dict[str, Any] = res.json()
    return out


def test_diff_collection_shows_only_that_collections_counts_files_and_records(cli, history) -> None:
    repo, (s1, _s2, s3) = history
    whole = _diff(cli, repo, s1, s3)
    d = _diff(cli, repo, s1, s3, "--collection", "docs", "--records")
    assert d["collections"] == {"docs": {"before": 3000, "after": 3040}}
    assert list(d["records"]) == ["docs"]
    rec = d["records"]["docs"]
    assert rec["added_count"] == 40 and all(i.startswith("docs-new1-") for i in rec["added"])
    assert (rec["removed"], rec["changed"]) == ([], CHANGED)
    assert any(f["path"] == "chroma.sqlite3" for f in whole["files"]["changed"])
    paths = [f["path"] for kind in ("added", "removed", "changed") for f in d["files"][kind]]
    segments = {s for c in cli("--repo", repo, "show", s3, "--json").json()["collections"]
                if c["name"] == "docs" for s in c["segments"]}
    assert all(p.split("/")[0] in segments for p in paths), paths  # chroma.sqlite3 is everyone's
    assert 0 < d["bytes_after"] < whole["bytes_after"]


def test_diff_of_an_unchanged_collection_is_empty(cli, history) -> None:
    repo, (s1, s2, _s3) = history
    assert any(f["path"] == "chroma.sqlite3" for f in _diff(cli, repo, s1, s2)["files"]["changed"])
    d = _diff(cli, repo, s1, s2, "--collection", "notes", "--records")
    assert d["collections"] == {"notes": {"before": 1000, "after": 1000}}
    assert d["files"]["added"] == d["files"]["removed"] == d["files"]["changed"] == []
    assert d["changed_segments"] == [] and d["chunks_new"] == 0
    assert d["records"]["notes"]["added_count"] == d["records"]["notes"]["changed_count"] == 0


def test_diff_collection_deleted_since_shows_every_record_removed(cli, history) -> None:
    repo, (_s1, s2, s3) = history
    d = _diff(cli, repo, s2, s3, "--collection", "notes", "--records")
    assert d["collections"] == {"notes": {"before": 1000, "after": None}}
    assert d["records"]["notes"]["removed_count"] == 1000
    assert {s["change"] for s in d["changed_segments"]} == {"removed"}


def test_diff_unknown_collection_names_the_collections(cli, history) -> None:
    repo, (s1, _s2, s3) = history
    line = one_line_error(cli("--repo", repo, "diff", s1, s3, "--collection", "nope"), 3)
    assert "'nope'" in line and "docs, notes" in line


def test_restrict_keeps_the_collections_segment_files_on_both_sides() -> None:
    def tree(label: str, files: dict[str, str], cols: dict[str, tuple[int, tuple[str, ...]]]) -> Tree:
        return Tree(label, tuple(TreeFile(p, 10, h, "db" if "/" not in p else "segment", ((h, 10),))
                                 for p, h in files.items()),
                    tuple(CollectionInfo(n, n, segs, r, 3) for n, (r, segs) in cols.items()))

    a = tree("A", {"chroma.sqlite3": "1", "s1/x": "a", "s2/x": "b"}, {"c": (2, ("s1",)), "d": (1, ("s2",))})
    b = tree("B", {"chroma.sqlite3": "2", "s3/x": "c", "s2/x": "B"}, {"c": (3, ("s3",)), "d": (1, ("s2",))})
    ra, rb = restrict(a, b, "c")
    assert [f.path for f in ra.files] == ["s1/x"] and [f.path for f in rb.files] == ["s3/x"]
    d = diff_trees(ra, rb)
    assert [f.path for f in d.files.added] == ["s3/x"] and [f.path for f in d.files.removed] == ["s1/x"]
    assert d.files.changed == () and list(d.collections) == ["c"]
    with pytest.raises(NotFoundError, match="collections: c, d"):
        restrict(a, b, "e")
