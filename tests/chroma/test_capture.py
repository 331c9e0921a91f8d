"""Consistent capture of a live persist dir while a Chroma writer runs, and what is captured."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chroma_helpers import counts, delete_collection


def _rounds(progress: Path) -> int:
    try:
        return int(progress.read_text())
    except (OSError, ValueError):
        return 0


def _wait_for_rounds(writer: subprocess.Popen[str], progress: Path, more_than: int) -> int:
    """Wait until the writer has done more than ``more_than`` rounds (it says so in a file);
    a writer that died, or makes no progress in 5 minutes on a loaded machine, fails the test."""
    deadline = time.monotonic() + 300
    while (done := _rounds(progress)) <= more_than:
        assert writer.poll() is None, "the writer died"
        assert time.monotonic() < deadline, "the writer made no progress in 5 minutes"
        time.sleep(0.05)
    return done


@pytest.mark.slow  # a live chromadb writer and a chromadb open of every restore
def test_snapshots_taken_during_writes_all_restore(cli, chroma_dir: Path, repo_path: Path, tmp_path: Path):
    stop, progress = tmp_path / "stop", tmp_path / "progress"
    writer = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent.parent / "writer_proc.py"), str(chroma_dir), str(stop),
         str(progress)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ids = []
    try:
        done = _wait_for_rounds(writer, progress, 0)  # chromadb's import takes a while
        for _ in range(5):
            r = cli("--repo", repo_path, "create", chroma_dir, "--json")
            assert r.code == 0, r.stderr
            ids.append(r.json())
            done = _wait_for_rounds(writer, progress, done)  # the next snapshot sees a change
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=120)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ops"] > 0, err
    assert summary["errors"] == 0, err  # our read lock never made the writer fail
    seen_counts = {r["collections"]["docs"] for r in ids}
    assert len(seen_counts) > 1, "the writer did not change anything between snapshots"
    for k, r in enumerate(ids):
        target = tmp_path / f"restore{k}"
        res = cli("--repo", repo_path, "restore", r["id"], target, "--json", "--chroma-check")
        assert res.code == 0, res.stderr
        assert res.json()["chroma_checked"] == r["collections"]


def test_orphans_and_includes(cli, chroma_dir: Path, repo_path: Path, tmp_path: Path):
    delete_collection(chroma_dir, "notes")
    # Chroma may or may not leave the deleted collection's folder behind: make sure one
    # segment folder belongs to no collection (a copy of a live one under a new UUID).
    with sqlite3.connect(chroma_dir / "chroma.sqlite3") as conn:
        (docs_seg,) = conn.execute("SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
                                   "WHERE c.name = 'docs' AND s.scope = 'VECTOR'").fetchone()
    live_seg = chroma_dir / docs_seg
    shutil.copytree(live_seg, chroma_dir / "0badc0de-0000-4000-8000-000000000001")
    orphan = [p.name for p in chroma_dir.iterdir() if p.is_dir()]
    progress = tmp_path / "embedding_progress.json"
    progress.write_text('{"done": 3000}')
    logs = chroma_dir / "logs"
    logs.mkdir()
    (logs / "run.log").write_text("ok\n")

    res = cli("--repo", repo_path, "create", chroma_dir, "--include", progress, "--include", logs, "--json")
    assert res.code == 0, res.stderr
    body = res.json()
    assert body["collections"] == {"docs": 3000}
    left_out = body["orphans"]
    assert "0badc0de-0000-4000-8000-000000000001" in left_out
    assert "belongs to no collection" in res.stderr
    assert set(left_out) <= set(orphan) and live_seg.name not in left_out
    m = cli("--repo", repo_path, "show", "latest", "--json").json()
    paths = {f["path"]: f["role"] for f in m["files"]}
    assert paths["embedding_progress.json"] == "include"
    assert paths["logs/run.log"] == "include"
    assert not any(p.split("/")[0] in left_out for p in paths)

    target = tmp_path / "restored"
    assert cli("--repo", repo_path, "restore", "latest", target).code == 0
    assert (target / "embedding_progress.json").read_text() == '{"done": 3000}'
    assert (target / "logs" / "run.log").read_text() == "ok\n"
    assert counts(target) == {"docs": 3000}

    res = cli("--repo", repo_path, "create", chroma_dir, "--include-orphans", "--json")
    assert res.code == 0, res.stderr
    m = cli("--repo", repo_path, "show", "latest", "--json").json()
    assert {f["path"].split("/")[0] for f in m["files"] if f["role"] == "orphan"} == set(left_out)


def test_include_clash_and_missing(cli, chroma_dir: Path, repo_path: Path, tmp_path: Path):
    res = cli("--repo", repo_path, "create", chroma_dir, "--include", tmp_path / "nope.json")
    assert res.code == 3 and "nope.json" in res.stderr
    clash = tmp_path / "chroma.sqlite3"
    clash.write_text("x")
    res = cli("--repo", repo_path, "create", chroma_dir, "--include", clash)
    assert res.code == 2 and "clashes" in res.stderr
    a, b = tmp_path / "a" / "progress.json", tmp_path / "b" / "progress.json"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text("{}")
    res = cli("--repo", repo_path, "create", chroma_dir, "--include", a, "--include", b)
    assert res.code == 2 and str(a) in res.stderr and str(b) in res.stderr, res.stderr
    assert "Chroma dir" not in res.stderr


def test_source_db_is_never_written(cli, chroma_dir: Path, repo_path: Path):
    db = chroma_dir / "chroma.sqlite3"
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    assert cli("--repo", repo_path, "create", chroma_dir).code == 0
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert sorted(p.name for p in chroma_dir.iterdir() if p.name.startswith("chroma.sqlite3")) == [
        "chroma.sqlite3"
    ]
