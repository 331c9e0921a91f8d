"""The Python API survives the move of modules into layer folders: every old module name still
imports (with a DeprecationWarning naming the new place) and is the very same module, and the
operation packages keep their public names."""

from __future__ import annotations

import importlib
import warnings

import pytest

import snapshot

OLD_NAMES = sorted(snapshot._MOVED)


@pytest.mark.parametrize("old", OLD_NAMES)
def test_an_old_module_name_is_the_moved_module(old: str) -> None:
    new = importlib.import_module("snapshot." + snapshot._MOVED[old])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        moved = importlib.import_module(f"snapshot.{old}")
    assert moved is new
    assert getattr(snapshot, old) is new


def test_importing_an_old_name_warns_where_it_went() -> None:
    import sys

    sys.modules.pop("snapshot.repository", None)
    with pytest.warns(DeprecationWarning, match=r"snapshot\.repository is now snapshot\.repo\.repository"):
        from snapshot.repository import Repository
    assert Repository is snapshot.Repository


def test_the_new_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from snapshot.create import create_snapshot
        from snapshot.repo.repository import Repository
        from snapshot.restore import prepare_restore, restore_snapshot
    assert create_snapshot is snapshot.create_snapshot
    assert restore_snapshot is snapshot.restore_snapshot
    assert prepare_restore is snapshot.prepare_restore
    assert Repository is snapshot.Repository


def test_an_unknown_name_is_still_an_import_error() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("snapshot.no_such_module")
    with pytest.raises(AttributeError, match="no attribute"):
        snapshot.create.no_such_name  # noqa: B018


def test_every_moved_module_exists_where_the_map_says() -> None:
    for old, new in snapshot._MOVED.items():
        assert importlib.util.find_spec("snapshot." + new) is not None, (old, new)
        assert importlib.util.find_spec(f"snapshot.{new.split('.')[0]}") is not None
