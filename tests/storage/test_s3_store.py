"""The S3 store beyond the contract: what each object is written with (storage class by its
kind, server-side encryption), keys under the prefix, listing pages, URLs, the one probe."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
from s3_fixtures import *  # noqa: F403  (conftest.py imports it too; this lets the module run alone)
from s3_fixtures import SEED_PREFIX
from test_storage_contract import DATA_KEY, MANIFEST_KEY, PAYLOAD, s3_test_store

from snapshot.errors import UsageError
from snapshot.storage import ColdClass, ObjectKind, StoreOptions, open_store
from snapshot.storage.s3 import S3Store, parse_s3_url
from snapshot.storage.s3.classes import class_for, cold_class

MiB = 1024 * 1024
PACK, ROOT, CONFIG = ObjectKind.PACK, ObjectKind.ROOT, ObjectKind.CONFIG


@pytest.fixture
def s3_store(s3_repo_url: str, s3_endpoint: str) -> S3Store:
    return s3_test_store(s3_repo_url, s3_endpoint)


def _head(client: Any, store: S3Store, key: str) -> dict[str, Any]:
    head: dict[str, Any] = client.head_object(Bucket=store.bucket, Key=f"{SEED_PREFIX}/{key}")
    return head


# -- what each object is written with -------------------------------------------------------------


def test_s3_storage_class_and_sse_per_kind(s3_store: S3Store, s3_client: Any) -> None:
    assert len(PAYLOAD) < 128 << 10
    s3_store.put(DATA_KEY, PAYLOAD, kind=PACK)
    s3_store.put("data/ab/min", os.urandom(128 << 10), kind=PACK)
    s3_store.put("data/cd/big", os.urandom(6 * MiB), kind=PACK)  # multipart path
    s3_store.put("config.json", b"{}", kind=CONFIG, create_only=True)
    s3_store.put(MANIFEST_KEY, b"{}", kind=ROOT, create_only=True)

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


def test_s3_storage_class_follows_the_kind_not_the_key(s3_store: S3Store, s3_client: Any) -> None:
    """The store never reads meaning into a key: only what put is told decides the class."""
    big = os.urandom(128 << 10)
    s3_store.put("elsewhere/pack", big, kind=PACK)
    s3_store.put("data/ef/" + "ef" * 16, big, kind=ROOT)
    s3_store.put("data/01/" + "01" * 16, big, kind=ObjectKind.CONDEMNED)
    assert _head(s3_client, s3_store, "elsewhere/pack").get("StorageClass") == "STANDARD_IA"
    for key in ("data/ef/" + "ef" * 16, "data/01/" + "01" * 16):
        assert _head(s3_client, s3_store, key).get("StorageClass", "STANDARD") == "STANDARD", key


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        ("STANDARD_IA", ColdClass("STANDARD_IA", 128 << 10, 30 * 86400)),
        ("ONEZONE_IA", ColdClass("ONEZONE_IA", 128 << 10, 30 * 86400)),
        ("STANDARD", None),
        ("", None),
        ("INTELLIGENT_TIERING", None),
    ],
)
def test_s3_capabilities_name_the_cold_class(
    s3_repo_url: str, s3_endpoint: str, chosen: str, expected: ColdClass | None
) -> None:
    store = s3_test_store(s3_repo_url, s3_endpoint, storage_class=chosen)
    assert store.capabilities.cold_class == expected
    assert cold_class(chosen) == expected
    assert store.capabilities.local_root is None


def test_class_for_each_kind_and_size() -> None:
    small, big = (128 << 10) - 1, 128 << 10
    assert class_for(PACK, big, "STANDARD_IA") == "STANDARD_IA"
    assert class_for(PACK, big, "GLACIER_IR") == "GLACIER_IR"
    assert class_for(PACK, small, "STANDARD_IA") is None
    assert class_for(PACK, big, "STANDARD") is None
    assert class_for(PACK, big, "") is None
    assert [k for k in ObjectKind if class_for(k, big, "STANDARD_IA")] == [PACK]


def test_s3_sse_none_and_kms(s3_repo_url: str, s3_endpoint: str, s3_client: Any) -> None:
    plain = s3_test_store(s3_repo_url, s3_endpoint, sse="none", storage_class="STANDARD")
    plain.put(DATA_KEY, PAYLOAD, kind=PACK)
    head = _head(s3_client, plain, DATA_KEY)
    assert "ServerSideEncryption" not in head
    assert head.get("StorageClass", "STANDARD") == "STANDARD"

    kms = s3_test_store(s3_repo_url, s3_endpoint, sse="aws:kms", sse_kms_key_id="alias/backup")
    kms.put("config.json", b"{}", kind=CONFIG)
    head = _head(s3_client, kms, "config.json")
    assert head.get("ServerSideEncryption") == "aws:kms"
    assert "backup" in head.get("SSEKMSKeyId", "")

    with pytest.raises(UsageError, match="server-side encryption"):
        s3_test_store(s3_repo_url, s3_endpoint, sse="rot13")


def test_s3_checksum_when_required(s3_repo_url: str, s3_endpoint: str) -> None:
    store = s3_test_store(s3_repo_url, s3_endpoint, checksum="when_required")
    store.put(DATA_KEY, PAYLOAD, kind=PACK)
    assert store.get_range(DATA_KEY, 3, 4) == PAYLOAD[3:7]


# -- keys, listing, URLs -------------------------------------------------------------------------


def test_s3_keys_live_under_the_prefix(s3_store: S3Store, s3_client: Any) -> None:
    s3_store.put("config.json", b"{}", kind=CONFIG)
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
        s3_store.put(key, b"x", kind=PACK)
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
    root.put("config.json", b"root", kind=CONFIG)
    deep = open_store(s3_repo_url, StoreOptions())
    assert not deep.exists("config.json")
    deep.put("config.json", b"deep", kind=CONFIG)
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
    threads = [
        threading.Thread(target=s3_store.put, args=(f"data/{i:02x}/obj", b"x"), kwargs={"kind": PACK})
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s3_store.stats.counts == {"head": 1, "put": 8}


def test_s3_now_on_a_fresh_store(s3_store: S3Store) -> None:
    """The store's clock before any request: the probe's answer carries S3's Date, then one
    HEAD of any key (whether it exists does not matter)."""
    assert abs(s3_store.now() - time.time()) < 5
    assert s3_store.stats.counts == {"head": 2}
    s3_store.now()
    assert s3_store.stats.counts == {"head": 2}
