"""chroma-snapshot: versioned, verified, incremental snapshots of ChromaDB persist dirs.

    import snapshot
    repo = snapshot.Repository.open("./snapshots", create=True)
    result = snapshot.create_snapshot(repo, "data/vector_db", tags=["nightly"])
    snapshot.restore_snapshot(repo, "latest", "/srv/app/vector_db", force=True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from snapshot.errors import SnapshotError
from snapshot.version import __version__

#: Public name -> (module, attribute): imported on first use, so that a command (or a program
#: that needs one function) does not pay for importing every other one at start-up.
_LAZY = {
    "KeySource": ("snapshot.keys", "KeySource"),
    "Manifest": ("snapshot.manifest", "Manifest"),
    "Repository": ("snapshot.repository", "Repository"),
    "RetentionPolicy": ("snapshot.retention", "RetentionPolicy"),
    "SnapshotFilter": ("snapshot.selection", "SnapshotFilter"),
    "SnapshotSummary": ("snapshot.repository", "SnapshotSummary"),
    "StoreOptions": ("snapshot.storage", "StoreOptions"),
    "check_repository": ("snapshot.check", "check_repository"),
    "create_snapshot": ("snapshot.create", "create_snapshot"),
    "diff_snapshots": ("snapshot.diff", "diff_snapshots"),
    "forget_snapshots": ("snapshot.prune", "forget"),
    "prepare_restore": ("snapshot.restore", "prepare_restore"),
    "prune_snapshots": ("snapshot.prune", "prune"),
    "restore_snapshot": ("snapshot.restore", "restore_snapshot"),
}


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
    from snapshot.check import check_repository
    from snapshot.create import create_snapshot
    from snapshot.diff import diff_snapshots
    from snapshot.keys import KeySource
    from snapshot.manifest import Manifest
    from snapshot.prune import forget as forget_snapshots
    from snapshot.prune import prune as prune_snapshots
    from snapshot.repository import Repository, SnapshotSummary
    from snapshot.restore import prepare_restore, restore_snapshot
    from snapshot.retention import RetentionPolicy
    from snapshot.selection import SnapshotFilter
    from snapshot.storage import StoreOptions

__all__ = [
    "KeySource",
    "Manifest",
    "Repository",
    "RetentionPolicy",
    "SnapshotError",
    "SnapshotFilter",
    "SnapshotSummary",
    "StoreOptions",
    "__version__",
    "check_repository",
    "create_snapshot",
    "diff_snapshots",
    "forget_snapshots",
    "prepare_restore",
    "prune_snapshots",
    "restore_snapshot",
]
