"""Repack on prune: chains re-based once their first frames serve only dropped snapshots, live
frames copied out of mostly-unused packs, roots rewritten; what it does under a nightly
schedule, which packs it picks, dry runs, bad input, and a create running meanwhile."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become, steps, tree_digest
from conftest import run_cli

from snapshot.create.pipeline import create_snapshot
from snapshot.format.manifest import Frame
from snapshot.repo.repository import Repository
from snapshot.upkeep.prune import prune
from snapshot.upkeep.repack import PackUse, RepackOptions, select_packs
from snapshot.upkeep.retention import RetentionPolicy
from snapshot.util import pausepoints


def _repo_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())


def _night(src: Path, n: int) -> None:
    """30 records added, 20 updated, 5 deleted, in one chromadb run."""
    steps(
        src,
        ("add", {"name": "docs", "ids": [f"docs-n{n}-{100 + n}-{i}" for i in range(30)], "seed": 100 + n}),
        ("update_metadata", {"name": "docs", "ids": [f"docs-{i}" for i in range(n * 20, n * 20 + 20)],
                             "value": n}),
        ("delete", {"name": "docs", "ids": [f"docs-{i}" for i in range(2000 + n * 5, 2000 + n * 5 + 5)]}),
    )


Nights = Callable[[int], Path]


@pytest.fixture(scope="module")
def nights(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Nights:
    """``nights(n)``: the template after nights 1..n, each state built once (one chromadb
    run a night) and copied over a test's Chroma dir with ``become``."""
    base = tmp_path_factory.mktemp("nights")
    states = {0: chroma_template}

    def after(n: int) -> Path:
        if n not in states:
            path = base / str(n) / "vector_db"
            shutil.copytree(after(n - 1), path)
            _night(path, n)
            states[n] = path
        return states[n]

    return after


def _ok(*args: Any) -> Any:
    res = run_cli(*map(str, args), "--json")
    assert res.code == 0, res.stdout + res.stderr
    return res.json()


def _restores_exactly(repo: Path, sid: str, tree: dict[str, str], where: Path) -> None:
    dest = where / f"restore-{sid}"
    _ok("--repo", repo, "restore", sid, dest)
    assert tree_digest(dest) == tree
    shutil.rmtree(dest)


@pytest.mark.slow  # eight nights, two repositories
def test_a_nightly_schedule_stays_smaller_with_repack_and_every_kept_snapshot_restores(
    chroma_dir: Path, nights: Nights, tmp_path: Path
) -> None:
    """Two repositories take the same nights (64 KiB chunks, keep-last 3): one prunes with
    --no-repack, the other as by default. The default one re-bases chains and repacks, ends
    smaller, passes check --read-data, and restores every kept snapshot byte for byte."""
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    trees: dict[str, dict[str, str]] = {}
    rebased = repacked = rewritten = 0
    for n in range(9):
        if n:
            become(chroma_dir, nights(n))
        for repo in (plain, packed):
            extra = ("--chunk-size", "65536") if n == 0 else ()
            sid = _ok("--repo", repo, "create", chroma_dir, *extra)["id"]
            trees[sid] = tree_digest(chroma_dir)
        _ok("--repo", plain, "prune", "--keep-last", "3", "--grace", "0s", "--no-repack")
        out = _ok("--repo", packed, "prune", "--keep-last", "3", "--grace", "0s")
        if out["repack"]:
            rebased += out["repack"]["chunks_rebased"]
            repacked += out["repack"]["packs_repacked"]
            rewritten += out["repack"]["roots_rewritten"]
        # What a prune plans, it finishes: right after it, another finds nothing to do.
        again = _ok("--repo", packed, "prune", "--keep-last", "3", "--grace", "0s", "--dry-run")
        assert again["objects_removed"] == [] and again["repack"] is None, (n, again)
    assert rebased > 0 and repacked > 0 and rewritten > 0
    assert _repo_bytes(packed) < _repo_bytes(plain)
    report = _ok("--repo", packed, "check", "--read-data")
    assert report["ok"] and report["unreferenced"] == []
    kept = [s["id"] for s in _ok("--repo", packed, "list")]
    assert len(kept) == 3
    for sid in kept:
        _restores_exactly(packed, sid, trees[sid], tmp_path)


def _pack(size: int, live: int) -> PackUse:
    u = PackUse(size)
    if live:
        u.live[0] = Frame("0" * 32, 0, live, "zstd", live, "0" * 32)
    return u


def test_the_pack_with_1_percent_live_is_repacked_and_the_one_with_99_is_not() -> None:
    mib = 1 << 20
    use = {"mostly-dead": _pack(16 * mib, 16 * mib // 100), "mostly-live": _pack(16 * mib, 16 * mib * 99 // 100),
           "full": _pack(16 * mib, 16 * mib)}
    assert select_packs(use, RepackOptions()) == ["mostly-dead"]
    # unlimited unused: nothing moves; 0%: every partly used pack, emptiest first
    assert select_packs(use, RepackOptions(max_unused=float("inf"))) == []
    assert select_packs(use, RepackOptions(max_unused=0.0)) == ["mostly-dead", "mostly-live"]
    # a copy budget smaller than the mostly-dead pack's live data skips it
    assert select_packs(use, RepackOptions(max_unused=0.0, max_repack_size=100 << 10)) == []
    # small packs are merged only on request, and only when there are two to merge
    small = {"a": _pack(mib, mib), "b": _pack(2 * mib, 2 * mib), "big": _pack(16 * mib, 16 * mib)}
    assert select_packs(small, RepackOptions()) == []
    assert select_packs(small, RepackOptions(repack_small=True)) == ["a", "b"]
    assert select_packs({"a": _pack(mib, mib)}, RepackOptions(repack_small=True)) == []
    # ... and not when the copy budget lets only one of them through (it would be copied as is)
    assert select_packs(small, RepackOptions(repack_small=True, max_repack_size=mib)) == []


def test_dry_run_reports_the_repack_and_changes_nothing(
    chroma_dir: Path, nights: Nights, repo_path: Path
) -> None:
    for n in range(5):
        if n:
            become(chroma_dir, nights(n))
        _ok("--repo", repo_path, "create", chroma_dir, *(("--chunk-size", "65536") if n == 0 else ()))
    before = tree_digest(repo_path)
    plan = _ok("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--max-unused", "0%",
               "--dry-run")
    assert tree_digest(repo_path) == before
    rp = plan["repack"]
    assert rp["chunks_rebased"] > 0 and rp["packs_repacked"] > 0 and rp["bytes_copied"] > 0
    assert rp["unused_after"] < rp["unused_before"]
    text = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--max-unused", "0%",
                   "--dry-run")
    assert "would re-base" in text.stdout and "would copy" in text.stdout
    done = _ok("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--max-unused", "0%")
    assert done["repack"]["chunks_rebased"] == rp["chunks_rebased"]
    assert done["repack"]["packs_repacked"] == rp["packs_repacked"]
    assert sorted(done["objects_removed"]) == sorted(plan["objects_removed"])
    assert _ok("--repo", repo_path, "check", "--read-data")["ok"]


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--max-unused", "150%", "--max-unused: '150%' is not between 0% and 100%"),
    ("--max-unused", "lots", "--max-unused: not a share: 'lots'"),
    ("--max-repack-size", "12 parsecs", "--max-repack-size: not a size: '12 parsecs'"),
])
def test_bad_repack_options_are_one_line_usage_errors(
    chroma_dir: Path, repo_path: Path, option: str, value: str, words: str
) -> None:
    _ok("--repo", repo_path, "create", chroma_dir)
    before = tree_digest(repo_path)
    res = run_cli("--repo", repo_path, "prune", "--keep-last", "1", option, value)
    assert res.code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], res.stderr
    assert tree_digest(repo_path) == before


def _history(src: Path, repo: Path, count: int, nights: Nights) -> dict[str, dict[str, str]]:
    trees = {}
    for n in range(count):
        if n:
            become(src, nights(n))
        sid = _ok("--repo", repo, "create", src, *(("--chunk-size", "65536") if n == 0 else ()))["id"]
        trees[sid] = tree_digest(src)
    return trees


def test_a_prune_that_repacks_waits_for_a_running_create_and_includes_its_snapshot(
    chroma_dir: Path, nights: Nights, repo_path: Path, tmp_path: Path
) -> None:
    """The create holds its shared lock; the prune (--wait) starts while the create is about
    to commit, waits, then plans with the new snapshot among the kept ones and repacks it too."""
    trees = _history(chroma_dir, repo_path, 4, nights)
    become(chroma_dir, nights(4))
    new_tree = tree_digest(chroma_dir)
    result: dict[str, Any] = {}
    waiting = threading.Event()

    def run_prune() -> None:
        try:
            result["prune"] = prune(Repository.open(repo_path), RetentionPolicy(last=2), grace=0.0, wait=120.0,
                                    repack=RepackOptions(max_unused=0.0))
        except BaseException as exc:  # reported by the assertions below
            result["error"] = exc

    def start_prune_and_let_it_wait() -> None:
        t = threading.Thread(target=run_prune)
        result["thread"] = t
        with pausepoints.on("lock.waiting", waiting.set):
            t.start()
            assert waiting.wait(60), "the prune never waited for the lock"

    with pausepoints.on("create.before-commit", start_prune_and_let_it_wait):
        created = create_snapshot(Repository.open(repo_path), chroma_dir)
    result["thread"].join(120)
    assert "error" not in result, result.get("error")
    pruned = result["prune"]
    kept = [d.id for d in pruned.kept]
    assert created.id in kept and len(kept) == 2
    assert pruned.repack is not None and pruned.repack.roots_rewritten > 0
    trees[created.id] = new_tree
    assert _ok("--repo", repo_path, "check", "--read-data")["ok"]
    for sid in kept:
        _restores_exactly(repo_path, sid, trees[sid], tmp_path)


def test_a_create_that_starts_during_a_repack_builds_on_the_rewritten_parent(
    chroma_dir: Path, nights: Nights, repo_path: Path, tmp_path: Path
) -> None:
    """The prune holds the exclusive lock while it writes new packs and rewrites roots; a
    create started meanwhile (--wait) picks its parent only after the prune, so it never
    points at frames the prune deleted."""
    trees = _history(chroma_dir, repo_path, 4, nights)
    become(chroma_dir, nights(4))
    new_tree = tree_digest(chroma_dir)
    result: dict[str, Any] = {}
    waiting = threading.Event()

    def run_create() -> None:
        try:
            result["create"] = create_snapshot(Repository.open(repo_path), chroma_dir, wait=120.0)
        except BaseException as exc:
            result["error"] = exc

    def start_create_and_let_it_wait() -> None:
        t = threading.Thread(target=run_create)
        result["thread"] = t
        with pausepoints.on("lock.waiting", waiting.set):
            t.start()
            assert waiting.wait(60), "the create never waited for the lock"

    with pausepoints.on("repack.packs-written", start_create_and_let_it_wait):
        pruned = prune(Repository.open(repo_path), RetentionPolicy(last=1), grace=0.0,
                       repack=RepackOptions(max_unused=0.0))
    result["thread"].join(120)
    assert "error" not in result, result.get("error")
    assert pruned.repack is not None and pruned.repack.roots_rewritten == 1
    created = result["create"]
    kept = pruned.kept[0].id
    assert created.parent == kept
    trees[created.id] = new_tree
    assert _ok("--repo", repo_path, "check", "--read-data")["ok"]
    for sid in (kept, created.id):
        _restores_exactly(repo_path, sid, trees[sid], tmp_path)


def test_an_encrypted_repository_repacks_and_stays_sealed(
    chroma_dir: Path, nights: Nights, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-based frames, copied frames, rewritten tables and roots of an encrypted repository
    are all sealed: check --read-data authenticates every one, and no collection name or
    document text appears in any stored byte."""
    from snapshot.format import crypto

    monkeypatch.setenv(crypto.LOG_N_ENV, "10")
    monkeypatch.setenv("CHROMA_SNAPSHOT_PASSWORD", "repack test password")
    trees = {}
    for n in range(5):
        if n:
            become(chroma_dir, nights(n))
        extra = ("--chunk-size", "65536", "--encrypt") if n == 0 else ()
        sid = _ok("--repo", repo_path, "create", chroma_dir, *extra)["id"]
        trees[sid] = tree_digest(chroma_dir)
    out = _ok("--repo", repo_path, "prune", "--keep-last", "2", "--grace", "0s", "--max-unused", "0%")
    assert out["repack"]["chunks_rebased"] > 0 and out["repack"]["roots_rewritten"] == 2
    assert _ok("--repo", repo_path, "check", "--read-data")["ok"]
    stored = b"".join(p.read_bytes() for p in repo_path.rglob("*") if p.is_file())
    for plain in (b"docs document", b"notes document", b"lorem ipsum", b"added docs-n4-"):
        assert plain not in stored
    for sid in [s["id"] for s in _ok("--repo", repo_path, "list")]:
        _restores_exactly(repo_path, sid, trees[sid], tmp_path)


@pytest.mark.slow  # five nights on S3; the repack itself runs locally in the quick loop
def test_on_s3_small_packs_stay_out_of_ia_and_early_deletes_are_reported(
    cli: Any, s3_client: Any, s3_repo_url: str, chroma_dir: Path, nights: Nights, tmp_path: Path
) -> None:
    """Packs of at least 128 KiB go to STANDARD_IA, smaller ones (a small incremental's) to
    STANDARD; a prune on S3 repacks like a local one and says how many of the bytes it deleted
    had not yet served IA's 30 billed days."""
    bucket, prefix = s3_repo_url[len("s3://"):].split("/", 1)
    for n in range(4):
        if n:
            become(chroma_dir, nights(n))
        res = cli("--repo", s3_repo_url, "create", chroma_dir, "--json",
                  *(("--chunk-size", "65536") if n == 0 else ()))
        assert res.code == 0, res.stderr
    classes = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/data/"):
        for obj in page.get("Contents", []):
            head = s3_client.head_object(Bucket=bucket, Key=obj["Key"])
            classes[obj["Key"]] = (obj["Size"], head.get("StorageClass", "STANDARD"))
    assert any(size >= 128 << 10 for size, _ in classes.values())
    assert any(size < 128 << 10 for size, _ in classes.values())
    for size, cls in classes.values():
        assert cls == ("STANDARD_IA" if size >= 128 << 10 else "STANDARD"), classes
    out = cli("--repo", s3_repo_url, "prune", "--keep-last", "1", "--grace", "0s", "--max-unused", "0%", "--json")
    assert out.code == 0, out.stderr
    report = out.json()
    assert report["objects_removed"] and report["repack"]["roots_rewritten"] == 1
    assert 0 < report["bytes_deleted_early"] <= report["bytes_freed"]
    text = cli("--repo", s3_repo_url, "prune", "--keep-last", "1", "--grace", "0s", "--dry-run")
    assert text.code == 0 and "dry run" in text.stdout
    assert cli("--repo", s3_repo_url, "check", "--read-data").code == 0
    res = cli("--repo", s3_repo_url, "restore", "latest", tmp_path / "out", "--json")
    assert res.code == 0, res.stderr
    assert tree_digest(tmp_path / "out") == tree_digest(chroma_dir)


def test_repeated_budgeted_small_repacks_settle(
    chroma_dir: Path, nights: Nights, repo_path: Path, tmp_path: Path
) -> None:
    """--repack-small with a copy budget, run again and again: each run succeeds, the repository
    stays whole, and the runs stop moving data once nothing is left to merge."""
    trees = _history(chroma_dir, repo_path, 6, nights)
    args = ("--repo", repo_path, "prune", "--keep-last", "2", "--grace", "0s", "--repack-small",
            "--max-repack-size", "100K")
    moved = [(_ok(*args).get("repack") or {}).get("bytes_copied", 0) for _ in range(6)]
    assert moved[-1] == 0 and moved[-2] == 0, moved
    assert _ok("--repo", repo_path, "check", "--read-data")["ok"]
    for sid in [s["id"] for s in _ok("--repo", repo_path, "list")]:
        _restores_exactly(repo_path, sid, trees[sid], tmp_path)


def test_a_damaged_pack_stops_the_prune_before_anything_is_removed(
    chroma_dir: Path, nights: Nights, repo_path: Path
) -> None:
    """The repack reads data; it runs before any snapshot is removed, so a damaged pack leaves
    every snapshot in place (the ones the damage does not touch still restore) and says so."""
    _history(chroma_dir, repo_path, 5, nights)
    ids = [s["id"] for s in _ok("--repo", repo_path, "list")]
    tables = {f["table"]["object"] for sid in ids for f in _ok("--repo", repo_path, "show", sid)["files"]}
    for pack in sorted((repo_path / "data").rglob("*")):
        if pack.is_file() and pack.name not in tables:  # data packs: the plan reads only tables
            data = bytearray(pack.read_bytes())
            data[len(data) // 2] ^= 0xFF
            pack.write_bytes(bytes(data))
    res = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--max-unused", "0%")
    assert res.code == 4, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no snapshot was removed" in lines[0], res.stderr
    assert [s["id"] for s in _ok("--repo", repo_path, "list")] == ids
    # without reading data, the prune goes ahead
    assert _ok("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--no-repack")["removed"]


def test_every_stored_copy_of_a_re_based_chunk_table_is_planned_as_rewritten() -> None:
    """The same chunk table content stored in two packs (a file that changed back): both
    copies list a chain whose re-base changes them, so both are rewritten, not only the first."""
    from types import SimpleNamespace

    from snapshot.format.manifest import Chunk, FileEntry, Manifest, TableRef, Totals
    from snapshot.upkeep.repack import analyse

    def fr(obj: str, h: str) -> Frame:
        return Frame(obj * 32, 0, 10, "zstd", 100, h * 32)

    chain = (fr("a", "1"), fr("b", "2"), fr("c", "3"))  # b is a dead link: c re-based
    content = (Chunk("3" * 32, 100, chain),)
    first, second = TableRef("t" * 32, 0, 20, 200, "9" * 32), TableRef("u" * 32, 0, 20, 200, "9" * 32)

    def root(sid: str, table: TableRef) -> Manifest:
        entry = FileEntry("x.bin", 100, 0o644, "f" * 32, "other", table=table, chunk_count=1)
        return Manifest(sid, None, "2026-01-01T00:00:00Z", "0", None, "/db", "h", (), "", 100, (entry,), (),
                        Totals(1, 100, 1, 0, 0, 0))

    repo: Any = SimpleNamespace(config=SimpleNamespace(codec="zstd", max_chain=8),
                                chunks=lambda m, f: content)
    sizes = {c * 32: 100 for c in "abctu"}
    a = analyse(repo, [root("s1", first), root("s2", second)], sizes, RepackOptions())
    assert list(a.rebases) == [("c" * 32, 0)]
    # once re-based, the chain needs no old frame: both copies are rewritten, neither needs a pack
    assert a.tables == {("t" * 32, 0): (frozenset(), True, frozenset()),
                        ("u" * 32, 0): (frozenset(), True, frozenset())}
    assert a.referenced == {c * 32 for c in "abctu"}


def test_a_full_frame_in_a_pack_being_emptied_is_re_based_rather_than_copied(
    chroma_dir: Path, nights: Nights, repo_path: Path, tmp_path: Path
) -> None:
    """A pack the repack empties is deleted whole, so each full frame in it is written anew
    either way: when only dropped snapshots needed the first links of its chain, the chain is
    re-based there (dead links freed too), even if those links cost less than the re-base
    ratio. After the prune, no kept chain of two or more frames starts in a pack it wrote."""
    trees = _history(chroma_dir, repo_path, 4, nights)
    before = {p.name for p in (repo_path / "data").rglob("*") if p.is_file()}
    out = _ok("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--max-unused", "0%")
    assert out["repack"]["chunks_rebased"] > 0 and out["repack"]["packs_repacked"] > 0
    repo = Repository.open(repo_path)
    (kept,) = repo.manifests()
    chains = [c.frames for f in kept.files for c in repo.chunks(kept, f)]
    copied = [ch for ch in chains if len(ch) > 1 and ch[0].object not in before]
    assert copied == [], f"{len(copied)} chains kept their dead links behind a copied full frame"
    assert any(len(ch) == 1 and ch[0].object not in before for ch in chains)
    assert _ok("--repo", repo_path, "check", "--read-data")["ok"]
    _restores_exactly(repo_path, kept.id, trees[kept.id], tmp_path)


def test_chunks_that_change_alike_are_re_based_on_different_nights() -> None:
    """Each chunk's chain is re-based once its dead links cost its own share of the full frame
    (between half and one and a half times the ratio, from its path and index): of 400 chunks
    whose dead links grow alike, a few are due at 12%, about half at 20% (the default ratio),
    and nearly all by 28%, so one prune does not re-base (and condemn) them all at once."""
    from snapshot.format.chains import rebase_share

    shares = [rebase_share(0.2, "chroma.sqlite3", i) for i in range(400)]
    assert all(0.1 <= s <= 0.3 for s in shares)

    def due(dead: float) -> int:
        return sum(s <= dead for s in shares)

    assert due(0.12) < 60 and 140 < due(0.2) < 260 and due(0.28) > 340


def test_a_full_frame_another_file_still_needs_is_copied_when_its_chain_is_re_based() -> None:
    """The same full frame (deduplicated content) starts a chain of x.bin, whose dead link is
    cheap (an optional re-base), and is the whole chain of y.bin. When its pack is repacked the
    x.bin chain is re-based there, but the frame is still copied for y.bin: the plan never frees
    a pack a kept chain still needs."""
    from types import SimpleNamespace

    from snapshot.format.manifest import Chunk, FileEntry, Manifest, TableRef, Totals
    from snapshot.upkeep.repack import plan_repack

    def fr(obj: str, h: str, length: int) -> Frame:
        return Frame(obj * 32, 0, length, "zstd", 4000, h * 32)

    full = fr("a", "1", 1000)
    chunks = {
        "x.bin": (Chunk("3" * 32, 4000, (full, fr("b", "2", 10), fr("c", "3", 10))),),  # b: a cheap dead link
        "y.bin": (Chunk("1" * 32, 4000, (full,)),),
    }
    tables = {"x.bin": TableRef("t" * 32, 0, 20, 200, "8" * 32), "y.bin": TableRef("u" * 32, 0, 20, 200, "9" * 32)}
    entries = tuple(FileEntry(p, 4000, 0o644, "f" * 32, "other", table=tables[p], chunk_count=1) for p in chunks)
    kept = Manifest("s1", None, "2026-01-01T00:00:00Z", "0", None, "/db", "h", (), "", 8000, entries, (),
                    Totals(2, 8000, 2, 0, 0, 0))
    repo: Any = SimpleNamespace(config=SimpleNamespace(codec="zstd", max_chain=8),
                                chunks=lambda m, f: chunks[f.path])
    sizes = {"a" * 32: 4000, "b" * 32: 100, "c" * 32: 100, "t" * 32: 20, "u" * 32: 20}
    plan, _ = plan_repack(repo, [kept], sizes, RepackOptions(max_unused=0.0, pack_size=1 << 20))
    assert list(plan.rebases) == [("c" * 32, 0)]  # x.bin's chain, re-based as its full frame's pack empties
    assert plan.repack["a" * 32] == {0: full}  # y.bin still needs the full frame: copied, not dropped
    assert "a" * 32 in plan.freed  # and the pack goes once the copy is made


def test_re_based_full_frames_are_compressed_harder_than_a_creates(
    chroma_dir: Path, nights: Nights, repo_path: Path
) -> None:
    """A re-based full frame is the base of its chunk for many nights and written off the
    create's path: it is zstd at level 6 (REBASE_ZSTD_LEVEL), not the repository's level 1."""
    from snapshot.format.codecs import compress, decompress
    from snapshot.upkeep.repack import REBASE_ZSTD_LEVEL

    _history(chroma_dir, repo_path, 4, nights)
    before = {p.name for p in (repo_path / "data").rglob("*") if p.is_file()}
    # with --max-unused unlimited nothing is copied: the new packs hold re-based frames only
    out = _ok("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--max-unused", "unlimited")
    assert out["repack"]["chunks_rebased"] > 0 and out["repack"]["bytes_copied"] == 0
    repo = Repository.open(repo_path)
    assert repo.config.level == 1 and REBASE_ZSTD_LEVEL == 6
    (kept,) = repo.manifests()
    fulls = [c.frames[0] for f in kept.files for c in repo.chunks(kept, f) if c.frames[0].object not in before]
    assert fulls
    smaller = 0
    for fr in fulls:
        stored = repo.read_object(fr.object)[fr.offset : fr.offset + fr.length]
        content = decompress(stored, fr.codec, fr.size)
        assert stored == compress(content, "zstd", 6)
        smaller += len(compress(content, "zstd", 1)) - len(stored)
    assert smaller > 0


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_a_chain_at_its_depth_limit_that_changed_little_is_re_based_as_a_delta_over_its_full_frame(
    chroma_dir: Path, nights: Nights, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    encrypt: bool,
) -> None:
    """With ``max_chain`` 4, three snapshots make chains one create away from their limit.
    Where a chunk changed little, the prune stores the kept content as a delta against the
    chain's full frame, which stays where it is, instead of writing a new full frame and
    condemning the old one; where it changed much, it writes a full frame as before. Every
    snapshot restores byte-exact and check --read-data passes (sealed, in an encrypted one)."""
    from snapshot.format import crypto
    from snapshot.repo.keys import KeySource

    monkeypatch.setenv(crypto.LOG_N_ENV, "10")
    if encrypt:
        monkeypatch.setenv("CHROMA_SNAPSHOT_PASSWORD", "over test password")
    Repository.init(repo_path, chunk_size=65536, max_chain=4, encrypt=encrypt,
                    key_source=KeySource.of("over test password") if encrypt else None)
    trees = {}
    for n in range(3):
        if n:
            become(chroma_dir, nights(n))
        trees[_ok("--repo", repo_path, "create", chroma_dir)["id"]] = tree_digest(chroma_dir)
    repo = Repository.open(repo_path, key_source=KeySource.of("over test password") if encrypt else None)
    first = repo.manifests()[0]
    fulls = {c.frames[0] for f in first.files for c in repo.chunks(first, f)}
    before = {p.name for p in (repo_path / "data").rglob("*") if p.is_file()}
    out = _ok("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s", "--max-unused", "unlimited")
    assert out["repack"]["chunks_rebased"] > 0 and out["repack"]["bytes_copied"] == 0
    repo = Repository.open(repo_path, key_source=KeySource.of("over test password") if encrypt else None)
    (kept,) = repo.manifests()
    chains = [c.frames for f in kept.files for c in repo.chunks(kept, f)]
    over = [ch for ch in chains if len(ch) == 2 and ch[0] in fulls and ch[1].object not in before]
    renewed = [ch for ch in chains if len(ch) == 1 and ch[0].object not in before]
    assert over and renewed, (len(over), len(renewed))
    # A delta, not a second full frame (which would be about as long as the first): such a
    # chain's links cost under 0.3 of its full frame (the re-base share is 0.1-0.3 of it, per
    # chunk), and chromadb's threaded index writes make the changes differ from run to run.
    assert all(ch[1].length < ch[0].length / 2 for ch in over), [(ch[0].length, ch[1].length) for ch in over]
    assert _ok("--repo", repo_path, "check", "--read-data")["ok"]
    _restores_exactly(repo_path, kept.id, trees[kept.id], tmp_path)
