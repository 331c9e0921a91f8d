"""One storage contract, run on a local folder and on S3 (a real moto server, deep prefix).

Then the S3-only behaviour: storage class and encryption per key, failing fast and clearly
on a missing bucket, an unreachable endpoint or missing credentials, and the translation of
the S3 errors moto cannot produce (access denied, wrong region), checked on built responses.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from s3_fixtures import *  # noqa: F403  (conftest.py imports it too; this lets the module run alone)
from s3_fixtures import SEED_PREFIX, s3_options

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
from snapshot.storage import LocalStore, Store, StoreOptions, open_store
from snapshot.storage.s3 import S3Store, parse_s3_url, translate_error

MiB = 1024 * 1024
DATA_KEY = "data/ab/ab" + "0" * 30
MANIFEST_KEY = "snapshots/20261128T015012-1a2b3c4d.json"
PAYLOAD = bytes(range(256)) * 12 + b"tail"  # 3076 bytes, every byte value


def _s3_store(url: str, endpoint: str, **options: Any) -> S3Store:
    bucket, prefix = parse_s3_url(url)
    return S3Store(
        bucket,
        prefix,
        s3_options(endpoint, **options),
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "repo")
    return _s3_store(request.getfixturevalue("s3_repo_url"), request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def s3_store(s3_repo_url: str, s3_endpoint: str) -> S3Store:
    return _s3_store(s3_repo_url, s3_endpoint)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the contract, on both stores ------------------------------------------------------------


def test_put_get_round_trip(store: Store) -> None:
    store.put("config.json", PAYLOAD)
    store.put(DATA_KEY, b"")
    assert store.get("config.json") == PAYLOAD
    assert store.get(DATA_KEY) == b""


def test_get_missing_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match=re.escape("snapshots/nope.json")):
        store.get("snapshots/nope.json")


def test_get_range_exact_bytes(store: Store) -> None:
    store.put(DATA_KEY, PAYLOAD)
    n = len(PAYLOAD)
    assert store.get_range(DATA_KEY, 0, 10) == PAYLOAD[:10]
    assert store.get_range(DATA_KEY, 1000, 333) == PAYLOAD[1000:1333]
    assert store.get_range(DATA_KEY, n - 4, 4) == b"tail"
    assert store.get_range(DATA_KEY, 0, n) == PAYLOAD
    assert store.get_range(DATA_KEY, 5, 0) == b""


def test_get_range_past_the_end_is_integrity_error(store: Store) -> None:
    store.put(DATA_KEY, PAYLOAD)
    n = len(PAYLOAD)
    with pytest.raises(IntegrityError):
        store.get_range(DATA_KEY, n - 4, 10)  # overlaps the end
    with pytest.raises(IntegrityError):
        store.get_range(DATA_KEY, n + 100, 10)  # wholly past the end


def test_get_range_missing_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match=DATA_KEY):
        store.get_range(DATA_KEY, 0, 10)
    with pytest.raises(NotFoundError):
        store.get_range(DATA_KEY, 0, 0)


def test_put_overwrites(store: Store) -> None:
    store.put("config.json", b"first")
    store.put("config.json", b"second, longer")
    assert store.get("config.json") == b"second, longer"


def test_create_only(store: Store) -> None:
    store.put(MANIFEST_KEY, b"original", create_only=True)
    assert store.get(MANIFEST_KEY) == b"original"
    with pytest.raises(AlreadyExistsError, match=MANIFEST_KEY):
        store.put(MANIFEST_KEY, b"intruder", create_only=True)
    assert store.get(MANIFEST_KEY) == b"original"


def test_exists(store: Store) -> None:
    assert store.exists("config.json") is False
    store.put("config.json", b"{}")
    assert store.exists("config.json") is True
    assert store.exists("config") is False


def test_list_sorted_and_filtered(store: Store) -> None:
    keys = ["data/cd/cd1", "config.json", "data/ab/ab2", MANIFEST_KEY, "data/ab/ab1", "data/abc"]
    for i, key in enumerate(keys):
        store.put(key, b"x" * i)
    before = time.time()

    listed = list(store.list("data/"))
    assert [o.key for o in listed] == ["data/ab/ab1", "data/ab/ab2", "data/abc", "data/cd/cd1"]
    assert {o.key: o.size for o in listed} == {k: keys.index(k) for k in [o.key for o in listed]}
    assert all(abs(o.mtime - before) < 300 for o in listed)
    assert [o.key for o in store.list("data/ab/")] == ["data/ab/ab1", "data/ab/ab2"]
    assert [o.key for o in store.list("data/ab")] == ["data/ab/ab1", "data/ab/ab2", "data/abc"]
    assert [o.key for o in store.list("")] == sorted(keys)
    assert list(store.list("nothing/here/")) == []


def test_delete(store: Store) -> None:
    store.put("config.json", b"{}")
    store.delete("config.json")
    assert not store.exists("config.json")
    store.delete("config.json")  # missing is fine
    store.delete("data/zz/never-written")


def test_stats_count_requests_and_bytes(store: Store) -> None:
    store.exists("warm-up")  # the S3 store's one-time bucket probe happens here
    counts, up, down = dict(store.stats.counts), store.stats.bytes_up, store.stats.bytes_down

    store.put(DATA_KEY, PAYLOAD)
    store.get(DATA_KEY)
    store.get_range(DATA_KEY, 10, 100)
    store.exists(DATA_KEY)
    list(store.list("data/"))
    store.delete(DATA_KEY)

    delta = {k: v - counts.get(k, 0) for k, v in store.stats.counts.items() if v != counts.get(k, 0)}
    assert delta == {"put": 1, "get": 1, "get_range": 1, "head": 1, "list": 1, "delete": 1}
    assert store.stats.bytes_up - up == len(PAYLOAD)
    assert store.stats.bytes_down - down == len(PAYLOAD) + 100
    assert store.stats.as_dict()["total"] == store.stats.total


def test_large_object_round_trip(store: Store) -> None:
    data = os.urandom(10 * MiB + 12345)
    store.put(DATA_KEY, data)
    assert store.get(DATA_KEY) == data
    boundary = 5 * MiB  # a multipart part boundary on S3
    assert store.get_range(DATA_KEY, boundary - 7, 20) == data[boundary - 7 : boundary + 13]
    assert [o.size for o in store.list("data/")] == [len(data)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, len(PAYLOAD) + 50), length=st.integers(0, 400))
def test_get_range_property(store: Store, offset: int, length: int) -> None:
    if not store.exists(DATA_KEY):
        store.put(DATA_KEY, PAYLOAD)
    if offset + length <= len(PAYLOAD) or length == 0:
        assert store.get_range(DATA_KEY, offset, length) == PAYLOAD[offset : offset + length]
    else:
        with pytest.raises(IntegrityError):
            store.get_range(DATA_KEY, offset, length)


# -- S3 only: what each key is written with ---------------------------------------------------


def _head(client: Any, store: S3Store, key: str) -> dict[str, Any]:
    head: dict[str, Any] = client.head_object(Bucket=store.bucket, Key=f"{SEED_PREFIX}/{key}")
    return head


def test_s3_storage_class_and_sse_per_key(s3_store: S3Store, s3_client: Any) -> None:
    assert len(PAYLOAD) < 128 << 10
    s3_store.put(DATA_KEY, PAYLOAD)
    s3_store.put("data/ab/min", os.urandom(128 << 10))
    s3_store.put("data/cd/big", os.urandom(6 * MiB))  # multipart path
    s3_store.put("config.json", b"{}", create_only=True)
    s3_store.put(MANIFEST_KEY, b"{}", create_only=True)

    for key in ("data/ab/min", "data/cd/big"):
        head = _head(s3_client, s3_store, key)
        assert head.get("StorageClass") == "STANDARD_IA", key
        assert head.get("ServerSideEncryption") == "AES256", key
    assert _head(s3_client, s3_store, "data/cd/big")["ETag"].endswith('-2"')  # really multipart
    assert s3_store.stats.counts["put"] == 4 + (1 + 2 + 1)  # create, 2 parts, complete
    # below IA's 128 KiB minimum a pack costs less in STANDARD
    assert _head(s3_client, s3_store, DATA_KEY).get("StorageClass", "STANDARD") == "STANDARD"
    for key in ("config.json", MANIFEST_KEY):
        head = _head(s3_client, s3_store, key)
        assert head.get("StorageClass", "STANDARD") == "STANDARD", key
        assert head.get("ServerSideEncryption") == "AES256", key


def test_s3_sse_none_and_kms(s3_repo_url: str, s3_endpoint: str, s3_client: Any) -> None:
    plain = _s3_store(s3_repo_url, s3_endpoint, sse="none", storage_class="STANDARD")
    plain.put(DATA_KEY, PAYLOAD)
    head = _head(s3_client, plain, DATA_KEY)
    assert "ServerSideEncryption" not in head
    assert head.get("StorageClass", "STANDARD") == "STANDARD"

    kms = _s3_store(s3_repo_url, s3_endpoint, sse="aws:kms", sse_kms_key_id="alias/backup")
    kms.put("config.json", b"{}")
    head = _head(s3_client, kms, "config.json")
    assert head.get("ServerSideEncryption") == "aws:kms"
    assert "backup" in head.get("SSEKMSKeyId", "")

    with pytest.raises(UsageError, match="server-side encryption"):
        _s3_store(s3_repo_url, s3_endpoint, sse="rot13")


def test_s3_checksum_when_required(s3_repo_url: str, s3_endpoint: str) -> None:
    store = _s3_store(s3_repo_url, s3_endpoint, checksum="when_required")
    store.put(DATA_KEY, PAYLOAD)
    assert store.get_range(DATA_KEY, 3, 4) == PAYLOAD[3:7]


# -- S3 only: keys, listing, URLs --------------------------------------------------------------


def test_s3_keys_live_under_the_prefix(s3_store: S3Store, s3_client: Any) -> None:
    s3_store.put("config.json", b"{}")
    bucket = s3_store.bucket
    for outside in (f"{SEED_PREFIX}-other/config.json", "processed/config.json", "config.json"):
        s3_client.put_object(Bucket=bucket, Key=outside, Body=b"not ours")
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{SEED_PREFIX}/")["Contents"]
    assert [o["Key"] for o in listed] == [f"{SEED_PREFIX}/config.json"]
    assert [o.key for o in s3_store.list("")] == ["config.json"]
    assert [o.key for o in s3_store.list("conf")] == ["config.json"]


def test_s3_list_pages(s3_store: S3Store) -> None:
    keys = [f"data/{i:02x}/{i:02x}" for i in range(7)]
    for key in keys:
        s3_store.put(key, b"x")
    s3_store.list_page_size = 2
    before = s3_store.stats.counts.get("list", 0)
    assert [o.key for o in s3_store.list("data/")] == keys
    assert s3_store.stats.counts["list"] - before == 4


def test_s3_bucket_only_prefix_and_open_store(s3_repo_url: str, s3_endpoint: str) -> None:
    bucket, _ = parse_s3_url(s3_repo_url)
    # No endpoint in the options: boto3 finds AWS_ENDPOINT_URL itself.
    root = open_store(f"s3://{bucket}/", StoreOptions())
    assert isinstance(root, S3Store)
    assert root.url == f"s3://{bucket}"
    root.put("config.json", b"root")
    deep = open_store(s3_repo_url, StoreOptions())
    assert not deep.exists("config.json")
    deep.put("config.json", b"deep")
    assert root.get("config.json") == b"root"
    assert root.get(f"{SEED_PREFIX}/config.json") == b"deep"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bkt", ("bkt", "")),
        ("s3://bkt/", ("bkt", "")),
        ("s3://bkt/a/b/", ("bkt", "a/b")),
        (f"s3://my-bucket/{SEED_PREFIX}", ("my-bucket", SEED_PREFIX)),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://b/a//c", "s3://b/a/../c", "s3://b:9000/x"])
def test_parse_s3_url_rejects(url: str) -> None:
    with pytest.raises(UsageError):
        parse_s3_url(url)


def test_s3_url_never_carries_credentials(s3_store: S3Store) -> None:
    assert s3_store.url == f"s3://{s3_store.bucket}/{SEED_PREFIX}"
    with pytest.raises(UsageError) as info:
        S3Store.from_url("s3://AKIAEXAMPLE:s3cr3tvalue@bucket/prefix", StoreOptions())
    assert "s3cr3tvalue" not in str(info.value)


def test_s3_one_probe_for_concurrent_first_requests(s3_store: S3Store) -> None:
    threads = [threading.Thread(target=s3_store.put, args=(f"data/{i:02x}/obj", b"x")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s3_store.stats.counts == {"head": 1, "put": 8}


# -- S3 only: failing fast and clearly -----------------------------------------------------------


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
        lambda store: store.put("config.json", b"{}"),
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
    err, elapsed = _timed(lambda: _s3_store(s3_repo_url, s3_endpoint).get("config.json"))
    assert isinstance(err, CredentialsError)
    assert "AWS_ACCESS_KEY_ID" in str(err) and "--profile" in str(err)
    assert elapsed < 5

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAONLYTHEID")
    err, _ = _timed(lambda: _s3_store(s3_repo_url, s3_endpoint).exists("config.json"))
    assert isinstance(err, CredentialsError)

    with pytest.raises(CredentialsError, match="nope"):
        _s3_store(s3_repo_url, s3_endpoint, profile="nope")


def test_s3_messages_never_hold_the_secret(
    s3_repo_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Zq7SECRETvalueNotForMessages"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    store = _s3_store(s3_repo_url, s3_endpoint)
    store.put(MANIFEST_KEY, b"{}")
    missing = S3Store.from_url("s3://no-such-bucket", s3_options(s3_endpoint))
    closed = S3Store.from_url("s3://bucket", s3_options(f"http://127.0.0.1:{_closed_port()}"))
    failures: list[Callable[[], object]] = [
        lambda: store.get("config.json"),
        lambda: store.get_range(DATA_KEY, 0, 5),
        lambda: store.put(MANIFEST_KEY, b"{}", create_only=True),
        missing.check_bucket,
        closed.check_bucket,
    ]
    for fn in failures:
        err, _ = _timed(fn)
        chain: list[BaseException | None] = [err, err.__cause__]
        for exc in chain:
            assert secret not in str(exc) and secret not in repr(exc)
        assert "\n" not in str(err)


# -- S3 only: translating what moto cannot produce --------------------------------------------


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
