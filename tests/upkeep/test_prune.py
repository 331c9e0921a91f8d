"""prune and forget on a real repository: what is removed, what is freed, what survives (delta
bases included), the grace period, dry runs; plus the pure object-collection plan."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from chroma_helpers import build_db, counts, grow, tree_digest
from conftest import CliResult, create_snapshot

from snapshot.format import layout
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk, FileEntry, Manifest
from snapshot.repo.repository import Repository
from snapshot.repo.usage import Usage
from snapshot.storage.base import ObjectInfo, ObjectKind
from snapshot.upkeep.prune import plan_gc, prune
from snapshot.upkeep.repack import RepackOptions
from snapshot.upkeep.retention import RetentionPolicy

Cli = Callable[..., CliResult]


@dataclass(frozen=True)
class Built:
    repo: Path
    ids: tuple[str, str, str]



@pytest.fixture(scope="module")
def built(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """s1: the original DB; then the DB is rebuilt from scratch (docs=300), s2 (full frames);
    it grows by 50, s3 (delta frames on s2's chunks). s1's pack is needed by nobody after
    keep-last 1; s2's pack is still needed as the delta base of s3."""
    base = tmp_path_factory.mktemp("prune")
    live, repo = base / "vector_db", base / "snapshots"
    shutil.copytree(chroma_template, live)
    s1 = create_snapshot(repo, live)
    shutil.rmtree(live)
    build_db(live, {"docs": 300}, seed=5)
    s2 = create_snapshot(repo, live, "--no-delta")
    grow(live, "docs", 50, seed=6)
    s3 = create_snapshot(repo, live)
    return Built(repo, (s1, s2, s3))


@pytest.fixture
def repo(built: Built, tmp_path: Path) -> Path:
    path = tmp_path / "snapshots"
    shutil.copytree(built.repo, path)
    return path


def _objects(repo: Path) -> set[str]:
    return {p.name for p in (repo / "data").rglob("*") if p.is_file() and not p.name.startswith(".")}


def _snapshots(repo: Path) -> list[str]:
    return sorted(p.stem for p in (repo / "snapshots").glob("*.json"))


def test_keep_last_one_frees_bytes_keeps_delta_bases_and_restores(
    repo: Path, built: Built, cli: Cli, tmp_path: Path
) -> None:
    s1, s2, s3 = built.ids
    r = Repository.open(repo)
    m3, m2 = r.manifest(s3), r.manifest(s2)
    bases = {fr.object for f in m3.files for c in r.chunks(m3, f) for fr in c.frames[:-1]}
    assert bases & Usage(r).objects(m2), "s3 should hold delta frames on s2's chunks"
    only_s1 = Usage(r).objects(r.manifest(s1)) - Usage(r).objects(m3)
    assert only_s1

    res = cli("--repo", repo, "prune", "--keep-last", "1", "--json")
    assert res.code == 0, res.stderr
    out = res.json()
    assert out["removed"] == [s2, s1]
    assert [(k["id"], k["reasons"]) for k in out["kept"]] == [(s3, ["last 1"])]
    assert out["bytes_freed"] > 0 and set(out["objects_removed"]) == only_s1
    assert out["dry_run"] is False
    assert _snapshots(repo) == [s3]
    assert _objects(repo) == Usage(r).objects(m3)  # every base of s3's chains survived

    assert cli("--repo", repo, "check", "--read-data").code == 0
    target = tmp_path / "restored"
    res = cli("--repo", repo, "restore", "latest", target)
    assert res.code == 0, res.stderr
    assert counts(target) == {"docs": 350}


def test_prune_needs_a_policy(repo: Path, cli: Cli) -> None:
    before = tree_digest(repo)
    res = cli("--repo", repo, "prune")
    assert res.code == 2 and "--keep" in res.stderr
    res = cli("--repo", repo, "prune", "--dry-run", "--json")
    assert res.code == 2 and res.json()["error"]["kind"] == "usage"
    assert cli("--repo", repo, "prune", "--keep-within", "5 days").code == 2
    assert tree_digest(repo) == before


def test_dry_run_shows_the_plan_and_changes_nothing(repo: Path, built: Built, cli: Cli) -> None:
    s1, s2, s3 = built.ids
    before = tree_digest(repo)
    res = cli("--repo", repo, "prune", "--keep-last", "1", "--dry-run", "--json")
    assert res.code == 0, res.stderr
    out = res.json()
    assert out["dry_run"] is True and out["removed"] == [s2, s1] and out["bytes_freed"] > 0
    res = cli("--repo", repo, "prune", "--keep-last", "1", "--dry-run", "--grace", "0s")
    assert res.code == 0 and "would remove 2 snapshot(s)" in res.stdout and "dry run" in res.stdout
    assert s3 in res.stdout and "last 1" in res.stdout
    assert tree_digest(repo) == before


def test_a_prune_reads_each_chunk_table_once(
    repo: Path, built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repack's analysis, the dropped snapshots and both listings of the roots share one
    walker: a table the kept snapshot shares with the dropped ones is read once, not twice."""
    reads: Counter[tuple[str, int]] = Counter()
    chunks = Repository.chunks

    def counting(self: Repository, m: Manifest, f: FileEntry) -> tuple[Chunk, ...]:
        if f.table is not None:
            reads[(f.table.object, f.table.offset)] += 1
        return chunks(self, m, f)

    monkeypatch.setattr(Repository, "chunks", counting)
    r = Repository.open(repo)

    def tables(sid: str) -> set[tuple[str, int]]:
        return {(f.table.object, f.table.offset) for f in r.manifest(sid).files if f.table is not None}

    shared = tables(built.ids[2]) & tables(built.ids[1])
    assert shared, "s2 and s3 should share the tables of the files that did not change"
    nothing_to_move = RepackOptions(max_unused=float("inf"), rebase_ratio=-1)
    result = prune(r, RetentionPolicy(last=1), grace=0, delete_after=0, repack=nothing_to_move)
    assert result.removed == (built.ids[1], built.ids[0]) and result.repack is None
    assert {loc: reads[loc] for loc in shared} == dict.fromkeys(shared, 1)


def test_policies_combine_and_the_newest_is_always_kept(repo: Path, built: Built, cli: Cli) -> None:
    s1, s2, s3 = built.ids
    out = cli("--repo", repo, "prune", "--keep-tag", "nightly", "--dry-run", "--json").json()
    assert [(k["id"], k["reasons"]) for k in out["kept"]] == [(s3, ["newest"])]
    out = cli("--repo", repo, "prune", "--keep-within", "1h", "--dry-run", "--json").json()
    assert out["removed"] == [] and all(k["reasons"] == ["within 1h"] for k in out["kept"])
    out = cli("--repo", repo, "prune", "--keep-last", "1", "--keep-daily", "2", "--dry-run", "--json").json()
    assert out["kept"][0]["reasons"][0] == "last 1" and out["kept"][0]["reasons"][1].startswith("daily ")
    assert set(out["removed"]) == {s1, s2}


def test_grace_period_protects_fresh_unreferenced_objects(repo: Path, cli: Cli) -> None:
    store = Repository.open(repo).store
    fresh, old = b"a create still in flight" * 100, b"a create that crashed long ago" * 100
    store.put(layout.object_key(digest(fresh)), fresh, kind=ObjectKind.PACK)
    store.put(layout.object_key(digest(old)), old, kind=ObjectKind.PACK)
    old_path = repo / layout.object_key(digest(old))
    two_hours_ago = time.time() - 7200
    os.utime(old_path, (two_hours_ago, two_hours_ago))

    out = cli("--repo", repo, "prune", "--keep-last", "3", "--json").json()
    assert out["removed"] == [] and out["objects_removed"] == [digest(old)]
    assert out["objects_in_grace"] == 1 and out["bytes_in_grace"] == len(fresh)
    assert digest(fresh) in _objects(repo) and digest(old) not in _objects(repo)

    out = cli("--repo", repo, "prune", "--keep-last", "3", "--grace", "0s", "--json").json()
    assert out["objects_removed"] == [digest(fresh)] and out["bytes_freed"] == len(fresh)
    assert digest(fresh) not in _objects(repo)
    assert len(_snapshots(repo)) == 3
    assert cli("--repo", repo, "check").code == 0


def test_forget_resolves_every_id_before_deleting(repo: Path, built: Built, cli: Cli) -> None:
    s1, s2, s3 = built.ids
    before = tree_digest(repo)
    res = cli("--repo", repo, "forget", s1, "19990101")
    assert res.code == 3 and "19990101" in res.stderr
    assert tree_digest(repo) == before
    assert cli("--repo", repo, "forget").code == 2

    out = cli("--repo", repo, "forget", s1, s2[:17], "--json").json()
    assert out["removed"] == [s2, s1] and out["bytes_freed"] > 0
    assert [(k["id"], k["reasons"]) for k in out["kept"]] == [(s3, ["not named"])]
    assert _snapshots(repo) == [s3]
    assert cli("--repo", repo, "check", "--read-data").code == 0

    res = cli("--repo", repo, "forget", "latest")  # named explicitly: even the newest may go
    assert res.code == 0, res.stderr
    assert _snapshots(repo) == [] and _objects(repo) == set()


def test_unreadable_manifest_stops_prune_but_can_be_forgotten(repo: Path, built: Built, cli: Cli) -> None:
    s1, s2, s3 = built.ids
    (repo / layout.snapshot_key(s2)).write_text("{not json")
    before = tree_digest(repo)
    res = cli("--repo", repo, "prune", "--keep-last", "1")
    assert res.code == 4 and s2 in res.stderr
    assert tree_digest(repo) == before
    res = cli("--repo", repo, "forget", s2, "--json")
    assert res.code == 0, res.stderr
    assert _snapshots(repo) == [s1, s3]
    assert cli("--repo", repo, "check", "--read-data").code == 0


# -- pure: which objects go ------------------------------------------------------------------


def _info(oid_char: str, mtime: float, size: int = 10) -> ObjectInfo:
    oid = oid_char * 32
    return ObjectInfo(layout.object_key(oid), size, mtime)


def test_plan_gc_literal() -> None:
    now = 10_000.0
    objs = [
        _info("a", 0),  # referenced by a kept snapshot: stays however old
        _info("b", now),  # released by a dropped snapshot: goes at once, however fresh
        _info("c", now - 10),  # never referenced, younger than grace: waits
        _info("d", now - 3600),  # never referenced, exactly the grace old: goes
        ObjectInfo("data/zz/not-an-object", 5, 0),  # foreign key: left alone
    ]
    listed = [(layout.object_id_from_key(o.key), o) for o in objs]
    plan = plan_gc(listed, referenced={"a" * 32}, released={"b" * 32}, now=now, grace=3600)
    assert [oid for oid, _ in plan.delete] == ["b" * 32, "d" * 32]
    assert [i.key for _, i in plan.pending] == [layout.object_key("c" * 32)]
    assert plan.kept == 1
    everything = plan_gc(listed, referenced=set(), released=set(), now=now, grace=0)
    assert len(everything.delete) == 4 and everything.pending == ()


def test_keep_last_one_on_a_growing_db_keeps_its_chains(
    chroma_template: Path, tmp_path: Path, cli: Cli
) -> None:
    """Three delta snapshots of a growing DB: the repository already holds about one full
    snapshot (the rest are small deltas the kept snapshot is built on), so prune removes the
    manifests, keeps every chain base, and the kept snapshot restores and checks clean."""
    live, repo = tmp_path / "vector_db", tmp_path / "snapshots"
    shutil.copytree(chroma_template, live)
    ids = [create_snapshot(repo, live)]
    full = sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())
    for seed in (31, 32):
        grow(live, "docs", 40, seed=seed)
        ids.append(create_snapshot(repo, live))
    res = cli("--repo", repo, "prune", "--keep-last", "1", "--grace", "0s", "--json")
    assert res.code == 0, res.stderr
    assert res.json()["removed"] == [ids[1], ids[0]] and _snapshots(repo) == [ids[2]]
    r = Repository.open(repo)
    assert _objects(repo) == Usage(r).objects(r.manifest(ids[2]))
    stored = sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())
    assert stored < full * 1.1  # one full snapshot plus small deltas
    assert cli("--repo", repo, "check", "--read-data").code == 0
    target = tmp_path / "restored"
    assert cli("--repo", repo, "restore", "latest", target).code == 0
    assert counts(target) == {"docs": 3080, "notes": 1000}


def test_prune_keeps_the_newest_of_every_source_by_default(chroma_dir: Path, repo_path: Path, tmp_path: Path,
                                                           cli: Cli) -> None:
    other = tmp_path / "other" / "vector_db"
    shutil.copytree(chroma_dir, other)
    a1 = create_snapshot(repo_path, chroma_dir)
    b1 = create_snapshot(repo_path, other)
    a2 = create_snapshot(repo_path, chroma_dir)
    res = cli("--repo", repo_path, "prune", "--keep-last", "1", "--dry-run", "--json")
    assert res.code == 0, res.stderr
    out = res.json()
    assert {d["id"] for d in out["kept"]} == {a2, b1} and out["removed"] == [a1]
    groups = {d["group"] for d in out["kept"]}
    assert any(str(other) in g for g in groups) and any(str(chroma_dir) in g for g in groups)
    text = cli("--repo", repo_path, "prune", "--keep-last", "1", "--dry-run").stdout
    assert str(other) in text and "GROUP" in text
    flat = cli("--repo", repo_path, "prune", "--keep-last", "1", "--group-by", "none", "--dry-run",
               "--json").json()
    assert [d["id"] for d in flat["kept"]] == [a2] and sorted(flat["removed"]) == sorted([a1, b1])
    assert cli("--repo", repo_path, "prune", "--keep-last", "1").code == 0
    assert {s["id"] for s in cli("--repo", repo_path, "list", "--json").json()} == {a2, b1}
    assert cli("--repo", repo_path, "check", "--read-data").code == 0
