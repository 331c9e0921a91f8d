"""Storage backends and the one function that picks one from a repository location."""

from __future__ import annotations

from dataclasses import dataclass

from snapshot.errors import UsageError
from snapshot.storage.base import ObjectInfo, RequestStats, Store
from snapshot.storage.local import LocalStore

__all__ = ["ObjectInfo", "RequestStats", "Store", "StoreOptions", "LocalStore", "open_store"]


@dataclass(frozen=True)
class StoreOptions:
    """Options for remote stores; a local folder ignores them.

    ``None`` means "boto3's standard chain decides" (profile, region, endpoint from the
    environment or ~/.aws). ``sse`` is ``"AES256"``, ``"aws:kms"`` or ``"none"``.
    ``checksum`` is botocore's request/response checksum mode: ``"when_supported"`` (the
    default) or ``"when_required"`` for stores that reject flexible checksums.
    """

    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str = "STANDARD_IA"
    sse: str = "AES256"
    sse_kms_key_id: str | None = None
    checksum: str | None = None
    max_concurrency: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 5


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
