"""The base cache: incremental creates delta against the last local capture, not the repository."""

from __future__ import annotations

import os
from pathlib import Path

from chroma_helpers import become


def _cached_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != "cache.json"]


def test_second_create_reads_no_bases_from_repository(cli, chroma_dir, chroma_grown, repo_path, tmp_path):
    cache = Path(os.environ["CHROMA_SNAPSHOT_CACHE"])
    first = cli("--repo", repo_path, "create", chroma_dir, "--json").json()
    assert _cached_files(cache), "the capture was not kept"
    become(chroma_dir, chroma_grown)
    second = cli("--repo", repo_path, "create", chroma_dir, "--json").json()
    assert second["chunks_delta"] >= 1
    assert second["bases_cached"] == second["chunks_delta"] and second["bases_read"] == 0
    assert "get_range" not in second["requests"]  # nothing read back from the repository
    assert second["parent"] == first["id"]
    assert second["collections"] == {"docs": 3040, "notes": 1000}
    res = cli("--repo", repo_path, "restore", "latest", tmp_path / "out", "--json")
    assert res.code == 0 and "ids-match" in res.json()["checks"], res.stderr  # counts as recorded


def test_no_cache_reads_bases_from_repository(cli, chroma_dir, chroma_grown, repo_path, tmp_path):
    cache = tmp_path / "explicit-cache"
    cli("--repo", repo_path, "create", chroma_dir, "--no-cache", "--cache-dir", cache)
    assert not cache.exists()
    become(chroma_dir, chroma_grown)
    second = cli("--repo", repo_path, "create", chroma_dir, "--no-cache", "--json").json()
    assert second["chunks_delta"] >= 1
    assert second["bases_read"] == second["chunks_delta"] and second["bases_cached"] == 0
    assert second["requests"].get("get_range", 0) >= second["chunks_delta"]


def test_damaged_cache_falls_back_and_stays_correct(cli, chroma_dir, chroma_grown, repo_path, tmp_path):
    cache = tmp_path / "c"
    cli("--repo", repo_path, "create", chroma_dir, "--cache-dir", cache)
    for f in _cached_files(cache):  # every chunk damaged, so every delta base is refused
        data = bytearray(f.read_bytes())
        for offset in range(0, len(data), 1 << 20):
            data[offset + min(len(data) - offset, 1 << 20) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    become(chroma_dir, chroma_grown)
    second = cli("--repo", repo_path, "create", chroma_dir, "--cache-dir", cache, "--json").json()
    # every damaged base was refused and read from the repository
    assert second["chunks_delta"] >= 1 and second["bases_cached"] == 0
    assert second["bases_read"] == second["chunks_delta"]
    assert second["collections"] == {"docs": 3040, "notes": 1000}
    res = cli("--repo", repo_path, "restore", "latest", tmp_path / "out", "--json")
    assert res.code == 0 and "ids-match" in res.json()["checks"], res.stderr  # counts as recorded
    check = cli("--repo", repo_path, "check", "--read-data")
    assert check.code == 0, check.stdout + check.stderr


def test_s3_incremental_create_downloads_no_data(cli, s3_repo_url, chroma_dir, chroma_grown):
    cli("--repo", s3_repo_url, "create", chroma_dir)
    become(chroma_dir, chroma_grown)
    second = cli("--repo", s3_repo_url, "create", chroma_dir, "--json").json()
    assert second["chunks_delta"] >= 1 and second["bases_read"] == 0
    assert "get_range" not in second["requests"]
