"""The S3 store's failures: failing fast and clearly on a missing bucket, an unreachable
endpoint or missing credentials (on moto), and the translation of the S3 errors moto cannot
produce (access denied, wrong region), checked on built responses. Messages never hold secrets."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
)
from s3_fixtures import *  # noqa: F403  (conftest.py imports it too; this lets the module run alone)
from s3_fixtures import SEED_PREFIX, s3_options
from test_storage_contract import DATA_KEY, MANIFEST_KEY, s3_test_store

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
from snapshot.storage import ObjectKind, StoreOptions
from snapshot.storage.s3 import S3Store, translate_error


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- failing fast and clearly -----------------------------------------------------------


def _timed(fn: Callable[[], object]) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(SnapshotError) as info:
        fn()
    return info.value, time.monotonic() - start


@pytest.mark.parametrize(
    "action",
    [
        lambda store: store.get("config.json"),
        lambda store: store.exists("config.json"),  # a bare HEAD 404 must not read as "no key"
        lambda store: store.put("config.json", b"{}", kind=ObjectKind.CONFIG),
        lambda store: list(store.list("")),
        lambda store: store.check_bucket(),
    ],
    ids=["get", "exists", "put", "list", "check_bucket"],
)
def test_s3_missing_bucket(s3_endpoint: str, action: Callable[[S3Store], object]) -> None:
    store = S3Store.from_url(f"s3://no-such-bucket/{SEED_PREFIX}", s3_options(s3_endpoint))
    err, elapsed = _timed(lambda: action(store))
    assert isinstance(err, BucketNotFoundError), err
    assert "no-such-bucket" in str(err)
    assert elapsed < 5


def test_s3_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    # Default options (5 attempts, 5 s connect timeout): only the probe keeps this quick.
    store = S3Store.from_url(f"s3://bucket/{SEED_PREFIX}", StoreOptions(endpoint_url=endpoint))
    err, elapsed = _timed(lambda: store.get("config.json"))
    assert isinstance(err, EndpointError)
    assert endpoint in str(err)
    assert elapsed < 10

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)  # boto3's own endpoint variable
    store = S3Store.from_url("s3://bucket", StoreOptions())
    err, elapsed = _timed(store.check_bucket)
    assert isinstance(err, EndpointError)
    assert endpoint in str(err)
    assert elapsed < 10


@pytest.mark.slow  # waits out the connect timeouts of a black-holed endpoint
def test_s3_silent_endpoint_fails_fast() -> None:
    """An endpoint that never completes the TCP handshake (a listener with a full backlog)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for sock in fillers:
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
            # 5 attempts of 1.5 s each without the probe; the probe makes 2.
            options = StoreOptions(endpoint_url=f"http://127.0.0.1:{port}", connect_timeout=1.5)
            store = S3Store.from_url("s3://bucket", options)
            err, elapsed = _timed(lambda: store.exists("config.json"))
        finally:
            for sock in fillers:
                sock.close()
    assert isinstance(err, EndpointError)
    assert elapsed < 6


def test_s3_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="endpoint"):
        S3Store.from_url("s3://bucket", StoreOptions(endpoint_url="localhost:9000"))
    with pytest.raises(UsageError, match="region"):
        S3Store.from_url("s3://bucket", StoreOptions(region="not a region"))
    with pytest.raises(UsageError, match="checksum"):
        S3Store.from_url("s3://bucket", StoreOptions(checksum="sometimes"))


def test_s3_no_credentials(s3_repo_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    err, elapsed = _timed(lambda: s3_test_store(s3_repo_url, s3_endpoint).get("config.json"))
    assert isinstance(err, CredentialsError)
    assert "AWS_ACCESS_KEY_ID" in str(err) and "--profile" in str(err)
    assert elapsed < 5

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAONLYTHEID")
    err, _ = _timed(lambda: s3_test_store(s3_repo_url, s3_endpoint).exists("config.json"))
    assert isinstance(err, CredentialsError)

    with pytest.raises(CredentialsError, match="nope"):
        s3_test_store(s3_repo_url, s3_endpoint, profile="nope")


def test_s3_messages_never_hold_the_secret(
    s3_repo_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Zq7SECRETvalueNotForMessages"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    store = s3_test_store(s3_repo_url, s3_endpoint)
    store.put(MANIFEST_KEY, b"{}", kind=ObjectKind.ROOT)
    missing = S3Store.from_url("s3://no-such-bucket", s3_options(s3_endpoint))
    closed = S3Store.from_url("s3://bucket", s3_options(f"http://127.0.0.1:{_closed_port()}"))
    failures: list[Callable[[], object]] = [
        lambda: store.get("config.json"),
        lambda: store.get_range(DATA_KEY, 0, 5),
        lambda: store.put(MANIFEST_KEY, b"{}", kind=ObjectKind.ROOT, create_only=True),
        missing.check_bucket,
        closed.check_bucket,
    ]
    for fn in failures:
        err, _ = _timed(fn)
        chain: list[BaseException | None] = [err, err.__cause__]
        for exc in chain:
            assert secret not in str(exc) and secret not in repr(exc)
        assert "\n" not in str(err)


# -- translating what moto cannot produce --------------------------------------------


def _client_error(
    code: str, status: int, message: str = "msg", headers: dict[str, str] | None = None, **extra: str
) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message, **extra},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return ClientError(response, "HeadObject")


def _translate(exc: BaseException, **kwargs: Any) -> SnapshotError:
    return translate_error(exc, op="get", what="config.json in s3://bkt/p", bucket="bkt", **kwargs)


@pytest.mark.parametrize(
    ("exc", "kwargs", "expected", "says"),
    [
        (_client_error("AccessDenied", 403), {}, AccessDeniedError, "access denied"),
        (_client_error("403", 403, "Forbidden"), {}, AccessDeniedError, "403"),
        (_client_error("InvalidAccessKeyId", 403), {}, AccessDeniedError, "InvalidAccessKeyId"),
        (
            _client_error("SignatureDoesNotMatch", 403, StringToSign="AWS4-HMAC-SHA256\nx"),
            {},
            AccessDeniedError,
            "SignatureDoesNotMatch",
        ),
        (
            _client_error("PermanentRedirect", 301, headers={"x-amz-bucket-region": "eu-west-1"}),
            {},
            WrongRegionError,
            "--region eu-west-1",
        ),
        (
            _client_error("301", 301, "Moved Permanently", headers={"x-amz-bucket-region": "ap-south-1"}),
            {"bucket_level": True},
            WrongRegionError,
            "ap-south-1",
        ),
        (
            _client_error("AuthorizationHeaderMalformed", 400, Region="eu-central-1"),
            {},
            WrongRegionError,
            "eu-central-1",
        ),
        (_client_error("ExpiredToken", 400), {}, CredentialsError, "ExpiredToken"),
        (_client_error("NoSuchBucket", 404), {}, BucketNotFoundError, "bkt"),
        (_client_error("404", 404, "Not Found"), {"bucket_level": True}, BucketNotFoundError, "bkt"),
        (_client_error("NoSuchKey", 404), {}, NotFoundError, "config.json"),
        (_client_error("PreconditionFailed", 412), {"create_only": True}, AlreadyExistsError, "exists"),
        (_client_error("InvalidRange", 416), {}, IntegrityError, "range"),
        (IncompleteReadError(actual_bytes=3, expected_bytes=9), {}, StorageError, "truncated"),
        (NoCredentialsError(), {}, CredentialsError, "AWS_ACCESS_KEY_ID"),
        (
            EndpointConnectionError(endpoint_url="http://u:pw@minio.local:9000/bkt"),
            {"endpoint": "http://u:pw@minio.local:9000"},
            EndpointError,
            "http://minio.local:9000",
        ),
    ],
)
def test_translate_error(
    exc: BaseException, kwargs: dict[str, Any], expected: type[SnapshotError], says: str
) -> None:
    err = _translate(exc, **kwargs)
    assert type(err) is expected
    assert says in str(err)
    assert str(err).startswith("get config.json in s3://bkt/p: ")
    assert "\n" not in str(err) and "pw@" not in str(err)


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("InternalError", 500, "We encountered an internal error.\nPlease retry."),
        _client_error("PreconditionFailed", 412),  # not a create-only put: no AlreadyExists
        _client_error("SlowDown", 503),
    ],
)
def test_translate_error_falls_back_to_storage_error(exc: BaseException) -> None:
    err = _translate(exc)
    assert type(err) is StorageError
    assert "\n" not in str(err)
