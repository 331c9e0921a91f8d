"""The CLI's one exit path: an interrupted command exits with the code and kind of its row of
the exit-code table, in JSON too."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from snapshot.errors import Interrupted, Terminated, exit_codes
from snapshot.util import pausepoints


@pytest.mark.parametrize("raised", [KeyboardInterrupt, Interrupted, Terminated])
def test_an_interrupted_create_exits_with_its_row_of_the_table(
    raised: type[BaseException], chroma_dir: Path, repo_path: Path,
) -> None:
    def interrupt() -> None:
        raise raised()

    with pausepoints.on("create.captured", interrupt):
        res = run_cli("--repo", repo_path, "create", chroma_dir, "--json")
    row = {r.code: r for r in exit_codes()}[143 if raised is Terminated else 130]
    assert res.code == row.code
    assert res.json()["error"]["code"] == row.code and res.json()["error"]["kind"] == row.name
    assert res.stderr.splitlines()[-1].startswith(f"chroma-snapshot: error: {row.name}")
    assert not list((repo_path / "snapshots").glob("*.json"))


def test_an_error_exits_with_its_class_code_and_kind(tmp_path: Path) -> None:
    res = run_cli("--repo", tmp_path / "none", "list", "--json")
    row = {r.code: r for r in exit_codes()}[res.code]
    assert (row.code, row.name) == (3, "not-found") and res.json()["error"]["kind"] == "not-found"
