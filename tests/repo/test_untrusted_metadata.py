"""A repository's config and manifests are untrusted input: every command that reads them
refuses bad ones with a one-line error and its exit code before acting on them (a newer format:
8; anything else wrong: 4), and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Format1Repo, Seeded, create_snapshot, edit_manifest, one_line_error, run_cli

from snapshot.format import layout


def test_an_unknown_manifest_format_and_bad_json(seeded: Seeded, tmp_path: Path) -> None:
    repo, sid = seeded.repo, seeded.sid
    edit_manifest(repo, sid, lambda d: d.update(format_version=99))
    res = run_cli("--repo", repo, "restore", sid, tmp_path / "t")
    assert "format_version 99" in one_line_error(res, 8)
    (repo / layout.snapshot_key(sid)).write_text("{not json")
    assert "not valid JSON" in one_line_error(run_cli("--repo", repo, "show", sid), 4)
    assert not (tmp_path / "t").exists()


def test_a_newer_repository_format_is_refused(seeded: Seeded) -> None:
    cfg = seeded.repo / "config.json"
    data = json.loads(cfg.read_text())
    data["format_version"] = 2
    cfg.write_text(json.dumps(data))
    one_line_error(run_cli("--repo", seeded.repo, "list"), 8)


def test_config_fields_are_validated_before_use(seeded: Seeded, chroma_dir: Path, tmp_path: Path) -> None:
    config = seeded.repo / "config.json"
    good = json.loads(config.read_text())
    elsewhere = tmp_path / "written-here"
    for bad in ({"id": str(elsewhere)}, {"id": "../../x" + "0" * 30}, {"chunk_size": 2**70},
                {"chunk_size": 12345}, {"codec": "lz4"}, {"level": 10**30}, {"max_chain": -1}):
        config.write_text(json.dumps({**good, **bad}))
        for args in (("create", chroma_dir), ("list",), ("restore", "latest", tmp_path / "t")):
            one_line_error(run_cli("--repo", seeded.repo, *args), 4)
    assert not elsewhere.exists() and not (tmp_path / "t").exists()


@pytest.mark.parametrize("field,value", [("offset", 10**30), ("length", 10**30), ("size", 2**70)])
def test_huge_numbers_in_a_manifest_are_integrity_errors(
    format1_repo: Format1Repo, chroma_dir: Path, tmp_path: Path, field: str, value: int
) -> None:
    repo = format1_repo.path
    v1 = format1_repo.ids[0]  # format 1: chunk lists inline
    sid = create_snapshot(repo, chroma_dir)  # a reference to each file's chunk table
    edit_manifest(repo, v1, lambda d: d["files"][0]["chunks"][0]["frames"][0].update({field: value}))
    edit_manifest(repo, sid, lambda d: d["files"][0]["table"].update({field: value}))
    for snap in (v1, sid):
        for args in (("restore", snap, tmp_path / "t"), ("restore", snap, tmp_path / "t", "--dry-run"),
                     ("diff", snap, snap), ("show", snap)):
            one_line_error(run_cli("--repo", repo, *args), 4)
        edit_manifest(repo, snap, lambda d: d.update(chunk_size=2**70))
        one_line_error(run_cli("--repo", repo, "restore", snap, tmp_path / "t"), 4)
    assert not (tmp_path / "t").exists()


def test_deeply_nested_json_is_refused_by_every_command(seeded: Seeded, tmp_path: Path) -> None:
    repo, sid = seeded.repo, seeded.sid
    nested = "[" * 200_000 + "]" * 200_000
    (repo / layout.snapshot_key(sid)).write_text('{"format_version": 1, "tags": ' + nested + "}")
    for args in (("show", sid), ("restore", sid, tmp_path / "t"), ("diff", sid, sid)):
        one_line_error(run_cli("--repo", repo, *args), 4)
    listed = run_cli("--repo", repo, "list", "--json")
    assert listed.code == 0 and listed.json()[0]["error"] and "nested" in listed.json()[0]["error"]
    check = run_cli("--repo", repo, "check", "--json")
    assert check.code == 4 and check.json()["problems"][0]["kind"] == "manifest"
    (repo / "config.json").write_text('{"id": ' + nested + "}")
    one_line_error(run_cli("--repo", repo, "list"), 4)
