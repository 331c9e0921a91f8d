"""restore SNAP TARGET --collection NAME [--as NEW]: one collection of a 3-collection snapshot
into a new persist dir. The restored collection equals the snapshot's (records, embeddings bit
for bit, its segment folder byte for byte), the others are absent (down to the free pages of
chroma.sqlite3), only its files and chroma.sqlite3 are read from the repository, bad input is a
one-line error that writes nothing, and a kill -9 leaves TARGET absent or complete."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chroma_helpers import build_db, counts, delete_collection, grow, records, tree_digest
from conftest import create_snapshot, one_line_error, run_cli, show_files

import snapshot
from snapshot.repo.repository import Repository
from snapshot.restore.collections import CollectionRestoreResult
from snapshot.util import pausepoints
from snapshot.util.pausepoints import KILL_ENV

ROOT = Path(__file__).resolve().parent.parent.parent
#: One small collection and two big ones: reading only the small one's files must show.
SPEC = {"tenant-a": 300, "tenant-b": 4000, "tenant-c": 4000}


@dataclass(frozen=True)
class Snap:
    source: Path
    repo: Path
    sid: str
    #: collection -> its segment folder (the snapshot's and the source's)
    segment: dict[str, str]


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snap]:
    base = tmp_path_factory.mktemp("collections")
    source = base / "vector_db"
    build_db(source, SPEC, seed=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHROMA_SNAPSHOT_CACHE", str(base / "cache"))
        sid = create_snapshot(base / "repo", source)
        shown = run_cli("--repo", base / "repo", "show", sid, "--json").json()
    yield Snap(source, base / "repo", sid, {c["name"]: c["segments"][0] for c in shown["collections"]})


def _restore(snap: Snap, target: Path, *args: str) -> dict[str, object]:
    res = run_cli("--repo", snap.repo, "restore", snap.sid, target, *args, "--json")
    assert res.code == 0, res.stderr
    out: dict[str, object] = res.json()
    return out


def _beside(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def test_one_collection_into_a_new_dir_is_the_snapshots_and_alone(snap: Snap, tmp_path: Path) -> None:
    target = tmp_path / "restored" / "tenant-a"
    out = _restore(snap, target, "--collection", "tenant-a")
    assert out["collections"] == {"tenant-a": 300} and out["mode"] == "new-dir"
    assert counts(target) == {"tenant-a": 300}
    assert records(target, "tenant-a") == records(snap.source, "tenant-a")  # embeddings bit for bit
    seg = snap.segment["tenant-a"]
    assert sorted(os.listdir(target)) == sorted(["chroma.sqlite3", seg])
    assert tree_digest(target / seg) == tree_digest(snap.source / seg)
    db = (target / "chroma.sqlite3").read_bytes()
    assert b"tenant-b document" not in db and b"tenant-c document" not in db  # not even in free pages
    assert _beside(target) == []
    assert "ids-match" in out["checks"] and "segments-unchanged" in out["checks"]  # type: ignore[operator]


def test_as_restores_under_the_new_name_through_the_python_api(snap: Snap, tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    result = snapshot.restore_collection(Repository.open(str(snap.repo)), snap.sid, target, ["tenant-b"],
                                         rename="tenant-b-yesterday")
    assert isinstance(result, CollectionRestoreResult)
    assert result.collections == {"tenant-b-yesterday": 4000}
    assert result.renamed == {"tenant-b": "tenant-b-yesterday"}
    assert counts(target) == {"tenant-b-yesterday": 4000}
    assert records(target, "tenant-b-yesterday") == records(snap.source, "tenant-b")
    seg = snap.segment["tenant-b"]
    assert tree_digest(target / seg) == tree_digest(snap.source / seg)
    assert sorted(os.listdir(target)) == sorted(["chroma.sqlite3", seg])


def test_only_the_collections_files_and_the_database_are_read(snap: Snap, tmp_path: Path) -> None:
    stored = {f["path"]: sum(fr["length"] for c in f["chunks"] for fr in c["frames"])
              for f in show_files(snap.repo, snap.sid)}
    seg = snap.segment["tenant-a"]
    own = stored["chroma.sqlite3"] + sum(n for p, n in stored.items() if p.startswith(seg + "/"))
    out = _restore(snap, tmp_path / "one", "--collection", "tenant-a")
    whole = run_cli("--repo", snap.repo, "restore", snap.sid, tmp_path / "all", "--json").json()
    read = int(out["bytes_downloaded"])  # type: ignore[call-overload]
    # its frames, plus the chunk tables of its files (a few hundred bytes each)
    assert own <= read <= own + 1024 * int(out["files"]), (read, own)  # type: ignore[call-overload]
    assert read < 0.6 * whole["bytes_downloaded"], (read, whole["bytes_downloaded"])


# -- bad input: one line, a documented code, nothing written ------------------------------------


@pytest.mark.parametrize(("args", "code", "words"), [
    (("--collection", "nope"), 3, "has no collection 'nope' (its collections: tenant-a, tenant-b, tenant-c)"),
    (("--collection", "tenant-a", "--collection", "tenant-b", "--as", "both"), 2,
     "--as renames one collection"),
    (("--collection", "tenant-a", "--as", "x"), 2, "invalid collection name 'x'"),
    (("--collection", "tenant-a", "--as", "bad..name"), 2, "two consecutive periods"),
    (("--collection", "tenant-a", "--force"), 2, "--force does not apply"),
    (("--as", "tenant-z"), 2, "--as applies only with --collection"),
])
def test_bad_input_is_one_line_and_writes_nothing(snap: Snap, tmp_path: Path, args: tuple[str, ...],
                                                  code: int, words: str) -> None:
    target = tmp_path / "new"
    line = one_line_error(run_cli("--repo", snap.repo, "restore", snap.sid, target, *args), code)
    assert words in line
    assert not target.exists() and _beside(target) == []


def test_a_folder_that_is_neither_empty_nor_a_persist_dir_is_refused(snap: Snap, tmp_path: Path) -> None:
    target = tmp_path / "docs"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    before = tree_digest(target)
    res = run_cli("--repo", snap.repo, "restore", snap.sid, target, "--collection", "tenant-a")
    line = one_line_error(res, 7)
    assert "neither empty nor a Chroma persist dir" in line
    assert tree_digest(target) == before and _beside(target) == []


@pytest.mark.slow  # chromadb opens
def test_into_a_persist_dir_where_it_was_deleted_since_the_others_keep_todays_data(
        snap: Snap, tmp_path: Path) -> None:
    """Tenant A's collection was dropped after the snapshot and tenant B has grown since: the
    restore brings A back as the snapshot had it, B keeps today's records, C is untouched down
    to its segment folder's bytes."""
    target = tmp_path / "app"
    shutil.copytree(snap.source, target)
    delete_collection(target, "tenant-a")
    grown = grow(target, "tenant-b", 25, seed=4)
    today = {n: records(target, n) for n in ("tenant-b", "tenant-c")}
    segments = {n: tree_digest(target / snap.segment[n]) for n in ("tenant-b", "tenant-c")}

    out = _restore(snap, target, "--collection", "tenant-a")

    assert {n: tree_digest(target / snap.segment[n]) for n in segments} == segments
    assert counts(target) == {"tenant-a": 300, "tenant-b": 4025, "tenant-c": 4000}
    assert records(target, "tenant-a") == records(snap.source, "tenant-a")
    assert {n: records(target, n) for n in today} == today
    assert set(grown) <= {r[0] for r in today["tenant-b"]}
    assert out["mode"] == "persist-dir" and out["collections"] == {"tenant-a": 300}
    assert out["records_written"] == 300 and "self-query" in out["checks"]  # type: ignore[operator]
    [copy] = out["copies"]  # type: ignore[misc]
    assert (copy["name"], copy["records_sent"], copy["resumed_at"], copy["replaced"]) == (
        "tenant-a", 300, 0, False)
    assert _beside(target) == []


def test_a_chromadb_failure_in_the_private_copy_leaves_nothing(snap: Snap, tmp_path: Path) -> None:
    target = tmp_path / "new"

    def damage() -> None:  # chromadb then cannot open the copy it is to drop collections from
        [built] = [p for p in tmp_path.iterdir() if p.name.startswith(".new.restore-")]
        (built / "chroma.sqlite3").write_bytes(b"not a database" * 100)

    with pausepoints.on("collections.materialised", damage):
        res = run_cli("--repo", snap.repo, "restore", snap.sid, target, "--collection", "tenant-a")
    line = one_line_error(res, 4)
    assert "chromadb could not keep only the restored collections" in line
    assert not target.exists() and _beside(target) == []


# -- kill -9 -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("point", ["collections.materialised", "collections.kept", "collections.verified",
                                   "swap.new-renamed"])
def test_a_kill_leaves_the_target_absent_or_complete_and_a_rerun_finishes(
        snap: Snap, tmp_path: Path, point: str) -> None:
    target = tmp_path / "killed"
    argv = [sys.executable, "-m", "snapshot", "--repo", str(snap.repo), "restore", snap.sid, str(target),
            "--collection", "tenant-a", "--as", "tenant-a-back"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    killed = subprocess.run(argv, env={**env, KILL_ENV: point}, capture_output=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if target.exists():  # killed after the rename: complete
        assert point == "swap.new-renamed"
        assert counts(target) == {"tenant-a-back": 300}
        shutil.rmtree(target)
    again = subprocess.run(argv, env=env, capture_output=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert counts(target) == {"tenant-a-back": 300}
    assert _beside(target) == []
