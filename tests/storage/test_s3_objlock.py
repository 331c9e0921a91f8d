"""S3 Object Lock: a repository initialised with ``--object-lock-days`` on a bucket created
with Object Lock writes its packs, snapshot roots and config with a retention date (locks,
condemned records and key objects without one); prune plans around what is still held; forget
refuses a held snapshot; and credentials that may delete anything cannot destroy a snapshot."""

from __future__ import annotations

import datetime
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import grow, tree_digest
from conftest import one_line_error, run_cli
from s3_fixtures import SEED_PREFIX

DAY = 86400


def _ok(*args: Any) -> Any:
    res = run_cli(*map(str, args), "--json")
    assert res.code == 0, res.stdout + res.stderr
    return res.json() if res.stdout.strip() else None


@pytest.fixture
def locked_url(s3_client: Any) -> str:
    """``s3://<fresh bucket created with Object Lock>/<SEED_PREFIX>``."""
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return f"s3://{bucket}/{SEED_PREFIX}"


def _split(url: str) -> tuple[str, str]:
    bucket, prefix = url[len("s3://"):].split("/", 1)
    return bucket, prefix


def _keys(client: Any, url: str) -> list[str]:
    bucket, prefix = _split(url)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _retention(client: Any, url: str, key: str) -> tuple[str | None, float | None]:
    head = client.head_object(Bucket=_split(url)[0], Key=key)
    until = head.get("ObjectLockRetainUntilDate")
    return head.get("ObjectLockMode"), until.timestamp() if until else None


def _free(client: Any, url: str, keys: list[str]) -> None:
    """Let the retention of ``keys`` run out now (what days passing would do): governance mode
    lets the bucket's owner shorten it."""
    bucket, _ = _split(url)
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    for key in keys:
        client.put_object_retention(Bucket=bucket, Key=key, BypassGovernanceRetention=True,
                                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": past})


def test_packs_roots_and_config_carry_a_retention_date(s3_client: Any, locked_url: str, chroma_dir: Path,
                                                       tmp_path: Path) -> None:
    out = _ok("--repo", locked_url, "init", "--object-lock-days", "3", "--object-lock-mode", "compliance")
    assert out["object_lock"] == {"mode": "COMPLIANCE", "days": 3}
    before = time.time()
    _ok("--repo", locked_url, "create", chroma_dir, "--no-cache")
    keys = _keys(s3_client, locked_url)
    kinds = {k.split(f"{SEED_PREFIX}/", 1)[1].split("/")[0] for k in keys}
    assert kinds == {"config.json", "snapshots", "data"}  # the lock is gone
    for key in keys:
        mode, until = _retention(s3_client, locked_url, key)
        assert mode == "COMPLIANCE", key
        assert until is not None and before + 3 * DAY - 120 < until < time.time() + 3 * DAY + 120, key
    _ok("--repo", locked_url, "restore", "latest", tmp_path / "r")
    assert tree_digest(tmp_path / "r") == tree_digest(chroma_dir)


def test_retained_writes_carry_a_checksum_also_when_only_required_ones_are_sent(
    s3_client: Any, locked_url: str, chroma_dir: Path, tmp_path: Path
) -> None:
    # S3 refuses a PUT with a retention but without Content-MD5 or a checksum; in this mode
    # botocore sends none of its own
    _ok("--repo", locked_url, "--s3-checksum", "when_required", "create", chroma_dir, "--no-cache",
        "--object-lock-days", "2")
    keys = _keys(s3_client, locked_url)
    assert keys and all(_retention(s3_client, locked_url, k)[0] == "GOVERNANCE" for k in keys)
    # the same objects synced down into a folder are a repository too (a folder retains nothing)
    bucket, prefix = _split(locked_url)
    for key in keys:
        path = tmp_path / "copy" / key[len(prefix) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    _ok("--repo", tmp_path / "copy", "restore", "latest", tmp_path / "r")
    assert tree_digest(tmp_path / "r") == tree_digest(chroma_dir)


def _orphan_pack(url: str, endpoint: str) -> str:
    """An unreferenced pack, written through the repository (so under its Object Lock)."""
    from s3_fixtures import s3_options

    from snapshot.format.hashing import digest
    from snapshot.repo.repository import Repository

    repo = Repository.open(url, s3_options(endpoint))
    data = uuid.uuid4().bytes * 64
    repo.put_object(digest(data), data)
    return digest(data)


def test_prune_keeps_what_is_held_and_deletes_it_once_free(
    s3_client: Any, s3_endpoint: str, locked_url: str, chroma_dir: Path, tmp_path: Path
) -> None:
    _ok("--repo", locked_url, "init", "--object-lock-days", "1")
    first = _ok("--repo", locked_url, "create", chroma_dir, "--no-cache")["id"]
    grow(chroma_dir, "docs", 20, seed=5)
    second = _ok("--repo", locked_url, "create", chroma_dir, "--no-cache")["id"]
    orphan = _orphan_pack(locked_url, s3_endpoint)
    _, prefix = _split(locked_url)
    orphan_key = f"{prefix}/data/{orphan[:2]}/{orphan}"

    line = one_line_error(run_cli("--repo", locked_url, "forget", first), 18)
    assert f"snapshot {first} is retained by S3 Object Lock until 20" in line and "nothing was deleted" in line

    out = _ok("--repo", locked_url, "prune", "--keep-last", "1", "--grace", "0", "--no-repack")
    assert out["removed"] == [] and set(out["snapshots_held"]) == {first}
    assert [k["id"] for k in out["kept"]] == [second, first]
    assert "held by Object Lock until" in out["kept"][1]["reasons"][0]
    assert list(out["objects_held"]) == [orphan] and out["objects_removed"] == []
    until = datetime.datetime.strptime(out["objects_held"][orphan], "%Y-%m-%dT%H:%M:%SZ")
    assert 0 < until.replace(tzinfo=datetime.timezone.utc).timestamp() - time.time() <= DAY
    assert out["versioned"] is True
    records = [k for k in _keys(s3_client, locked_url) if "/condemned/" in k]
    assert records and all(_retention(s3_client, locked_url, k) == (None, None) for k in records)
    assert orphan_key in _keys(s3_client, locked_url)

    # the days pass: the first snapshot's root and the orphan are free; the next prune removes them
    _free(s3_client, locked_url, [f"{prefix}/snapshots/{first}.json", orphan_key])
    out = _ok("--repo", locked_url, "prune", "--keep-last", "1", "--grace", "0", "--no-repack")
    assert out["removed"] == [first] and out["snapshots_held"] == {}
    assert orphan in out["objects_removed"] and orphan not in out["objects_held"]
    assert orphan_key not in _keys(s3_client, locked_url)
    _ok("--repo", locked_url, "restore", "latest", tmp_path / "r")
    assert tree_digest(tmp_path / "r") == tree_digest(chroma_dir)
    _ok("--repo", locked_url, "check", "--read-data")


def next_second() -> float:
    """The next whole second, once the clock has passed it. S3 stamps versions to the second:
    what is written from now on is stamped at or after the moment returned, what was written
    before it, earlier."""
    mark = float(int(time.time()) + 1)
    while time.time() < mark:
        time.sleep(0.01)
    return mark


def _versions(client: Any, url: str) -> list[dict[str, Any]]:
    bucket, prefix = _split(url)
    out: list[dict[str, Any]] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        out += [{**v, "marker": False} for v in page.get("Versions", [])]
        out += [{**d, "marker": True} for d in page.get("DeleteMarkers", [])]
    return out


def _kind(url: str, key: str) -> str:
    return key.split(f"{_split(url)[1]}/", 1)[1].split("/")[0]


def test_credentials_that_may_delete_anything_cannot_destroy_a_locked_repository(
    s3_client: Any, locked_url: str, chroma_dir: Path, tmp_path: Path
) -> None:
    _ok("--repo", locked_url, "init", "--object-lock-days", "30")
    first = _ok("--repo", locked_url, "create", chroma_dir, "--no-cache")["id"]
    first_tree = tree_digest(chroma_dir)
    grow(chroma_dir, "docs", 20, seed=9)
    second = _ok("--repo", locked_url, "create", chroma_dir, "--no-cache")["id"]
    before = next_second()
    bucket, _ = _split(locked_url)

    # the attacker, with credentials that may do anything: every version deleted, by its id ...
    refused = set()
    for v in _versions(s3_client, locked_url):
        try:
            s3_client.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        except s3_client.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDenied"
            refused.add(v["Key"])
    assert {_kind(locked_url, k) for k in refused} == {"config.json", "snapshots", "data"}
    assert refused == set(_keys(s3_client, locked_url))  # every object a restore needs: still there
    # ... then every object overwritten with garbage, then deleted
    for key in _keys(s3_client, locked_url):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"encrypted by the attacker")
    for key in _keys(s3_client, locked_url):
        s3_client.delete_object(Bucket=bucket, Key=key)
    assert _keys(s3_client, locked_url) == []
    one_line_error(run_cli("--repo", locked_url, "list"), 3)

    out = _ok("--repo", locked_url, "undelete", "--before", datetime.datetime.fromtimestamp(
        before, datetime.timezone.utc).isoformat())
    assert out["config"] == "deleted" and out["snapshots"] == [first, second] and out["packs"] > 0
    assert [s["id"] for s in _ok("--repo", locked_url, "list")] == [first, second]
    _ok("--repo", locked_url, "restore", first, tmp_path / "a")
    assert tree_digest(tmp_path / "a") == first_tree
    _ok("--repo", locked_url, "restore", second, tmp_path / "b")
    assert tree_digest(tmp_path / "b") == tree_digest(chroma_dir)
    _ok("--repo", locked_url, "check", "--read-data")
    for key in _keys(s3_client, locked_url):  # what came back is retained again
        assert _retention(s3_client, locked_url, key)[0] == "GOVERNANCE", key


def test_a_plain_bucket_refuses_object_lock_before_writing_anything(s3_client: Any, s3_repo_url: str,
                                                                     chroma_dir: Path, tmp_path: Path) -> None:
    line = one_line_error(run_cli("--repo", s3_repo_url, "init", "--object-lock-days", "7"), 2)
    assert "does not have Object Lock enabled" in line
    line = one_line_error(run_cli("--repo", s3_repo_url, "create", str(chroma_dir), "--object-lock-days", "7"), 2)
    assert "does not have Object Lock enabled" in line
    assert _keys(s3_client, s3_repo_url) == []
    line = one_line_error(run_cli("--repo", str(tmp_path / "repo"), "init", "--object-lock-days", "7"), 2)
    assert "needs an S3 bucket" in line and not (tmp_path / "repo").exists()
    line = one_line_error(run_cli("--repo", s3_repo_url, "init", "--object-lock-mode", "compliance"), 2)
    assert "--object-lock-mode needs --object-lock-days" in line
    line = one_line_error(run_cli("--repo", s3_repo_url, "init", "--object-lock-days", "0"), 2)
    assert "--object-lock-days must be a whole number of days" in line
    _ok("--repo", s3_repo_url, "init")
    line = one_line_error(run_cli("--repo", s3_repo_url, "create", str(chroma_dir), "--object-lock-days", "7"), 2)
    assert "Object Lock is none" in line
