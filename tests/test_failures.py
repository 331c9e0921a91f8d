"""Every failure path: a clear one-line error, its exit code, and nothing lost or half-written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from chroma_helpers import delete_collection, stand_in_persist_dir, tree_digest
from conftest import create_snapshot

from snapshot.chroma.schema import chromadb_version
from snapshot.chroma.trial_open import cannot_open


def _snap(cli, repo: Path, src: Path) -> str:
    return create_snapshot(repo, src)


def _packs(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


def _manifest_path(repo: Path, sid: str) -> Path:
    return repo / "snapshots" / f"{sid}.json"


def _rewrite(repo: Path, sid: str, change) -> None:
    p = _manifest_path(repo, sid)
    data = json.loads(p.read_text())
    change(data)
    p.write_text(json.dumps(data))


def _one_line_error(result, code: int) -> None:
    assert result.code == code, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chroma-snapshot: error: "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def existing_target(tmp_path: Path) -> Path:
    return stand_in_persist_dir(tmp_path / "app" / "vector_db", "0badc0de-0000-4000-8000-00000000000a")


def _leftovers(target: Path) -> list[str]:
    return [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_flipped_byte_in_any_pack_fails_before_chroma(cli, chroma_dir, repo_path, existing_target, where):
    _snap(cli, repo_path, chroma_dir)
    before = tree_digest(existing_target)
    for pack in _packs(repo_path):
        data = bytearray(pack.read_bytes())
        pos = int(len(data) * where)
        data[pos] ^= 0xFF
        pack.write_bytes(bytes(data))
        res = cli("--repo", repo_path, "restore", "latest", existing_target, "--force")
        _one_line_error(res, 4)
        assert "chroma check" not in res.stderr.lower()
        assert any(name in res.stderr for name in ("chroma.sqlite3", ".bin", ".pickle")), res.stderr
        assert tree_digest(existing_target) == before
        assert _leftovers(existing_target) == []
        data[pos] ^= 0xFF
        pack.write_bytes(bytes(data))


def test_flipped_byte_into_new_target_leaves_nothing(cli, chroma_dir, repo_path, tmp_path):
    _snap(cli, repo_path, chroma_dir)
    pack = _packs(repo_path)[0]
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x01
    pack.write_bytes(bytes(data))
    target = tmp_path / "fresh"
    res = cli("--repo", repo_path, "restore", "latest", target)
    _one_line_error(res, 4)
    assert not target.exists() and _leftovers(target) == []


def test_missing_object(cli, chroma_dir, repo_path, existing_target):
    _snap(cli, repo_path, chroma_dir)
    before = tree_digest(existing_target)
    for pack in _packs(repo_path):
        pack.unlink()
    res = cli("--repo", repo_path, "restore", "latest", existing_target, "--force")
    _one_line_error(res, 3)
    assert "chroma.sqlite3" in res.stderr and "missing" in res.stderr
    assert tree_digest(existing_target) == before


def test_truncated_object(cli, chroma_dir, repo_path, existing_target):
    _snap(cli, repo_path, chroma_dir)
    before = tree_digest(existing_target)
    pack = _packs(repo_path)[0]
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    res = cli("--repo", repo_path, "restore", "latest", existing_target, "--force")
    _one_line_error(res, 4)
    assert tree_digest(existing_target) == before


def test_chroma_check_failure_leaves_target(cli, chroma_dir, repo_path, existing_target):
    sid = _snap(cli, repo_path, chroma_dir)
    _rewrite(repo_path, sid, lambda d: d["collections"][0].update(records=12345))
    before = tree_digest(existing_target)
    res = cli("--repo", repo_path, "restore", sid, existing_target, "--force")
    _one_line_error(res, 4)
    assert "12345" in res.stderr
    assert tree_digest(existing_target) == before and _leftovers(existing_target) == []


@pytest.mark.parametrize("bad", ["../x", "../../etc/evil", "/tmp/abs", "a/../../x", "./x", "a//b", "C:/x"])
def test_unsafe_manifest_path_refused(cli, chroma_dir, repo_path, tmp_path, bad):
    sid = _snap(cli, repo_path, chroma_dir)
    _rewrite(repo_path, sid, lambda d: d["files"][0].update(path=bad))
    target = tmp_path / "deep" / "target"
    outside_before = tree_digest(tmp_path)
    res = cli("--repo", repo_path, "restore", sid, target)
    _one_line_error(res, 4)
    assert "unsafe path" in res.stderr
    assert not target.exists()
    assert tree_digest(tmp_path) == outside_before


def test_symlinks_in_old_target_are_not_followed(cli, chroma_dir, repo_path, tmp_path):
    _snap(cli, repo_path, chroma_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.sqlite3"
    secret.write_bytes(b"do not touch")
    target = tmp_path / "target"
    target.mkdir()
    (target / "chroma.sqlite3").symlink_to(secret)
    # a symlinked chroma.sqlite3 does not make a Chroma persist dir: refused, nothing touched
    _one_line_error(cli("--repo", repo_path, "restore", "latest", target, "--force"), 7)
    assert secret.read_bytes() == b"do not touch" and (target / "chroma.sqlite3").is_symlink()

    (target / "chroma.sqlite3").unlink()
    (target / "chroma.sqlite3").write_bytes(b"old")
    m = cli("--repo", repo_path, "show", "latest", "--json").json()
    seg_file = next(f["path"] for f in m["files"] if f["role"] == "segment")
    (target / seg_file).parent.mkdir()
    (target / seg_file).symlink_to(secret)  # re-hydration must not read or write through it
    res = cli("--repo", repo_path, "restore", "latest", target, "--force", "--skip-chroma-check")
    assert res.code == 0, res.stderr
    assert secret.read_bytes() == b"do not touch"
    assert not (target / seg_file).is_symlink() and not (target / "chroma.sqlite3").is_symlink()


def test_force_replaces_only_a_chroma_persist_dir(cli, chroma_dir, repo_path, tmp_path, existing_target):
    _snap(cli, repo_path, chroma_dir)
    (existing_target / "keep.txt").write_text("not Chroma's")
    before = tree_digest(existing_target)
    res = cli("--repo", repo_path, "restore", "latest", existing_target, "--force")
    _one_line_error(res, 7)
    assert "keep.txt" in res.stderr and tree_digest(existing_target) == before
    # the repository inside the target (issue: `restore latest backups --force` wiped it)
    backups = tmp_path / "backups"
    inner = backups / "repo"
    _snap(cli, inner, chroma_dir)
    repo_before = tree_digest(backups)
    _one_line_error(cli("--repo", inner, "restore", "latest", backups, "--force"), 7)
    _one_line_error(cli("--repo", inner, "restore", "latest", inner, "--force"), 7)
    assert tree_digest(backups) == repo_before
    _one_line_error(cli("--repo", repo_path, "restore", "latest", "", "--force"), 2)
    _one_line_error(cli("--repo", repo_path, "restore", "latest", "/", "--force"), 7)
    _one_line_error(cli("--repo", repo_path, "restore", "latest", Path.home(), "--force"), 7)
    assert _leftovers(existing_target) == []


def test_force_refuses_what_is_not_chromas_inside_segment_folders(cli, chroma_dir, repo_path, tmp_path):
    first = _snap(cli, repo_path, chroma_dir)
    target = tmp_path / "db"
    assert cli("--repo", repo_path, "restore", first, target, "--skip-chroma-check").code == 0
    segment = min(p for p in target.iterdir() if p.is_dir())
    stray = target / "0badc0de-0000-4000-8000-00000000000b"
    for make, named in [
        (lambda: (segment / "notes.txt").write_text("mine"), f"{segment.name}/notes.txt"),
        (lambda: (stray.mkdir(), (stray / "notes.txt").write_text("?")), stray.name),
    ]:
        make()
        before = tree_digest(target)
        res = cli("--repo", repo_path, "restore", first, target, "--force", "--skip-chroma-check")
        _one_line_error(res, 7)
        assert f"'{named}'" in res.stderr, res.stderr
        assert tree_digest(target) == before and _leftovers(target) == []
        shutil.rmtree(target / named) if (target / named).is_dir() else (target / named).unlink()
    # A folder of Chroma's files alone that nobody names (a deleted collection's) is dropped, and
    # the restore says so.
    stray.mkdir()
    (stray / "header.bin").write_text("?")
    res = cli("--repo", repo_path, "restore", first, target, "--force", "--skip-chroma-check")
    assert res.code == 0 and f"drops segment folder {stray.name}" in res.stderr, res.stderr
    assert not stray.exists()
    # A segment folder the snapshot does not restore but the target's database names is Chroma's.
    folders = {p.name for p in target.iterdir() if p.is_dir()}
    delete_collection(chroma_dir, "notes")
    second = _snap(cli, repo_path, chroma_dir)
    res = cli("--repo", repo_path, "restore", second, target, "--force", "--skip-chroma-check")
    assert res.code == 0, res.stderr
    assert {p.name for p in target.iterdir() if p.is_dir()} < folders  # the notes collection's went


def test_symlinked_target_refused(cli, chroma_dir, repo_path, tmp_path):
    _snap(cli, repo_path, chroma_dir)
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    _one_line_error(cli("--repo", repo_path, "restore", "latest", link, "--force"), 7)


def test_unknown_format_version_and_bad_json(cli, chroma_dir, repo_path, tmp_path):
    sid = _snap(cli, repo_path, chroma_dir)
    _rewrite(repo_path, sid, lambda d: d.update(format_version=99))
    res = cli("--repo", repo_path, "restore", sid, tmp_path / "t")
    _one_line_error(res, 8)
    assert "format_version 99" in res.stderr
    _manifest_path(repo_path, sid).write_text("{not json")
    res = cli("--repo", repo_path, "show", sid)
    _one_line_error(res, 4)
    assert "not valid JSON" in res.stderr
    assert not (tmp_path / "t").exists()


def test_newer_repository_format_refused(cli, chroma_dir, repo_path):
    _snap(cli, repo_path, chroma_dir)
    cfg = repo_path / "config.json"
    data = json.loads(cfg.read_text())
    data["format_version"] = 2
    cfg.write_text(json.dumps(data))
    _one_line_error(cli("--repo", repo_path, "list"), 8)


def test_non_empty_target_needs_force(cli, chroma_dir, repo_path, existing_target):
    _snap(cli, repo_path, chroma_dir)
    before = tree_digest(existing_target)
    res = cli("--repo", repo_path, "restore", "latest", existing_target)
    _one_line_error(res, 7)
    assert "--force" in res.stderr
    assert tree_digest(existing_target) == before


def test_target_is_a_file(cli, chroma_dir, repo_path, tmp_path):
    _snap(cli, repo_path, chroma_dir)
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_error(cli("--repo", repo_path, "restore", "latest", f, "--force"), 7)
    assert f.read_text() == "x"


def test_bad_sources(cli, repo_path, tmp_path):
    _one_line_error(cli("--repo", repo_path, "create", tmp_path / "nope"), 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("--repo", repo_path, "create", empty)
    _one_line_error(res, 6)
    assert "not a Chroma persist dir" in res.stderr
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / "chroma.sqlite3")
    con.execute("create table t(x)")
    con.commit()
    con.close()
    res = cli("--repo", repo_path, "create", other)
    _one_line_error(res, 6)
    assert "lacks Chroma's tables" in res.stderr
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "chroma.sqlite3").write_bytes(b"not sqlite at all" * 100)
    _one_line_error(cli("--repo", repo_path, "create", garbage), 6)
    # the failed creates were refused before the repository was initialised
    assert not repo_path.exists()


def test_ids_and_repositories(cli, chroma_dir, repo_path, tmp_path):
    _one_line_error(cli("--repo", tmp_path / "none", "list"), 3)
    _one_line_error(cli("list"), 2)  # no --repo, no env
    a = _snap(cli, repo_path, chroma_dir)
    b = _snap(cli, repo_path, chroma_dir)
    common = "".join(x for x, y in zip(a, b, strict=True) if x == y)
    prefix = a[: len(common)] if a[: len(common)] == b[: len(common)] else a[:8]
    res = cli("--repo", repo_path, "show", prefix[:8])
    _one_line_error(res, 2)
    assert "matches 2 snapshots" in res.stderr
    _one_line_error(cli("--repo", repo_path, "show", "19990101T"), 3)
    not_repo = tmp_path / "not_repo"
    not_repo.mkdir()
    (not_repo / "stuff.txt").write_text("x")
    _one_line_error(cli("--repo", not_repo, "create", chroma_dir), 2)
    assert sorted(p.name for p in not_repo.iterdir()) == ["stuff.txt"]


def test_json_errors_are_json(cli, tmp_path):
    res = cli("--repo", tmp_path / "none", "list", "--json")
    assert res.code == 3
    assert json.loads(res.stdout) == {
        "error": {"code": 3, "kind": "not-found", "message": res.stderr.split("error: ", 1)[1].strip()}
    }


def test_compatibility_is_judged_by_schema_not_package_version(cli, chroma_dir, repo_path, tmp_path):
    sid = _snap(cli, repo_path, chroma_dir)
    # a snapshot taken where a much newer chromadb was installed, of a DB whose schema the
    # installed chromadb knows: no warning
    _rewrite(repo_path, sid, lambda d: d.update(tool_chromadb_version="99.1.0"))
    res = cli("--repo", repo_path, "restore", sid, tmp_path / "t")
    assert res.code == 0 and "warning" not in res.stderr, res.stderr
    # a DB that a newer Chroma migrated, snapshotted where the same chromadb as here was
    # installed: the warning speaks of the DB's schema, not of the snapshotting side's package
    with sqlite3.connect(chroma_dir / "chroma.sqlite3") as conn:
        conn.execute("INSERT INTO migrations (dir, version, filename, sql, hash) "
                     "VALUES ('metadb', 99, '00099-from-the-future.sqlite.sql', '', '')")
    sid = _snap(cli, repo_path, chroma_dir)
    res = cli("--repo", repo_path, "restore", sid, tmp_path / "u")
    assert res.code == 0 and "warning" in res.stderr and "00099-from-the-future" in res.stderr
    installed = chromadb_version()
    assert (f"its database has applied migration metadb 00099-from-the-future.sqlite.sql that the "
            f"installed chromadb {installed} does not know: a newer chromadb wrote it") in res.stderr
    assert "made with" not in res.stderr and "upgrade chromadb" in res.stderr
    res = cli("--repo", repo_path, "restore", sid, tmp_path / "v", "--strict")
    _one_line_error(res, 4)
    assert not (tmp_path / "v").exists()


def _as_a_newer_chromadb_writes(db: Path) -> None:
    """A migration the installed chromadb lacks, and a collection configuration it cannot
    parse (chromadb 0.5 reading what 1.x wrote fails with a bare '_type')."""
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO migrations (dir, version, filename, sql, hash) "
                     "VALUES ('sysdb', 99, '00099-collection-config-v9.sqlite.sql', '', '')")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(collections)")}
        future = json.dumps({"_type": "CollectionConfigurationV9", "vector_index": 7})
        for column in {"config_json_str", "schema_str"} & columns:
            conn.execute(f"UPDATE collections SET {column} = ?", (future,))


def test_chroma_check_of_a_db_from_a_newer_chromadb_says_what_to_install(cli, chroma_dir, repo_path,
                                                                         tmp_path):
    _as_a_newer_chromadb_writes(chroma_dir / "chroma.sqlite3")
    sid = _snap(cli, repo_path, chroma_dir)
    res = cli("--repo", repo_path, "restore", sid, tmp_path / "t", "--chroma-check")
    assert res.code == 4 and "Traceback" not in res.stderr, res.stderr
    error = res.stderr.strip().splitlines()[-1]
    installed = chromadb_version()
    assert error.startswith(
        f"chroma-snapshot: error: Chroma check failed: the installed chromadb {installed} cannot open the "
        "restored database: a newer chromadb wrote it (the DB has applied sysdb "
        f"00099-collection-config-v9.sqlite.sql, which chromadb {installed} does not know)"), error
    assert "install a chromadb at least as new as the one that wrote it" in error
    assert "(chromadb said: collection " in error  # chromadb's own words come last
    assert not (tmp_path / "t").exists() and not _leftovers(tmp_path / "t")


def test_a_restore_killed_after_its_chroma_check_leaves_nothing_behind_the_next(cli, chroma_dir, repo_path,
                                                                              tmp_path):
    sid = _snap(cli, repo_path, chroma_dir)
    target = tmp_path / "t"
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, CHROMA_SNAPSHOT_KILL_AT="restore.verified",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    killed = subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(repo_path), "restore", sid,
                             str(target), "--chroma-check"], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(_leftovers(target)) >= 1  # the built dir (and the copies the repair uses)
    assert cli("--repo", repo_path, "restore", sid, target).code == 0
    assert _leftovers(target) == []  # both swept at once: their owner is gone
    assert sorted(tree_digest(target)) == sorted(tree_digest(chroma_dir))


def test_chroma_check_failure_on_a_known_schema_names_the_schema():
    known = {"sysdb": (10, "00010-collection-schema.sqlite.sql")}
    text = cannot_open("collection 'docs' does not open: '_type'", known)
    assert "exactly the snapshot's" in text and "sysdb 00010-collection-schema.sqlite.sql" in text
    assert "newer chromadb wrote it" not in text
    assert text.endswith("(chromadb said: collection 'docs' does not open: '_type')")


def test_refused_create_leaves_no_new_repository(cli, chroma_dir, tmp_path):
    repo = tmp_path / "new-repo"
    _one_line_error(cli("--repo", repo, "create", tmp_path / "typo"), 3)
    _one_line_error(cli("--repo", repo, "create", chroma_dir, "--level", "99"), 2)
    _one_line_error(cli("--repo", repo, "create", chroma_dir, "--tag", "a,b"), 2)
    assert not repo.exists()
    res = cli("--repo", repo, "create", chroma_dir, "--tmp-dir", tmp_path / "missing")
    assert res.code == 2 and "does not exist" in res.stderr and not repo.exists()


@pytest.mark.parametrize("args", [
    ("prune", "--keep-last", "-1"),
    ("create", "somewhere", "--tmp-dir", "/no/such/dir"),
    ("create",),
    ("no-such-command",),
    ("--password-file", ".", "list"),
])
def test_option_errors_click_finds_are_one_line_too(cli, repo_path, args):
    res = cli("--repo", repo_path, *args)
    _one_line_error(res, 2)
    assert "--help" in res.stderr
    assert not repo_path.exists()
