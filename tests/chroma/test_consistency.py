"""Consistency proven once at capture, checked again on restore: damaged copies of a real Chroma
dir are refused by create (exit 6, naming the collection), and restore re-checks the result."""

from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from chroma_helpers import tree_digest
from conftest import CliResult, create_snapshot, run_cli

from snapshot.chroma.consistency import (
    check_segments,
    known_migrations,
    read_header,
    read_sqlite_side,
    segment_ids,
    unknown_schema,
    verify_dir,
)
from snapshot.chroma.trial_open import batches
from snapshot.format import layout


def _segment(db: Path, collection: str) -> Path:
    with sqlite3.connect(db / "chroma.sqlite3") as conn:
        (seg,) = conn.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE c.name = ? AND s.scope = 'VECTOR'", (collection,)).fetchone()
    return db / seg


def _truncate_header(db: Path) -> None:
    h = _segment(db, "docs") / "header.bin"
    h.write_bytes(h.read_bytes()[:40])


def _short_length(db: Path) -> None:
    f = _segment(db, "docs") / "length.bin"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _pickle_disagrees(db: Path) -> None:
    p = _segment(db, "docs") / "index_metadata.pickle"
    data = pickle.loads(p.read_bytes())
    rid = next(iter(data["id_to_label"]))
    label = data["id_to_label"].pop(rid)
    data["id_to_label"]["not-in-sqlite"] = label
    data["label_to_id"][label] = "not-in-sqlite"
    p.write_bytes(pickle.dumps(data))


def _missing_folder(db: Path) -> None:
    shutil.rmtree(_segment(db, "docs"))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated header.bin": (_truncate_header, "header.bin is 40 bytes"),
    "short length.bin": (_short_length, "length.bin is"),
    "pickle id map": (_pickle_disagrees, "other record ids"),
    "missing segment folder": (_missing_folder, "segment folder missing"),
}


def test_a_sound_capture_is_verified_and_recorded(chroma_dir: Path, repo_path: Path) -> None:
    res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    assert "ids-match" in res.json()["checks"] and res.json()["inconsistencies"] == []
    m = run_cli("--repo", repo_path, "show", "latest", "--json").json()
    v = m["verified"]
    assert v["collections"] == {"docs": 3000, "notes": 1000} and v["problems"] == []
    assert {"sysdb", "metadb"} <= set(v["schema"]) and "sqlite-quick-check" in v["checks"]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_create_refuses_an_inconsistent_directory(
    chroma_dir: Path, repo_path: Path, tmp_path: Path, damage: str
) -> None:
    hurt, says = DAMAGE[damage]
    hurt(chroma_dir)
    res = run_cli("--repo", repo_path, "create", chroma_dir)
    assert res.code == 6, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("chroma-snapshot: error: ") and "collection 'docs'" in line and says in line
    assert not list((repo_path / "snapshots").glob("*.json"))
    # --allow-inconsistent snapshots it, says so in the manifest, and restores warn
    res = run_cli("--repo", repo_path, "create", chroma_dir, "--allow-inconsistent", "--json")
    assert res.code == 0, res.stderr
    assert res.json()["inconsistencies"] and "inconsistent" in res.stderr
    out = run_cli("--repo", repo_path, "restore", "latest", tmp_path / "t")
    assert out.code == 0 and "inconsistent directory" in out.stderr, out.stderr
    assert tree_digest(tmp_path / "t") == tree_digest(chroma_dir)


def test_restore_re_checks_consistency_and_refuses_a_forged_manifest(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    sid = create_snapshot(repo_path, chroma_dir)
    key = repo_path / layout.snapshot_key(sid)
    good = key.read_text()
    data = json.loads(good)
    data["verified"]["collections"]["docs"] = 2999
    key.write_text(json.dumps(data))
    res = run_cli("--repo", repo_path, "restore", sid, tmp_path / "t")
    assert (res.code == 4 and "2999" in res.stderr) or "3000" in res.stderr, res.stderr
    assert not (tmp_path / "t").exists()
    key.write_text(good)
    ok = run_cli("--repo", repo_path, "restore", sid, tmp_path / "t", "--json")
    assert ok.code == 0 and ok.json()["checks"][:2] == ["hashes", "segment-files"]
    assert ok.json()["chroma_checked"] == {} and "warning" not in ok.stderr


def test_restore_judges_the_schema_of_the_restored_file_not_the_manifest(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    """The schema warning is worked out early from the manifest's record; when the restored
    chroma.sqlite3 says otherwise, the file is what counts."""
    sid = create_snapshot(repo_path, chroma_dir)
    key = repo_path / layout.snapshot_key(sid)
    data = json.loads(key.read_text())
    data["verified"]["schema"]["metadb"] = {"version": 99, "filename": "00099-from-the-future.sqlite.sql"}
    key.write_text(json.dumps(data))
    res = run_cli("--repo", repo_path, "restore", sid, tmp_path / "t", "--strict")
    assert res.code == 0 and "warning" not in res.stderr, res.stderr
    assert tree_digest(tmp_path / "t") == tree_digest(chroma_dir)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_restore_refuses_an_inconsistent_directory_a_manifest_calls_consistent(
    chroma_dir: Path, repo_path: Path, tmp_path: Path, damage: str
) -> None:
    """The hashes match (the files are what was captured), but the capture was inconsistent
    and the manifest says otherwise: the restore's own checks (some run while files are
    still being written) find it before the swap."""
    hurt, says = DAMAGE[damage]
    hurt(chroma_dir)
    res = run_cli("--repo", repo_path, "create", chroma_dir, "--allow-inconsistent", "--json")
    assert res.code == 0, res.stderr
    key = repo_path / layout.snapshot_key(res.json()["id"])
    data = json.loads(key.read_text())
    data["verified"]["problems"] = []
    key.write_text(json.dumps(data))
    target = tmp_path / "restore" / "t"
    target.mkdir(parents=True)
    (target / "chroma.sqlite3").write_text("the app's current DB")
    out = run_cli("--repo", repo_path, "restore", "latest", target, "--force")
    assert out.code == 4, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert "consistency check" in line and "collection 'docs'" in line and says in line, line
    assert [p.name for p in target.iterdir()] == ["chroma.sqlite3"]
    assert (target / "chroma.sqlite3").read_text() == "the app's current DB"
    assert [p.name for p in target.parent.iterdir()] == ["t"]  # nothing left beside the target


def test_segment_checks_read_early_give_the_same_verdict(chroma_dir: Path) -> None:
    sound = verify_dir(chroma_dir, sqlite_check=False)
    side = read_sqlite_side(chroma_dir, sqlite_check=False)
    ready = {p.name: segment_ids(chroma_dir, side, p.name) for p in chroma_dir.iterdir() if p.is_dir()}
    assert all(v is not None for v in ready.values()) and ready
    assert check_segments(chroma_dir, side, ready) == sound and sound.ok
    assert segment_ids(chroma_dir, side, "not-a-segment") is None
    _pickle_disagrees(chroma_dir)
    side = read_sqlite_side(chroma_dir, sqlite_check=False)
    ready = {p.name: segment_ids(chroma_dir, side, p.name) for p in chroma_dir.iterdir() if p.is_dir()}
    early = check_segments(chroma_dir, side, ready)
    assert early == verify_dir(chroma_dir, sqlite_check=False) and "other record ids" in early.problems[0]


def test_older_snapshots_without_a_verified_block_restore_with_hashes_only(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    sid = create_snapshot(repo_path, chroma_dir)
    key = repo_path / layout.snapshot_key(sid)
    data = json.loads(key.read_text())
    del data["verified"]
    data["tool_version"] = "0.1.0"
    key.write_text(json.dumps(data, sort_keys=True))
    res = run_cli("--repo", repo_path, "restore", sid, tmp_path / "t", "--json")
    assert res.code == 0, res.stderr
    assert res.json()["checks"] == ["hashes"] and "checked hashes only" in res.stderr
    assert tree_digest(tmp_path / "t") == tree_digest(chroma_dir)


def test_verify_dir_and_header_literal(chroma_dir: Path) -> None:
    v = verify_dir(chroma_dir)
    assert v.ok and v.collections == {"docs": 3000, "notes": 1000}
    header = read_header(_segment(chroma_dir, "docs") / "header.bin")
    assert header.count == 3000 and header.max_elements >= 3000 and header.size_per_element > 64 * 4
    knows = known_migrations()
    assert knows is not None and unknown_schema(v.schema, knows) == []
    assert unknown_schema({"metadb": (99, "00099-x.sqlite.sql")}, knows) == ["metadb 00099-x.sqlite.sql"]


def test_pickles_that_would_run_code_are_refused(chroma_dir: Path) -> None:
    p = _segment(chroma_dir, "docs") / "index_metadata.pickle"
    marker = chroma_dir.parent / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    p.write_bytes(pickle.dumps({"id_to_label": {"a": Evil()}, "label_to_id": {}}))
    v = verify_dir(chroma_dir)
    assert not v.ok and "not plain data" in v.problems[0] and not marker.exists()


def test_chroma_check_batches_bound_memory_by_the_largest_collection() -> None:
    cols = [{"name": f"c{i:03}", "records": 20, "dimension": 4} for i in range(100)]
    got = batches(cols)
    assert sum(len(b) for b in got) == 100 and all(len(b) <= 32 for b in got)
    big = [{"name": "big", "records": 90_000, "dimension": 4},
           *({"name": f"m{i}", "records": 30_000, "dimension": 4} for i in range(7))]
    got = batches(big)
    assert all(sum(c["records"] for c in b) <= 90_000 for b in got) and len(got) == 4
    assert batches([]) == []


@pytest.mark.slow  # 40 collections built and opened by chromadb in child processes
def test_chroma_check_opens_many_collections_in_batches(tmp_path: Path, repo_path: Path) -> None:
    from chroma_helpers import build_db

    db = tmp_path / "many" / "vector_db"
    spec = {f"tenant{i:02}": 5 for i in range(40)}
    build_db(db, spec, seed=3)
    create_snapshot(repo_path, db)
    res: CliResult = run_cli("--repo", repo_path, "restore", "latest", tmp_path / "t", "--chroma-check",
                             "--json")
    assert res.code == 0, res.stderr
    assert res.json()["chroma_checked"] == spec and res.json()["chroma_batches"] == 2
    assert tree_digest(tmp_path / "t") == tree_digest(db)
