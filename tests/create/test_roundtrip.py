"""End-to-end: create, grow, create, restore any version, byte for byte, on a local repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chroma_helpers import become, build_db, grow, sqlite_payload, tree_digest
from conftest import show_files

from snapshot import Repository, create_snapshot, restore_snapshot
from snapshot.chroma.schema import chromadb_version


def _files(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def assert_same_db(restored: Path, source_copy: dict[str, bytes]) -> None:
    got = _files(restored)
    assert set(got) == set(source_copy)
    for rel, data in source_copy.items():
        if rel == "chroma.sqlite3":
            # SQLite's online backup rewrites header counters (bytes < 100); pages are identical.
            assert len(got[rel]) == len(data)
            assert got[rel][100:] == data[100:]
        else:
            assert got[rel] == data, rel


@pytest.mark.slow  # two restores with --chroma-check, each opening chromadb in a child process
def test_create_grow_create_restore_both(
    cli, chroma_dir: Path, chroma_grown: Path, repo_path: Path, tmp_path: Path
) -> None:
    v1 = _files(chroma_dir)
    first = cli("--repo", repo_path, "create", chroma_dir, "--tag", "nightly", "-m", "first", "--json")
    assert first.code == 0, first.stderr
    r1 = first.json()
    assert {"id", "parent", "files", "bytes_total", "bytes_uploaded", "objects_uploaded"} <= set(r1)
    assert r1["parent"] is None and r1["objects_uploaded"] >= 1
    assert r1["collections"] == {"docs": 3000, "notes": 1000}

    become(chroma_dir, chroma_grown)  # 40 records more: 1% of the 4000
    v2 = _files(chroma_dir)
    second = cli("--repo", repo_path, "create", chroma_dir, "--json").json()
    assert second["parent"] == r1["id"]
    assert second["collections"] == {"docs": 3040, "notes": 1000}
    assert second["bytes_uploaded"] < r1["bytes_uploaded"] / 5
    assert second["chunks_delta"] >= 1

    again = cli("--repo", repo_path, "create", chroma_dir, "--json").json()
    assert again["bytes_uploaded"] < r1["bytes_uploaded"] / 100
    assert again["objects_uploaded"] == 0 and again["chunks_new"] == 0

    listed = cli("--repo", repo_path, "list", "--json").json()
    assert [s["id"] for s in listed] == [r1["id"], second["id"], again["id"]]
    assert listed[0]["tags"] == ["nightly"] and listed[0]["collections"] == {"docs": 3000, "notes": 1000}

    old = tmp_path / "restored"
    res = cli("--repo", repo_path, "restore", r1["id"][:20], old, "--json", "--chroma-check")
    assert res.code == 0, res.stderr
    assert res.json()["chroma_checked"] == {"docs": 3000, "notes": 1000}
    assert_same_db(old, v1)

    latest = cli("--repo", repo_path, "restore", "latest", old, "--force", "--json", "--chroma-check")
    assert latest.code == 0, latest.stderr
    body = latest.json()
    assert body["id"] == again["id"] and body["bytes_reused"] > 0
    assert_same_db(old, v2)


def test_library_api_round_trip(chroma_dir: Path, repo_path: Path, tmp_path: Path) -> None:
    repo = Repository.open(repo_path, create=True)
    result = create_snapshot(repo, chroma_dir, tags=["t1"], message="lib")
    assert result.collections == {"docs": 3000, "notes": 1000}
    summaries = repo.list_snapshots()
    assert [s.id for s in summaries] == [result.id]
    with pytest.warns(DeprecationWarning, match="list_snapshots"):
        assert repo.list() == summaries  # the old name, kept for the Python API
    m = repo.get(result.id[:10])
    assert m.id == result.id and m.tags == ("t1",) and m.message == "lib"
    assert {c.name: c.records for c in m.collections} == {"docs": 3000, "notes": 1000}
    assert all(c.dimension == 64 for c in m.collections)
    out = restore_snapshot(repo, "latest", tmp_path / "out", chroma_check=True)
    assert out.chroma_checked == {"docs": 3000, "notes": 1000}
    restored_db = tmp_path / "out" / "chroma.sqlite3"
    assert sqlite_payload(restored_db) == sqlite_payload(chroma_dir / "chroma.sqlite3")


def test_manifest_records_what_design_requires(cli, chroma_dir: Path, repo_path: Path) -> None:
    sid = cli("--repo", repo_path, "create", chroma_dir, "--json").json()["id"]
    shown = cli("--repo", repo_path, "show", sid[:12], "--json")
    assert shown.code == 0
    m = shown.json()
    raw = json.loads((repo_path / "snapshots" / f"{sid}.json").read_text())
    assert m == raw
    assert m["format_version"] == 2 and m["id"] == sid and m["parent"] is None
    for key in ("created_at", "tool_version", "tool_chromadb_version", "source_path", "source_host", "tags",
                "message", "chunk_size", "files", "collections", "totals"):
        assert key in m
    # the chromadb beside the tool is named as such; the DB's own word is its schema
    assert "chromadb_version" not in m and m["tool_chromadb_version"] == chromadb_version()
    assert m["verified"]["schema"]["sysdb"]["filename"].startswith("000")
    paths = {f["path"] for f in m["files"]}
    assert "chroma.sqlite3" in paths
    for col in m["collections"]:
        assert col["segments"], col
        for seg in col["segments"]:
            assert {f"{seg}/header.bin", f"{seg}/data_level0.bin", f"{seg}/index_metadata.pickle"} <= paths
    f = m["files"][0]
    assert {"path", "size", "mode", "hash", "role", "table", "chunk_count"} <= set(f)
    assert {"object", "offset", "length", "codec", "size", "hash"} <= set(f["table"])
    assert len(text := (repo_path / "snapshots" / f"{sid}.json").read_text()) <= 4096 + 300 * len(m["files"])
    files = show_files(repo_path, sid)
    assert [x["path"] for x in files] == [x["path"] for x in m["files"]]
    frame = files[0]["chunks"][0]["frames"][0]
    assert {"object", "offset", "length", "codec", "size", "hash"} <= set(frame)
    assert sum(c["size"] for c in files[0]["chunks"]) == files[0]["size"]
    # plain JSON with sorted keys
    text = (repo_path / "snapshots" / f"{sid}.json").read_text()
    assert text == json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def test_unchanged_segment_folder_costs_nothing(cli, chroma_dir: Path, repo_path: Path) -> None:
    cli("--repo", repo_path, "create", chroma_dir)
    grow(chroma_dir, "docs", 30, seed=5)
    r = cli("--repo", repo_path, "create", chroma_dir, "--json").json()
    m = cli("--repo", repo_path, "show", r["id"], "--json").json()
    parent = cli("--repo", repo_path, "show", r["parent"], "--json").json()
    notes_seg = next(c for c in m["collections"] if c["name"] == "notes")["segments"][0]
    before = {f["path"]: f for f in parent["files"] if f["path"].startswith(notes_seg)}
    after = {f["path"]: f for f in m["files"] if f["path"].startswith(notes_seg)}
    assert before == after  # same frames, so 0 new bytes for the untouched collection


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_codecs_round_trip(cli, codec: str, chroma_dir: Path, repo_path: Path, tmp_path: Path) -> None:
    r = cli("--repo", repo_path, "create", chroma_dir, "--codec", codec, "--level", "1", "--json")
    assert r.code == 0, r.stderr
    files = show_files(repo_path)
    assert {fr["codec"] for f in files for c in f["chunks"] for fr in c["frames"]} == {codec}
    assert {f["table"]["codec"] for f in files} == {codec}
    out = cli("--repo", repo_path, "restore", "latest", tmp_path / "o", "--skip-chroma-check")
    assert out.code == 0, out.stderr
    assert tree_digest(tmp_path / "o") == tree_digest(chroma_dir)


def test_gzip_packs_decompress_with_plain_gzip(cli, chroma_dir: Path, repo_path: Path) -> None:
    import gzip

    assert cli("--repo", repo_path, "create", chroma_dir, "--codec", "gzip").code == 0
    files = show_files(repo_path)
    packs = {p.name: p.read_bytes() for p in (repo_path / "data").rglob("*") if p.is_file()}
    for p in packs.values():  # a whole pack (chunk tables too) is a multi-member gzip file
        gzip.decompress(p)
    for f in files:
        source = (chroma_dir / f["path"]).read_bytes()
        rebuilt = b""
        for c in f["chunks"]:
            (frame,) = c["frames"]  # gzip frames are never deltas
            start, end = frame["offset"], frame["offset"] + frame["length"]
            rebuilt += gzip.decompress(packs[frame["object"]][start:end])
        assert rebuilt == source, f["path"]


def test_restore_onto_parent_reads_only_new_deltas(
    cli, chroma_dir: Path, chroma_grown: Path, repo_path: Path, tmp_path: Path
) -> None:
    first = cli("--repo", repo_path, "create", chroma_dir, "--json").json()
    target = tmp_path / "prod"
    assert cli("--repo", repo_path, "restore", first["id"], target, "--skip-chroma-check").code == 0
    before = tree_digest(target)
    become(chroma_dir, chroma_grown)
    second = cli("--repo", repo_path, "create", chroma_dir, "--json").json()
    assert second["chunks_delta"] >= 1

    plan = cli("--repo", repo_path, "restore", "latest", target, "--dry-run", "--json")
    assert plan.code == 0, plan.stderr
    p = plan.json()
    assert tree_digest(target) == before  # a dry run changes nothing
    assert p["bytes_local"] > 0 and p["bytes_to_download"] <= second["bytes_new"]

    res = cli("--repo", repo_path, "restore", "latest", target, "--force", "--skip-chroma-check",
              "--json").json()
    # only the new delta frames are read: the target holds every base
    assert res["bytes_downloaded"] == p["bytes_to_download"] <= second["bytes_new"]
    again = cli("--repo", repo_path, "restore", "latest", target, "--force", "--json",
                "--chroma-check").json()
    assert again["chroma_checked"] == {"docs": 3040, "notes": 1000}
    assert again["bytes_reused"] == again["bytes_total"]
    # chromadb rewrites a page or two of chroma.sqlite3 when the check opens it; those chunks
    # are put back from a local copy taken before, not read again from the repository
    assert again["chunks_repaired"] >= 1 and again["bytes_downloaded"] == 0
    segments = {k: v for k, v in tree_digest(target).items() if k != "chroma.sqlite3"}
    assert segments == {k: v for k, v in tree_digest(chroma_dir).items() if k != "chroma.sqlite3"}
    assert sqlite_payload(target / "chroma.sqlite3") == sqlite_payload(chroma_dir / "chroma.sqlite3")


@pytest.mark.slow  # chromadb builds and opens 12 collections in child processes
def test_chroma_check_reads_what_the_dry_run_predicts(cli, tmp_path: Path, repo_path: Path) -> None:
    """Opening a directory, chromadb rewrites chroma.sqlite3 and the index files of every
    collection whose queue entries it applies (here: all, each under its sync threshold).
    They are put back from local copies, so a --chroma-check restore reads from the repository
    exactly what its dry run predicts."""
    src = tmp_path / "tenants"
    build_db(src, {f"tenant-{i}": 30 for i in range(6)})
    assert cli("--repo", repo_path, "create", src).code == 0
    target = tmp_path / "t"
    plan = cli("--repo", repo_path, "restore", "latest", target, "--dry-run", "--chroma-check",
               "--json").json()
    res = cli("--repo", repo_path, "restore", "latest", target, "--chroma-check", "--json")
    assert res.code == 0, res.stderr
    body = res.json()
    assert body["chunks_repaired"] > 6  # chroma.sqlite3 and index files of each collection
    assert body["bytes_downloaded"] == plan["bytes_to_download"]
    assert tree_digest(target) == tree_digest(src)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".t.")] == []


def test_show_names_the_tool_chromadb_and_the_db_schema_also_of_old_roots(cli, chroma_dir: Path,
                                                                          repo_path: Path) -> None:
    sid = cli("--repo", repo_path, "create", chroma_dir, "--json").json()["id"]
    root = repo_path / "snapshots" / f"{sid}.json"
    data = json.loads(root.read_text())
    schema = data["verified"]["schema"]
    # a root written before the field was renamed: the same fact under its earlier name
    data["chromadb_version"] = "0.5.23"
    del data["tool_chromadb_version"]
    root.write_text(json.dumps(data, sort_keys=True))
    shown = cli("--repo", repo_path, "show", sid)
    assert shown.code == 0, shown.stderr
    assert "chromadb 0.5.23 installed beside it" in shown.stdout
    line = next(x for x in shown.stdout.splitlines() if x.startswith("db schema"))
    for d, level in schema.items():
        assert f"{d} {level['filename']}" in line
    assert cli("--repo", repo_path, "show", sid, "--json").json()["tool_chromadb_version"] == "0.5.23"
