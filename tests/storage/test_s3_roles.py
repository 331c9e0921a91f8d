"""The README's three IAM roles on a moto server with IAM enforced: every command works with the
least role that should allow it; one with too little permission stops before changing anything,
in one line naming the missing action (exit 11), and leaves the repository sound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from chroma_helpers import grow, tree_digest
from conftest import one_line_error, run_cli
from s3_iam_fixtures import Roles, iam_moto_server, iam_roles  # noqa: F401



def _ok(*args: Any) -> Any:
    res = run_cli(*map(str, args), "--json")
    assert res.code == 0, res.stdout + res.stderr
    return res.json() if res.stdout.strip() else None


def _keys(roles: Roles) -> dict[str, str]:
    """Every object under the repository's prefix and its ETag, listed with the admin's key."""
    key, secret = roles.keys["admin"]
    client = boto3.client("s3", endpoint_url=roles.endpoint, region_name="us-east-1",
                          aws_access_key_id=key, aws_secret_access_key=secret)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=roles.bucket, Prefix=roles.prefix):
        out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return out


def _sound(roles: Roles, monkeypatch: pytest.MonkeyPatch, snapshots: int) -> None:
    roles.use(monkeypatch, "admin")
    assert len(_ok("--repo", roles.url, "list")) == snapshots
    _ok("--repo", roles.url, "check", "--read-data")
    assert not [k for k in _keys(roles) if "/locks/" in k]


def test_backup_credentials_back_up_and_read_but_cannot_delete(
    iam_roles: Roles, chroma_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = iam_roles.url
    iam_roles.use(monkeypatch, "backup")
    first = _ok("--repo", url, "create", chroma_dir, "--no-cache")["id"]
    grow(chroma_dir, "docs", 20, seed=5)
    second = _ok("--repo", url, "create", chroma_dir, "--no-cache")["id"]
    assert [s["id"] for s in _ok("--repo", url, "list")] == [first, second]
    _ok("--repo", url, "show", first)
    _ok("--repo", url, "diff", first, second)
    _ok("--repo", url, "restore", first, tmp_path / "r")
    _ok("--repo", url, "check", "--read-data")
    assert _ok("--repo", url, "stats")["stats"]["versioning"] == "denied"  # not its business: not counted
    _ok("--repo", url, "unlock")
    other = tmp_path / "laptop"  # a local repository's snapshot copied in: a create by other means
    _ok("--repo", other, "create", chroma_dir, "--no-cache", "--tag", "laptop")
    assert _ok("--repo", url, "copy", "--from-repo", other)["copied"]
    before = _keys(iam_roles)
    for args in (["prune", "--keep-last", "1"], ["forget", first]):
        res = run_cli("--repo", url, *args)
        line = one_line_error(res, 11)
        assert "s3:DeleteObject" in line and "access denied" in line, line
        assert _keys(iam_roles) == before  # its lock came and went; nothing else changed
    _sound(iam_roles, monkeypatch, 3)


def test_restore_only_credentials_read_everything_and_write_nothing(
    iam_roles: Roles, chroma_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = iam_roles.url
    iam_roles.use(monkeypatch, "admin")
    sid = _ok("--repo", url, "create", chroma_dir, "--no-cache")["id"]
    before = _keys(iam_roles)
    iam_roles.use(monkeypatch, "restore-only")
    assert [s["id"] for s in _ok("--repo", url, "list")] == [sid]
    _ok("--repo", url, "show", "latest")
    _ok("--repo", url, "restore", "latest", tmp_path / "r")
    assert tree_digest(tmp_path / "r") == tree_digest(chroma_dir)
    _ok("--repo", url, "check", "--read-data")
    _ok("--repo", url, "stats")
    _ok("--repo", url, "diff", sid, sid)
    mirror = tmp_path / "mirror"  # copying OUT of the bucket only reads it
    _ok("--repo", mirror, "init")
    assert _ok("--repo", mirror, "copy", "--from-repo", url)["copied"]
    for args in (["create", str(chroma_dir), "--no-cache"], ["prune", "--keep-last", "1"], ["forget", sid],
                 ["copy", "--from-repo", str(mirror)]):
        line = one_line_error(run_cli("--repo", url, *args), 11)
        assert "s3:PutObject" in line, line
        assert _keys(iam_roles) == before
    _sound(iam_roles, monkeypatch, 1)


def test_admin_credentials_prune_forget_and_unlock(
    iam_roles: Roles, chroma_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = iam_roles.url
    iam_roles.use(monkeypatch, "admin")
    first = _ok("--repo", url, "create", chroma_dir, "--no-cache")["id"]
    grow(chroma_dir, "docs", 20, seed=6)
    _ok("--repo", url, "create", chroma_dir, "--no-cache")
    grow(chroma_dir, "docs", 20, seed=7)
    _ok("--repo", url, "create", chroma_dir, "--no-cache")
    assert _ok("--repo", url, "forget", first)["versioned"] is False  # it may ask whether deletes leave versions
    _ok("--repo", url, "prune", "--keep-last", "1")
    assert _ok("--repo", url, "stats")["stats"]["versioning"] is None
    line = one_line_error(run_cli("--repo", url, "undelete", "--before", "1h"), 2)
    assert "keeps no versions" in line
    _ok("--repo", url, "unlock", "--remove-all")
    _ok("--repo", url, "restore", "latest", tmp_path / "r")
    assert tree_digest(tmp_path / "r") == tree_digest(chroma_dir)
    _sound(iam_roles, monkeypatch, 1)


def test_unknown_credentials_are_refused_in_one_line(
    iam_roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAUSER00000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    line = one_line_error(run_cli("--repo", iam_roles.url, "list"), 11)
    assert "check the credentials" in line and "nope" not in line


def test_keys_init_and_export_by_role(
    iam_roles: Roles, chroma_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An encrypted repository: restore-only may list keys and export but neither init nor add a
    key; backup may add a key (a write) but not remove one; admin may remove it."""
    url, fresh = iam_roles.url, iam_roles.url + "/another"
    password, second = tmp_path / "pw", tmp_path / "pw2"
    password.write_text("correct horse battery staple\n")
    second.write_text("another password entirely\n")
    iam_roles.use(monkeypatch, "restore-only")
    line = one_line_error(run_cli("--repo", fresh, "init", "--encrypt", "--password-file", str(password)), 11)
    assert "s3:PutObject" in line
    assert not [k for k in _keys(iam_roles) if "/another/" in k]
    iam_roles.use(monkeypatch, "admin")
    _ok("--repo", url, "--password-file", password, "create", chroma_dir, "--encrypt", "--no-cache")
    before = _keys(iam_roles)
    iam_roles.use(monkeypatch, "restore-only")
    [key] = _ok("--repo", url, "--password-file", password, "key", "list")
    line = one_line_error(run_cli("--repo", url, "--password-file", str(password), "key", "add",
                                  "--new-password-file", str(second)), 11)
    assert "s3:PutObject" in line and _keys(iam_roles) == before
    out = tmp_path / "docs.jsonl"
    _ok("--repo", url, "--password-file", password, "export", "latest", "--collection", "docs", out)
    assert out.read_text().count("\n") == 3000
    iam_roles.use(monkeypatch, "backup")
    added = _ok("--repo", url, "--password-file", password, "key", "add", "--new-password-file", second)
    line = one_line_error(run_cli("--repo", url, "--password-file", str(password), "key", "remove",
                                  str(added["added"])), 11)
    assert "s3:DeleteObject" in line
    iam_roles.use(monkeypatch, "admin")
    _ok("--repo", url, "--password-file", password, "key", "remove", added["added"])
    assert [k["id"] for k in _ok("--repo", url, "--password-file", password, "key", "list")] == [key["id"]]
    _ok("--repo", url, "--password-file", password, "check", "--read-data")
