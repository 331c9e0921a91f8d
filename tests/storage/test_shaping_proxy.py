"""The shaping proxy (tests/shaping_proxy.py) shapes what it forwards: each connection's bodies
go no faster than its cap, in both directions; every response waits out the latency first (the
``100 Continue`` of an upload too); connections are capped each on their own unless a total cap
is set; keep-alive connections are reused and counted. Assertions use the proxy's own
measurements and lower bounds on time (a loaded machine only makes things slower), except the
one upper bound that tells a per-connection cap from a shared one, with a wide margin."""

from __future__ import annotations

import io
import os
import threading
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from shaping_fixtures import shaping_proxy  # noqa: F401  (the fixture, used by name)
from shaping_proxy import ShapingProxy, TokenBucket

MiB = 1024 * 1024
RATE = 4e6  # bytes per second


def _client(endpoint: str) -> Any:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=4))


@pytest.fixture
def bucket(s3_client: Any) -> str:
    s3_client.create_bucket(Bucket="shaped")
    return "shaped"


def _shortest(size: int, proxy: ShapingProxy, rate: float = RATE) -> float:
    """The least time ``size`` body bytes can take at ``rate`` (the bucket's burst is free)."""
    return (size - proxy.burst) / rate


def test_a_get_goes_no_faster_than_the_cap(
    shaping_proxy: ShapingProxy, s3_client: Any, bucket: str  # noqa: F811
) -> None:
    payload = os.urandom(2 * MiB)
    s3_client.put_object(Bucket=bucket, Key="big", Body=payload)  # straight to moto
    shaping_proxy.shape(rate=RATE)
    assert _client(shaping_proxy.url).get_object(Bucket=bucket, Key="big")["Body"].read() == payload
    (ex,) = shaping_proxy.exchanges
    assert (ex.method, ex.status, ex.down) == ("GET", 200, len(payload))
    assert ex.body_seconds >= _shortest(len(payload), shaping_proxy)


def test_an_upload_goes_no_faster_than_the_cap(
    shaping_proxy: ShapingProxy, s3_client: Any, bucket: str  # noqa: F811
) -> None:
    payload = os.urandom(2 * MiB)
    shaping_proxy.shape(rate=RATE)
    _client(shaping_proxy.url).put_object(Bucket=bucket, Key="up", Body=payload)
    (ex,) = shaping_proxy.exchanges
    assert (ex.method, ex.status, ex.up) == ("PUT", 200, len(payload))
    assert ex.received - ex.started >= _shortest(len(payload), shaping_proxy)
    assert s3_client.get_object(Bucket=bucket, Key="up")["Body"].read() == payload


def test_latency_before_every_response_on_one_kept_alive_connection(
    shaping_proxy: ShapingProxy, s3_client: Any, bucket: str  # noqa: F811
) -> None:
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)
    shaping_proxy.shape(latency=0.05)
    client = _client(shaping_proxy.url)
    for _ in range(3):
        client.head_object(Bucket=bucket, Key="k")
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x" * 1000
    stats = shaping_proxy.stats()
    assert (stats.requests, stats.connections, stats.max_in_flight) == (6, 1, 1)
    assert stats.by_method == {"HEAD": 3, "GET": 3} and stats.bytes_down == 3000
    for ex in shaping_proxy.exchanges:
        assert ex.first_byte - ex.received >= 0.05


def test_an_upload_waits_for_its_100_continue(
    shaping_proxy: ShapingProxy, s3_client: Any, bucket: str  # noqa: F811
) -> None:
    """A file-like body goes with ``Expect: 100-continue`` (botocore): two round trips."""
    shaping_proxy.shape(latency=0.1)
    started = time.monotonic()
    _client(shaping_proxy.url).upload_fileobj(io.BytesIO(b"y" * 5000), bucket, "cont")
    assert time.monotonic() - started >= 0.2
    assert s3_client.get_object(Bucket=bucket, Key="cont")["Body"].read() == b"y" * 5000


def _get_at_once(proxy: ShapingProxy, bucket: str, keys: list[str]) -> list[bytes]:
    client = _client(proxy.url)
    out: dict[str, bytes] = {}
    barrier = threading.Barrier(len(keys))

    def get(key: str) -> None:
        barrier.wait()
        out[key] = client.get_object(Bucket=bucket, Key=key)["Body"].read()

    threads = [threading.Thread(target=get, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [out[k] for k in keys]


def test_each_connection_has_its_own_cap_unless_a_total_is_set(
    shaping_proxy: ShapingProxy, s3_client: Any, bucket: str  # noqa: F811
) -> None:
    payload = os.urandom(4 * MiB)
    for key in ("a", "b"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=payload)
    alone = _shortest(len(payload), shaping_proxy)

    shaping_proxy.shape(rate=RATE)
    assert _get_at_once(shaping_proxy, bucket, ["a", "b"]) == [payload, payload]
    stats = shaping_proxy.stats()
    assert (stats.connections, stats.max_in_flight, stats.bytes_down) == (2, 2, 2 * len(payload))
    for ex in shaping_proxy.exchanges:
        # each at its own cap: sharing one would take at least twice as long
        assert alone <= ex.body_seconds < 1.9 * alone

    shaping_proxy.reset()
    shaping_proxy.shape(rate=RATE, total_rate=RATE)
    assert _get_at_once(shaping_proxy, bucket, ["a", "b"]) == [payload, payload]
    first = min(ex.first_byte for ex in shaping_proxy.exchanges)
    last = max(ex.finished for ex in shaping_proxy.exchanges)
    assert shaping_proxy.stats().max_in_flight == 2
    assert last - first >= _shortest(2 * len(payload), shaping_proxy)


def test_a_token_bucket_refuses_no_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0, 1)
