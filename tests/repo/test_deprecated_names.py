"""Names the Python API had before 0.3 still work, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import pytest

from snapshot.repo import config
from snapshot.repo.config import OpenedConfig
from snapshot.repo.repository import Repository


def test_access_is_the_opened_config(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match="OpenedConfig"):
        assert config.Access is OpenedConfig
    with warnings.catch_warnings():  # the module's old name warns too (once per process)
        warnings.simplefilter("ignore", DeprecationWarning)
        old_module = importlib.import_module("snapshot.repoconfig")
    with pytest.warns(DeprecationWarning, match="OpenedConfig"):
        access = old_module.Access
    repo = Repository.open(tmp_path / "repo", create=True)
    again = Repository(repo.store, repo.config, access(repo.config))
    assert again.snapshot_ids() == [] and not again.encrypted
    with pytest.raises(AttributeError, match="no attribute 'Acess'"):
        _ = config.Acess  # type: ignore[attr-defined]
