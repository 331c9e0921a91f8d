"""Storage backends, and the one function that picks one from a repository location.

A location is ``scheme://...`` or a path (a path is the ``file`` backend). :data:`BACKENDS`
maps each scheme to the module of its backend, which provides
``open_location(location, options) -> Store``; that module is imported only when a location
names its scheme (boto3 alone takes longer to import than a local command runs). Adding a
backend is a folder (or module) here and one line in :data:`BACKENDS` (README: Development).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from snapshot.errors import UsageError
from snapshot.storage.base import (
    ARCHIVE_CLASSES,
    LOCKED_KINDS,
    ArchiveState,
    Capabilities,
    ColdClass,
    ObjectInfo,
    ObjectKind,
    ObjectLock,
    ObjectVersion,
    RequestStats,
    Store,
)
from snapshot.storage.local import LocalStore
from snapshot.storage.s3.options import S3Options

__all__ = [
    "ARCHIVE_CLASSES", "LOCKED_KINDS", "ArchiveState", "BACKENDS", "Capabilities", "ColdClass",
    "LocalStore", "ObjectInfo", "ObjectKind", "ObjectLock", "ObjectVersion", "RequestStats", "Store",
    "StoreOptions", "open_store",
]


@dataclass(frozen=True)
class StoreOptions(S3Options):
    """The options of every backend that takes any (a local folder takes none), as one object:
    the CLI and the Python API pass it whatever the location, and each backend reads its own
    fields. A backend with options adds its options dataclass to the bases. Today: S3's
    (:class:`snapshot.storage.s3.options.S3Options`)."""


#: scheme -> the module whose ``open_location(location, options)`` opens a store there.
BACKENDS: dict[str, str] = {
    "file": "snapshot.storage.local",
    "s3": "snapshot.storage.s3",
}


def open_store(location: str, options: StoreOptions | None = None) -> Store:
    """The store at ``location``: ``/path``, ``./rel`` or ``file:///path`` a local folder,
    ``s3://bucket/prefix`` S3; any other ``scheme://`` is a UsageError."""
    if not location:
        raise UsageError("no repository given: pass --repo or set CHROMA_SNAPSHOT_REPO")
    scheme = location.split("://", 1)[0] if "://" in location else "file"
    if scheme not in BACKENDS:
        remote = " or ".join(f"{s}://" for s in BACKENDS if s != "file")
        raise UsageError(f"unsupported repository scheme {scheme!r} in {location} (use a path or {remote})")
    opener: Callable[[str, StoreOptions], Store] = importlib.import_module(BACKENDS[scheme]).open_location
    return opener(location, options or StoreOptions())
