"""Versions and Object Lock on an S3 bucket, for :class:`~snapshot.storage.s3.store.S3Store`.

A bucket created with Object Lock keeps versions: a plain DELETE only adds a delete marker, an
overwrite a new version, and a version under retention cannot be deleted (by anyone, in
COMPLIANCE mode; without ``s3:BypassGovernanceRetention``, in GOVERNANCE mode) before its
retain-until date. S3 requires a checksum (or Content-MD5) on every PUT that sets a retention:
:func:`lock_args` asks botocore for a CRC32 explicitly, so that it is sent also when the
store's checksum mode is ``when_required`` (which sends none of its own).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from snapshot.errors import UsageError
from snapshot.storage.base import ObjectLock, ObjectVersion

#: The :class:`~snapshot.storage.s3.store.S3Store` these functions serve (its client, bucket,
#: prefix and request accounting); not imported, since the store imports this module.
S3Store = Any

DAY = 86400.0


def lock_args(lock: ObjectLock, now: float) -> dict[str, Any]:
    """The PutObject (and CreateMultipartUpload, CopyObject) parameters of ``lock``, the
    retain-until date counted from ``now`` (the store's clock)."""
    until = datetime.datetime.fromtimestamp(now + lock.days * DAY, datetime.timezone.utc)
    return {"ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": until, "ChecksumAlgorithm": "CRC32"}


def require_object_lock(store: S3Store) -> None:
    """UsageError unless the bucket has Object Lock enabled (one GetObjectLockConfiguration)."""
    with store._request("lock_config", "the bucket's Object Lock configuration"):
        try:
            answer: dict[str, Any] = store._client.get_object_lock_configuration(Bucket=store.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
                raise
            answer = {}
    enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
    if not enabled:
        raise UsageError(
            f"bucket {store.bucket} does not have Object Lock enabled: create it with Object Lock "
            "(aws s3api create-bucket --object-lock-enabled-for-bucket) or enable it on the versioned "
            "bucket (aws s3api put-object-lock-configuration), then run init again"
        )


def retention(store: S3Store, full: str, key: str) -> float | None:
    """Until when the current version of ``full`` is retained (HeadObject shows the date only to
    credentials allowed ``s3:GetObjectRetention``)."""
    with store._request("head", key):
        head: dict[str, Any] = store._client.head_object(Bucket=store.bucket, Key=full)
    until = head.get("ObjectLockRetainUntilDate")
    return until.timestamp() if isinstance(until, datetime.datetime) else None


def versioning(store: S3Store) -> str | None:
    """The bucket's versioning status; None also for a store that does not implement the call
    (some S3-compatible stores keep no versions)."""
    with store._request("versioning", "the bucket's versioning"):
        try:
            answer: dict[str, Any] = store._client.get_bucket_versioning(Bucket=store.bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if exc.response.get("Error", {}).get("Code") != "NotImplemented" and status != 501:
                raise
            return None
    status = answer.get("Status")
    return str(status) if status else None


def versions(store: S3Store, prefix: str) -> Iterator[ObjectVersion]:
    """Every version and delete marker under ``prefix`` (ListObjectVersions, a page at a time)."""
    base = f"{store.prefix}/" if store.prefix else ""
    kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": base + prefix,
                              "MaxKeys": store.list_page_size}
    while True:
        with store._request("list_versions", repr(prefix)):
            page: dict[str, Any] = store._client.list_object_versions(**kwargs)
        for entry, deleted in [(v, False) for v in page.get("Versions", [])] + [
            (d, True) for d in page.get("DeleteMarkers", [])
        ]:
            yield ObjectVersion(
                key=str(entry["Key"])[len(base):], version_id=str(entry.get("VersionId") or "null"),
                size=int(entry.get("Size") or 0), mtime=float(entry["LastModified"].timestamp()),
                latest=bool(entry.get("IsLatest")), deleted=deleted, etag=str(entry.get("ETag") or ""),
            )
        if not page.get("IsTruncated"):
            return
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]


def copy_back(store: S3Store, full: str, key: str, version_id: str, extra: dict[str, Any]) -> None:
    """Copy version ``version_id`` of ``full`` onto itself (a server-side copy: nothing is
    downloaded; above the multipart threshold, in parts), then give the copy the retention
    ``extra`` names, if any (a copy has no body to checksum, which some stores then refuse to
    retain in the same request)."""
    source = {"Bucket": store.bucket, "Key": full, "VersionId": version_id}
    retain = {k: extra.pop(k) for k in ("ObjectLockMode", "ObjectLockRetainUntilDate") if k in extra}
    extra.pop("ChecksumAlgorithm", None)
    with store._request("copy", key, count=2):  # the source's HeadObject, then the copy
        store._client.copy(source, store.bucket, full, ExtraArgs=extra, Config=store._transfer)
    if retain:
        with store._request("retention", key):
            store._client.put_object_retention(Bucket=store.bucket, Key=full, Retention={
                "Mode": retain["ObjectLockMode"], "RetainUntilDate": retain["ObjectLockRetainUntilDate"]})
