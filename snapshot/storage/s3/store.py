"""The S3 store: a repository under ``s3://bucket/prefix``, keys as objects ``prefix/key``.

Before its first request a store makes one cheap ``HeadBucket`` probe through a client that
retries once with short timeouts, so a missing bucket, missing credentials or an unreachable
endpoint fail at once (a black-holed endpoint in about six seconds) instead of after the main
client's retries and backoff. The probe also makes a 404 from ``HeadObject`` mean "no such key"
rather than "maybe no such bucket". Only a definite answer from the probe is final; a transient
one (a 5xx, a cut connection) is asked again through the main client and its retries.

botocore retries a request until its response headers arrive, and re-requests a non-streaming
response whose XML is cut off, but not a GET whose body is cut off while it is read, nor one
whose body fails the checksum S3 sent with it, nor a response cut to zero bytes (which would
parse as an empty listing). So :meth:`S3Store.get` and :meth:`S3Store.get_range` re-request a
body that breaks off, comes up short or fails its checksum, up to ``max_attempts`` times with
jittered exponential backoff, and a short non-streaming body is turned into a 500 for botocore's
own retries (:mod:`snapshot.storage.s3.client`). A response that never arrives whole and intact
is a :class:`StorageError`; :class:`IntegrityError` is kept for an object S3 says is too short.
A create-only put whose outcome is unknown (an attempt's response lost, then a 412 or an
error) succeeds if the key holds exactly our bytes: such keys are unique to their writer.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError, ConnectionClosedError, IncompleteReadError
from s3transfer.utils import ChunksizeAdjuster  # type: ignore[import-untyped]

from snapshot.errors import AccessDeniedError, IntegrityError, NotFoundError, SnapshotError, StorageError
from snapshot.storage.base import (
    ARCHIVE_CLASSES,
    LOCKED_KINDS,
    ArchiveState,
    Capabilities,
    ObjectInfo,
    ObjectKind,
    ObjectLock,
    ObjectVersion,
    RequestStats,
)
from snapshot.storage.link import Link
from snapshot.storage.s3 import classes, versions
from snapshot.storage.s3.client import build_clients, known_storage_classes, transfer_config
from snapshot.storage.s3.location import parse_s3_url
from snapshot.storage.s3.options import S3Options, sse_args
from snapshot.storage.s3.translate import (
    AWS_ERRORS,
    CUT_OFF,
    GARBLED,
    is_missing,
    outcome_unknown,
    transient,
    translate_error,
)

MiB = 1024 * 1024
#: Any key does for :meth:`S3Store.now`'s one request: only the Date of the answer is used.
_CLOCK_KEY = "config.json"

#: Checks a GetObject response and its body (see :meth:`S3Store._get_object`).
_BodyCheck = Callable[[dict[str, Any], bytes], None]


@dataclass
class _Request:
    """What one counted request moved; filled in by the caller inside ``_request``."""

    down: int = 0


class S3Store:
    """Store keys as objects ``prefix/key`` in one S3 bucket (see module docstring)."""

    #: Keys per ListObjectsV2 page (S3's maximum; tests lower it to exercise paging).
    list_page_size = 1000
    #: Backoff before re-requesting a cut-off body: uniform in [0, base * 2**(n-1)], capped;
    #: botocore's own scale for errors that are not throttling.
    retry_base_delay = 0.05
    retry_max_delay = 20.0

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        options: S3Options | None = None,
        *,
        multipart_threshold: int = 32 * MiB,
        multipart_chunksize: int = 16 * MiB,
    ) -> None:
        self.options = options = options or S3Options()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.stats = RequestStats()
        self._sse = sse_args(options)
        self._transfer = transfer_config(
            options, multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize
        )
        clients = build_clients(options, self.url, bucket)
        self._client: Any = clients.main
        self._probe: Any = clients.probe
        self._storage_class = classes.check_storage_class(
            options.storage_class, known_storage_classes(self._client)
        )
        #: Fed every GET, range GET and PUT; says how many the layers above keep in flight.
        self.link = Link()
        self._capabilities = Capabilities(cold_class=classes.cold_class(self._storage_class), versions=True,
                                          link=self.link)
        #: The Object Lock retention given to objects of LOCKED_KINDS (the repository's config says).
        self._lock: ObjectLock | None = None
        for client in (self._client, self._probe):
            client.meta.events.register("after-call.s3", self._note_date)
        #: The store's clock minus ours, from the Date header of the last response.
        self._clock_offset: float | None = None
        self._clock_last = 0.0
        self.endpoint: str | None = self._client.meta.endpoint_url
        self._ready = False
        self._ready_lock = threading.Lock()

    def _note_date(self, http_response: Any = None, **_: Any) -> None:
        """Keep the offset between S3's clock (the one that stamps LastModified) and ours."""
        date = getattr(http_response, "headers", {}).get("Date") if http_response is not None else None
        if not date:
            return
        try:
            server = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        # Date has whole seconds and was stamped up to a second before we read it.
        self._clock_offset = server + 0.5 - time.time()

    def now(self) -> float:
        """S3's clock (see :meth:`_note_date`); one cheap request if nothing was asked yet."""
        if self._clock_offset is None:
            with contextlib.suppress(SnapshotError):
                self.exists(_CLOCK_KEY)
        now = time.time() + (self._clock_offset or 0.0)
        # Date has whole seconds, so the offset moves by up to a second between responses: the
        # clock this process reads never goes back (an age measured with it is never negative).
        with self._ready_lock:
            self._clock_last = max(now, self._clock_last)
            return self._clock_last

    @classmethod
    def from_url(cls, url: str, options: S3Options | None = None) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, options)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- plumbing -------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid storage key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(
        self, exc: BaseException, op: str, what: str, *, attempts: int | None = None, **flags: bool
    ) -> SnapshotError:
        return translate_error(
            exc, op=op, what=what, bucket=self.bucket, endpoint=self.endpoint, attempts=attempts, **flags
        )

    @contextmanager
    def _request(
        self, kind: str, key: str, *, up: int = 0, count: int = 1, create_only: bool = False
    ) -> Iterator[_Request]:
        """Count ``count`` requests of ``kind`` and translate whatever the body raises."""
        req = _Request()
        try:
            yield req
        except AWS_ERRORS as exc:
            raise self._error(exc, kind, f"{key} in {self.url}", create_only=create_only) from exc
        finally:
            for i in range(count):
                self.stats.add(kind, up=up if i == 0 else 0, down=req.down if i == 0 else 0)

    def check_bucket(self) -> None:
        """One ``HeadBucket`` through the low-retry client (again through the main client if
        the answer was only transient): raises if the bucket is unusable."""
        self.stats.add("head")
        try:
            try:
                self._probe.head_bucket(Bucket=self.bucket)
            except (ClientError, ConnectionClosedError) as exc:
                if not transient(exc):
                    raise
                self.stats.add("head")
                self._client.head_bucket(Bucket=self.bucket)
        except AWS_ERRORS as exc:
            raise self._error(exc, "open", f"repository {self.url}", bucket_level=True) from exc
        self._ready = True

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            try:
                self.check_bucket()
            except AccessDeniedError:
                # Policies granting only object actions deny HeadBucket; the object
                # requests themselves will say whether they are allowed.
                self._ready = True

    def _put_args(self, kind: ObjectKind, size: int) -> dict[str, Any]:
        args: dict[str, Any] = dict(self._sse)
        storage_class = classes.class_for(kind, size, self._storage_class)
        if storage_class is not None:
            args["StorageClass"] = storage_class
        if self._lock is not None and kind in LOCKED_KINDS:
            args.update(versions.lock_args(self._lock, self.now()))
        return args

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, base * 2**(attempt-1)], capped."""
        return random.uniform(0.0, min(self.retry_max_delay, self.retry_base_delay * 2 ** (attempt - 1)))

    def _get_object(self, kind: str, key: str, check: _BodyCheck | None = None, **params: Any) -> bytes:
        """GetObject's whole body, re-requested while the body breaks off, comes up short or
        fails its checksum.

        ``check(response, data)`` may raise :class:`IncompleteReadError` for a body shorter than
        wanted (retried) or a :class:`SnapshotError` (final). Every attempt counts as a request;
        failures before the body (5xx, resets, timeouts) are botocore's to retry.
        """
        full = self._full(key)
        self._ensure_ready()
        attempts, attempt = max(1, self.options.max_attempts), 1
        while True:
            with self._request(kind, key) as req, self.link.down.timing() as timing:
                response: dict[str, Any] = self._client.get_object(Bucket=self.bucket, Key=full, **params)
                timing.first_byte()  # the headers are in; the body is read below
                body = response["Body"]
                try:
                    data: bytes = body.read()
                    req.down = len(data)
                    if check is not None:
                        check(response, data)
                    timing.done(len(data))
                    return data
                except (*CUT_OFF, *GARBLED) as exc:
                    body.close()
                    if attempt >= attempts:
                        raise self._error(exc, kind, f"{key} in {self.url}", attempts=attempts) from exc
            time.sleep(self._backoff(attempt))
            attempt += 1

    # -- the Store protocol ---------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self._get_object("get", key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._full(key)
        if offset < 0 or length < 0:
            raise StorageError(f"get_range {key} in {self.url}: invalid range {offset}+{length}")
        if length == 0:
            if not self.exists(key):
                raise NotFoundError(f"get_range {key} in {self.url}: object not found")
            return b""
        end = offset + length

        def check(response: dict[str, Any], data: bytes) -> None:
            # What S3 says of the object decides IntegrityError; fewer bytes than it promised
            # is a cut-off response, re-requested.
            content_range = str(response.get("ContentRange") or "")  # "bytes 0-9/1234"
            first, _, rest = content_range.removeprefix("bytes ").partition("-")
            total = rest.partition("/")[2]
            size: int | None
            if content_range and first.isdigit() and int(first) == offset:
                size = int(total) if total.isdigit() else None
            elif not content_range and offset == 0 and len(data) <= length:
                size = len(data)  # a 200: the whole object, shorter than the range
            else:
                raise StorageError(f"get_range {key} in {self.url}: the server ignored the Range header")
            if size is not None and size < end:
                raise IntegrityError(
                    f"object {key} is truncated: wanted bytes {offset}..{end}, it holds {size}"
                )
            if len(data) != length:
                raise IncompleteReadError(actual_bytes=len(data), expected_bytes=length)

        return self._get_object("get_range", key, check, Range=f"bytes={offset}-{end - 1}")

    def put(self, key: str, data: bytes | bytearray, *, kind: ObjectKind, create_only: bool = False) -> None:
        full = self._full(key)
        self._ensure_ready()
        size = len(data)
        extra = self._put_args(kind, size)
        if create_only or size < self._transfer.multipart_threshold:
            # One PutObject: exactly what upload_fileobj would send below the threshold,
            # without a transfer thread pool per call.
            conditional = {"IfNoneMatch": "*"} if create_only else {}
            try:
                with self._request("put", key, up=size, create_only=create_only), \
                        self.link.up.timing() as timing:
                    self._client.put_object(Bucket=self.bucket, Key=full, Body=data, **conditional, **extra)
                    timing.done(size)
            except StorageError as exc:
                if not (create_only and self._landed_anyway(exc, key, data)):
                    raise
            return
        with self._request("put", key, up=size, count=self.put_requests(size)), \
                self.link.up.timing() as timing:
            self._client.upload_fileobj(
                io.BytesIO(data), self.bucket, full, ExtraArgs=extra, Config=self._transfer
            )
            timing.done(size)

    def put_requests(self, size: int, *, create_only: bool = False) -> int:
        """The requests :meth:`put` makes for ``size`` bytes when nothing fails (a prediction's)."""
        if create_only or size < self._transfer.multipart_threshold:
            return 1
        chunk = ChunksizeAdjuster().adjust_chunksize(self._transfer.multipart_chunksize, size)
        return math.ceil(size / int(chunk)) + 2  # create + parts + complete

    def _landed_anyway(self, exc: StorageError, key: str, data: bytes | bytearray) -> bool:
        """Whether a failed create-only put wrote our bytes after all. Only asked when its
        outcome is unknown: an attempt's response may have been lost (it was retried, or the
        connection broke) or the server failed (5xx). Keys written create-only are unique to
        their writer, so finding exactly our bytes there means one of our attempts landed."""
        if not outcome_unknown(exc.__cause__):
            return False
        try:
            return self.get(key) == data
        except SnapshotError:
            return False

    def exists(self, key: str) -> bool:
        full = self._full(key)
        self._ensure_ready()
        with self._request("head", key):
            try:
                self._client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if is_missing(exc):
                    return False
                raise
        return True

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Keys under ``prefix``, in S3's order (UTF-8 byte order = code point order)."""
        self._ensure_ready()
        base = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": base + prefix,
                "MaxKeys": self.list_page_size,
            }
            if token:
                kwargs["ContinuationToken"] = token
            with self._request("list", repr(prefix)):
                page: dict[str, Any] = self._client.list_objects_v2(**kwargs)
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=str(obj["Key"])[len(base) :],
                    size=int(obj["Size"]),
                    mtime=float(obj["LastModified"].timestamp()),
                    storage_class=str(obj.get("StorageClass") or "STANDARD"),
                )
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def archive_state(self, key: str) -> ArchiveState | None:
        """From HeadObject's ``StorageClass`` and ``Restore`` (``ongoing-request="false",
        expiry-date="..."`` once a restored copy is readable)."""
        full = self._full(key)
        self._ensure_ready()
        with self._request("head", key):
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=full)
        storage_class = str(head.get("StorageClass") or "STANDARD")
        if storage_class not in ARCHIVE_CLASSES:
            return None
        restore = str(head.get("Restore") or "")
        if not restore:
            return ArchiveState(storage_class, "archived")
        if 'ongoing-request="true"' in restore:
            return ArchiveState(storage_class, "restoring")
        expiry = restore.split('expiry-date="', 1)[1].split('"', 1)[0] if "expiry-date=" in restore else None
        return ArchiveState(storage_class, "restored", expiry)

    def request_restore(self, key: str, *, days: int, tier: str) -> None:
        full = self._full(key)
        self._ensure_ready()
        try:
            with self._request("restore", key):
                self._client.restore_object(Bucket=self.bucket, Key=full, RestoreRequest={
                    "Days": days, "GlacierJobParameters": {"Tier": tier}})
        except StorageError as exc:
            if "RestoreAlreadyInProgress" not in str(exc):
                raise

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._ensure_ready()
        with self._request("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=full)

    # -- versions and Object Lock (snapshot/storage/s3/versions.py) -----------------------

    def use_object_lock(self, lock: ObjectLock | None, *, check_bucket: bool = False) -> None:
        if lock is not None and check_bucket:
            self._ensure_ready()
            versions.require_object_lock(self)
        self._lock = lock

    def retention(self, key: str) -> float | None:
        full = self._full(key)
        self._ensure_ready()
        return versions.retention(self, full, key)

    def versioning(self) -> str | None:
        self._ensure_ready()
        return versions.versioning(self)

    def versions(self, prefix: str) -> Iterator[ObjectVersion]:
        self._ensure_ready()
        return versions.versions(self, prefix)

    def copy_back(self, key: str, version_id: str, *, kind: ObjectKind, size: int) -> None:
        full = self._full(key)
        self._ensure_ready()
        versions.copy_back(self, full, key, version_id, self._put_args(kind, size))
