"""Resuming a restore that was killed: the next restore into the same target takes what the
killed one had written (its staging dir beside the target), checked chunk by chunk again, and
reads only the rest from the repository; a staging dir of another target is never used, and
stale ones are still swept (snapshot/restore/local.py).

The killed restores run the real CLI in a child process that SIGKILLs itself at the pause
point ``restore.chunk-written#N``: N is the number of chunks written once 92% of the stored
bytes a restore reads are written, in the order a restore writes them. The repository has
64 KiB chunks, so that this falls within a file and not at the end of a large chunk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import tree_digest
from conftest import CliResult, run_cli
from shaping_fixtures import shaping_proxy  # noqa: F401  (a fixture)
from shaping_proxy import ShapingProxy

from snapshot.chroma.restore_rules import write_order
from snapshot.create.pipeline import create_snapshot
from snapshot.repo.repository import Repository
from snapshot.util import pausepoints, tempdirs

CHUNK = 64 << 10
#: A restore is killed once this share of the stored bytes it reads is written.
KILLED_AT = 0.92
ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class Base:
    """A repository with 64 KiB chunks: ``first`` of the template DB, ``second`` of it grown."""

    repo: Path
    first: str
    second: str
    trees: dict[str, dict[str, str]]
    #: chunks a restore of each snapshot has written when KILLED_AT of its stored bytes are
    kill_at: dict[str, int]


def chunks_written_at(repo: Repository, sid: str, share: float) -> int:
    """How many chunks a restore of ``sid`` has written once ``share`` of the stored bytes it
    reads are written, in the order it writes them."""
    m = repo.get(sid)
    tables = repo.tables(m, write_order(m))
    stored = [sum(fr.length for fr in c.frames) for _f, chunks in tables for c in chunks]
    done = 0
    for n, size in enumerate(stored, 1):
        done += size
        if done >= share * sum(stored):
            return n
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def _base(chroma_template: Path, chroma_grown: Path, tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("resume")
    repo = Repository.open(root / "repo", create=True, chunk_size=CHUNK)
    first = create_snapshot(repo, chroma_template, use_cache=False).id
    second = create_snapshot(repo, chroma_grown, use_cache=False).id
    trees = {first: tree_digest(chroma_template), second: tree_digest(chroma_grown)}
    assert trees[first] != trees[second]
    kill_at = {sid: chunks_written_at(repo, sid, KILLED_AT) for sid in (first, second)}
    return Base(root / "repo", first, second, trees, kill_at)


@pytest.fixture
def base(_base: Base, tmp_path: Path) -> Base:
    shutil.copytree(_base.repo, tmp_path / "repo")
    return Base(tmp_path / "repo", _base.first, _base.second, _base.trees, _base.kill_at)


def staging(target: Path) -> list[Path]:
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.restore-"))


def beside(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def killed_restore(repo: str | Path, sid: str, target: Path, point: str, *options: str) -> None:
    """Run ``restore sid target`` in a child process that SIGKILLs itself at ``point``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env[pausepoints.KILL_ENV] = point
    args = [sys.executable, "-m", "snapshot", "--repo", str(repo), *options, "restore", sid, str(target)]
    child = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, f"{point} was never reached: {child.stderr}"


def kill_near_end(base: Base, sid: str, target: Path) -> None:
    """A restore of ``sid`` into ``target`` killed once KILLED_AT of what it reads is written."""
    killed_restore(base.repo, sid, target, f"restore.chunk-written#{base.kill_at[sid]}")


def restored(repo: str | Path, sid: str, target: Path, *options: str) -> dict[str, Any]:
    res = run_cli("--repo", repo, *options, "restore", sid, target, "--json")
    assert res.code == 0, res.stderr
    body: dict[str, Any] = res.json()
    return body


def checked(repo: str | Path, *options: str) -> CliResult:
    res = run_cli("--repo", repo, *options, "check", "--read-data", "--json")
    assert res.code == 0 and res.json()["ok"], res.stdout + res.stderr
    return res


# -- killed at 92%, resumed ------------------------------------------------------------------


def test_a_restore_killed_near_its_end_reads_only_the_rest_again(base: Base, tmp_path: Path) -> None:
    fresh = restored(base.repo, base.first, tmp_path / "fresh")
    target = tmp_path / "db"
    kill_near_end(base, base.first, target)
    assert not target.exists() and len(staging(target)) == 1

    # A dry run counts the leftover and changes nothing.
    left = staging(target)
    plan = run_cli("--repo", base.repo, "restore", base.first, target, "--dry-run", "--json").json()
    assert plan["bytes_resumed"] >= 0.8 * plan["bytes_total"]
    assert plan["bytes_to_download"] <= 0.10 * fresh["bytes_downloaded"]
    assert staging(target) == left and not target.exists()

    body = restored(base.repo, base.first, target)
    assert body["bytes_downloaded"] <= 0.10 * fresh["bytes_downloaded"], (body, fresh)
    assert body["bytes_downloaded"] == plan["bytes_to_download"]
    assert body["bytes_resumed"] == plan["bytes_resumed"]
    assert body["bytes_resumed"] + body["bytes_reused"] < body["bytes_total"]  # the rest was read
    assert body["chunks_resumed"] + body["chunks_reused"] + body["chunks_fetched"] == fresh["chunks_fetched"]
    assert body["requests"]["get_range"] <= 0.10 * fresh["requests"]["get_range"] + 1, (body, fresh)
    assert tree_digest(target) == base.trees[base.first]
    assert beside(target) == []
    checked(base.repo)


def _upload(repo: Path, s3_client: Any, url: str) -> None:
    """A local repository pushed to ``url`` as it is (the layout is the same)."""
    bucket, prefix = url[len("s3://"):].split("/", 1)
    for p in sorted(repo.rglob("*")):
        if p.is_file():
            key = f"{prefix}/{p.relative_to(repo).as_posix()}"
            s3_client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())


def test_a_restore_from_s3_killed_near_its_end_reads_only_the_rest_again(
    base: Base, tmp_path: Path, s3_client: Any, s3_repo_url: str, shaping_proxy: ShapingProxy  # noqa: F811
) -> None:
    _upload(base.repo, s3_client, s3_repo_url)
    via = ("--endpoint-url", shaping_proxy.url)
    shaping_proxy.reset()
    fresh = restored(s3_repo_url, base.first, tmp_path / "fresh", *via)
    fresh_seen = shaping_proxy.stats()
    target = tmp_path / "db"
    killed_restore(s3_repo_url, base.first, target, f"restore.chunk-written#{base.kill_at[base.first]}", *via)
    assert not target.exists() and len(staging(target)) == 1

    shaping_proxy.reset()
    body = restored(s3_repo_url, base.first, target, *via)
    seen = shaping_proxy.stats()
    assert body["bytes_downloaded"] <= 0.10 * fresh["bytes_downloaded"], (body, fresh)
    assert body["bytes_resumed"] > 0.8 * body["bytes_total"]
    # What went over the wire: the data read again, and the snapshot's root and chunk tables.
    assert seen.bytes_down <= 0.10 * fresh_seen.bytes_down, (seen, fresh_seen)
    assert body["requests"]["get_range"] <= 0.10 * fresh["requests"]["get_range"] + 1, (body, fresh)
    assert seen.requests < fresh_seen.requests
    assert tree_digest(target) == base.trees[base.first]
    assert beside(target) == []
    checked(s3_repo_url, *via)


def test_a_restore_killed_twice_resumes_from_both_leftovers(base: Base, tmp_path: Path) -> None:
    target = tmp_path / "db"
    half = base.kill_at[base.first] // 2
    killed_restore(base.repo, base.first, target, f"restore.chunk-written#{half}")
    killed_restore(base.repo, base.first, target, "restore.chunk-written#5")
    assert len(staging(target)) == 2  # the first's leftover (what it had not handed on) and the second's
    body = restored(base.repo, base.first, target)
    assert body["bytes_resumed"] >= 0.4 * body["bytes_total"]
    assert tree_digest(target) == base.trees[base.first]
    assert beside(target) == []


@pytest.mark.parametrize("point", ["restore.verified", "swap.begin"])
def test_a_restore_killed_once_its_result_was_verified_reads_nothing_again(
    base: Base, tmp_path: Path, point: str
) -> None:
    target = tmp_path / "db"
    killed_restore(base.repo, base.first, target, point)
    body = restored(base.repo, base.first, target)
    assert body["bytes_downloaded"] == 0 and body["bytes_resumed"] == body["bytes_total"]
    assert tree_digest(target) == base.trees[base.first]
    assert beside(target) == []


# -- the leftover is never trusted -------------------------------------------------------------


def test_a_leftover_damaged_after_the_kill_is_checked_chunk_by_chunk(base: Base, tmp_path: Path) -> None:
    """Whatever a kill or a power cut leaves (a byte changed, a file cut short, a file extended
    with zeros as a preallocated one is, a hole) fails its chunk's hash and is read again."""
    target = tmp_path / "db"
    kill_near_end(base, base.first, target)
    [left] = staging(target)
    files = run_cli("--repo", base.repo, "show", base.first, "--json").json()["files"]
    sizes = {f["path"]: f["size"] for f in files}
    present = {p.relative_to(left).as_posix(): p for p in left.rglob("*") if p.is_file()}
    del present[tempdirs.MARKER]
    short = [rel for rel, p in present.items() if p.stat().st_size < sizes[rel]]
    assert short, "the kill left no file cut short"
    for rel in short:  # preallocated: its full size, zeros where nothing was written
        os.truncate(present[rel], sizes[rel])
    db = present["chroma.sqlite3"]
    with open(db, "r+b") as fh:  # one changed byte in a file otherwise whole
        fh.seek(sizes["chroma.sqlite3"] // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    holed = max((r for r in present if r not in short and r != "chroma.sqlite3"), key=lambda r: sizes[r])
    os.truncate(present[holed], 0)
    os.truncate(present[holed], sizes[holed])  # a hole: its size, no data

    clean = restored(base.repo, base.first, tmp_path / "clean-run")
    body = restored(base.repo, base.first, target)
    assert tree_digest(target) == base.trees[base.first]
    assert 0 < body["bytes_downloaded"] < clean["bytes_downloaded"]
    assert body["chunks_fetched"] >= 3  # at least the changed chunk, the holed file, the cut one
    assert beside(target) == []


def test_a_prune_between_the_kill_and_the_resume_loses_nothing(base: Base, tmp_path: Path) -> None:
    target = tmp_path / "db"
    kill_near_end(base, base.second, target)
    pruned = run_cli("--repo", base.repo, "forget", base.first, "--max-unused", "0%", "--json")
    assert pruned.code == 0, pruned.stderr
    report = pruned.json()
    assert report["objects_removed"] and report["repack"]["packs_repacked"] > 0, report  # rewritten, deleted
    body = restored(base.repo, base.second, target)
    assert body["bytes_resumed"] > 0.5 * body["bytes_total"]
    assert tree_digest(target) == base.trees[base.second]
    assert beside(target) == []
    checked(base.repo)


# -- which leftovers are used -------------------------------------------------------------------


def test_a_restore_of_another_snapshot_takes_only_the_chunks_whose_hash_matches(
    base: Base, tmp_path: Path
) -> None:
    """A leftover is used whatever snapshot its restore was of: each chunk is taken only if it
    hashes as the snapshot being restored says (the grown DB shares most chunks)."""
    fresh = restored(base.repo, base.second, tmp_path / "fresh")
    target = tmp_path / "db"
    kill_near_end(base, base.first, target)
    body = restored(base.repo, base.second, target)
    assert tree_digest(target) == base.trees[base.second]
    assert body["bytes_resumed"] > 0 and body["bytes_downloaded"] < fresh["bytes_downloaded"]
    assert beside(target) == []
    checked(base.repo)


@pytest.mark.parametrize("how", ["parent moved", "renamed beside another target"])
def test_a_leftover_of_another_target_is_not_used_and_is_swept(base: Base, tmp_path: Path, how: str) -> None:
    fresh = restored(base.repo, base.first, tmp_path / "fresh")
    kill_near_end(base, base.first, tmp_path / "a" / "db")
    if how == "parent moved":  # same name, another directory: the marker names /.../a/db
        (tmp_path / "a").rename(tmp_path / "b")
        target = tmp_path / "b" / "db"
    else:
        [left] = staging(tmp_path / "a" / "db")
        target = tmp_path / "a" / "other"
        left.rename(target.parent / left.name.replace(".db.", ".other.", 1))
    assert len(staging(target)) == 1
    body = restored(base.repo, base.first, target)
    assert body["bytes_resumed"] == 0 and body["bytes_downloaded"] == fresh["bytes_downloaded"]
    assert tree_digest(target) == base.trees[base.first]
    assert beside(target) == []  # its owner is gone: swept


def test_stale_staging_is_swept_and_a_live_one_is_left_alone(base: Base, tmp_path: Path) -> None:
    target = tmp_path / "db"
    target.parent.mkdir(exist_ok=True)
    # Made before staging dirs named their target (no purpose), by a process gone since.
    code = ("import sys; from pathlib import Path; from snapshot.util.tempdirs import owned_dir; "
            "d = owned_dir(Path(sys.argv[1]), '.db.restore-'); (d / 'chroma.sqlite3').write_text('x')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                   env=dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])))
    [stale] = staging(target)
    # A staging dir of this target whose owner still runs: not claimed, not swept, not read.
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        running = tmp_path / f".db.restore-{live.pid}-{'ab' * 6}"
        shutil.copytree(base.repo, running / "not-a-db")  # whatever it holds
        purpose = {"restore_target": str(target.resolve()), "snapshot": base.first}
        record = dict(tempdirs.owner_record(live.pid), purpose=purpose)
        (running / tempdirs.MARKER).write_text(json.dumps(record))
        body = restored(base.repo, base.first, target)
        assert body["bytes_resumed"] == 0
        assert tree_digest(target) == base.trees[base.first]
        assert not stale.exists()
        assert staging(target) == [running] and (running / "not-a-db").is_dir()
    finally:
        live.communicate(b"", timeout=30)
