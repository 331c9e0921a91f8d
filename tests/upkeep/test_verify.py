"""check on a real repository: healthy, flipped byte, deleted and truncated packs, a broken
manifest, unreferenced objects, subsets; plus the pure subset selection."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become, grow, retag
from conftest import CliResult, Format1Repo, create_snapshot, edit_manifest, run_cli, show_files

from snapshot.errors import UsageError
from snapshot.format import layout
from snapshot.format.hashing import digest
from snapshot.repo.repository import Repository
from snapshot.upkeep.verify import check_repository, parse_subset, select_objects

Cli = Callable[..., CliResult]



@pytest.fixture(scope="module")
def built(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("check")
    live, repo = base / "vector_db", base / "snapshots"
    shutil.copytree(chroma_template, live)
    ids = [create_snapshot(repo, live)]
    grow(live, "docs", 200, seed=1)
    ids.append(create_snapshot(repo, live))
    return repo, ids


@pytest.fixture
def repo(built: tuple[Path, list[str]], tmp_path: Path) -> Path:
    path = tmp_path / "snapshots"
    shutil.copytree(built[0], path)
    return path


def _largest_pack(repo: Path) -> Path:
    packs = [p for p in (repo / "data").rglob("*") if p.is_file()]
    return max(packs, key=lambda p: p.stat().st_size)


def test_healthy_repository_passes_and_reads_each_frame_once(repo: Path, cli: Cli) -> None:
    res = cli("--repo", repo, "check", "--read-data", "--json")
    assert res.code == 0, res.stderr
    out = res.json()
    assert out["ok"] is True and out["problems"] == [] and out["snapshots"] == 2
    r = Repository.open(repo)
    frames = {fr for m in r.manifests() for f in m.files for c in r.chunks(m, f) for fr in c.frames}
    tables = {f.table.hash for m in r.manifests() for f in m.files if f.table}
    assert out["frames_verified"] == len(frames)
    assert out["bytes_read"] == sum(fr.length for fr in frames)
    assert out["unreferenced"] == []

    fresh = Repository.open(repo)
    result = check_repository(fresh, read_data=True)
    stats = fresh.store.stats.as_dict()
    assert result.ok and stats.get("head", 0) == 0  # one listing of data/, no request per object
    # each distinct data frame read once; each chunk table once per pass (structure, then data)
    assert stats["get_range"] <= len(frames) + 2 * len(tables) and stats["list"] == 2
    assert stats["get_range"] >= len(frames) + len(tables)

    plain = cli("--repo", repo, "check")
    assert plain.code == 0 and "no problems found" in plain.stdout


def test_flipped_byte_fails_read_data_only_and_names_the_object(repo: Path, cli: Cli) -> None:
    pack = _largest_pack(repo)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01
    pack.write_bytes(bytes(data))

    assert cli("--repo", repo, "check").code == 0  # sizes are right: only reading finds it
    res = cli("--repo", repo, "check", "--read-data", "--json")
    assert res.code == 4
    out = res.json()  # the report itself, not an error document
    assert out["ok"] is False
    assert {p["object"] for p in out["problems"]} == {pack.name}
    assert all(p["kind"] == "data" and p["snapshot"] and p["path"] for p in out["problems"])
    res = cli("--repo", repo, "check", "--read-data")
    assert res.code == 4 and pack.name in res.stdout and "problem" in res.stderr

    part = int(pack.name[:8], 16) % 3 + 1  # the part of a 3-way split that holds this object
    res = cli("--repo", repo, "check", "--read-data-subset", f"{part}/3", "--json")
    assert res.code == 4 and pack.name in {p["object"] for p in res.json()["problems"]}


def test_deleted_pack_is_named_without_reading_data(
    repo: Path, built: tuple[Path, list[str]], cli: Cli
) -> None:
    pack = _largest_pack(repo)
    pack.unlink()
    res = cli("--repo", repo, "check", "--json")
    assert res.code == 4
    problems = res.json()["problems"]
    assert problems and all(p["kind"] == "missing-object" and p["object"] == pack.name for p in problems)
    assert {p["snapshot"] for p in problems} <= set(built[1]) and problems[0]["path"]
    res = cli("--repo", repo, "check", "--read-data")
    assert res.code == 4 and pack.name in res.stdout and "missing" in res.stdout


def test_truncated_pack_is_named_without_reading_data(repo: Path, cli: Cli) -> None:
    pack = _largest_pack(repo)
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    res = cli("--repo", repo, "check", "--json")
    assert res.code == 4
    kinds = {(p["kind"], p["object"]) for p in res.json()["problems"]}
    assert kinds == {("short-object", pack.name)}
    res = cli("--repo", repo, "check", "--read-data", "--json")
    assert res.code == 4 and {p["object"] for p in res.json()["problems"]} == {pack.name}


def test_invalid_manifest_is_named_and_the_others_still_checked(
    repo: Path, built: tuple[Path, list[str]], cli: Cli
) -> None:
    s1 = built[1][0]
    (repo / layout.snapshot_key(s1)).write_text('{"format_version": 1, "id": ')
    res = cli("--repo", repo, "check", "--read-data", "--json")
    assert res.code == 4
    out = res.json()
    assert [(p["kind"], p["snapshot"]) for p in out["problems"]] == [("manifest", s1)]
    assert out["snapshots"] == 2 and out["frames_verified"] > 0
    res = cli("--repo", repo, "check")
    assert res.code == 4 and s1 in res.stdout


def test_unreferenced_objects_are_reported_not_failed(repo: Path, cli: Cli) -> None:
    junk = b"left behind by a crashed create" * 50
    Repository.open(repo).put_object(digest(junk), junk)
    res = cli("--repo", repo, "check", "--json")
    assert res.code == 0, res.stderr
    out = res.json()
    assert out["unreferenced"] == [digest(junk)] and out["unreferenced_bytes"] == len(junk)
    assert "unreferenced" in cli("--repo", repo, "check").stdout


def test_subsets_on_the_cli(repo: Path, cli: Cli) -> None:
    full = cli("--repo", repo, "check", "--read-data", "--json").json()
    whole = cli("--repo", repo, "check", "--read-data-subset", "1/1", "--json").json()
    assert whole["frames_verified"] == full["frames_verified"] and whole["subset"] == "1/1"
    half = cli("--repo", repo, "check", "--read-data-subset", "50%", "--json").json()
    assert half["read_data"] is True and half["objects_selected"] == -(-full["objects_referenced"] // 2)
    for bad in ("0/3", "4/3", "0%", "150%", "abc"):
        assert cli("--repo", repo, "check", "--read-data-subset", bad).code == 2, bad


# -- pure: subsets ---------------------------------------------------------------------------


def test_parse_subset() -> None:
    assert parse_subset("10%").percent == 10
    assert parse_subset("2.5%").percent == 2.5
    s = parse_subset("2/7")
    assert (s.part, s.parts) == (2, 7)
    for bad in ("", "%", "0%", "101%", "0/1", "3/2", "1/0", "x/y", "-1/2"):
        with pytest.raises(UsageError):
            parse_subset(bad)


def test_select_objects_parts_partition_and_percent_is_deterministic() -> None:
    ids = [digest(str(i).encode()) for i in range(100)]
    parts = [select_objects(ids, parse_subset(f"{n}/5")) for n in range(1, 6)]
    assert set().union(*parts) == set(ids)
    assert sum(len(p) for p in parts) == len(ids)  # disjoint
    assert select_objects(reversed(ids), parse_subset("1/5")) == parts[0]
    ten = select_objects(ids, parse_subset("10%"))
    assert len(ten) == 10 and ten == select_objects(list(reversed(ids)), parse_subset("10%"))
    assert len(select_objects(ids[:3], parse_subset("1%"))) == 1  # at least one object
    assert select_objects(ids, None) == set(ids)


def test_a_damaged_link_of_a_chain_is_named_by_restore(
    chroma_dir: Path, chroma_grown: Path, repo_path: Path, tmp_path: Path
) -> None:
    """Restore checks a chunk's result, not every link (each link is a function of the one
    before); when the result is wrong it decodes the chain again to name the damaged link."""
    create_snapshot(repo_path, chroma_dir)
    become(chroma_dir, chroma_grown)
    create_snapshot(repo_path, chroma_dir)
    chained = [c for f in show_files(repo_path) for c in f["chunks"] if len(c["frames"]) >= 2]
    assert chained, "no delta chain to damage"
    link = chained[0]["frames"][0]
    pack = repo_path / layout.object_key(link["object"])
    data = bytearray(pack.read_bytes())
    data[link["offset"] + link["length"] // 2] ^= 0x55
    pack.write_bytes(bytes(data))
    res = run_cli("--repo", repo_path, "restore", "latest", tmp_path / "out", "--skip-chroma-check")
    assert res.code == 4, res.stderr
    assert f"object {link['object']} at offset {link['offset']}" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_check_read_data_verifies_file_hashes_and_chunk_order(format1_repo: Format1Repo) -> None:
    repo_path = format1_repo.path
    sid = format1_repo.ids[-1]  # format 1: chunk order and file hash in the manifest itself
    manifest = repo_path / layout.snapshot_key(sid)
    original = manifest.read_text()
    m = json.loads(original)
    db = next(i for i, f in enumerate(m["files"]) if f["path"] == "chroma.sqlite3")
    assert len(m["files"][db]["chunks"]) >= 3

    def swap_chunks(d: dict[str, Any]) -> None:
        chunks = d["files"][db]["chunks"]
        chunks[0], chunks[1] = chunks[1], chunks[0]

    def alter_hash(d: dict[str, Any]) -> None:
        h = d["files"][db]["hash"]
        d["files"][db]["hash"] = ("0" if h[0] != "0" else "1") + h[1:]

    for damage in (swap_chunks, alter_hash):
        manifest.write_text(original)
        edit_manifest(repo_path, sid, damage)
        assert run_cli("--repo", repo_path, "check").code == 0  # structure alone cannot tell
        res = run_cli("--repo", repo_path, "check", "--read-data", "--json")
        assert res.code == 4, damage.__name__
        problems = res.json()["problems"]
        assert [(p["kind"], p["path"]) for p in problems] == [("file-hash", "chroma.sqlite3")]


def test_read_data_holds_a_window_of_a_paths_chunks_not_every_version(
    chroma_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six versions of chroma.sqlite3 at 4 KiB chunks, walked with a budget of 64 chunk-versions:
    at no index are more than 64 chunks of the path held (every version's whole table was), and
    every frame and file is still verified, a damaged frame in a late window still found."""
    from snapshot.upkeep import verify

    live, repo = tmp_path / "vector_db", tmp_path / "snapshots"
    shutil.copytree(chroma_template, live)
    for n in range(6):
        if n:
            retag(live, n)
        create_snapshot(repo, live, *(("--chunk-size", "4096") if n == 0 else ()))
    whole = check_repository(Repository.open(repo), read_data=True)
    assert whole.ok, whole.problems

    held: list[int] = []
    forest = verify._forest

    def counting(versions: Any, index: int) -> Any:
        held.append(sum(len(v.chunks) for v in versions))
        return forest(versions, index)

    monkeypatch.setattr(verify, "_forest", counting)
    monkeypatch.setattr(verify, "_TABLE_BUDGET", 64, raising=False)
    windowed = check_repository(Repository.open(repo), read_data=True)
    assert windowed.ok, windowed.problems
    assert (windowed.frames_verified, windowed.files_verified, windowed.bytes_read) == (
        whole.frames_verified, whole.files_verified, whole.bytes_read)
    r = Repository.open(repo)
    db = [(m, f) for m in r.manifests() for f in m.files if f.path == "chroma.sqlite3"]
    versions = {f.hash for _, f in db}
    assert len(versions) == 6 and db[0][1].chunk_count > 100
    assert max(held) <= 64 < len(versions) * db[0][1].chunk_count

    # damage the frame of chroma.sqlite3's last chunk in the newest snapshot: found and named
    m, f = db[-1]
    fr = r.chunks(m, f)[-1].frames[-1]
    pack = repo / layout.object_key(fr.object)
    data = bytearray(pack.read_bytes())
    data[fr.offset + fr.length // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    damaged = check_repository(Repository.open(repo), read_data=True)
    assert not damaged.ok
    assert any(p.kind == "data" and p.path == "chroma.sqlite3" and p.object == fr.object
               for p in damaged.problems), damaged.problems
