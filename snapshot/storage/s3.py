"""The S3 backend: a repository under ``s3://bucket/prefix``; the only module that imports boto3.

It owns three things: building the boto3 client from :class:`StoreOptions` (profile, region and
endpoint come from boto3's own chain unless given), choosing what each key is written with
(data keys get the cold storage class; every key gets the same server-side encryption), and
translating every boto3/botocore failure into a :mod:`snapshot.errors` class, once, here.

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
own retries. A response that never arrives whole and intact is a :class:`StorageError`;
:class:`IntegrityError` is kept for an object S3 says is too short.
A create-only put whose outcome is unknown (an attempt's response lost, then a 412 or an
error) succeeds if the key holds exactly our bytes: such keys are unique to their writer.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import io
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    EndpointResolutionError,
    FlexibleChecksumError,
    IncompleteReadError,
    InvalidRegionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
    SSOError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.utils import ChunksizeAdjuster  # type: ignore[import-untyped]
from urllib3.exceptions import HTTPError as URLLib3Error
from urllib3.exceptions import ProtocolError

from snapshot.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    BucketNotFoundError,
    CredentialsError,
    EndpointError,
    IntegrityError,
    NotFoundError,
    SnapshotError,
    StorageError,
    UsageError,
    WrongRegionError,
)
from snapshot.format import layout
from snapshot.storage.base import MIN_BILLED_SIZE, ObjectInfo, RequestStats, StoreOptions

MiB = 1024 * 1024

#: Everything the AWS libraries raise; OSError and urllib3's errors for what slips past botocore.
_AWS_ERRORS = (BotoCoreError, ClientError, Boto3Error, OSError, URLLib3Error)

#: What reading a GET body raises when the connection breaks off or the body comes up short.
_CUT_OFF = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ProtocolError, ConnectionError)
#: What reading a GET body raises when it is whole but fails the checksum S3 sent with it (a
#: whole-object GET of a key written with one; S3 sends none for a range).
_GARBLED = (FlexibleChecksumError,)

_CREDENTIAL_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)
_CREDENTIAL_CODES = {"ExpiredToken", "InvalidToken", "TokenRefreshRequired", "RequestExpired"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "301"}
_HOW_TO_CREDENTIALS = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --profile (or AWS_PROFILE), "
    "or configure ~/.aws/credentials"
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _safe_endpoint(url: str | None) -> str:
    """The endpoint for messages, without any user:password@ part; never raises, even for
    a URL that does not parse (a bad port, an unclosed IPv6 bracket)."""
    if not url:
        return "the default AWS endpoint"
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        netloc, slash, path = rest.partition("/")
        return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{path}".split("?")[0].split("#")[0]


def _ended_early(exc: BaseException) -> bool:
    """Whether a body read failed because the server closed the connection before the body's
    end (urllib3's IncompleteRead, wrapped by botocore) rather than resetting it."""
    inner: Any = exc.kwargs.get("error") if isinstance(exc, ResponseStreamingError) else exc
    args = inner.args if isinstance(inner, ProtocolError) else ()
    return any(isinstance(arg, http.client.IncompleteRead) for arg in args)


def translate_error(
    exc: BaseException,
    *,
    op: str,
    what: str,
    bucket: str,
    endpoint: str | None = None,
    bucket_level: bool = False,
    create_only: bool = False,
    attempts: int | None = None,
) -> SnapshotError:
    """The :mod:`snapshot.errors` exception for a boto3/botocore failure of ``op`` on ``what``.

    ``bucket_level`` says the request addressed the bucket (so a bare 404 means no bucket);
    ``create_only`` says a 412 means the key already exists; ``attempts`` says ``exc`` broke
    off a response body that many requests in a row. The caller raises the result
    ``from exc``. Messages carry the server's error code and text, never credentials.
    """
    head = f"{op} {what}"
    where = _safe_endpoint(endpoint)
    tries = f" ({attempts} attempts)" if attempts else ""
    if isinstance(exc, IncompleteReadError):
        got, wanted = exc.kwargs.get("actual_bytes"), exc.kwargs.get("expected_bytes")
        return StorageError(f"{head}: truncated response from {where}: {got} of {wanted} bytes{tries}")
    if attempts and isinstance(exc, _GARBLED):
        return StorageError(
            f"{head}: the response from {where} did not match the checksum S3 sent with it{tries}"
        )
    if attempts and _ended_early(exc):
        return StorageError(f"{head}: truncated response from {where}: the body ended early{tries}")
    if attempts and isinstance(exc, _CUT_OFF):
        return StorageError(f"{head}: connection cut off while reading the response from {where}{tries}")
    if isinstance(exc, EndpointResolutionError):
        if endpoint:
            return UsageError(f"{head}: bad S3 endpoint URL {where}: expected http(s)://host[:port]")
        return UsageError(f"{head}: {_one_line(str(exc))}")
    if isinstance(exc, _CREDENTIAL_ERRORS):
        detail = _one_line(str(exc))
        return CredentialsError(f"{head}: no usable AWS credentials ({detail}); {_HOW_TO_CREDENTIALS}")
    if isinstance(exc, ReadTimeoutError) and not bucket_level:
        return StorageError(f"{head}: S3 endpoint {where} stopped answering (read timeout)")
    if isinstance(exc, (BotoConnectionError, ReadTimeoutError)):
        kind = type(exc).__name__
        return EndpointError(f"{head}: cannot reach S3 endpoint {where} ({kind})")
    if isinstance(exc, (ResponseStreamingError, ProtocolError)):
        return StorageError(f"{head}: connection to {where} cut off ({type(exc).__name__})")
    if not isinstance(exc, ClientError):
        return StorageError(f"{head}: {type(exc).__name__}: {_one_line(str(exc))}")

    response: dict[str, Any] = getattr(exc, "response", None) or {}
    error: dict[str, Any] = response.get("Error") or {}
    meta: dict[str, Any] = response.get("ResponseMetadata") or {}
    headers: dict[str, Any] = meta.get("HTTPHeaders") or {}
    code = str(error.get("Code") or "")
    status = int(meta.get("HTTPStatusCode") or (code if code.isdigit() else 0))
    server = _one_line(str(error.get("Message") or "")) or "no message"
    said = f"{code or status}: {server}"

    if code in _CREDENTIAL_CODES:
        return CredentialsError(f"{head}: the credentials were refused ({said}); {_HOW_TO_CREDENTIALS}")
    if code in _REGION_CODES or status == 301:
        region = error.get("Region") or headers.get("x-amz-bucket-region")
        hint = f"it is in region {region}; pass --region {region}" if region else "pass its --region"
        return WrongRegionError(f"{head}: bucket {bucket} is in another region ({said}); {hint}")
    if code == "NoSuchBucket" or (status == 404 and bucket_level):
        return BucketNotFoundError(f"{head}: bucket {bucket} does not exist at {where}")
    if code in _DENIED_CODES or status == 403:
        return AccessDeniedError(f"{head}: access denied ({said}); check the credentials and policy")
    if code in ("NoSuchKey", "NotFound") or status == 404:
        return NotFoundError(f"{head}: object not found")
    if create_only and (code == "PreconditionFailed" or status == 412):
        return AlreadyExistsError(f"{head}: the key already exists")
    if code == _TRUNCATED_CODE:
        return StorageError(f"{head}: truncated response from {where}: {server}")
    if code == "InvalidRange" or status == 416:
        return IntegrityError(f"{head}: the requested range is beyond the end of the object")
    return StorageError(f"{head}: S3 error {said}")


#: The error code :func:`_fail_short_body` gives a response whose body came up short.
_TRUNCATED_CODE = "TruncatedResponse"


def _fail_short_body(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
    """A ``before-parse`` hook: a non-streaming body shorter than its Content-Length is a 500.

    botocore reads these bodies without enforcing the length and, like this hook, turns a
    200 whose XML is cut off into a 500 so its retries take over; but a body cut to nothing
    would parse as an empty (say, ListObjectsV2) result. HEAD answers carry no body.
    """
    body = response_dict.get("body")
    length = response_dict.get("headers", {}).get("content-length")
    if operation_model.http.get("method") == "HEAD" or not isinstance(body, bytes) or not length:
        return
    if length.isdigit() and len(body) < int(length):
        response_dict["status_code"] = 500
        response_dict["body"] = (
            f"<Error><Code>{_TRUNCATED_CODE}</Code><Message>{len(body)} of {length} bytes"
            "</Message></Error>"
        ).encode()


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; the prefix may be empty."""
    if not url.startswith("s3://"):
        raise UsageError(f"not an s3:// URL: {url}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if "@" in bucket:
        # Do not echo the URL: it may hold a secret.
        raise UsageError("credentials in an s3:// URL are not supported; use a profile or AWS_* variables")
    if not bucket or any(c in bucket for c in ":?#") or any(c in prefix for c in "?#"):
        raise UsageError(f"bad S3 repository URL {url!r}: expected s3://bucket/prefix")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(f"bad S3 repository prefix in {url!r}: empty, '.' or '..' component")
    return bucket, prefix


def _sse_args(options: StoreOptions) -> dict[str, str]:
    sse = options.sse.strip()
    if sse not in ("AES256", "aws:kms") and sse.lower() != "none":
        raise UsageError(f"unknown server-side encryption {options.sse!r} (use AES256, aws:kms or none)")
    if options.sse_kms_key_id and sse != "aws:kms":
        raise UsageError("--sse-kms-key-id needs --sse aws:kms")
    if sse.lower() == "none":
        return {}
    args = {"ServerSideEncryption": sse}
    if options.sse_kms_key_id:
        args["SSEKMSKeyId"] = options.sse_kms_key_id
    return args


def _storage_class(name: str, client: Any) -> str:
    """``name`` if S3 knows it (the classes of botocore's service model; empty means STANDARD):
    S3 would refuse it only at the first large pack, after the repository's config was written."""
    name = name.strip()
    known: list[str] = client.meta.service_model.shape_for("StorageClass").enum
    if name and name not in known:
        raise UsageError(f"unknown --storage-class {name!r} (S3 knows {', '.join(known)})")
    return name


def _client_config(options: StoreOptions, *, probe: bool = False) -> Any:
    """The main client's config, or the probe's: two tries, 3 s to connect, 10 s to answer.

    A refused port then fails the probe in well under a second, a black-holed one in about
    six (measured), whatever retries and timeouts the main client is given.
    """
    if options.checksum not in (None, "when_supported", "when_required"):
        raise UsageError(f"unknown checksum mode {options.checksum!r} (use when_supported or when_required)")
    kwargs: dict[str, Any] = {
        # botocore reads "max_attempts" here as retries after the first try; this is the total.
        "retries": {"mode": "standard", "total_max_attempts": 2 if probe else options.max_attempts},
        "connect_timeout": min(options.connect_timeout, 3.0) if probe else options.connect_timeout,
        "read_timeout": min(options.read_timeout, 10.0) if probe else options.read_timeout,
        # Parallel puts, each possibly multipart with its own threads, share this pool.
        "max_pool_connections": max(10, 2 * options.max_concurrency),
    }
    if options.checksum:
        kwargs["request_checksum_calculation"] = options.checksum
        kwargs["response_checksum_validation"] = options.checksum
    return Config(**kwargs)


#: Checks a GetObject response and its body (see :meth:`S3Store._get_object`).
_BodyCheck = Callable[[dict[str, Any], bytes], None]


@dataclass
class _Request:
    """What one counted request moved; filled in by the caller inside ``_request``."""

    down: int = 0


def _transient(exc: BaseException) -> bool:
    """A failure the probe should not take as final: the endpoint answered, just not well."""
    if isinstance(exc, ConnectionClosedError):
        return True
    if not isinstance(exc, ClientError):
        return False
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status >= 500 or status == 429


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
        options: StoreOptions | None = None,
        *,
        multipart_threshold: int = 32 * MiB,
        multipart_chunksize: int = 16 * MiB,
    ) -> None:
        self.options = options = options or StoreOptions()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.stats = RequestStats()
        self._sse = _sse_args(options)
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max(1, options.max_concurrency),
            preferred_transfer_client="classic",
        )
        try:
            session = boto3.session.Session(profile_name=options.profile, region_name=options.region)
            endpoint = options.endpoint_url  # None: boto3 reads AWS_ENDPOINT_URL(_S3) itself
            self._client: Any = session.client("s3", endpoint_url=endpoint, config=_client_config(options))
            self._probe: Any = session.client(
                "s3", endpoint_url=endpoint, config=_client_config(options, probe=True)
            )
        except InvalidRegionError as exc:
            raise UsageError(f"bad AWS region {options.region!r}") from exc
        except ValueError as exc:  # botocore's "Invalid endpoint: ..." or urllib's "Invalid IPv6 URL"
            where = (
                _safe_endpoint(options.endpoint_url)
                if options.endpoint_url
                else "set by AWS_ENDPOINT_URL(_S3) or the AWS config file"
            )
            raise UsageError(f"bad S3 endpoint URL {where}: expected http(s)://host[:port]") from exc
        except _AWS_ERRORS as exc:
            raise translate_error(exc, op="open", what=self.url, bucket=bucket) from exc
        self._storage_class = _storage_class(options.storage_class, self._client)
        for client in (self._client, self._probe):
            client.meta.events.register("before-parse.s3", _fail_short_body)
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
                self.exists(layout.CONFIG_KEY)
        now = time.time() + (self._clock_offset or 0.0)
        # Date has whole seconds, so the offset moves by up to a second between responses: the
        # clock this process reads never goes back (an age measured with it is never negative).
        with self._ready_lock:
            self._clock_last = max(now, self._clock_last)
            return self._clock_last

    @classmethod
    def from_url(cls, url: str, options: StoreOptions | None = None) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, options)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

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
        except _AWS_ERRORS as exc:
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
                if not _transient(exc):
                    raise
                self.stats.add("head")
                self._client.head_bucket(Bucket=self.bucket)
        except _AWS_ERRORS as exc:
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

    @property
    def data_storage_class(self) -> str:
        """The storage class packs of at least :data:`MIN_BILLED_SIZE` bytes are written with."""
        return self._storage_class or "STANDARD"

    def _put_args(self, key: str, size: int) -> dict[str, str]:
        args = dict(self._sse)
        # Infrequent-access classes bill a 128 KiB minimum per object: a smaller pack (the
        # last one of a small incremental) costs less in STANDARD, which has no minimum.
        if (layout.is_data_key(key) and self._storage_class not in ("", "STANDARD")
                and size >= MIN_BILLED_SIZE):
            args["StorageClass"] = self._storage_class
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
            with self._request(kind, key) as req:
                response: dict[str, Any] = self._client.get_object(Bucket=self.bucket, Key=full, **params)
                body = response["Body"]
                try:
                    data: bytes = body.read()
                    req.down = len(data)
                    if check is not None:
                        check(response, data)
                    return data
                except (*_CUT_OFF, *_GARBLED) as exc:
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

    def put(self, key: str, data: bytes | bytearray, *, create_only: bool = False) -> None:
        full = self._full(key)
        self._ensure_ready()
        size = len(data)
        extra = self._put_args(key, size)
        if create_only or size < self._transfer.multipart_threshold:
            # One PutObject: exactly what upload_fileobj would send below the threshold,
            # without a transfer thread pool per call.
            conditional = {"IfNoneMatch": "*"} if create_only else {}
            try:
                with self._request("put", key, up=size, create_only=create_only):
                    self._client.put_object(Bucket=self.bucket, Key=full, Body=data, **conditional, **extra)
            except StorageError as exc:
                if not (create_only and self._landed_anyway(exc, key, data)):
                    raise
            return
        chunk = ChunksizeAdjuster().adjust_chunksize(self._transfer.multipart_chunksize, size)
        requests = math.ceil(size / chunk) + 2  # create + parts + complete
        with self._request("put", key, up=size, count=requests):
            self._client.upload_fileobj(
                io.BytesIO(data), self.bucket, full, ExtraArgs=extra, Config=self._transfer
            )

    def _landed_anyway(self, exc: StorageError, key: str, data: bytes | bytearray) -> bool:
        """Whether a failed create-only put wrote our bytes after all. Only asked when its
        outcome is unknown: an attempt's response may have been lost (it was retried, or the
        connection broke) or the server failed (5xx). Keys written create-only are unique to
        their writer, so finding exactly our bytes there means one of our attempts landed."""
        cause = exc.__cause__
        if isinstance(cause, ClientError):
            meta: dict[str, Any] = cause.response.get("ResponseMetadata") or {}
            status = int(meta.get("HTTPStatusCode") or 0)
            unknown = bool(meta.get("RetryAttempts")) or status >= 500 or status == 429
        else:
            unknown = isinstance(cause, _AWS_ERRORS) and not isinstance(cause, _CREDENTIAL_ERRORS)
        if not unknown:
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
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
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
                )
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._ensure_ready()
        with self._request("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=full)
