"""Client-side encryption end to end: round trips on a local folder and on S3 (moto's server),
nothing readable in any stored byte, passwords and keys, tampering of every kind of object
refused before the restore target is touched, kill -9 during an encrypted create, and
unencrypted repositories left exactly as they were."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import build_db, grow, tree_digest
from conftest import CliResult, run_cli

from snapshot import Repository, create_snapshot, restore_snapshot
from snapshot.errors import UsageError, WrongPasswordError
from snapshot.format import crypto, layout
from snapshot.repo.keys import KeySource
from snapshot.util import pausepoints

Cli = Callable[..., CliResult]
PASSWORD = "correct horse battery staple"
SPEC = {"zebracollection": 600, "yakcollection": 200}
#: Plaintext of the test DB that must appear in no stored byte of an encrypted repository.
NEEDLES = [b"zebracollection", b"yakcollection", b"lorem ipsum", b"SQLite format 3", b"chroma.sqlite3",
           b"data_level0.bin", b"header.bin", b"correct horse", PASSWORD.encode()]
ENV = ("CHROMA_SNAPSHOT_PASSWORD", "CHROMA_SNAPSHOT_PASSWORD_FILE", crypto.LOG_N_ENV, pausepoints.KILL_ENV)


@pytest.fixture(autouse=True)
def _cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """New keys in these tests derive with N = 2**10 (the default, 2**16, is tested apart)."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(crypto.LOG_N_ENV, "10")


def pw_file(where: Path, password: str = PASSWORD) -> Path:
    path = where / f"pw-{abs(hash(password))}"
    path.write_text(password + "\n")
    return path


def one_line_error(res: CliResult, code: int) -> str:
    assert res.code == code, (res.code, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chroma-snapshot: error: "), res.stderr
    return lines[0]


def stored_files(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def assert_nothing_readable(blobs: dict[str, bytes], extra: tuple[bytes, ...] = ()) -> None:
    needles = [*NEEDLES, *extra]
    if len(socket.gethostname()) >= 6:
        needles.append(socket.gethostname().encode())
    for name, data in blobs.items():
        for needle in needles:
            assert needle not in data, f"{needle!r} in {name}"
    assert any(k.startswith("keys/") for k in blobs) and "config.json" in blobs


def same_db(restored: Path, source: Path) -> None:
    got, want = stored_files(restored), stored_files(source)
    assert set(got) == set(want)
    for rel, data in want.items():
        if rel == "chroma.sqlite3":  # the online backup rewrites header counters (bytes < 100)
            assert len(got[rel]) == len(data) and got[rel][100:] == data[100:]
        else:
            assert got[rel] == data, rel


@dataclass(frozen=True)
class History:
    root: Path
    repo: Path
    ids: list[str]
    versions: list[Path]  # the source as each snapshot saw it
    password_file: Path
    creates: list[dict[str, Any]]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """An encrypted repository of three snapshots: full, a delta with bases from the local cache,
    a delta with bases read back from the repository (--no-cache)."""
    root = tmp_path_factory.mktemp("enc")
    live, repo, pw = root / "vector_db", root / "repo", pw_file(root)
    build_db(live, SPEC, seed=3)
    versions, ids, creates = [], [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHROMA_SNAPSHOT_CACHE", str(root / "cache"))
        mp.setenv(crypto.LOG_N_ENV, "10")
        for k, extra in enumerate(([], [], ["--no-cache"])):
            if k:
                grow(live, "zebracollection", 30, seed=k)
            res = run_cli("--repo", repo, "create", live, "--password-file", pw, "--json", "--tag", "t",
                          *(["--encrypt"] if k == 0 else []), *extra)
            assert res.code == 0, res.stderr
            creates.append(res.json())
            ids.append(res.json()["id"])
            versions.append(root / f"v{k}")
            shutil.copytree(live, versions[-1])
    yield History(root, repo, ids, versions, pw, creates)


@pytest.fixture
def repo(history: History, tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    shutil.copytree(history.repo, path)
    return path


# --- round trips -----------------------------------------------------------------------------


def test_encrypted_round_trip_local(history: History, repo: Path, cli: Cli, tmp_path: Path) -> None:
    pw = ("--password-file", history.password_file)
    first, second, third = history.creates
    assert second["chunks_delta"] >= 1 and second["bases_cached"] >= 1
    assert third["chunks_delta"] >= 1 and third["bases_read"] >= 1  # bases decrypted from the repo
    assert second["bytes_uploaded"] < first["bytes_uploaded"] / 3
    config = json.loads((repo / "config.json").read_bytes())
    assert config["format_version"] == 2
    assert config["encryption"] == {"algorithm": "AES-256-GCM", "kdf": "scrypt"}
    assert set(config) == {"format_version", "id", "encryption", "settings"}

    listed = cli("--repo", repo, "list", "--json", *pw).json()
    assert [s["id"] for s in listed] == history.ids
    assert listed[0]["collections"] == {"zebracollection": 600, "yakcollection": 200}
    shown = cli("--repo", repo, "show", history.ids[0], "--json", *pw).json()
    assert shown["id"] == history.ids[0] and shown["tags"] == ["t"]
    files = cli("--repo", repo, "show", "latest", "--files", "--json", *pw)
    assert files.code == 0 and any(len(c["frames"]) > 1 for line in files.stdout.splitlines()
                                   for c in json.loads(line)["chunks"])  # a delta chain

    for sid, version in zip(history.ids, history.versions, strict=True):
        target = tmp_path / "out" / sid
        res = cli("--repo", repo, "restore", sid, target, "--json", *pw)
        assert res.code == 0, res.stderr
        same_db(target, version)
    # re-hydration onto an older version, then the newest with --chroma-check
    target = tmp_path / "out" / history.ids[0]
    res = cli("--repo", repo, "restore", "latest", target, "--force", "--chroma-check", "--json", *pw)
    assert res.code == 0 and res.json()["bytes_reused"] > 0, res.stderr
    same_db(target, history.versions[-1])

    d = cli("--repo", repo, "diff", history.ids[0], "latest", "--records", "--json", *pw)
    assert d.code == 0, d.stderr
    assert d.json()["records"]["zebracollection"]["added_count"] == 60
    ok = cli("--repo", repo, "check", "--read-data", "--json", *pw)
    assert ok.code == 0 and ok.json()["ok"] and ok.json()["files_verified"] > 0, ok.stdout
    pruned = cli("--repo", repo, "prune", "--keep-last", "1", "--grace", "0s", "--json", *pw)
    assert pruned.code == 0 and len(pruned.json()["removed"]) == 2, pruned.stderr
    assert cli("--repo", repo, "check", "--read-data", *pw).code == 0
    res = cli("--repo", repo, "restore", "latest", tmp_path / "after-prune", *pw)
    assert res.code == 0, res.stderr
    same_db(tmp_path / "after-prune", history.versions[-1])
    assert_nothing_readable(stored_files(repo))


def test_frames_are_sealed_one_by_one(history: History, repo: Path) -> None:
    """Each frame is stored as nonce || ciphertext || tag (28 bytes more) and read by range."""
    r = Repository.open(repo, key_source=KeySource.of(PASSWORD))
    m = r.get("latest")
    f = m.files[0]
    chunk = r.chunks(m, f)[0]
    frame = chunk.frames[0]
    stored = (repo / layout.object_key(frame.object)).read_bytes()[frame.offset:frame.offset + frame.length]
    assert len(r.read_frame(frame)) == frame.length - crypto.OVERHEAD == len(stored) - 28
    sealed_root = (repo / layout.snapshot_key(m.id)).read_bytes()  # roots are sealed too (not by
    assert b'"files"' not in sealed_root and b'"collections"' not in sealed_root  # their first byte: random)


@pytest.mark.slow  # the same round trip on S3; test_encrypted_round_trip_local runs in the quick loop
def test_encrypted_round_trip_s3(
    cli: Cli, s3_client: Any, s3_repo_url: str, history: History, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHROMA_SNAPSHOT_PASSWORD", PASSWORD)  # the environment, this time
    live = tmp_path / "live"
    shutil.copytree(history.versions[0], live)
    first = cli("--repo", s3_repo_url, "create", live, "--encrypt", "--json")
    assert first.code == 0, first.stderr
    grow(live, "yakcollection", 25, seed=9)
    second = cli("--repo", s3_repo_url, "create", live, "--no-cache", "--json")
    assert second.code == 0 and second.json()["chunks_delta"] >= 1, second.stderr
    assert second.json()["bytes_uploaded"] < first.json()["bytes_uploaded"] / 3
    listed = cli("--repo", s3_repo_url, "list", "--json").json()
    assert [s["collections"]["yakcollection"] for s in listed] == [200, 225]
    assert cli("--repo", s3_repo_url, "show", "latest").code == 0
    d = cli("--repo", s3_repo_url, "diff", first.json()["id"], "latest", "--records", "--json").json()
    assert d["records"]["yakcollection"]["added_count"] == 25
    res = cli("--repo", s3_repo_url, "restore", "latest", tmp_path / "out", "--json")
    assert res.code == 0, res.stderr
    same_db(tmp_path / "out", live)
    assert cli("--repo", s3_repo_url, "check", "--read-data").code == 0
    pruned = cli("--repo", s3_repo_url, "prune", "--keep-last", "1", "--grace", "0s", "--json")
    assert pruned.code == 0 and pruned.json()["removed"] == [first.json()["id"]], pruned.stderr
    assert cli("--repo", s3_repo_url, "check", "--read-data").code == 0

    bucket, prefix = s3_repo_url[5:].split("/", 1)
    blobs = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            blobs[obj["Key"]] = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    assert_nothing_readable({k[len(prefix) + 1:]: v for k, v in blobs.items()})


def test_library_api(history: History, tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "lib", create=True, encrypt=True, key_source=KeySource.of("pw1"))
    result = create_snapshot(repo, history.versions[0])
    assert repo.encrypted and repo.key_id is not None
    with pytest.raises(UsageError):
        Repository.open(tmp_path / "lib")
    with pytest.raises(WrongPasswordError):
        Repository.open(tmp_path / "lib", key_source=KeySource.of("pw2"))
    again = Repository.open(tmp_path / "lib", key_source=KeySource.of("pw1"))
    restore_snapshot(again, result.id, tmp_path / "out")
    same_db(tmp_path / "out", history.versions[0])


def test_default_kdf_cost_is_real(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crypto.LOG_N_ENV)
    params = crypto.ScryptParams.new()
    assert (1 << params.log_n, params.r, params.p) == (32768, 8, 1) and len(params.salt) == 32


# --- passwords and keys ------------------------------------------------------------------------


def test_wrong_and_missing_password(history: History, repo: Path, cli: Cli, tmp_path: Path) -> None:
    before = stored_files(repo)
    target = tmp_path / "target"
    wrong = pw_file(tmp_path, "not the password")
    for args in (["list"], ["restore", "latest", target], ["create", history.versions[0]], ["check"]):
        line = one_line_error(cli("--repo", repo, *args, "--password-file", wrong), 16)
        assert "wrong password" in line and "not the password" not in line
    line = one_line_error(cli("--repo", repo, "list"), 2)
    assert "encrypted" in line and "--password-file" in line
    res = cli("--repo", repo, "list", "--json", "--password-file", wrong)
    assert res.code == 16 and json.loads(res.stdout)["error"]["kind"] == "wrong-password"
    assert stored_files(repo) == before and not target.exists()
    # --password-command, and the password file's precedence over the environment
    ok = cli("--repo", repo, "list", "--password-command", f"cat {history.password_file}")
    assert ok.code == 0, ok.stderr
    assert cli("--repo", repo, "list", "--password-command", "false").code == 2
    env = dict(os.environ, CHROMA_SNAPSHOT_PASSWORD="not the password")
    proc = subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(repo), "list", "--password-file",
                           str(history.password_file)], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(repo), "list"], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 16 and "not the password" not in proc.stderr + proc.stdout


def test_encrypt_flag_and_password_on_unencrypted(cli: Cli, chroma_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    assert cli("--repo", plain, "create", chroma_dir).code == 0
    before = stored_files(plain)
    pw = pw_file(tmp_path)
    line = one_line_error(cli("--repo", plain, "create", chroma_dir, "--encrypt", "--password-file", pw), 2)
    assert "not encrypted" in line
    # A password given for an unencrypted repository is refused (its config may have been replaced).
    assert "not encrypted" in one_line_error(cli("--repo", plain, "list", "--password-file", pw), 2)
    assert stored_files(plain) == before
    new = tmp_path / "new"
    assert "--encrypt" in one_line_error(cli("--repo", new, "create", chroma_dir, "--password-file", pw), 2)
    assert "password" in one_line_error(cli("--repo", new, "init", "--encrypt"), 2)  # no source, no TTY
    assert not new.exists()
    res = cli("--repo", new, "init", "--encrypt", "--password-file", pw, "--json")
    assert res.code == 0 and res.json()["encrypted"] is True, res.stderr
    assert sorted(stored_files(new)) == ["config.json", f"keys/{res.json()['key']}"]
    assert "already exists" in one_line_error(cli("--repo", new, "init", "--password-file", pw), 2)


def test_key_add_remove_passwd(repo: Path, cli: Cli, history: History, tmp_path: Path) -> None:
    one, two, three = history.password_file, pw_file(tmp_path, "second password"), pw_file(tmp_path, "third")
    keys = cli("--repo", repo, "key", "list", "--json", "--password-file", one).json()
    assert len(keys) == 1 and keys[0]["current"] and keys[0]["kdf"] == "scrypt N=2^10 r=8 p=1"
    first = keys[0]["id"]
    refused = cli("--repo", repo, "key", "remove", first[:8], "--password-file", one)
    assert "last key" in one_line_error(refused, 2)

    added = cli("--repo", repo, "key", "add", "--new-password-file", two, "--password-file", one, "--json")
    assert added.code == 0, added.stderr
    second = added.json()["added"]
    listed = cli("--repo", repo, "key", "list", "--password-file", two)
    assert listed.code == 0 and f"*  {second}" in listed.stdout and first in listed.stdout
    assert cli("--repo", repo, "list", "--password-file", two).code == 0
    # the key in use is not removed while no other key opens with its password
    line = one_line_error(cli("--repo", repo, "key", "remove", first, "--password-file", one), 2)
    assert "in use" in line or "this password opens" in line
    assert cli("--repo", repo, "key", "remove", first, "--password-file", two).code == 0
    one_line_error(cli("--repo", repo, "list", "--password-file", one), 16)

    changed = cli("--repo", repo, "key", "passwd", "--new-password-file", three, "--password-file", two,
                  "--json")
    assert changed.code == 0 and changed.json()["removed"] == second, changed.stderr
    one_line_error(cli("--repo", repo, "list", "--password-file", two), 16)
    assert cli("--repo", repo, "restore", "latest", tmp_path / "out", "--password-file", three).code == 0
    keys = cli("--repo", repo, "key", "list", "--json", "--password-file", three).json()
    assert [k["id"] for k in keys] == [changed.json()["added"]]
    assert cli("--repo", repo, "key", "add", "--password-file", three).code == 2  # no new password, no TTY


# --- tampering --------------------------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _files_of(repo: Path, pw: Path) -> list[dict[str, Any]]:
    res = run_cli("--repo", repo, "show", "latest", "--files", "--json", "--password-file", pw)
    assert res.code == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def _tamper(kind: str, repo: Path, pw: Path) -> str:
    """Damage the repository; what the error must name."""
    sid = json.loads(run_cli("--repo", repo, "list", "--json", "--password-file", pw).stdout)[-1]["id"]
    files = _files_of(repo, pw)
    frame = files[0]["chunks"][0]["frames"][-1]
    table = files[0]["table"]
    if kind == "frame":
        _flip(repo / layout.object_key(frame["object"]), frame["offset"] + frame["length"] // 2)
        return str(frame["object"])
    if kind == "table":
        _flip(repo / layout.object_key(table["object"]), table["offset"] + table["length"] - 3)
        return str(table["object"])
    if kind == "root":
        _flip(repo / layout.snapshot_key(sid), 40)
        return sid
    if kind == "rename":  # a valid id that sorts last: `latest` picks it
        renamed = "29991231T235959-0000abcd"
        os.rename(repo / layout.snapshot_key(sid), repo / layout.snapshot_key(renamed))
        return renamed
    if kind == "swap":
        a, b = repo / layout.object_key(frame["object"]), repo / layout.object_key(table["object"])
        assert a != b
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
        return str(table["object"])  # every chunk table is read before any frame
    if kind == "config":
        doc = json.loads((repo / "config.json").read_bytes())
        settings = bytearray(base64.b64decode(doc["settings"]))
        settings[-5] ^= 0x01
        doc["settings"] = base64.b64encode(bytes(settings)).decode()
        (repo / "config.json").write_text(json.dumps(doc))
        return "repository config"
    assert kind == "key"
    (key,) = (repo / "keys").iterdir()
    doc = json.loads(key.read_bytes())
    wrapped = bytearray(base64.b64decode(doc["key"]))
    wrapped[20] ^= 0x01
    doc["key"] = base64.b64encode(bytes(wrapped)).decode()
    key.write_text(json.dumps(doc))
    return key.name[:8]


@pytest.mark.parametrize("kind", ["frame", "table", "root", "rename", "swap", "config", "key"])
def test_tampering_is_refused_before_the_target_changes(
    kind: str, history: History, repo: Path, cli: Cli, tmp_path: Path
) -> None:
    pw = ("--password-file", history.password_file)
    target = tmp_path / "target"
    assert cli("--repo", repo, "restore", history.ids[0], target, *pw).code == 0
    before = tree_digest(target)
    named = _tamper(kind, repo, history.password_file)
    code = 16 if kind == "key" else 4

    line = one_line_error(cli("--repo", repo, "restore", "latest", target, "--force", *pw), code)
    assert named in line, line
    assert tree_digest(target) == before and os.listdir(tmp_path).count("target") == 1
    assert [n for n in os.listdir(tmp_path) if n.startswith(".target")] == []
    fresh = tmp_path / "fresh"
    one_line_error(cli("--repo", repo, "restore", "latest", fresh, *pw), code)
    assert not fresh.exists()
    checked = cli("--repo", repo, "check", "--read-data", "--json", *pw)
    assert checked.code == code, checked.stdout + checked.stderr
    if code == 4:
        assert named in checked.stdout


# --- kill -9 during an encrypted create ------------------------------------------------------


def _child(
    repo: Path, env: dict[str, str], *args: str | Path, kill_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(env)
    env.pop(pausepoints.KILL_ENV, None)
    if kill_at:
        env[pausepoints.KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(repo), *map(str, args)], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180)


@pytest.mark.parametrize("point", [  # kill -9 of a child process: one point in the quick loop, all in CI
    pytest.param("repository.key-written", marks=pytest.mark.slow),
    pytest.param("repository.config-written", marks=pytest.mark.slow),
    "create.pack-uploaded#1",
    pytest.param("create.before-commit", marks=pytest.mark.slow),
    pytest.param("create.after-commit", marks=pytest.mark.slow),
])
def test_kill_during_encrypted_create(point: str, history: History, tmp_path: Path) -> None:
    repo, src = tmp_path / "repo", tmp_path / "vector_db"
    shutil.copytree(history.versions[0], src)
    env = dict(os.environ, CHROMA_SNAPSHOT_PASSWORD_FILE=str(history.password_file),
               CHROMA_SNAPSHOT_CACHE=str(tmp_path / "cache"))
    killed = _child(repo, env, "create", src, "--encrypt", kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if point == "repository.key-written":  # a key file, no config: not a repository yet
        assert sorted(p.parent.name for p in repo.rglob("*") if p.is_file()) == ["keys"]
    else:
        checked = _child(repo, env, "check", "--read-data", "--json")
        assert checked.returncode == 0 and json.loads(checked.stdout)["ok"], checked.stdout + checked.stderr
    again = _child(repo, env, "create", src, "--encrypt", "--json")
    assert again.returncode == 0, again.stderr
    keys = json.loads(_child(repo, env, "key", "list", "--json").stdout)
    assert len(keys) == 1 and keys[0]["current"] and keys[0]["error"] is None  # the killed run's key swept
    assert "UNREADABLE" not in _child(repo, env, "key", "list").stdout
    checked = _child(repo, env, "check", "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    restored = _child(repo, env, "restore", "latest", tmp_path / "out")
    assert restored.returncode == 0, restored.stderr
    same_db(tmp_path / "out", history.versions[0])
    assert_nothing_readable(stored_files(repo))


def test_kill_during_key_passwd_leaves_both_passwords_working(history: History, repo: Path,
                                                            tmp_path: Path) -> None:
    new = pw_file(tmp_path, "the new password")
    env = dict(os.environ, CHROMA_SNAPSHOT_CACHE=str(tmp_path / "cache"))
    killed = _child(repo, env, "key", "passwd", "--new-password-file", new, "--password-file",
                    history.password_file, kill_at="repository.key-added")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    for pw in (history.password_file, new):
        assert _child(repo, env, "list", "--password-file", pw).returncode == 0
    assert len(list((repo / "keys").iterdir())) == 2


# --- unencrypted repositories ---------------------------------------------------------------------


def test_unencrypted_repository_is_unchanged(cli: Cli, chroma_dir: Path, repo_path: Path) -> None:
    assert cli("--repo", repo_path, "create", chroma_dir).code == 0
    config = json.loads((repo_path / "config.json").read_bytes())
    assert config["format_version"] == 1 and "encryption" not in config and "settings" not in config
    assert set(config) == {"format_version", "id", "chunk_size", "codec", "level", "max_chain", "created_at"}
    assert not (repo_path / "keys").exists()
    (root,) = (repo_path / "snapshots").iterdir()
    assert json.loads(root.read_bytes())["format_version"] == 2  # plain JSON, as before
    res = cli("--repo", repo_path, "key", "list")
    assert res.code == 2 and "not encrypted" in res.stderr


# --- the formats, on literal data ----------------------------------------------------------------


def test_seals_are_bound_and_never_repeat() -> None:
    from snapshot.errors import IntegrityError
    from snapshot.format.manifest import Frame

    c = crypto.Cipher(bytes(range(32)), "a" * 32)
    a, b = c.seal_root(b"{}", "20261128T015012-1a2b3c4d"), c.seal_root(b"{}", "20261128T015012-1a2b3c4d")
    assert a != b and len(a) == 2 + crypto.OVERHEAD  # a fresh nonce each time
    assert c.open_root(a, "20261128T015012-1a2b3c4d") == b"{}"
    with pytest.raises(IntegrityError, match="manifest 20261128T015012-00000000"):
        c.open_root(a, "20261128T015012-00000000")  # renamed
    with pytest.raises(IntegrityError):
        crypto.Cipher(bytes(range(32)), "b" * 32).open_root(a, "20261128T015012-1a2b3c4d")  # copied
    fr = Frame("c" * 32, 0, 0, "zstd", 5, "d" * 32)
    sealed = c.seal_frame(b"zzz", "zstd", 5, "d" * 32)
    assert c.open_frame(sealed, fr, "f") == b"zzz"
    for other in (Frame("c" * 32, 0, 0, "zstd", 6, "d" * 32), Frame("c" * 32, 0, 0, "zstd", 5, "e" * 32)):
        with pytest.raises(IntegrityError):
            c.open_frame(sealed, other, "f")
    with pytest.raises(IntegrityError):
        c.open_frame(sealed, fr, "f", table=True)  # a frame is not a chunk table


def test_key_files_and_envelopes_are_validated() -> None:
    from snapshot.errors import FormatVersionError, IntegrityError

    c = crypto.Cipher(bytes(32), "a" * 32)
    kf = crypto.wrap_key(c, "b" * 32, b"pw", {"created": "x", "host": "h"})
    parsed = crypto.parse_key_file(kf.to_json(), "b" * 32)
    assert crypto.unwrap_key(parsed, "b" * 32, b"pw") == bytes(32)
    assert crypto.unwrap_key(parsed, "b" * 32, b"other") is None
    assert crypto.unwrap_key(parsed, "c" * 32, b"pw") is None  # a key file renamed
    hostile = json.loads(kf.to_json())
    hostile["kdf"]["log_n"] = 30  # would allocate 128 GiB: read, but never derived
    costly = crypto.parse_key_file(json.dumps(hostile).encode(), "b" * 32)
    assert costly.params.too_costly() and crypto.unwrap_key(costly, "b" * 32, b"pw") is None
    hostile["kdf"]["log_n"] = 64
    with pytest.raises(IntegrityError, match="out of range"):
        crypto.parse_key_file(json.dumps(hostile).encode(), "b" * 32)
    env = crypto.Envelope("a" * 32, b"sealed").to_json()
    assert crypto.parse_envelope(env, "config", (1,)) == crypto.Envelope("a" * 32, b"sealed")
    assert crypto.parse_envelope(b'{"format_version": 1}', "config", (1,)) is None
    newer = json.loads(env)
    newer["encryption"]["algorithm"] = "XChaCha20-Poly1305"
    with pytest.raises(FormatVersionError):
        crypto.parse_envelope(json.dumps(newer).encode(), "config", (1,))
