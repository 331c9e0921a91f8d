"""create --in-place: only chroma.sqlite3 is copied, the segment files are read where they lie
and proven unchanged once read; a change in that window means reading again, then giving up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from chroma_helpers import retag, tree_digest
from conftest import create_snapshot, one_line_error, run_cli

from snapshot.chroma import capture as capture_module
from snapshot.util import pausepoints


def _data_file(live: Path) -> Path:
    return max(live.rglob("data_level0.bin"), key=lambda p: p.stat().st_size)


def _change(path: Path, value: int) -> None:
    """Rewrite 16 bytes inside ``path`` (same size) and move its mtime on, as a writer would."""
    with open(path, "r+b") as fh:
        fh.seek(64)
        fh.write(bytes([value]) * 16)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_in_place_copies_only_the_database_keeps_no_cache_and_restores_exactly(
    chroma_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live, repo, cache = tmp_path / "vector_db", tmp_path / "snapshots", tmp_path / "cache"
    shutil.copytree(chroma_template, live)
    monkeypatch.setenv("CHROMA_SNAPSHOT_CACHE", str(cache))
    copied: list[str] = []
    real_copy = capture_module._copy

    def recording(src: Path, dst: Path) -> None:
        copied.append(src.name)
        real_copy(src, dst)

    monkeypatch.setattr(capture_module, "_copy", recording)
    before = tree_digest(live)
    create_snapshot(repo, live, "--in-place")
    assert copied == ["chroma.sqlite3"]
    assert tree_digest(live) == before and not cache.exists()

    retag(live, 7)
    copied.clear()
    second = run_cli("--repo", repo, "create", live, "--in-place", "--json")
    assert second.code == 0, second.stderr
    assert copied == ["chroma.sqlite3"] and second.json()["parent"] is not None
    target = tmp_path / "restored"
    res = run_cli("--repo", repo, "restore", "latest", target)
    assert res.code == 0, res.stderr
    assert tree_digest(target) == tree_digest(live)
    assert run_cli("--repo", repo, "check", "--read-data").code == 0

    refused = run_cli("--repo", repo, "create", live, "--in-place", "--cache-dir", tmp_path / "c2")
    assert "no base cache" in one_line_error(refused, 2)


def test_a_segment_file_changed_while_read_in_place_is_read_again(
    tmp_path: Path, chroma_template: Path
) -> None:
    live, repo = tmp_path / "vector_db", tmp_path / "snapshots"
    shutil.copytree(chroma_template, live)
    data = _data_file(live)
    changes = iter([0x5A])

    def writer_once() -> None:  # after the capture found the files stable, before they are read
        value = next(changes, None)
        if value is not None:
            _change(data, value)

    with pausepoints.on("create.captured", writer_once):
        res = run_cli("--repo", repo, "create", live, "--in-place", "--json")
    assert res.code == 0, res.stderr
    assert "changed while it was read in place" in res.stderr
    target = tmp_path / "restored"
    assert run_cli("--repo", repo, "restore", "latest", target).code == 0
    assert tree_digest(target) == tree_digest(live)  # the bytes after the change, read again


def test_segment_files_that_keep_changing_fail_in_place_and_commit_nothing(
    tmp_path: Path, chroma_template: Path
) -> None:
    live, repo = tmp_path / "vector_db", tmp_path / "snapshots"
    shutil.copytree(chroma_template, live)
    data = _data_file(live)
    values = iter(range(1, 100))

    with pausepoints.on("create.captured", lambda: _change(data, next(values))):
        res = run_cli("--repo", repo, "create", live, "--in-place")
    assert res.code == 6, res.stderr
    lines = res.stderr.strip().splitlines()  # a warning per read again, then the one error
    assert lines[:2] == ["chroma-snapshot: warning: a segment file changed while it was read in place; "
                         "reading it again"] * 2 and "Traceback" not in res.stderr
    assert lines[2].startswith("chroma-snapshot: error: ")
    assert "changed during each of 3 reads in place" in lines[2]
    assert run_cli("--repo", repo, "list", "--json").json() == []
