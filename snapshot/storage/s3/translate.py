"""Translating boto3/botocore failures into :mod:`snapshot.errors`, once, at the boundary:
nothing botocore raises leaves snapshot/storage/s3/.

Messages name the operation and the key, carry the server's error code and text on one line,
and never hold credentials (the endpoint is shown without any user:password@ part).
"""

from __future__ import annotations

import http.client
from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    EndpointResolutionError,
    FlexibleChecksumError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
    SSOError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from urllib3.exceptions import HTTPError as URLLib3Error
from urllib3.exceptions import ProtocolError

from snapshot.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ArchivedError,
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
from snapshot.storage.s3.location import safe_endpoint

#: Everything the AWS libraries raise; OSError and urllib3's errors for what slips past botocore.
AWS_ERRORS = (BotoCoreError, ClientError, Boto3Error, OSError, URLLib3Error)

#: What reading a GET body raises when the connection breaks off or the body comes up short.
CUT_OFF = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ProtocolError, ConnectionError)
#: What reading a GET body raises when it is whole but fails the checksum S3 sent with it (a
#: whole-object GET of a key written with one; S3 sends none for a range).
GARBLED = (FlexibleChecksumError,)

CREDENTIAL_ERRORS = (
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
#: The error code the client's short-body hook gives a response whose body came up short.
TRUNCATED_CODE = "TruncatedResponse"


#: The IAM action each kind of request needs (what an access-denied error names).
IAM_ACTIONS = {
    "get": "s3:GetObject", "get_range": "s3:GetObject", "head": "s3:GetObject", "put": "s3:PutObject",
    "delete": "s3:DeleteObject", "list": "s3:ListBucket", "open": "s3:ListBucket",
    "restore": "s3:RestoreObject", "retention": "s3:PutObjectRetention",
    "versioning": "s3:GetBucketVersioning", "list_versions": "s3:ListBucketVersions",
    "lock_config": "s3:GetBucketObjectLockConfiguration", "copy": "s3:GetObjectVersion and s3:PutObject",
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _ended_early(exc: BaseException) -> bool:
    """Whether a body read failed because the server closed the connection before the body's
    end (urllib3's IncompleteRead, wrapped by botocore) rather than resetting it."""
    inner: Any = exc.kwargs.get("error") if isinstance(exc, ResponseStreamingError) else exc
    args = inner.args if isinstance(inner, ProtocolError) else ()
    return any(isinstance(arg, http.client.IncompleteRead) for arg in args)


def transient(exc: BaseException) -> bool:
    """A failure the probe should not take as final: the endpoint answered, just not well."""
    if isinstance(exc, ConnectionClosedError):
        return True
    if not isinstance(exc, ClientError):
        return False
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status >= 500 or status == 429


def outcome_unknown(exc: BaseException | None) -> bool:
    """Whether a request that raised ``exc`` may have been carried out all the same: an
    attempt's response was lost (it was retried, or the connection broke) or the server failed
    (5xx, 429). A refusal (4xx) or missing credentials mean it was not."""
    if isinstance(exc, ClientError):
        meta: dict[str, Any] = exc.response.get("ResponseMetadata") or {}
        status = int(meta.get("HTTPStatusCode") or 0)
        return bool(meta.get("RetryAttempts")) or status >= 500 or status == 429
    return isinstance(exc, AWS_ERRORS) and not isinstance(exc, CREDENTIAL_ERRORS)


def is_missing(exc: ClientError) -> bool:
    """A 404 answer (HeadObject has no body, hence no error code)."""
    return bool(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404)


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
    where = safe_endpoint(endpoint)
    tries = f" ({attempts} attempts)" if attempts else ""
    if isinstance(exc, IncompleteReadError):
        got, wanted = exc.kwargs.get("actual_bytes"), exc.kwargs.get("expected_bytes")
        return StorageError(f"{head}: truncated response from {where}: {got} of {wanted} bytes{tries}")
    if attempts and isinstance(exc, GARBLED):
        return StorageError(
            f"{head}: the response from {where} did not match the checksum S3 sent with it{tries}"
        )
    if attempts and _ended_early(exc):
        return StorageError(f"{head}: truncated response from {where}: the body ended early{tries}")
    if attempts and isinstance(exc, CUT_OFF):
        return StorageError(f"{head}: connection cut off while reading the response from {where}{tries}")
    if isinstance(exc, EndpointResolutionError):
        if endpoint:
            return UsageError(f"{head}: bad S3 endpoint URL {where}: expected http(s)://host[:port]")
        return UsageError(f"{head}: {_one_line(str(exc))}")
    if isinstance(exc, CREDENTIAL_ERRORS):
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
    return _client_error(exc, head, where, bucket, bucket_level=bucket_level, create_only=create_only,
                         action=IAM_ACTIONS.get(op))


def _client_error(
    exc: ClientError, head: str, where: str, bucket: str, *, bucket_level: bool, create_only: bool,
    action: str | None = None,
) -> SnapshotError:
    """The error for an answer S3 gave (a ClientError), by its code and HTTP status."""
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
    if code == "InvalidObjectState":
        where_class = error.get("StorageClass") or "an archive class"
        return ArchivedError(f"{head}: the object is in {where_class} and not restored; run the command "
                             "again with --request-restore")
    if code in _DENIED_CODES or status == 403:
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return AccessDeniedError(f"{head}: access denied ({said}); check the credentials")
        needs = f"the credentials' policy lacks {action}" if action else "check the credentials and policy"
        return AccessDeniedError(f"{head}: access denied ({said}); {needs}")
    if code in ("NoSuchKey", "NotFound") or status == 404:
        return NotFoundError(f"{head}: object not found")
    if create_only and (code == "PreconditionFailed" or status == 412):
        return AlreadyExistsError(f"{head}: the key already exists")
    if code == TRUNCATED_CODE:
        return StorageError(f"{head}: truncated response from {where}: {server}")
    if code == "InvalidRange" or status == 416:
        return IntegrityError(f"{head}: the requested range is beyond the end of the object")
    return StorageError(f"{head}: S3 error {said}")
