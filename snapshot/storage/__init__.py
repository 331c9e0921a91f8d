"""Storage backends and the one function that picks one from a repository location."""

from __future__ import annotations

from snapshot.errors import UsageError
from snapshot.storage.base import ObjectInfo, RequestStats, Store, StoreOptions
from snapshot.storage.local import LocalStore

__all__ = ["ObjectInfo", "RequestStats", "Store", "StoreOptions", "LocalStore", "open_store"]


def open_store(location: str, options: StoreOptions | None = None) -> Store:
    """``/path``, ``./rel``, ``file:///path`` -> LocalStore; ``s3://bucket/prefix`` -> S3Store."""
    options = options or StoreOptions()
    if not location:
        raise UsageError("no repository given: pass --repo or set CHROMA_SNAPSHOT_REPO")
    if location.startswith("s3://"):
        from snapshot.storage.s3 import S3Store  # boto3 is imported only when needed

        return S3Store.from_url(location, options)
    if location.startswith("file://"):
        path = location[len("file://") :]
        if not path.startswith("/"):
            raise UsageError(f"file URL must hold an absolute path: {location}")
        return LocalStore(path)
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise UsageError(f"unsupported repository scheme {scheme!r} in {location} (use a path or s3://)")
    return LocalStore(location)
