"""The CLI end to end on a real S3 endpoint (moto's server), with the seed's deep prefix."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from chroma_helpers import become, build_db, grow, tree_digest

from snapshot.format.manifest import Chunk, Frame
from snapshot.repo.packs import Span, read_ranges
from snapshot.restore.materialise import _PLAN_BYTES, LocalChunk, _upcoming, last_uses


def test_full_round_trip_on_s3(
    cli, s3_repo_url: str, chroma_dir: Path, chroma_grown: Path, tmp_path: Path
) -> None:
    assert s3_repo_url.endswith("/processed/informatika/kelas_10/chromadb")
    first = cli("--repo", s3_repo_url, "create", chroma_dir, "--tag", "nightly", "--json")
    assert first.code == 0, first.stderr
    r1 = first.json()
    assert r1["objects_uploaded"] >= 1 and r1["requests"]["total"] > 0
    # packs are uploaded whole, never one PUT per file (+ config, manifest and the lock object)
    assert r1["requests"].get("put", 0) <= r1["objects_uploaded"] + 3 < r1["files"]

    become(chroma_dir, chroma_grown)
    r2 = cli("--repo", s3_repo_url, "create", chroma_dir, "--json").json()
    assert r2["parent"] == r1["id"] and r2["bytes_uploaded"] < r1["bytes_uploaded"] / 5

    r3 = cli("--repo", s3_repo_url, "create", chroma_dir, "--json").json()
    assert r3["objects_uploaded"] == 0 and r3["bytes_new"] == 0
    assert r3["requests"].get("put", 0) == 2, r3["requests"]  # the manifest and the lock object
    assert r3["requests"]["total"] <= 10, r3["requests"]

    listed = cli("--repo", s3_repo_url, "list", "--json").json()
    assert [s["id"] for s in listed] == [r1["id"], r2["id"], r3["id"]]

    target = tmp_path / "restored"
    res = cli("--repo", s3_repo_url, "restore", r1["id"][:20], target, "--json", "--chroma-check")
    assert res.code == 0, res.stderr
    assert res.json()["chroma_checked"] == {"docs": 3000, "notes": 1000}
    res = cli("--repo", s3_repo_url, "restore", "latest", target, "--force", "--json", "--chroma-check")
    assert res.code == 0, res.stderr
    body = res.json()
    assert body["chroma_checked"] == {"docs": 3040, "notes": 1000} and body["bytes_reused"] > 0


def test_same_layout_as_local(cli, s3_client, s3_repo_url: str, chroma_dir: Path, tmp_path: Path) -> None:
    """A bucket prefix synced down is a valid local repository, and a local one synced up works."""
    assert cli("--repo", s3_repo_url, "create", chroma_dir).code == 0
    bucket, prefix = s3_repo_url[5:].split("/", 1)
    local = tmp_path / "synced"
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    for key in keys:
        dest = local / key[len(prefix) + 1 :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert sorted(p.relative_to(local).parts[0] for p in local.rglob("*") if p.is_file()) == sorted(
        ["config.json", "snapshots"] + ["data"] * (len(keys) - 2)
    )
    res = cli("--repo", local, "restore", "latest", tmp_path / "a", "--skip-chroma-check")
    assert res.code == 0, res.stderr

    up = f"s3://{bucket}/elsewhere/repo"
    for p in local.rglob("*"):
        if p.is_file():
            s3_client.put_object(Bucket=bucket, Key=f"elsewhere/repo/{p.relative_to(local).as_posix()}",
                                 Body=p.read_bytes())
    res = cli("--repo", up, "restore", "latest", tmp_path / "b", "--skip-chroma-check")
    assert res.code == 0, res.stderr


def test_missing_bucket_fails_fast(cli, s3_endpoint: str, chroma_dir: Path) -> None:
    started = time.monotonic()
    res = cli("--repo", "s3://no-such-bucket/x", "create", chroma_dir)
    assert res.code == 10, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "no-such-bucket" in res.stderr
    assert time.monotonic() - started < 10


def test_unreachable_endpoint_fails_fast(cli, s3_endpoint: str, chroma_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    started = time.monotonic()
    res = cli("--repo", "s3://bucket/x", "--endpoint-url", f"http://127.0.0.1:{port}", "list")
    assert res.code == 13, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 15


def test_credentials_never_printed(cli, s3_repo_url: str, chroma_dir: Path, monkeypatch) -> None:
    secret = "S3cr3tV4lue-do-not-print"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    out = cli("--repo", s3_repo_url, "create", chroma_dir, "--json")
    shown = cli("--repo", s3_repo_url, "show", "latest", "--json")
    assert out.code == 0 and shown.code == 0, out.stderr + shown.stderr
    assert secret not in out.stdout + out.stderr + shown.stdout + shown.stderr


def test_many_small_files_are_read_a_range_of_a_pack_at_a_time(cli, s3_repo_url: str, tmp_path: Path) -> None:
    """A multi-tenant DB is mostly files of one chunk: restoring from S3 reads the frames of
    neighbouring ones with one ranged GET, not one per file (restic reads whole packs)."""
    src = tmp_path / "tenants"
    spec = {f"tenant-{i:02d}": 5 for i in range(30)}
    build_db(src, spec)
    files = [p for p in src.rglob("*") if p.is_file()]
    assert len(files) > 100
    made = cli("--repo", s3_repo_url, "create", src, "--json")
    assert made.code == 0, made.stderr
    res = cli("--repo", s3_repo_url, "restore", "latest", tmp_path / "out", "--json")
    assert res.code == 0, res.stderr
    body = res.json()
    assert body["requests"]["get_range"] <= len(files) // 10, body["requests"]  # 91 when read file by file
    assert tree_digest(tmp_path / "out") == tree_digest(src)
    assert body["bytes_downloaded"] <= 2 * made.json()["bytes_uploaded"]
    # re-hydrating an unchanged target reads nothing of the data
    again = cli("--repo", s3_repo_url, "restore", "latest", tmp_path / "out", "--force", "--json").json()
    assert again["bytes_downloaded"] == 0 and again["chunks_fetched"] == 0 and again["chunks_reused"] > 0


def test_delta_chains_are_read_a_range_of_a_pack_at_a_time(
    cli, s3_repo_url: str, chroma_dir: Path, chroma_grown: Path, tmp_path: Path
) -> None:
    """After an incremental create, a chunk is a full frame plus delta links in other packs:
    a restore from S3 reads the frames of 16 chunks at a time with a request per range."""
    assert cli("--repo", s3_repo_url, "create", chroma_dir).code == 0
    become(chroma_dir, chroma_grown)
    assert cli("--repo", s3_repo_url, "create", chroma_dir).code == 0
    res = cli("--repo", s3_repo_url, "restore", "latest", tmp_path / "out", "--json")
    assert res.code == 0, res.stderr
    body = res.json()
    listing = cli("--repo", s3_repo_url, "show", "latest", "--files", "--json").stdout.splitlines()
    frames = sum(len(c["frames"]) for line in listing for c in json.loads(line)["chunks"])
    assert frames > body["chunks_fetched"]  # chains of more than one frame
    assert body["requests"]["get_range"] * 3 <= frames, (body["requests"], frames)  # 15 of 21 chunk by chunk
    assert tree_digest(tmp_path / "out") == tree_digest(chroma_dir)


@pytest.mark.slow  # chromadb builds and opens 12 collections in child processes
def test_a_restore_reads_what_the_dry_run_predicts_on_s3(cli, s3_repo_url: str, tmp_path: Path) -> None:
    """That is egress. What chromadb rewrites when --chroma-check opens the result
    (chroma.sqlite3, the indexes it applies queue entries to) is put back from local copies,
    not read again; and the prediction counts the ranges of packs the frames are read with
    (with what lies between frames close together: restoring an older snapshot over a newer
    one needs frames scattered among ones the target holds)."""
    src = tmp_path / "tenants"
    build_db(src, {f"tenant-{i}": 30 for i in range(12)})
    first = cli("--repo", s3_repo_url, "create", src, "--json").json()["id"]
    for i in range(0, 12, 3):
        grow(src, f"tenant-{i}", 10, seed=i)
    assert cli("--repo", s3_repo_url, "create", src).code == 0

    def restore(ref: str, target: Path, *extra: str) -> tuple[int, dict]:
        plan = cli("--repo", s3_repo_url, "restore", ref, target, "--dry-run", *extra, "--json").json()
        res = cli("--repo", s3_repo_url, "restore", ref, target, "--force", *extra, "--json")
        assert res.code == 0, res.stderr
        return plan["bytes_to_download"], res.json()

    predicted, plain = restore("latest", tmp_path / "a")
    assert plain["bytes_downloaded"] == predicted
    predicted, checked = restore("latest", tmp_path / "b", "--chroma-check")
    assert checked["chunks_repaired"] > 12  # chroma.sqlite3 and index files of each collection
    assert checked["bytes_downloaded"] == predicted == plain["bytes_downloaded"]
    assert checked["requests"] == plain["requests"]
    assert tree_digest(tmp_path / "b") == tree_digest(src)
    for extra in ((), ("--chroma-check",)):
        predicted, older = restore(first, tmp_path / "b", *extra)
        assert 0 < older["bytes_downloaded"] == predicted < plain["bytes_downloaded"]
        assert cli("--repo", s3_repo_url, "restore", "latest", tmp_path / "b", "--force").code == 0


def test_read_plans_are_bounded_by_bytes_as_well_as_chunks() -> None:
    """Deep chains of large deltas make shorter plans: what a plan holds stays bounded (no S3
    needed: the plan is made before anything is read)."""
    def chunk(i: int, frames: int, length: int) -> Chunk:
        links = tuple(Frame("a" * 32, (i * frames + k) * length, length, "zstd", 1 << 20, f"{i:032x}")
                      for k in range(frames))
        return Chunk(f"{i:032x}", 1 << 20, links)

    small = [chunk(i, 2, 300 << 10) for i in range(40)]
    assert len(_upcoming(small, 0, {}, 16)) == 16 and len(_upcoming(small, 32, {}, 16)) == 8
    deep = [chunk(i, 16, 900 << 10) for i in range(40)]
    plan = _upcoming(deep, 0, {}, 16)
    assert len(plan) == 1  # one chunk's chain is 14 MiB: the next would pass the bound
    assert sum(f.length for c in plan for f in c.frames) <= _PLAN_BYTES
    huge = [chunk(i, 64, 1 << 20) for i in range(3)]
    assert len(_upcoming(huge, 0, {}, 16)) == 1  # at least one chunk, however large
    # what the target already holds is not read, so it does not count
    local = {c.hash: LocalChunk(Path("held"), 0, c.size) for c in deep[1:5]}
    assert len(_upcoming(deep, 0, local, 16)) == 5


def test_a_planned_range_is_released_after_the_last_chunk_that_reads_it() -> None:
    """Not after the last chunk of its plan: ranges of a 16-chunk plan are freed as the file is
    written, so the bytes held are those still to be written (no S3: the plan is pure)."""
    def chunk(i: int, *frames: tuple[str, int]) -> Chunk:
        links = tuple(Frame(obj * 32, at, 100, "zstd", 1 << 20, f"{i:031x}{k}")
                      for k, (obj, at) in enumerate(frames))
        return Chunk(links[-1].hash, 1 << 20, links)

    # chunk 1 is a chain: a full frame in pack a, a delta in pack b; chunk 3 needs a's start again
    chunks = [chunk(0, ("a", 0)), chunk(1, ("a", 100), ("b", 0)), chunk(2, ("a", 5 << 20)),
              chunk(3, ("a", 200)), chunk(4, ("b", 100))]
    planned = [Span(o, s, e) for o, s, e in read_ranges(fr for c in chunks for fr in c.frames)]
    assert [(sp.object[0], sp.start, sp.end) for sp in planned] == [
        ("a", 0, 300), ("a", 5 << 20, (5 << 20) + 100), ("b", 0, 200)]
    uses = last_uses(planned, chunks, 10, {})
    assert {at: [(sp.object[0], sp.start) for sp in sps] for at, sps in uses.items()} == {
        13: [("a", 0)], 12: [("a", 5 << 20)], 14: [("b", 0)]}
    # a chunk the target holds reads nothing, so it releases nothing
    held = {chunks[4].hash: LocalChunk(Path("held"), 0, 1 << 20)}
    assert set(last_uses(planned, chunks, 10, held)) == {13, 12, 11}


@pytest.mark.parametrize("args", [
    ("--storage-class", "STANDARD_AI"),
    ("--storage-class", "standard-ia"),
    ("--sse", "AES256", "--sse-kms-key-id", "alias/db"),
    ("--sse-kms-key-id", "alias/db"),
])
def test_bad_s3_settings_are_refused_before_anything_is_written(
    cli, s3_client, s3_repo_url: str, chroma_dir: Path, args: tuple[str, ...]
) -> None:
    """A typo in --storage-class used to surface at the first pack's PUT, after config.json
    was written: now it is a usage error before any request."""
    res = cli("--repo", s3_repo_url, "create", chroma_dir, *args)
    assert res.code == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert args[-1] in res.stderr or "--sse aws:kms" in res.stderr
    bucket, prefix = s3_repo_url[5:].split("/", 1)
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_storage_class_s3_knows_is_accepted(cli, s3_repo_url: str) -> None:
    res = cli("--repo", s3_repo_url, "--storage-class", "GLACIER_IR", "init")
    assert res.code == 0, res.stderr
