"""The repository tells its store what kind of object each write is: a store never reads
meaning into a key (an S3 store picks a pack's storage class by its kind alone)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from snapshot import storage
from snapshot.create.pipeline import create_snapshot
from snapshot.repo.keys import KeySource
from snapshot.repo.repository import Repository
from snapshot.storage import LocalStore, ObjectKind, Store, StoreOptions


class RecordingStore(LocalStore):
    """A local store noting the kinds it was told, by the first component of the key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.kinds: dict[str, set[ObjectKind]] = {}

    def put(self, key: str, data: bytes | bytearray, *, kind: ObjectKind, create_only: bool = False) -> None:
        self.kinds.setdefault(key.split("/")[0], set()).add(kind)
        super().put(key, data, kind=kind, create_only=create_only)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[RecordingStore]:
    """Every store opened at ``rec://NAME`` (a backend added through the registry)."""
    opened: list[RecordingStore] = []

    def open_location(location: str, options: StoreOptions) -> Store:
        opened.append(RecordingStore(tmp_path / location.removeprefix("rec://")))
        return opened[-1]

    module = types.ModuleType("recording_backend")
    module.open_location = open_location  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "recording_backend", module)
    monkeypatch.setitem(storage.BACKENDS, "rec", "recording_backend")
    return opened


def test_every_write_names_its_kind(recording: list[RecordingStore], chroma_dir: Path) -> None:
    repo = Repository.open("rec://repo", create=True, encrypt=True, key_source=KeySource.of("pw"))
    create_snapshot(repo, chroma_dir)
    [m] = repo.manifests()
    repo.replace_manifest(m)  # what a repack does to a kept root
    oid = next(oid for oid, _ in repo.list_objects() if oid)
    repo.condemn({oid: repo.now()}, delete_after=0)

    [store] = recording
    assert store.kinds == {
        "config.json": {ObjectKind.CONFIG},
        "keys": {ObjectKind.KEY},
        "locks": {ObjectKind.LOCK},
        "data": {ObjectKind.PACK},
        "snapshots": {ObjectKind.ROOT},
        "condemned": {ObjectKind.CONDEMNED},
    }
