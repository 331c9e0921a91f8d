"""chroma-snapshot: versioned, verified, incremental snapshots of ChromaDB persist dirs.

    import snapshot
    repo = snapshot.Repository.open("./snapshots", create=True)
    result = snapshot.create_snapshot(repo, "data/vector_db", tags=["nightly"])
    snapshot.restore_snapshot(repo, "latest", "/srv/app/vector_db", force=True)
    snapshot.restore_collection(repo, "latest", "/tmp/tenant42", ["tenant-42"])
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any

from snapshot.errors import SnapshotError
from snapshot.version import __version__

#: Public name -> (module, attribute): imported on first use, so that a command (or a program
#: that needs one function) does not pay for importing every other one at start-up.
_LAZY = {
    "CopyOptions": ("snapshot.copy.pipeline", "CopyOptions"),
    "CreateOptions": ("snapshot.create.options", "CreateOptions"),
    "ExportResult": ("snapshot.restore.export", "ExportResult"),
    "KeySource": ("snapshot.repo.keys", "KeySource"),
    "Manifest": ("snapshot.format.manifest", "Manifest"),
    "PruneOptions": ("snapshot.upkeep.options", "PruneOptions"),
    "RepackOptions": ("snapshot.upkeep.repack", "RepackOptions"),
    "Repository": ("snapshot.repo.repository", "Repository"),
    "RestoreOptions": ("snapshot.restore.options", "RestoreOptions"),
    "RetentionPolicy": ("snapshot.upkeep.retention", "RetentionPolicy"),
    "SnapshotFilter": ("snapshot.repo.selection", "SnapshotFilter"),
    "SnapshotSummary": ("snapshot.repo.repository", "SnapshotSummary"),
    "StoreOptions": ("snapshot.storage", "StoreOptions"),
    "check_repository": ("snapshot.upkeep.verify", "check_repository"),
    "copy_snapshots": ("snapshot.copy.pipeline", "copy_snapshots"),
    "create_snapshot": ("snapshot.create.pipeline", "create_snapshot"),
    "diff_snapshots": ("snapshot.diff", "diff_snapshots"),
    "export_collection": ("snapshot.restore.export", "export_collection"),
    "forget_snapshots": ("snapshot.upkeep.prune", "forget"),
    "prepare_restore": ("snapshot.restore.pipeline", "prepare_restore"),
    "prune_snapshots": ("snapshot.upkeep.prune", "prune"),
    "restore_collection": ("snapshot.restore.collections", "restore_collection"),
    "restore_snapshot": ("snapshot.restore.pipeline", "restore_snapshot"),
}


#: Modules that moved from snapshot/ into the layer folders: importing the old name still works (with a
#: DeprecationWarning) and gives the module itself.
_MOVED = {
    "basecache": "repo.basecache", "builder": "create.builder", "chains": "format.chains",
    "check": "upkeep.verify", "chroma_check": "chroma.trial_open", "chroma_db": "chroma.schema",
    "chunking": "format.chunking", "compression": "format.codecs", "condemned": "format.condemned",
    "consistency": "chroma.consistency", "crypto": "format.crypto", "fsync": "util.fsync",
    "hashing": "format.hashing", "hooks": "util.pausepoints", "idmap": "chroma.idmap",
    "ids": "format.ids", "keys": "repo.keys", "layout": "format.layout", "locks": "repo.locks",
    "manifest": "format.manifest", "materialise": "restore.materialise", "packs": "repo.packs",
    "progress": "util.progress", "prune": "upkeep.prune", "repack": "upkeep.repack",
    "repair": "restore.repair", "repoconfig": "repo.config", "repository": "repo.repository",
    "retention": "upkeep.retention", "segcheck": "chroma.segments", "selection": "repo.selection",
    "source": "chroma.capture", "swap": "restore.swap", "tables": "format.chunk_tables",
    "target": "chroma.persist_dir", "tempdirs": "util.tempdirs",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``snapshot.<old name>`` to the module's new place."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        head, _, name = fullname.partition(".")
        if head != "snapshot" or name not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = "snapshot." + _MOVED[spec.name.partition(".")[2]]
        warnings.warn(f"{spec.name} is now {new}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'snapshot' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from snapshot.copy.pipeline import CopyOptions, copy_snapshots
    from snapshot.create.options import CreateOptions
    from snapshot.create.pipeline import create_snapshot
    from snapshot.diff import diff_snapshots
    from snapshot.format.manifest import Manifest
    from snapshot.repo.keys import KeySource
    from snapshot.repo.repository import Repository, SnapshotSummary
    from snapshot.repo.selection import SnapshotFilter
    from snapshot.restore.collections import restore_collection
    from snapshot.restore.export import ExportResult, export_collection
    from snapshot.restore.options import RestoreOptions
    from snapshot.restore.pipeline import prepare_restore, restore_snapshot
    from snapshot.storage import StoreOptions
    from snapshot.upkeep.options import PruneOptions
    from snapshot.upkeep.prune import forget as forget_snapshots
    from snapshot.upkeep.prune import prune as prune_snapshots
    from snapshot.upkeep.repack import RepackOptions
    from snapshot.upkeep.retention import RetentionPolicy
    from snapshot.upkeep.verify import check_repository

__all__ = [
    "CopyOptions",
    "CreateOptions",
    "ExportResult",
    "KeySource",
    "Manifest",
    "PruneOptions",
    "RepackOptions",
    "Repository",
    "RestoreOptions",
    "RetentionPolicy",
    "SnapshotError",
    "SnapshotFilter",
    "SnapshotSummary",
    "StoreOptions",
    "__version__",
    "check_repository",
    "copy_snapshots",
    "create_snapshot",
    "diff_snapshots",
    "export_collection",
    "forget_snapshots",
    "prepare_restore",
    "prune_snapshots",
    "restore_collection",
    "restore_snapshot",
]
