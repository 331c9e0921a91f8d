"""chroma-snapshot: versioned, verified, incremental snapshots of ChromaDB persist dirs.

    from snapshot import Repository
    repo = Repository.open("./snapshots", create=True)
    result = repo.create("data/vector_db", tags=["nightly"])
    repo.restore("latest", "/srv/app/vector_db", force=True)
"""

from __future__ import annotations

__version__ = "0.1.0"

from snapshot.errors import SnapshotError
from snapshot.manifest import Manifest
from snapshot.repository import Repository, SnapshotSummary
from snapshot.storage import StoreOptions

__all__ = ["Manifest", "Repository", "SnapshotError", "SnapshotSummary", "StoreOptions", "__version__"]
