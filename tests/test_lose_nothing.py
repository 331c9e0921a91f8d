"""A snapshot reported saved can be restored; bad input and bad luck give one-line errors and
leave nothing half-written. Races are driven with the named pause points of snapshot.util.pausepoints."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard
from chroma_helpers import grow, tree_digest
from conftest import CliResult, Format1Repo, create_snapshot, run_cli

from snapshot.errors import AlreadyExistsError, IntegrityError, mount_point
from snapshot.format import layout
from snapshot.format.codecs import decompress
from snapshot.storage.base import ObjectKind
from snapshot.storage.local import LocalStore
from snapshot.util import pausepoints


def _one_line_error(result: CliResult, code: int) -> str:
    assert result.code == code, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chroma-snapshot: error: "), result.stderr
    return lines[0]


def _manifest_file(repo: Path, sid: str) -> Path:
    return repo / layout.snapshot_key(sid)


def _edit_manifest(repo: Path, sid: str, change) -> None:
    p = _manifest_file(repo, sid)
    data = json.loads(p.read_text())
    change(data)
    p.write_text(json.dumps(data))


def _packs(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


def _check_ok(repo: Path) -> None:
    res = run_cli("--repo", repo, "check", "--read-data")
    assert res.code == 0, res.stdout + res.stderr


# -- 1, 2, 3: prune and create -----------------------------------------------------------------


def test_prune_and_forget_during_a_create_are_refused_and_the_create_commits(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    first = create_snapshot(repo_path, chroma_dir)
    grow(chroma_dir, "docs", 40, seed=5)
    seen: dict[str, CliResult] = {}

    def meanwhile() -> None:
        seen["prune"] = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s")
        seen["forget"] = run_cli("--repo", repo_path, "forget", first, "--grace", "0s")

    with pausepoints.on("create.before-commit", meanwhile):
        res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    for name in ("prune", "forget"):
        line = _one_line_error(seen[name], 9)
        assert "create (shared)" in line and str(os.getpid()) in line, line
    ids = [s["id"] for s in run_cli("--repo", repo_path, "list", "--json").json()]
    assert ids == [first, res.json()["id"]]
    _check_ok(repo_path)
    # and once the create is done, the prune goes ahead and the kept snapshot restores
    assert run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s").code == 0
    _check_ok(repo_path)
    out = run_cli("--repo", repo_path, "restore", "latest", tmp_path / "out", "--skip-chroma-check")
    assert out.code == 0, out.stderr


def test_a_create_whose_lock_was_removed_commits_nothing(
    chroma_dir: Path, repo_path: Path
) -> None:
    first = create_snapshot(repo_path, chroma_dir)
    grow(chroma_dir, "docs", 40, seed=6)
    pruned: list[CliResult] = []

    def operator_forces_a_prune() -> None:
        assert run_cli("--repo", repo_path, "unlock", "--remove-all").code == 0
        pruned.append(run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--grace", "0s"))

    with pausepoints.on("create.before-commit", operator_forces_a_prune):
        res = run_cli("--repo", repo_path, "create", chroma_dir)
    assert pruned[0].code == 0, pruned[0].stderr
    assert "lost the repository lock" in _one_line_error(res, 9)
    assert [s["id"] for s in run_cli("--repo", repo_path, "list", "--json").json()] == [first]
    _check_ok(repo_path)


def test_a_create_whose_objects_vanished_commits_nothing(chroma_dir: Path, repo_path: Path) -> None:
    create_snapshot(repo_path, chroma_dir)
    grow(chroma_dir, "docs", 40, seed=7)
    before = set(_packs(repo_path))

    def rogue_delete() -> None:
        for p in set(_packs(repo_path)) - before:
            p.unlink()

    with pausepoints.on("create.before-commit", rogue_delete):
        res = run_cli("--repo", repo_path, "create", chroma_dir)
    assert "vanished" in _one_line_error(res, 1)
    assert len(run_cli("--repo", repo_path, "list", "--json").json()) == 1
    _check_ok(repo_path)


def test_a_retried_create_refreshes_the_leftover_packs_it_reuses(chroma_dir: Path, repo_path: Path) -> None:
    def crash() -> None:
        raise RuntimeError("killed before the commit")

    with pausepoints.on("create.before-commit", crash), pytest.raises(RuntimeError):
        run_cli("--repo", repo_path, "create", chroma_dir)
    leftovers = _packs(repo_path)
    assert leftovers and not list((repo_path / "snapshots").glob("*.json"))
    old = time.time() - 7200
    for p in leftovers:
        os.utime(p, (old, old))
    create_snapshot(repo_path, chroma_dir)  # the same bytes: the same pack ids
    assert set(_packs(repo_path)) == set(leftovers)
    assert all(p.stat().st_mtime > time.time() - 600 for p in leftovers)  # fresh: graced again
    assert run_cli("--repo", repo_path, "prune", "--keep-last", "1").code == 0
    _check_ok(repo_path)


# -- 5: retention per source -------------------------------------------------------------------


def test_prune_keeps_the_newest_of_every_source_by_default(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other" / "vector_db"
    shutil.copytree(chroma_dir, other)
    a1 = create_snapshot(repo_path, chroma_dir)
    b1 = create_snapshot(repo_path, other)
    a2 = create_snapshot(repo_path, chroma_dir)
    res = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--dry-run", "--json")
    assert res.code == 0, res.stderr
    out = res.json()
    assert {d["id"] for d in out["kept"]} == {a2, b1} and out["removed"] == [a1]
    groups = {d["group"] for d in out["kept"]}
    assert any(str(other) in g for g in groups) and any(str(chroma_dir) in g for g in groups)
    text = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--dry-run").stdout
    assert str(other) in text and "GROUP" in text
    flat = run_cli("--repo", repo_path, "prune", "--keep-last", "1", "--group-by", "none", "--dry-run",
                   "--json").json()
    assert [d["id"] for d in flat["kept"]] == [a2] and sorted(flat["removed"]) == sorted([a1, b1])
    assert run_cli("--repo", repo_path, "prune", "--keep-last", "1").code == 0
    assert {s["id"] for s in run_cli("--repo", repo_path, "list", "--json").json()} == {a2, b1}
    _check_ok(repo_path)


# -- 6, 7: check and config validation ---------------------------------------------------------


def test_check_read_data_verifies_file_hashes_and_chunk_order(format1_repo: Format1Repo) -> None:
    repo_path = format1_repo.path
    sid = format1_repo.ids[-1]  # format 1: chunk order and file hash in the manifest itself
    m = json.loads(_manifest_file(repo_path, sid).read_text())
    db = next(i for i, f in enumerate(m["files"]) if f["path"] == "chroma.sqlite3")
    assert len(m["files"][db]["chunks"]) >= 3

    def swap_chunks(d: dict) -> None:
        chunks = d["files"][db]["chunks"]
        chunks[0], chunks[1] = chunks[1], chunks[0]

    def alter_hash(d: dict) -> None:
        h = d["files"][db]["hash"]
        d["files"][db]["hash"] = ("0" if h[0] != "0" else "1") + h[1:]

    original = _manifest_file(repo_path, sid).read_text()
    for damage in (swap_chunks, alter_hash):
        _manifest_file(repo_path, sid).write_text(original)
        _edit_manifest(repo_path, sid, damage)
        assert run_cli("--repo", repo_path, "check").code == 0  # structure alone cannot tell
        res = run_cli("--repo", repo_path, "check", "--read-data", "--json")
        assert res.code == 4, damage.__name__
        problems = res.json()["problems"]
        assert [(p["kind"], p["path"]) for p in problems] == [("file-hash", "chroma.sqlite3")]


def test_config_fields_are_validated_before_use(chroma_dir: Path, repo_path: Path, tmp_path: Path) -> None:
    create_snapshot(repo_path, chroma_dir)
    config = repo_path / "config.json"
    good = json.loads(config.read_text())
    elsewhere = tmp_path / "written-here"
    for bad in ({"id": str(elsewhere)}, {"id": "../../x" + "0" * 30}, {"chunk_size": 2**70},
                {"chunk_size": 12345}, {"codec": "lz4"}, {"level": 10**30}, {"max_chain": -1}):
        config.write_text(json.dumps({**good, **bad}))
        for args in (("create", chroma_dir), ("list",), ("restore", "latest", tmp_path / "t")):
            _one_line_error(run_cli("--repo", repo_path, *args), 4)
    assert not elsewhere.exists() and not (tmp_path / "t").exists()


# -- 9, 11, 12: hostile manifests and frames ----------------------------------------------------


def _peak_rss_of(code: str) -> tuple[str, int]:
    script = ("import resource, sys\n" + code +
              "\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    return lines[0], int(lines[-1]) // 1024


def test_frames_lying_about_their_size_are_refused_in_bounded_memory() -> None:
    baseline = _peak_rss_of("import snapshot.format.codecs\nprint('ok')")[1]
    lying = """
import zstandard
from snapshot.format.codecs import decompress
from snapshot.errors import IntegrityError
# a small frame whose header claims 512 MiB; the manifest says 1 MiB
frame = zstandard.ZstdCompressor().compress(bytes(512 << 20))
# one with no size in its header that decodes to 512 MiB
streamed = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(512 << 20))
out = []
for f in (frame, streamed):
    try:
        decompress(f, "zstd", 1 << 20)
    except IntegrityError as exc:
        out.append(type(exc).__name__)
print(",".join(out))
"""
    result, peak = _peak_rss_of(lying)
    assert result == "IntegrityError,IntegrityError"
    assert peak < baseline + 1100, (peak, baseline)  # the two 512 MiB inputs, never their output
    tiny = zstandard.ZstdCompressor().compress(b"")  # 100 GiB claimed by a hand-made header
    with pytest.raises(IntegrityError):
        decompress(tiny[:5] + b"\xff" * 8 + tiny[13:], "zstd", 1 << 20)


@pytest.mark.parametrize("field,value", [("offset", 10**30), ("length", 10**30), ("size", 2**70)])
def test_huge_numbers_in_a_manifest_are_integrity_errors(
    chroma_dir: Path, format1_repo: Format1Repo, tmp_path: Path, field: str, value: int
) -> None:
    repo_path = format1_repo.path
    v1 = format1_repo.ids[0]  # chunk lists inline
    sid = create_snapshot(repo_path, chroma_dir)  # a reference to each file's chunk table
    _edit_manifest(repo_path, v1, lambda d: d["files"][0]["chunks"][0]["frames"][0].update({field: value}))
    _edit_manifest(repo_path, sid, lambda d: d["files"][0]["table"].update({field: value}))
    for snap in (v1, sid):
        for args in (("restore", snap, tmp_path / "t"), ("restore", snap, tmp_path / "t", "--dry-run"),
                     ("diff", snap, snap), ("show", snap)):
            _one_line_error(run_cli("--repo", repo_path, *args), 4)
        _edit_manifest(repo_path, snap, lambda d: d.update(chunk_size=2**70))
        _one_line_error(run_cli("--repo", repo_path, "restore", snap, tmp_path / "t"), 4)
    assert not (tmp_path / "t").exists()


def test_deeply_nested_json_is_refused_by_every_command(chroma_dir: Path, repo_path: Path, tmp_path: Path):
    sid = create_snapshot(repo_path, chroma_dir)
    nested = "[" * 200_000 + "]" * 200_000
    _manifest_file(repo_path, sid).write_text('{"format_version": 1, "tags": ' + nested + "}")
    for args in (("show", sid), ("restore", sid, tmp_path / "t"), ("diff", sid, sid)):
        _one_line_error(run_cli("--repo", repo_path, *args), 4)
    listed = run_cli("--repo", repo_path, "list", "--json")
    assert listed.code == 0 and listed.json()[0]["error"] and "nested" in listed.json()[0]["error"]
    check = run_cli("--repo", repo_path, "check", "--json")
    assert check.code == 4 and check.json()["problems"][0]["kind"] == "manifest"
    (repo_path / "config.json").write_text('{"id": ' + nested + "}")
    _one_line_error(run_cli("--repo", repo_path, "list"), 4)


# -- 10: text that is not UTF-8 ------------------------------------------------------------------


def test_undecodable_names_are_refused_before_anything_is_uploaded(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    bad = os.fsdecode(b"caf\xe9")  # Latin-1 bytes on the command line arrive as a lone surrogate
    _one_line_error(run_cli("--repo", repo_path, "create", chroma_dir, "-m", bad), 2)
    _one_line_error(run_cli("--repo", repo_path, "create", chroma_dir, "--tag", bad), 2)
    assert not repo_path.exists()
    odd = tmp_path / bad
    odd.write_text("x")
    _one_line_error(run_cli("--repo", repo_path, "create", chroma_dir, "--include", odd), 6)
    seg = next(p for p in chroma_dir.iterdir() if p.is_dir())
    stray = seg / bad
    stray.write_text("x")
    _one_line_error(run_cli("--repo", repo_path, "create", chroma_dir), 6)
    assert _packs(repo_path) == []  # refused before any upload
    stray.unlink()
    moved = tmp_path / f"db-{bad}"
    shutil.copytree(chroma_dir, moved)
    _one_line_error(run_cli("--repo", repo_path, "create", moved), 2)
    sid = create_snapshot(repo_path, chroma_dir)
    target = tmp_path / f"restored-{bad}"  # a target path is only bytes to the OS: fine
    res = run_cli("--repo", repo_path, "restore", sid, target, "--skip-chroma-check")
    assert res.code == 0, res.stderr
    assert tree_digest(target) == tree_digest(chroma_dir)


# -- 14: not a regular file ----------------------------------------------------------------------


def test_a_fifo_in_place_of_a_pack_fails_fast(chroma_dir: Path, repo_path: Path, tmp_path: Path) -> None:
    sid = create_snapshot(repo_path, chroma_dir)
    for pack in _packs(repo_path):
        pack.unlink()
        os.mkfifo(pack)
    env = dict(os.environ)
    for args in (["restore", sid, str(tmp_path / "t"), "--skip-chroma-check"],
                 ["diff", sid, sid, "--records"], ["check", "--read-data"]):
        proc = subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(repo_path), *args],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode in (4, 5), (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        said = proc.stdout + proc.stderr
        assert "not a regular file" in said or "0 bytes, shorter than a frame" in said, said
    assert not (tmp_path / "t").exists()


# -- 15, 18: signals -------------------------------------------------------------------------------


def _cache_leftovers(cache: Path) -> list[str]:
    return [p.name for p in cache.rglob(".*") if p.is_dir() and p.name.startswith((".staging-", ".old-"))]


def test_sigterm_exits_143_and_removes_temporary_files(chroma_dir: Path, repo_path: Path) -> None:
    cache = Path(os.environ["CHROMA_SNAPSHOT_CACHE"])
    with pausepoints.on("create.captured", lambda: os.kill(os.getpid(), signal.SIGTERM)):
        res = run_cli("--repo", repo_path, "create", chroma_dir)
    assert "terminated" in _one_line_error(res, 143)
    assert _cache_leftovers(cache) == [] and not list((repo_path / "snapshots").glob("*.json"))
    assert not list((repo_path / "locks").glob("*.json"))
    create_snapshot(repo_path, chroma_dir)


def test_sigint_after_the_commit_reports_the_saved_snapshot(chroma_dir: Path, repo_path: Path) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    with pausepoints.on("create.after-commit", interrupt):
        res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    sid = res.json()["id"]
    assert "saved" in res.stderr and sid in res.stderr
    assert [s["id"] for s in run_cli("--repo", repo_path, "list", "--json").json()] == [sid]


#: The CLI in a child process: at pause point argv[1] it says "paused" and waits for a line.
_PAUSING_CLI = """
import sys
from snapshot.util import pausepoints
from snapshot.cli import main

def pause():
    print("paused", flush=True)
    sys.stdin.readline()

with pausepoints.on(sys.argv[1], pause):
    main(sys.argv[2:])
"""


def _sigterm_at(point: str, *args: object) -> CliResult:
    """Run the CLI in a child, send it a real SIGTERM while it waits at ``point``, let it go on."""
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_CLI, point, *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    said = []
    for line in proc.stdout:
        if line == "paused\n":
            break
        said.append(line)
    else:
        proc.wait(timeout=60)
        pytest.fail(f"never reached {point}: exit {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate("\n", timeout=120)  # the signal is handled while it waits
    return CliResult(proc.returncode, "".join(said) + out, err)


def test_sigterm_once_a_restore_stands_is_not_a_failure(
    chroma_dir: Path, repo_path: Path, tmp_path: Path
) -> None:
    first = create_snapshot(repo_path, chroma_dir)
    grow(chroma_dir, "docs", 40, seed=8)
    second = create_snapshot(repo_path, chroma_dir)
    digests = {}
    for sid in (first, second):
        assert run_cli("--repo", repo_path, "restore", sid, tmp_path / sid, "--skip-chroma-check").code == 0
        digests[sid] = tree_digest(tmp_path / sid)
    target = tmp_path / "db"
    assert run_cli("--repo", repo_path, "restore", first, target, "--skip-chroma-check").code == 0

    # Before the swap: the restore fails, says nothing of success, and the target is as it was.
    res = _sigterm_at("restore.verified", "--repo", repo_path, "restore", second, target, "--force",
                      "--skip-chroma-check")
    assert "terminated" in _one_line_error(res, 143) and res.stdout == ""
    assert tree_digest(target) == digests[first]
    # Once the swap stands (journal gone; swap returned; result printed): success, exit 0.
    holds = first
    for point in ("swap.journal-removed", "restore.swapped", "restore.reported"):
        sid = second if holds == first else first
        res = _sigterm_at(point, "--repo", repo_path, "restore", sid, target, "--force", "--skip-chroma-check")
        assert (res.code, res.stderr) == (0, ""), point
        assert res.stdout.startswith(f"restored {sid} into {target}"), (point, res.stdout)
        assert tree_digest(target) == digests[sid], point
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".db.")] == [], point
        holds = sid


# -- 17: a lost response to the manifest PUT ---------------------------------------------------------


def test_a_retried_commit_that_finds_its_own_manifest_is_success(
    chroma_dir: Path, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = LocalStore.put

    def put_then_lose_the_response(self: LocalStore, key: str, data: bytes, *, kind: ObjectKind,
                                   create_only: bool = False) -> None:
        real_put(self, key, data, kind=kind, create_only=create_only)
        if key.startswith("snapshots/"):  # the retry of a PUT whose answer was lost gets 412
            raise AlreadyExistsError(f"{key} already exists")

    monkeypatch.setattr(LocalStore, "put", put_then_lose_the_response)
    res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    assert res.code == 0, res.stderr
    monkeypatch.undo()
    assert [s["id"] for s in run_cli("--repo", repo_path, "list", "--json").json()] == [res.json()["id"]]


# -- 19: a full disk -------------------------------------------------------------------------------------


def test_a_full_disk_names_the_filesystem(
    chroma_dir: Path, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapshot.chroma.capture

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(snapshot.chroma.capture.shutil, "copyfile", no_space)
    line = _one_line_error(run_cli("--repo", repo_path, "create", chroma_dir, "--tmp-dir", staging), 15)
    assert "no space left" in line and "filesystem at /" in line and str(chroma_dir) not in line
    assert list(staging.iterdir()) == []


def test_a_full_disk_during_a_restore_names_the_file_and_the_filesystem(
    chroma_dir: Path, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapshot.restore.materialise

    sid = create_snapshot(repo_path, chroma_dir)
    target = tmp_path / "db"
    assert run_cli("--repo", repo_path, "restore", sid, target, "--skip-chroma-check").code == 0
    before = tree_digest(target)

    def no_space(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as os.write raises it: no file name

    monkeypatch.setattr(snapshot.restore.materialise, "_write_all", no_space)
    for where in (target, tmp_path / "fresh"):
        res = run_cli("--repo", repo_path, "restore", sid, where, "--force", "--skip-chroma-check")
        line = _one_line_error(res, 15)
        assert f"no space left on the filesystem at {mount_point(tmp_path)} (writing {tmp_path}/." in line
        assert "?" not in line
    assert tree_digest(target) == before and not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing beside it


# -- 20: list with a broken manifest ------------------------------------------------------------------


def test_list_shows_the_readable_snapshots_and_marks_a_broken_one(chroma_dir: Path, repo_path: Path):
    s1 = create_snapshot(repo_path, chroma_dir)
    s2 = create_snapshot(repo_path, chroma_dir)
    _manifest_file(repo_path, s1).write_text("{ not json")
    res = run_cli("--repo", repo_path, "list", "--json")
    assert res.code == 0, res.stderr
    rows = res.json()
    assert [r["id"] for r in rows] == [s1, s2] and rows[0]["error"] and rows[1]["error"] is None
    text = run_cli("--repo", repo_path, "list").stdout
    assert "UNREADABLE" in text and "forget" in text
    assert run_cli("--repo", repo_path, "forget", s1).code == 0
