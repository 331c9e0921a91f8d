"""chroma-snapshot: versioned, verified, incremental snapshots of ChromaDB persist dirs.

    import snapshot
    repo = snapshot.Repository.open("./snapshots", create=True)
    result = snapshot.create_snapshot(repo, "data/vector_db", tags=["nightly"])
    snapshot.restore_snapshot(repo, "latest", "/srv/app/vector_db", force=True)
"""

from __future__ import annotations

from snapshot.check import check_repository
from snapshot.create import create_snapshot
from snapshot.diff import diff_snapshots
from snapshot.errors import SnapshotError
from snapshot.keys import KeySource
from snapshot.manifest import Manifest
from snapshot.prune import forget as forget_snapshots
from snapshot.prune import prune as prune_snapshots
from snapshot.repository import Repository, SnapshotSummary
from snapshot.restore import prepare_restore, restore_snapshot
from snapshot.retention import RetentionPolicy
from snapshot.storage import StoreOptions
from snapshot.version import __version__

__all__ = [
    "KeySource",
    "Manifest",
    "Repository",
    "RetentionPolicy",
    "SnapshotError",
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
