"""Opening an existing repository with settings that apply only when one is initialised: the
same settings pass, other ones are refused naming the setting, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshot import Repository
from snapshot.errors import UsageError
from snapshot.format.manifest import LockSetting


@pytest.fixture
def location(tmp_path: Path) -> Path:
    Repository.open(tmp_path / "repo", create=True, chunk_size=1 << 16, codec="gzip")
    return tmp_path / "repo"


def _contents(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_its_own_settings_pass(location: Path) -> None:
    repo = Repository.open(location, chunk_size=1 << 16, codec="gzip")
    assert (repo.config.chunk_size, repo.config.codec) == (1 << 16, "gzip")


@pytest.mark.parametrize(("settings", "named"), [
    ({"chunk_size": 1 << 17}, "this repository's chunk size is 65536; --chunk-size applies only"),
    ({"codec": "zstd"}, "this repository's codec is gzip; --codec applies only"),
    ({"encrypt": True}, "exists and is not encrypted; --encrypt applies only"),
    ({"object_lock": LockSetting("GOVERNANCE", 7)}, "this repository's Object Lock is none; --object-lock-days"),
])
def test_other_settings_are_refused_and_nothing_is_written(location: Path, settings: dict, named: str) -> None:
    before = _contents(location)
    with pytest.raises(UsageError, match=named):
        Repository.open(location, create=True, **settings)
    assert _contents(location) == before
