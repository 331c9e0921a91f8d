"""copy: snapshots from one repository into another, verified, deduplicated by content,
resumable, and refused cleanly on bad input (real Chroma dirs; S3 through moto)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import become, retag, tree_digest
from conftest import CliResult, edit_manifest, one_line_error, run_cli

from snapshot.copy.pipeline import CopyOptions, copy_snapshots
from snapshot.create.pipeline import create_snapshot
from snapshot.format.manifest import manifest_to_dict
from snapshot.repo.repository import Repository
from snapshot.util import pausepoints

PASS = "copy-test-password"


@dataclass(frozen=True)
class Series:
    """A local repository with three snapshots of one source (full, grown, retagged)."""

    repo: Path
    ids: list[str]
    #: What each create uploaded (bytes).
    uploaded: list[int]
    #: The restored tree of each snapshot.
    trees: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def _series(chroma_template: Path, chroma_grown: Path, tmp_path_factory: pytest.TempPathFactory) -> Series:
    root = tmp_path_factory.mktemp("series")
    src, repo = root / "db", root / "src-repo"
    shutil.copytree(chroma_template, src)
    r = Repository.open(repo, create=True)
    ids, uploaded = [], []
    for change in (None, lambda: become(src, chroma_grown), lambda: retag(src, 7)):
        if change is not None:
            change()
        res = create_snapshot(r, src, tags=["nightly"], message="m", use_cache=False)
        ids.append(res.id)
        uploaded.append(res.bytes_uploaded)
    trees = {sid: _restored(repo, sid, root / f"restored-{sid}") for sid in ids}
    return Series(repo, ids, uploaded, trees)


@pytest.fixture
def series(_series: Series, tmp_path: Path) -> Series:
    repo = tmp_path / "src-repo"
    shutil.copytree(_series.repo, repo)
    return Series(repo, _series.ids, _series.uploaded, _series.trees)


def _restored(repo: Path | str, sid: str, target: Path, *extra: str) -> dict[str, str]:
    res = run_cli("--repo", str(repo), "restore", sid, str(target), *extra)
    assert res.code == 0, res.stderr
    tree = tree_digest(target)
    shutil.rmtree(target)
    return tree


def _copy(dest: Path | str, source: Path | str, *args: str) -> dict[str, Any]:
    res = run_cli("--repo", str(dest), "copy", "--from-repo", str(source), "--json", *args)
    assert res.code == 0, res.stdout + res.stderr
    out: dict[str, Any] = res.json()
    return out


def _init(repo: Path | str, *args: str) -> None:
    res = run_cli("--repo", str(repo), "init", *args)
    assert res.code == 0, res.stderr


def _checked(repo: Path | str, *extra: str) -> None:
    res = run_cli("--repo", str(repo), "check", "--read-data", "--json", *extra)
    assert res.code == 0, res.stdout + res.stderr


def _roots(repo: Path | str, ids: list[str], key: Any = None) -> dict[str, dict[str, Any]]:
    """Each root as a dict, without where its chunk tables are stored."""
    r = Repository.open(repo, key_source=key)
    out = {}
    for sid in ids:
        d = manifest_to_dict(r.manifest(sid))
        for f in d["files"]:
            f.pop("table", None)
        out[sid] = d
    return out


def test_a_series_goes_local_to_s3_to_local_unchanged(series: Series, s3_repo_url: str, s3_client: Any,
                                                      tmp_path: Path) -> None:
    _init(s3_repo_url)
    first = _copy(s3_repo_url, series.repo)
    assert [s["status"] for s in first["snapshots"]] == ["copied"] * 3 and first["copied"] == 3
    assert first["bytes_read"] > 0 and first["requests"]["destination"]["total"] > 0
    back = tmp_path / "back"
    _init(back)
    _copy(back, s3_repo_url)
    assert Repository.open(back).snapshot_ids() == series.ids
    assert _roots(back, series.ids) == _roots(series.repo, series.ids) == _roots(s3_repo_url, series.ids)
    for sid in series.ids:
        assert _restored(back, sid, tmp_path / "t") == series.trees[sid]
        assert _restored(s3_repo_url, sid, tmp_path / "t") == series.trees[sid]
    for repo in (s3_repo_url, back):
        _checked(repo)
    other = s3_repo_url.replace("snap-test-", "snap-other-")  # S3 to S3: another bucket
    s3_client.create_bucket(Bucket=other.split("/")[2])
    _init(other)
    assert _copy(other, s3_repo_url, series.ids[-1])["copied"] == 1
    assert _restored(other, series.ids[-1], tmp_path / "t") == series.trees[series.ids[-1]]
    again = _copy(s3_repo_url, series.repo)
    assert again["copied"] == 0 and again["skipped"] == 3 and again["bytes_stored"] == 0
    assert [s["status"] for s in again["snapshots"]] == ["present"] * 3


def test_an_incremental_copied_after_its_parent_moves_about_what_its_create_uploaded(
        series: Series, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    _init(dest)
    _copy(dest, series.repo, series.ids[0])
    for i in (1, 2):
        out = _copy(dest, series.repo, series.ids[i])
        assert out["copied"] == 1
        assert out["bytes_written"] <= 1.1 * series.uploaded[i], (i, out["bytes_written"], series.uploaded[i])
    assert _restored(dest, series.ids[2], tmp_path / "t") == series.trees[series.ids[2]]


def test_plain_to_encrypted_to_plain(series: Series, tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text(PASS + "\n")
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    _init(enc, "--encrypt", "--password-file", str(secret))
    _copy(enc, series.repo, "--password-file", str(secret))
    _init(plain)
    _copy(plain, enc, "--from-password-file", str(secret))
    assert _roots(plain, series.ids) == _roots(series.repo, series.ids)
    for sid in series.ids:
        assert _restored(plain, sid, tmp_path / "t") == series.trees[sid]
        sealed = (enc / "snapshots" / f"{sid}.json").read_bytes()
        assert b'"files"' not in sealed and b'"collections"' not in sealed  # no plaintext manifest
        # (not its first byte: a sealed root starts with a random byte, b"{" once in 256)
    _checked(enc, "--password-file", str(secret))
    _checked(plain)


def test_a_gzip_destination_gets_the_frames_re_encoded(series: Series, tmp_path: Path) -> None:
    dest = tmp_path / "gz"
    _init(dest, "--codec", "gzip")
    out = _copy(dest, series.repo)
    assert all(s["chunks_reencoded"] == s["chunks_stored"] > 0 for s in out["snapshots"])
    assert _restored(dest, series.ids[-1], tmp_path / "t") == series.trees[series.ids[-1]]
    _checked(dest)


def test_a_dry_run_predicts_the_copy_and_writes_nothing(series: Series, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    _init(dest)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    plan = _copy(dest, series.repo, "--dry-run")
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    assert [s["status"] for s in plan["snapshots"]] == ["to copy"] * 3 and plan["dry_run"]
    done = _copy(dest, series.repo)
    for planned, copied in zip(plan["snapshots"], done["snapshots"], strict=True):
        assert planned["chunks_stored"] == copied["chunks_stored"]
        assert abs(planned["bytes_stored"] - copied["bytes_stored"]) <= 0.01 * copied["bytes_stored"]
    assert _copy(dest, series.repo, "--dry-run")["bytes_stored"] == 0


def test_filters_choose_what_is_copied(series: Series, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    _init(dest)
    assert _copy(dest, series.repo, "--tag", "other")["snapshots"] == []
    out = _copy(dest, series.repo, "latest", "--tag", "nightly")
    assert [s["id"] for s in out["snapshots"]] == [series.ids[-1]]
    assert Repository.open(dest).snapshot_ids() == [series.ids[-1]]


PACK = 128 << 10
_CHILD = ("import sys; from snapshot.copy.pipeline import CopyOptions, copy_snapshots; "
          "from snapshot.repo.repository import Repository; "
          "copy_snapshots(Repository.open(sys.argv[1]), Repository.open(sys.argv[2]), "
          "options=CopyOptions(pack_size=int(sys.argv[3])))")


def _data_bytes(repo: Path) -> int:
    """The bytes of the packs stored (not the temporary files of uploads a kill cut short)."""
    return sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.mark.parametrize("point", ["create.pack-uploaded#3", "copy.before-commit#1", "copy.committed#2"])
def test_a_copy_killed_and_run_again_completes_sending_at_most_one_pack_again(
        series: Series, tmp_path: Path, point: str) -> None:
    clean = tmp_path / "clean"
    _init(clean)
    full = copy_snapshots(Repository.open(clean), Repository.open(series.repo), options=CopyOptions(pack_size=PACK))
    dest = tmp_path / "dest"
    _init(dest)
    env = dict(os.environ, CHROMA_SNAPSHOT_KILL_AT=point, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.run([sys.executable, "-c", _CHILD, str(dest), str(series.repo), str(PACK)], env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert child.returncode == -9, child.stderr
    left = _data_bytes(dest)
    assert left > 2 * PACK  # enough was uploaded that sending it again would show
    rerun = copy_snapshots(Repository.open(dest), Repository.open(series.repo), options=CopyOptions(pack_size=PACK))
    assert Repository.open(dest).snapshot_ids() == series.ids
    assert left + rerun.bytes_written <= full.bytes_written + PACK, (left, rerun.bytes_written, full.bytes_written)
    assert _restored(dest, series.ids[-1], tmp_path / "t") == series.trees[series.ids[-1]]
    _checked(dest)
    assert not list((tmp_path / "base-cache").rglob("*.journal"))  # a completed copy forgets it


@pytest.mark.parametrize("delete_after", ["0", "24h"])
def test_a_prune_of_the_source_during_a_copy_loses_nothing(
        series: Series, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delete_after: str) -> None:
    """The prune drops the two older snapshots (one being copied, one not yet) and repacks, so
    the newest's root is rewritten; with a bound of 0 it also deletes the old packs at once."""
    monkeypatch.setenv("CHROMA_SNAPSHOT_DELETE_AFTER", delete_after)
    dest = tmp_path / "dest"
    _init(dest)
    pruned: list[CliResult] = []

    def prune_the_source() -> None:
        if not pruned:
            pruned.append(run_cli("--repo", str(series.repo), "prune", "--keep-last", "1", "--max-unused", "0%",
                                  "--grace", "0s", "--json"))

    with pausepoints.on("copy.before-commit", prune_the_source):
        out = _copy(dest, series.repo)
    assert pruned[0].code == 0 and pruned[0].json()["repack"]["roots_rewritten"] == 1, pruned[0].stdout
    first, second, last = series.ids
    assert {s["id"]: s["status"] for s in out["snapshots"]} == {first: "copied", second: "vanished",
                                                               last: "copied"}
    assert Repository.open(dest).snapshot_ids() == [first, last]
    for sid in (first, last):
        assert _restored(dest, sid, tmp_path / "t") == series.trees[sid]
    assert _restored(series.repo, last, tmp_path / "t") == series.trees[last]
    _checked(dest)
    _checked(series.repo)


def _listing(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))


@pytest.fixture
def encrypted_source(series: Series, tmp_path: Path) -> Path:
    secret = tmp_path / "pass"
    secret.write_text(PASS)
    enc = tmp_path / "enc"
    _init(enc, "--encrypt", "--password-file", str(secret))
    _copy(enc, series.repo, series.ids[0], "--password-file", str(secret))
    return enc


@pytest.mark.parametrize(("case", "code", "words"), [
    ("same repository", 2, "same repository"),
    ("unknown id", 3, "no snapshot matches '2001'"),
    ("wrong source password", 16, ""),
    ("no source password", 2, "--from-password-file"),
    ("unreachable source", 13, "127.0.0.1:9"),
    ("other chunk size", 2, "chunk size"),
    ("same id, other content", 7, "other content"),
])
def test_bad_input_is_one_line_and_writes_nothing(
        series: Series, tmp_path: Path, request: pytest.FixtureRequest, case: str, code: int, words: str) -> None:
    dest = tmp_path / "dest"
    _init(dest, *(["--chunk-size", "524288"] if case == "other chunk size" else []))
    source: Path | str = series.repo
    args: list[str] = []
    if case == "same repository":
        source = dest
    elif case == "unknown id":
        args = [series.ids[0], "2001"]
    elif case in ("wrong source password", "no source password"):
        source = request.getfixturevalue("encrypted_source")
        if case == "wrong source password":
            wrong = tmp_path / "wrong"
            wrong.write_text("not it")
            args = ["--from-password-file", str(wrong)]
    elif case == "unreachable source":
        source = "s3://bucket/db"
        args = ["--from-endpoint-url", "http://127.0.0.1:9", "--from-region", "us-east-1"]
    elif case == "same id, other content":
        _copy(dest, series.repo, series.ids[0])
        edit_manifest(dest, series.ids[0], lambda d: d["files"][0].update(hash="0" * 32))
    before = _listing(dest)
    res = run_cli("--repo", str(dest), "copy", "--from-repo", str(source), *args)
    line = one_line_error(res, code)
    assert words in line, line
    assert _listing(dest) == before


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_an_incremental_copied_after_its_parent_reads_little_more_than_it_writes(
        series: Series, tmp_path: Path, request: pytest.FixtureRequest, where: str) -> None:
    """Each delta copied is verified against its base's content taken from the destination,
    which holds it (with --no-cache: no image of the last snapshot copied on local disk): the
    source is read for the frames copied, not for whole chains."""
    source: Path | str = series.repo
    if where == "s3":
        source = request.getfixturevalue("s3_repo_url")
        _init(source)
        _copy(source, series.repo)
    dest = tmp_path / "dest"
    _init(dest)
    _copy(dest, source, series.ids[0], "--no-cache")
    for i in (1, 2):
        out = _copy(dest, source, series.ids[i], "--no-cache")
        assert out["bytes_read"] <= 1.5 * out["bytes_written"], (i, out["bytes_read"], out["bytes_written"])
        assert out["bytes_read_destination"] > out["bytes_written"]  # the bases came from there
    assert not list((tmp_path / "base-cache" / Repository.open(dest).config.id).glob("copy-*"))  # no image
    assert _restored(dest, series.ids[2], tmp_path / "t") == series.trees[series.ids[2]]


def test_a_series_copied_in_one_run_takes_the_bases_it_decoded(series: Series, tmp_path: Path) -> None:
    """The deltas of a snapshot are verified against the contents this run decoded copying its
    parent: the destination is not read for them, whether they are held in memory (a bound of
    just what the next snapshot builds on: its chunk tables are read first) or not at all (then
    the image of the source being built on local disk holds them at their offsets)."""
    src = Repository.open(series.repo)
    first, second = ({c.hash: c for _f, chunks in src.tables(src.manifest(sid)) for c in chunks}
                     for sid in series.ids[:2])
    built_on = {fr.hash for c in second.values() for fr in c.frames[:-1]}
    bound = sum(c.size for h, c in first.items() if h in built_on)
    assert 0 < bound < sum(c.size for c in first.values())  # the parent is not all needed
    results = {}
    for cache in (0, bound):  # (and nothing spilled to disk)
        dest = tmp_path / f"dest-{cache}"
        _init(dest)
        results[cache] = copy_snapshots(Repository.open(dest), Repository.open(series.repo), series.ids[:2],
                                        options=CopyOptions(cache_bytes=cache, spill_bytes=0))
        assert Repository.open(dest).snapshot_ids() == series.ids[:2]
    kept, none = results[bound], results[0]
    assert kept.bytes_read == none.bytes_read <= 1.1 * kept.bytes_written
    assert kept.bytes_read_destination == 0 == none.bytes_read_destination
    assert _restored(tmp_path / f"dest-{bound}", series.ids[1], tmp_path / "t") == series.trees[series.ids[1]]
    assert _restored(tmp_path / "dest-0", series.ids[1], tmp_path / "t") == series.trees[series.ids[1]]


def test_a_folder_source_gives_the_bases_of_the_deltas_copied_to_s3(series: Series, s3_repo_url: str) -> None:
    """Reading a folder costs nothing, reading S3 requests and egress: with a folder as the
    source and a bucket as the destination, a delta's base is decoded from the source."""
    _init(s3_repo_url)
    _copy(s3_repo_url, series.repo, series.ids[0])
    out = _copy(s3_repo_url, series.repo, series.ids[1])
    assert out["bytes_read_destination"] < out["bytes_written"] < out["bytes_read"]
