"""Manifest format 2: small roots, chunk tables shared between snapshots, and format 1
repositories (what chroma-snapshot 0.1 wrote) still listed, restored, diffed, pruned and checked."""

from __future__ import annotations

import json
from pathlib import Path

from chroma_helpers import grow, tree_digest
from conftest import Format1Repo, create_snapshot, run_cli, show_files

from snapshot import Repository
from snapshot.format import layout


def _root(repo: Path, sid: str) -> dict:
    return json.loads((repo / layout.snapshot_key(sid)).read_text())


def _repo_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())


def test_an_unchanged_db_adds_only_its_root(chroma_dir: Path, repo_path: Path) -> None:
    first = create_snapshot(repo_path, chroma_dir)
    before = _repo_bytes(repo_path)
    objects = {p.name for p in (repo_path / "data").rglob("*") if p.is_file()}
    res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    second = res.json()["id"]
    assert {p.name for p in (repo_path / "data").rglob("*") if p.is_file()} == objects
    added = _repo_bytes(repo_path) - before
    assert added == (repo_path / layout.snapshot_key(second)).stat().st_size <= 8192
    assert res.json()["requests"].get("put", 0) == 2  # the root and the lock object
    a, b = _root(repo_path, first), _root(repo_path, second)
    assert [f["table"] for f in a["files"]] == [f["table"] for f in b["files"]]  # shared tables


def test_a_changed_file_gets_a_new_table_the_others_keep_theirs(chroma_dir: Path, repo_path: Path) -> None:
    first = create_snapshot(repo_path, chroma_dir)
    grow(chroma_dir, "notes", 30, seed=4)
    second = create_snapshot(repo_path, chroma_dir)
    a = {f["path"]: f for f in _root(repo_path, first)["files"]}
    b = {f["path"]: f for f in _root(repo_path, second)["files"]}
    changed = {p for p in a if a[p]["hash"] != b[p]["hash"]}
    assert "chroma.sqlite3" in changed and len(changed) < len(a)
    for p in a:
        assert (a[p]["table"] == b[p]["table"]) == (p not in changed), p


def test_root_size_and_list_reads_little(chroma_dir: Path, repo_path: Path) -> None:
    ids = [create_snapshot(repo_path, chroma_dir, "--no-cache") for _ in range(5)]
    for sid in ids:
        root = (repo_path / layout.snapshot_key(sid)).stat().st_size
        assert root <= 4096 + 300 * len(_root(repo_path, sid)["files"])
    repo = Repository.open(repo_path)
    before = repo.store.stats.bytes_down
    assert [s.id for s in repo.list_snapshots()] == ids
    assert (repo.store.stats.bytes_down - before) / len(ids) <= 10 * 1024
    # what `list --stats --json` reports: the same roots, and their bytes
    out = run_cli("--repo", repo_path, "list", "--stats", "--json").json()
    assert [s["id"] for s in out["snapshots"]] == ids
    assert out["requests"]["get"] == len(ids) and out["requests"]["list"] == 1
    roots = sum((repo_path / layout.snapshot_key(sid)).stat().st_size for sid in ids)
    assert out["bytes_down"] == roots and out["bytes_down_per_snapshot"] <= 10 * 1024
    text = run_cli("--repo", repo_path, "list", "--stats").stdout
    assert f"in {len(ids) + 1} request(s) for {len(ids)} snapshot(s)" in text


def test_a_format_1_repository_keeps_working_and_mixes_with_format_2(
    format1_repo: Format1Repo, tmp_path: Path
) -> None:
    repo_path, ids = format1_repo.path, format1_repo.ids
    states = [s["files"] for s in format1_repo.snapshots]
    assert [_root(repo_path, s)["format_version"] for s in ids] == [1, 1, 1]
    assert "chunks" in _root(repo_path, ids[0])["files"][0]
    listed = run_cli("--repo", repo_path, "list", "--json").json()
    assert [s["id"] for s in listed] == ids
    assert [s["tags"] for s in listed] == [["first"], ["nightly"], ["nightly", "last"]]
    source = tmp_path / "data" / "vector_db"  # the newest format 1 snapshot, to build on
    assert run_cli("--repo", repo_path, "restore", ids[-1], source).code == 0
    assert tree_digest(source) == states[-1]
    for collection, seed in (("docs", 14), ("notes", 15)):
        grow(source, collection, 40, seed=seed)
        res = run_cli("--repo", repo_path, "create", source, "--json")
        assert res.code == 0, res.stderr
        assert res.json()["parent"] == ids[-1] and res.json()["chunks_delta"] >= 1  # deltas on its parent
        ids.append(res.json()["id"])
        states.append(tree_digest(source))
    assert [_root(repo_path, s)["format_version"] for s in ids] == [1, 1, 1, 2, 2]

    assert [s["id"] for s in run_cli("--repo", repo_path, "list", "--json").json()] == ids
    for i, sid in enumerate(ids):
        out = tmp_path / f"r{i}"
        assert run_cli("--repo", repo_path, "restore", sid, out).code == 0
        assert tree_digest(out) == states[i]
    assert len(show_files(repo_path, ids[0])) == len(show_files(repo_path, ids[4]))
    d = run_cli("--repo", repo_path, "diff", ids[0], ids[4], "--records", "--json")
    assert d.code == 0, d.stderr
    assert d.json()["records"]["docs"]["added_count"] == 30 + 40
    assert d.json()["records"]["notes"]["added_count"] == 20 + 40
    check = run_cli("--repo", repo_path, "check", "--read-data", "--json")
    versions = {(path, h) for state in states for path, h in state.items()}
    assert check.code == 0 and check.json()["files_verified"] >= len(versions), check.stdout

    # a mixed repository prunes correctly: keep old and new snapshots
    assert run_cli("--repo", repo_path, "forget", ids[0], ids[3], "--grace", "0s").code == 0
    assert run_cli("--repo", repo_path, "check", "--read-data").code == 0
    for i in (1, 2, 4):
        out = tmp_path / f"after-{i}"
        assert run_cli("--repo", repo_path, "restore", ids[i], out).code == 0
        assert tree_digest(out) == states[i]
    prune = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--group-by", "none", "--grace", "0s")
    assert prune.code == 0, prune.stderr
    assert [s["id"] for s in run_cli("--repo", repo_path, "list", "--json").json()] == [ids[4]]
    assert run_cli("--repo", repo_path, "check", "--read-data").code == 0
    assert run_cli("--repo", repo_path, "restore", ids[4], tmp_path / "last").code == 0
    assert tree_digest(tmp_path / "last") == states[4]


def test_a_format_1_repository_prunes_to_its_kept_snapshots(format1_repo: Format1Repo, tmp_path: Path):
    """Format 1 alone: a prune that keeps the newest snapshot (a delta chain of depth 3 over the
    other two's frames) deletes no pack it needs, and a forget of it frees what only it used."""
    repo_path, ids = format1_repo.path, format1_repo.ids
    res = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--json")
    assert res.code == 0, res.stderr
    assert sorted(res.json()["removed"]) == ids[:2]
    assert run_cli("--repo", repo_path, "check", "--read-data").code == 0
    assert run_cli("--repo", repo_path, "restore", "latest", tmp_path / "t").code == 0
    assert tree_digest(tmp_path / "t") == format1_repo.snapshots[-1]["files"]
    assert run_cli("--repo", repo_path, "forget", "latest", "--grace", "0s").code == 0
    assert run_cli("--repo", repo_path, "list", "--json").json() == []
    assert not [p for p in (repo_path / "data").rglob("*") if p.is_file()]


def test_a_damaged_chunk_table_is_named(chroma_dir: Path, repo_path: Path, tmp_path: Path) -> None:
    sid = create_snapshot(repo_path, chroma_dir)
    table = _root(repo_path, sid)["files"][0]["table"]
    pack = repo_path / layout.object_key(table["object"])
    data = bytearray(pack.read_bytes())
    data[table["offset"] + table["length"] // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    res = run_cli("--repo", repo_path, "restore", sid, tmp_path / "t")
    assert res.code == 4 and "chunk table" in res.stderr and table["object"] in res.stderr, res.stderr
    assert not (tmp_path / "t").exists()
    check = run_cli("--repo", repo_path, "check", "--json")
    assert check.code == 4
    assert {p["kind"] for p in check.json()["problems"]} == {"table"}


def test_a_root_claiming_a_huge_chunk_table_is_refused(chroma_dir: Path, repo_path: Path, tmp_path: Path):
    sid = create_snapshot(repo_path, chroma_dir)
    key = repo_path / layout.snapshot_key(sid)
    data = json.loads(key.read_text())
    data["files"][0]["table"]["size"] = 2**40  # a small frame could decode to that much
    key.write_text(json.dumps(data))
    for args in (("restore", sid, tmp_path / "t"), ("show", sid, "--files"), ("check",)):
        res = run_cli("--repo", repo_path, *args)
        assert res.code == 4 and "out of range" in res.stderr, res.stderr
    assert not (tmp_path / "t").exists()
