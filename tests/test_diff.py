"""diff: file/segment/count changes between snapshots, record-level diffs from chroma.sqlite3,
and a snapshot against a live dir (nothing uploaded). Real Chroma dirs, a real repository."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from chroma_helpers import grow, steps, tree_digest, update_metadata
from conftest import CliResult, create_snapshot

from snapshot.diff import (
    CountChange,
    FileSize,
    SegmentChange,
    Tree,
    TreeFile,
    diff_record_dbs,
    diff_trees,
    merge_records,
)
from snapshot.errors import IntegrityError
from snapshot.format.manifest import CollectionInfo

Cli = Callable[..., CliResult]


@dataclass(frozen=True)
class History:
    repo: Path
    live: Path
    ids: tuple[str, str, str]
    added_docs: frozenset[str]
    added_notes: frozenset[str]
    removed_docs: frozenset[str]
    changed_docs: frozenset[str]
    changed_notes: frozenset[str]



@pytest.fixture(scope="module")
def history(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> History:
    """Three snapshots of a growing DB, with known inserted, deleted and updated ids."""
    base = tmp_path_factory.mktemp("diff")
    live, repo = base / "vector_db", base / "snapshots"
    shutil.copytree(chroma_template, live)
    s1 = create_snapshot(repo, live)
    new_docs = grow(live, "docs", 200, seed=1)
    s2 = create_snapshot(repo, live)
    new_notes = [f"notes-new2-{i}" for i in range(30)]  # as grow(live, "notes", 30, seed=2) names them
    gone = [f"docs-{i}" for i in range(100, 130)]
    steps(  # one chromadb run
        live,
        ("add", {"name": "notes", "ids": new_notes, "seed": 2}),
        ("update_metadata", {"name": "notes", "ids": [f"notes-{i}" for i in range(50)], "value": 7}),
        ("delete", {"name": "docs", "ids": gone + new_docs[:20]}),  # 20 of the new ones never reach s3
        ("update_embedding", {"name": "docs", "ids": ["docs-7", "docs-8"], "seed": 4242}),  # seen by seq_id
    )
    s3 = create_snapshot(repo, live)
    return History(
        repo=repo,
        live=live,
        ids=(s1, s2, s3),
        added_docs=frozenset(new_docs[20:]),
        added_notes=frozenset(new_notes),
        removed_docs=frozenset(gone),
        changed_docs=frozenset({"docs-7", "docs-8"}),
        changed_notes=frozenset(f"notes-{i}" for i in range(50)),
    )


def test_diff_first_and_last_counts_and_files(history: History, cli: Cli) -> None:
    s1, _, s3 = history.ids
    res = cli("--repo", history.repo, "diff", s1, s3, "--json")
    assert res.code == 0, res.stderr
    d = res.json()
    assert d["collections"] == {
        "docs": {"before": 3000, "after": 3000 + 200 - 20 - 30},
        "notes": {"before": 1000, "after": 1030},
    }
    changed = {c["path"]: c for c in d["files"]["changed"]}
    assert "chroma.sqlite3" in changed
    assert changed["chroma.sqlite3"]["size_before"] > 0 and changed["chroma.sqlite3"]["chunks_changed"] >= 1
    assert d["files"]["added"] == [] and d["files"]["removed"] == []
    assert isinstance(d["changed_segments"], list)
    assert d["chunks_new"] >= 1 and d["bytes_new"] > 0
    assert d["records"] is None


def test_diff_records_lists_exactly_the_changed_ids(history: History, cli: Cli) -> None:
    s1, _, s3 = history.ids
    res = cli("--repo", history.repo, "diff", s1[:20], "latest", "--records", "--json")  # a unique prefix
    assert res.code == 0, res.stderr
    assert (res.json()["before"], res.json()["after"]) == (s1, s3)
    rec = res.json()["records"]
    assert set(rec["docs"]["added"]) == history.added_docs
    assert set(rec["docs"]["removed"]) == history.removed_docs
    assert set(rec["docs"]["changed"]) == history.changed_docs
    assert set(rec["notes"]["added"]) == history.added_notes
    assert rec["notes"]["removed"] == []
    assert set(rec["notes"]["changed"]) == history.changed_notes
    assert rec["docs"]["added_count"] == len(history.added_docs) == 180
    assert rec["docs"]["added"] == sorted(rec["docs"]["added"])


def test_diff_records_between_neighbours(history: History, cli: Cli) -> None:
    s1, s2, _ = history.ids
    rec = cli("--repo", history.repo, "diff", s1, s2, "--records", "--json").json()["records"]
    assert rec["docs"]["added_count"] == 200
    assert rec["docs"]["removed_count"] == rec["docs"]["changed_count"] == 0
    assert rec["notes"] == {"added": [], "removed": [], "changed": [], "added_count": 0,
                            "removed_count": 0, "changed_count": 0}


def test_diff_plain_output_summarises_and_lists_first_ids(history: History, cli: Cli) -> None:
    s1, _, s3 = history.ids
    res = cli("--repo", history.repo, "diff", s1, s3, "--records")
    assert res.code == 0, res.stderr
    out = res.stdout
    assert "docs: 180 added, 30 removed, 2 changed" in out
    assert "notes: 30 added, 0 removed, 50 changed" in out
    assert "... and 170 more" in out  # 10 of 180 shown
    assert "docs-7, docs-8" in out
    assert "chroma.sqlite3" in out
    assert [line.split() for line in out.splitlines() if line.startswith("docs ")] == [
        ["docs", "3000", "3150", "+150"]
    ]


def test_diff_against_live_dir_shows_changes_and_uploads_nothing(
    history: History, cli: Cli, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    shutil.copytree(history.live, live)
    added = grow(live, "notes", 1500, seed=3)  # past the HNSW sync threshold: segment files change
    update_metadata(live, "docs", ["docs-9"], 1)
    before = tree_digest(history.repo)
    res = cli("--repo", history.repo, "diff", "latest", live, "--records", "--json")
    assert res.code == 0, res.stderr
    assert tree_digest(history.repo) == before
    d = res.json()
    assert d["after_is_path"] is True and d["after"] == str(live)
    assert d["collections"]["notes"] == {"before": 1030, "after": 2530}
    changed = {c["path"] for c in d["files"]["changed"]}
    assert "chroma.sqlite3" in changed
    notes_segments = [s for s in d["changed_segments"] if s["collection"] == "notes"]
    assert len(notes_segments) == 1 and notes_segments[0]["change"] == "changed"
    assert any(p.startswith(notes_segments[0]["segment"] + "/") for p in changed)
    assert d["chunks_new"] >= 2 and d["bytes_new"] > 0
    assert set(d["records"]["notes"]["added"]) == set(added)
    assert d["records"]["docs"]["changed"] == ["docs-9"]
    assert d["records"]["docs"]["added"] == d["records"]["docs"]["removed"] == []


def test_diff_live_dir_unchanged_is_empty(history: History, cli: Cli) -> None:
    d = cli("--repo", history.repo, "diff", "latest", history.live, "--records", "--json").json()
    assert d["files"]["added"] == d["files"]["removed"] == []
    # The sqlite header's change counter may differ; no record does.
    assert all(r["added_count"] == r["removed_count"] == r["changed_count"] == 0
               for r in d["records"].values())
    assert d["changed_segments"] == []


def test_diff_unknown_snapshot_and_help(history: History, cli: Cli) -> None:
    res = cli("--repo", history.repo, "diff", "19990101", "latest")
    assert res.code == 3 and "19990101" in res.stderr
    for command in ("diff", "prune", "forget", "check"):
        res = cli(command, "--help")
        assert res.code == 0 and "Example:" in res.stdout, command


# -- pure functions, literal data --------------------------------------------------------------


def _tree(label: str, files: dict[str, tuple[str, ...]], cols: dict[str, int], segs: dict[str, str]) -> Tree:
    tfiles = tuple(
        TreeFile(p, 10 * len(chunks), "h" + "".join(chunks), "db" if "/" not in p else "segment",
                 tuple((c, 10) for c in chunks))
        for p, chunks in files.items()
    )
    infos = tuple(CollectionInfo(n, n + "-id", tuple(s for s, o in segs.items() if o == n), r, 3)
                  for n, r in cols.items())
    return Tree(label, tfiles, infos)


def test_diff_trees_files_segments_counts_and_new_chunks() -> None:
    segs = {"s-docs": "docs", "s-notes": "notes", "s-new": "fresh"}
    before = _tree("A", {"chroma.sqlite3": ("a", "b"), "s-docs/x.bin": ("c",), "s-notes/y.bin": ("d",),
                         "s-old/z.bin": ("e",)}, {"docs": 3, "notes": 2, "gone": 1}, segs)
    after = _tree("B", {"chroma.sqlite3": ("a", "B", "f"), "s-docs/x.bin": ("c",), "s-notes/y.bin": ("D",),
                        "s-new/w.bin": ("a",)}, {"docs": 3, "notes": 5, "fresh": 1}, segs)
    d = diff_trees(before, after)
    assert d.collections == {
        "docs": CountChange(3, 3), "fresh": CountChange(None, 1),
        "gone": CountChange(1, None), "notes": CountChange(2, 5),
    }
    assert d.files.added == (FileSize("s-new/w.bin", 10),)
    assert d.files.removed == (FileSize("s-old/z.bin", 10),)
    assert [(c.path, c.size_before, c.size_after, c.chunks_changed) for c in d.files.changed] == [
        ("chroma.sqlite3", 20, 30, 2), ("s-notes/y.bin", 10, 10, 1)
    ]
    assert d.files.unchanged == 1
    assert d.changed_segments == (
        SegmentChange("s-new", "fresh", "added"),
        SegmentChange("s-notes", "notes", "changed"),
        SegmentChange("s-old", None, "removed"),
    )
    assert (d.chunks_new, d.bytes_new) == (3, 30)  # B, f, D ("a" is known, even at another path)
    assert (d.bytes_before, d.bytes_after) == (50, 60)


def test_merge_records_added_removed_changed_and_limit() -> None:
    before = [("a", 1), ("b", 2), ("c", 3), ("e", 5)]
    after = [("b", 2), ("c", 30), ("d", 4), ("e", 5), ("f", 6), ("g", 7)]
    rd = merge_records(before, after)
    assert (rd.added, rd.removed, rd.changed) == (("d", "f", "g"), ("a",), ("c",))
    limited = merge_records(iter(before), iter(after), limit=1)
    assert limited.added == ("d",) and limited.added_count == 3
    empty = merge_records([], after)
    assert empty.added_count == 6 and empty.removed == ()
    assert merge_records(before, []).removed == ("a", "b", "c", "e")


def test_merge_records_refuses_unordered_input() -> None:
    with pytest.raises(IntegrityError):
        merge_records([("b", 1), ("a", 1)], [])


_MINI_SCHEMA = """
CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT, dimension INTEGER);
CREATE TABLE segments (id TEXT PRIMARY KEY, type TEXT, scope TEXT, collection TEXT);
CREATE TABLE embeddings (id INTEGER PRIMARY KEY, segment_id TEXT NOT NULL,
    embedding_id TEXT NOT NULL, seq_id BLOB NOT NULL, UNIQUE (segment_id, embedding_id));
CREATE TABLE embedding_metadata (id INTEGER, key TEXT NOT NULL, string_value TEXT,
    int_value INTEGER, float_value REAL, bool_value INTEGER, PRIMARY KEY (id, key));
CREATE TABLE embedding_metadata_array (id INTEGER NOT NULL, key TEXT NOT NULL,
    string_value TEXT, int_value INTEGER, float_value REAL, bool_value INTEGER);
"""


def _mini_db(path: Path, cols: dict[str, list[tuple[str, int, dict[str, object], list[str]]]]) -> Path:
    """A chroma.sqlite3 with just the tables the record diff reads (Chroma's columns): per
    collection (id, seq_id, metadata, array tags) records."""
    db = sqlite3.connect(path)
    db.executescript(_MINI_SCHEMA)
    for name, records in cols.items():
        db.execute("INSERT INTO collections VALUES (?, ?, 3)", (name + "-id", name))
        db.execute("INSERT INTO segments VALUES (?, 'sqlite', 'METADATA', ?)", (name + "-meta", name + "-id"))
        db.execute("INSERT INTO segments VALUES (?, 'hnsw', 'VECTOR', ?)", (name + "-vec", name + "-id"))
        for rid, seq, meta, tags in reversed(records):  # rowid order must not matter
            row = db.execute("INSERT INTO embeddings (segment_id, embedding_id, seq_id) VALUES (?, ?, ?)",
                             (name + "-meta", rid, seq)).lastrowid
            for key, value in meta.items():
                column = "int_value" if isinstance(value, int) else "string_value"
                db.execute(f"INSERT INTO embedding_metadata (id, key, {column}) VALUES (?, ?, ?)",
                           (row, key, value))
            for tag in tags:
                db.execute("INSERT INTO embedding_metadata_array (id, key, string_value) "
                           "VALUES (?, 'tags', ?)", (row, tag))
    db.commit()
    db.close()
    return path


def test_record_diff_of_literal_databases(tmp_path: Path) -> None:
    before = _mini_db(tmp_path / "a.sqlite3", {
        "alpha": [("r1", 1, {"k": "v"}, []), ("r2", 2, {"k": "w"}, []), ("r3", 3, {}, []),
                  ("r5", 5, {"n": 1}, ["x", "y"])],
        "gone": [("g1", 1, {}, [])],
    })
    after = _mini_db(tmp_path / "b.sqlite3", {
        "alpha": [("r1", 1, {"k": "v"}, []), ("r2", 2, {"k": "other"}, []), ("r3", 9, {}, []),
                  ("r4", 10, {}, ["t"]), ("r5", 5, {"n": 1}, ["x", "z"])],
        "new": [("n1", 1, {"doc": "hello"}, [])],
    })
    rd = diff_record_dbs(before, after)
    assert sorted(rd) == ["alpha", "gone", "new"]
    # r2: same seq_id, other metadata (unrelated DBs); r3: seq_id bumped; r5: an array differs
    assert (rd["alpha"].added, rd["alpha"].removed, rd["alpha"].changed) == (("r4",), (), ("r2", "r3", "r5"))
    assert rd["gone"].removed == ("g1",) and rd["gone"].added_count == 0
    assert rd["new"].added == ("n1",)
    assert diff_record_dbs(before, None)["alpha"].removed == ("r1", "r2", "r3", "r5")
    same = diff_record_dbs(before, before, limit=0)
    assert all(r.added_count == r.removed_count == r.changed_count == 0 for r in same.values())
