"""Usage errors as the CLI renders them: one line, the documented exit code, JSON with --json;
ids and repositories that do not resolve; a listing that survives a broken manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Seeded, create_snapshot, one_line_error, run_cli


def test_ids_and_repositories_that_do_not_resolve(seeded: Seeded, chroma_dir: Path, tmp_path: Path) -> None:
    one_line_error(run_cli("--repo", tmp_path / "none", "list"), 3)
    one_line_error(run_cli("list"), 2)  # no --repo, no env
    a, b = seeded.sid, create_snapshot(seeded.repo, chroma_dir)
    common = a[: next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))]
    assert common  # ids start with their creation time
    res = run_cli("--repo", seeded.repo, "show", common)
    assert "matches 2 snapshots" in one_line_error(res, 2)
    one_line_error(run_cli("--repo", seeded.repo, "show", "19990101T"), 3)
    not_repo = tmp_path / "not_repo"
    not_repo.mkdir()
    (not_repo / "stuff.txt").write_text("x")
    one_line_error(run_cli("--repo", not_repo, "create", chroma_dir), 2)
    assert sorted(p.name for p in not_repo.iterdir()) == ["stuff.txt"]


def test_json_errors_are_json(tmp_path: Path) -> None:
    res = run_cli("--repo", tmp_path / "none", "list", "--json")
    assert res.code == 3
    assert json.loads(res.stdout) == {
        "error": {"code": 3, "kind": "not-found", "message": res.stderr.split("error: ", 1)[1].strip()}
    }


@pytest.mark.parametrize("args", [
    ("prune", "--keep-last", "-1"),
    ("create",),
    ("no-such-command",),
    ("--password-file", ".", "list"),
])
def test_option_errors_click_finds_are_one_line_too(repo_path: Path, args: tuple[str, ...]) -> None:
    res = run_cli("--repo", repo_path, *args)
    one_line_error(res, 2)
    assert "--help" in res.stderr
    assert not repo_path.exists()


def test_list_shows_the_readable_snapshots_and_marks_a_broken_one(seeded: Seeded, chroma_dir: Path) -> None:
    from snapshot.format import layout

    s1, s2 = seeded.sid, create_snapshot(seeded.repo, chroma_dir)
    (seeded.repo / layout.snapshot_key(s1)).write_text("{ not json")
    res = run_cli("--repo", seeded.repo, "list", "--json")
    assert res.code == 0, res.stderr
    rows = res.json()
    assert [r["id"] for r in rows] == [s1, s2] and rows[0]["error"] and rows[1]["error"] is None
    text = run_cli("--repo", seeded.repo, "list").stdout
    assert "UNREADABLE" in text and "forget" in text  # how to be rid of it (test_prune.py forgets one)
