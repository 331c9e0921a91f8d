"""Packs moved to an archive class (GLACIER, DEEP_ARCHIVE) by a lifecycle rule: restore and
check --read-data stop before reading anything (exit 17) and say how many objects and bytes;
--request-restore asks S3 for them; once restored, a rerun restores byte-exact. GLACIER_IR is
used as any other class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chroma_helpers import tree_digest
from conftest import one_line_error, run_cli


def _ok(*args: Any) -> Any:
    res = run_cli(*map(str, args), "--json")
    assert res.code == 0, res.stdout + res.stderr
    return res.json()


def _archive(client: Any, url: str, storage_class: str) -> tuple[int, int]:
    """Move every pack to ``storage_class`` as a lifecycle transition would: (objects, bytes)."""
    bucket, prefix = url[len("s3://"):].split("/", 1)
    moved = size = 0
    for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/data/")["Contents"]:
        client.copy_object(Bucket=bucket, Key=o["Key"], CopySource={"Bucket": bucket, "Key": o["Key"]},
                           StorageClass=storage_class, MetadataDirective="COPY")
        moved, size = moved + 1, size + o["Size"]
    return moved, size


def test_archived_packs_stop_restore_and_check_until_restored(
    s3_client: Any, s3_repo_url: str, chroma_dir: Path, tmp_path: Path
) -> None:
    _ok("--repo", s3_repo_url, "create", chroma_dir, "--no-cache")
    objects, size = _archive(s3_client, s3_repo_url, "GLACIER")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "restored"
    line = one_line_error(run_cli("--repo", s3_repo_url, "restore", "latest", str(target)), 17)
    assert f"needs {objects} objects, {size:,} bytes in GLACIER" in line, line
    assert "--request-restore" in line
    assert list(out.iterdir()) == []  # no target, no temporary dir beside it
    line = one_line_error(run_cli("--repo", s3_repo_url, "check", "--read-data"), 17)
    assert f"needs {objects} objects, {size:,} bytes" in line
    line = one_line_error(run_cli("--repo", s3_repo_url, "check"), 17)  # it reads the chunk tables
    assert "check needs 1 object, " in line
    line = one_line_error(run_cli("--repo", s3_repo_url, "restore", "latest", str(target), "--request-restore",
                                  "--days", "2", "--tier", "Bulk"), 17)
    assert f"asked S3 to restore {objects} of them for 2 days at tier Bulk" in line, line
    assert list(out.iterdir()) == []
    # moto makes a restored copy readable at once: the rerun restores normally
    _ok("--repo", s3_repo_url, "restore", "latest", target)
    assert tree_digest(target) == tree_digest(chroma_dir)
    _ok("--repo", s3_repo_url, "check", "--read-data")


def test_deep_archive_has_no_expedited_tier(s3_client: Any, s3_repo_url: str, chroma_dir: Path,
                                            tmp_path: Path) -> None:
    _ok("--repo", s3_repo_url, "create", chroma_dir, "--no-cache")
    _archive(s3_client, s3_repo_url, "DEEP_ARCHIVE")
    res = run_cli("--repo", s3_repo_url, "check", "--read-data", "--request-restore", "--tier", "Expedited")
    assert "DEEP_ARCHIVE" in one_line_error(res, 2)
    res = run_cli("--repo", s3_repo_url, "restore", "latest", str(tmp_path / "r"), "--request-restore",
                  "--days", "0")
    assert "--days" in one_line_error(res, 2)


def test_glacier_instant_retrieval_is_a_class_like_any_other(
    s3_client: Any, s3_repo_url: str, chroma_dir: Path, tmp_path: Path
) -> None:
    _ok("--repo", s3_repo_url, "--storage-class", "GLACIER_IR", "create", chroma_dir, "--no-cache")
    bucket, prefix = s3_repo_url[len("s3://"):].split("/", 1)
    classes = {o.get("StorageClass") for o in s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/data/")
               ["Contents"] if o["Size"] >= 128 << 10}
    assert classes == {"GLACIER_IR"}
    _ok("--repo", s3_repo_url, "restore", "latest", tmp_path / "r")
    assert tree_digest(tmp_path / "r") == tree_digest(chroma_dir)
    _ok("--repo", s3_repo_url, "check", "--read-data", "--request-restore")


def test_request_restore_on_a_local_repository_changes_nothing(repo_path: Path, chroma_dir: Path,
                                                               tmp_path: Path) -> None:
    _ok("--repo", repo_path, "create", chroma_dir, "--no-cache")
    _ok("--repo", repo_path, "restore", "latest", tmp_path / "r", "--request-restore")
    assert tree_digest(tmp_path / "r") == tree_digest(chroma_dir)
