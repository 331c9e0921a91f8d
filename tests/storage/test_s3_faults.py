"""S3 under network faults: a fault-injecting proxy (tests/fault_proxy.py) in front of moto.

Unit level: a GET whose body is cut off (truncated, or the connection reset mid-body) or
garbled (the right length, a wrong byte: it fails the checksum S3 sent) is re-requested up to
``max_attempts`` times and then fails as a StorageError, never as an IntegrityError; a frame
read with a range (S3 sends no checksum with one) that fails its hash is read again until it
passes or two reads agree (damage) before it is called damaged; a listing cut to nothing is not an empty listing; the bucket probe rides out
transient errors; a create-only put whose response is lost succeeds. Bad endpoint URLs are one
line and a usage/endpoint exit code. End to end: rounds of create / restore / check / prune
through the CLI at 10% errors, 5% resets, 5% truncations and 5% garbled bodies all succeed, and every snapshot
left restores byte for byte; a restore and a check whose every object is garbled once succeed; at 30% commands may fail, but cleanly, losing nothing.
"""

from __future__ import annotations

import http.client
import itertools
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.retries.standard import ExponentialBackoff
from chroma_helpers import grow, tree_digest
from fault_fixtures import fault_proxy  # noqa: F401  (the fixture, used by name)
from fault_proxy import FaultProxy, ProxiedRequest
from s3_fixtures import s3_options

from snapshot.errors import AlreadyExistsError, IntegrityError, StorageError
from snapshot.format import layout
from snapshot.format.hashing import digest
from snapshot.repo.packs import ChunkReader
from snapshot.repo.repository import Repository
from snapshot.storage import ObjectKind, StoreOptions
from snapshot.storage.s3 import S3Store, parse_s3_url

MiB = 1024 * 1024
DATA_KEY = "data/ab/ab" + "0" * 30
PAYLOAD = os.urandom(200_000)
ATTEMPTS = StoreOptions().max_attempts


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-requests back off by milliseconds, not seconds: the faults come from the proxy, not load.

    Both the store's own re-requests and botocore's retries: botocore's backoff (50 ms doubling
    per attempt, 1 s for SlowDown) is scaled down 20x; unscaled, nine retries of one listing
    add up to about 15 s.
    """
    monkeypatch.setattr(S3Store, "retry_base_delay", 0.002)
    monkeypatch.setattr(S3Store, "retry_max_delay", 0.02)
    monkeypatch.setattr(
        ExponentialBackoff,
        "_DEFAULT_BACKOFF_CONFIG",
        {"throttling_base_scale": 0.05, "non_throttling_base_scale": 0.0025},
    )


def _store(url: str, proxy: FaultProxy, **options: Any) -> S3Store:
    bucket, prefix = parse_s3_url(url)
    settings: dict[str, Any] = {"max_attempts": ATTEMPTS, **options}
    options = s3_options(proxy.url, **settings)
    return S3Store(bucket, prefix, options, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


@pytest.fixture
def store(s3_repo_url: str, fault_proxy: FaultProxy) -> S3Store:  # noqa: F811
    store = _store(s3_repo_url, fault_proxy)
    store.put(DATA_KEY, PAYLOAD, kind=ObjectKind.PACK)
    return store


CUTS = {
    "truncated": {"truncate": 1.0},
    "reset mid-body": {"reset": 1.0, "reset_points": ("mid-body",)},
    "truncated to nothing": {"truncate": 1.0, "keep": 0.0},
}


# -- unit level: the store's reads ----------------------------------------------------------


@pytest.mark.parametrize("cut", CUTS)
def test_cut_off_bodies_are_re_requested(store: S3Store, fault_proxy: FaultProxy, cut: str) -> None:  # noqa: F811
    fault = next(iter(CUTS[cut]))
    fault_proxy.set_rates(**CUTS[cut], limit=ATTEMPTS - 1)
    assert store.get_range(DATA_KEY, 1000, 150_000) == PAYLOAD[1000:151_000]
    assert fault_proxy.counts[fault] == ATTEMPTS - 1
    assert store.stats.counts["get_range"] == ATTEMPTS  # every attempt is a counted request

    fault_proxy.set_rates(**CUTS[cut], limit=ATTEMPTS - 1)
    assert store.get(DATA_KEY) == PAYLOAD
    assert fault_proxy.counts[fault] == 2 * (ATTEMPTS - 1)
    assert store.stats.counts["get"] == ATTEMPTS
    assert store.stats.bytes_down == 150_000 + len(PAYLOAD)


@pytest.mark.parametrize("cut", CUTS)
def test_always_cut_off_is_storage_error(store: S3Store, fault_proxy: FaultProxy, cut: str) -> None:  # noqa: F811
    fault_proxy.set_rates(**CUTS[cut])
    says = "connection cut off" if "reset" in cut else "truncated response"
    reads = ((lambda: store.get_range(DATA_KEY, 10, 5000), "get_range"), (lambda: store.get(DATA_KEY), "get"))
    for read, kind in reads:
        with pytest.raises(StorageError) as info:
            read()
        err = info.value
        assert not isinstance(err, IntegrityError) and err.exit_code == 5
        assert str(err).startswith(f"{kind} {DATA_KEY} in s3://")
        assert says in str(err) and f"{ATTEMPTS} attempts" in str(err) and "\n" not in str(err)
        assert store.stats.counts[kind] == ATTEMPTS


def test_garbled_bodies_are_re_requested(store: S3Store, fault_proxy: FaultProxy) -> None:  # noqa: F811
    fault_proxy.set_rates(corrupt=1.0, limit=ATTEMPTS - 1)  # the right length, one byte flipped
    assert store.get(DATA_KEY) == PAYLOAD
    assert fault_proxy.counts["corrupt"] == ATTEMPTS - 1
    assert store.stats.counts["get"] == ATTEMPTS

    fault_proxy.set_rates(corrupt=1.0)
    with pytest.raises(StorageError) as info:
        store.get(DATA_KEY)
    err = info.value
    assert not isinstance(err, IntegrityError) and err.exit_code == 5
    assert str(err).startswith(f"get {DATA_KEY} in s3://") and "\n" not in str(err)
    assert "did not match the checksum" in str(err) and f"({ATTEMPTS} attempts)" in str(err)
    assert store.stats.counts["get"] == 2 * ATTEMPTS


def _ranged(r: ProxiedRequest) -> bool:
    return r.method == "GET" and "range" in r.headers


def test_a_garbled_frame_is_read_again_until_two_reads_agree(
    cli: Any, fault_proxy: FaultProxy, s3_repo_url: str, s3_endpoint: str, s3_client: Any,  # noqa: F811
    chroma_dir: Path,
) -> None:
    assert cli("--repo", s3_repo_url, "--endpoint-url", s3_endpoint, "create", chroma_dir).code == 0
    repo = Repository.open(s3_repo_url, s3_options(fault_proxy.url))
    m = repo.get("latest")
    chunk = repo.chunks(m, max(m.files, key=lambda f: f.size))[0]
    reader, stats = ChunkReader(repo), repo.store.stats.counts
    ranges = stats["get_range"]  # the chunk table's

    fault_proxy.corrupt_for(_ranged, times=3)  # S3 sends no checksum with a range: garbled bytes arrive
    assert digest(reader.read_chunk(chunk)) == chunk.hash
    assert fault_proxy.counts["corrupt"] == 3 and stats["get_range"] - ranges == 4

    fault_proxy.corrupt_for(_ranged, times=4)  # garbled every time it is read: the error stands
    with pytest.raises(IntegrityError, match=f"object {chunk.frames[0].object} at offset"):
        reader.read_chunk(chunk)
    assert fault_proxy.counts["corrupt"] == 7 and stats["get_range"] - ranges == 8

    # Damage in the stored pack: two reads return the same wrong bytes, and that is final.
    frame = chunk.frames[0]
    bucket, prefix = parse_s3_url(s3_repo_url)
    key = f"{prefix}/{layout.object_key(frame.object)}"
    pack = bytearray(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    pack[frame.offset + frame.length // 2] ^= 0xFF
    s3_client.put_object(Bucket=bucket, Key=key, Body=bytes(pack))
    with pytest.raises(IntegrityError, match=f"object {frame.object} at offset") as info:
        reader.read_chunk(chunk)
    assert info.value.exit_code == 4 and stats["get_range"] - ranges == 10


def test_short_object_is_integrity_error_not_a_retry(store: S3Store, fault_proxy: FaultProxy) -> None:  # noqa: F811
    before = fault_proxy.counts["requests"]
    with pytest.raises(IntegrityError):
        store.get_range(DATA_KEY, len(PAYLOAD) - 10, 20)  # S3 says: only 10 bytes there
    with pytest.raises(IntegrityError):
        store.get_range(DATA_KEY, len(PAYLOAD) + 10, 20)  # 416
    assert fault_proxy.counts["requests"] - before == 2  # one request each: nothing retried


def test_listing_cut_off_is_retried_not_empty(s3_repo_url: str, fault_proxy: FaultProxy) -> None:  # noqa: F811
    store = _store(s3_repo_url, fault_proxy)
    store.list_page_size = 2
    keys = [f"snapshots/k{i}.json" for i in range(5)]
    for key in keys:
        store.put(key, b"{}", kind=ObjectKind.ROOT)
    for n, cut in enumerate(CUTS.values(), start=1):
        fault_proxy.set_rates(**cut, limit=ATTEMPTS - 1)  # a page cut to nothing parsed as "no keys"
        assert [o.key for o in store.list("snapshots/")] == keys
        assert fault_proxy.injected == n * (ATTEMPTS - 1)
    fault_proxy.set_rates(truncate=1.0, keep=0.0)
    with pytest.raises(StorageError, match=r"list 'snapshots/' in s3://.*truncated response"):
        list(store.list("snapshots/"))


def test_probe_rides_out_transient_errors(s3_repo_url: str, fault_proxy: FaultProxy) -> None:  # noqa: F811
    store = _store(s3_repo_url, fault_proxy)
    fault_proxy.set_rates(error=1.0, limit=2)  # the probe's two tries both get 500/503
    assert store.exists(DATA_KEY) is False
    assert fault_proxy.counts["error"] == 2


def test_lost_response_to_create_only_put(s3_repo_url: str, fault_proxy: FaultProxy) -> None:  # noqa: F811
    store = _store(s3_repo_url, fault_proxy)
    key = "snapshots/20261128T015012-1a2b3c4d.json"
    fault_proxy.drop_response_for(lambda r: r.method == "PUT" and r.path.split("?")[0].endswith(key))
    store.put(key, b'{"ours": 1}', kind=ObjectKind.ROOT, create_only=True)  # landed, answer lost, the retry got 412: ours
    assert fault_proxy.counts["drop"] == 1
    assert store.get(key) == b'{"ours": 1}'
    with pytest.raises(AlreadyExistsError):
        store.put(key, b'{"theirs": 2}', kind=ObjectKind.ROOT, create_only=True)
    with pytest.raises(AlreadyExistsError):  # our bytes, but there before this call
        store.put(key, b'{"ours": 1}', kind=ObjectKind.ROOT, create_only=True)
    assert store.get(key) == b'{"ours": 1}'


def test_lost_response_then_errors_to_create_only_put(s3_repo_url: str, fault_proxy: FaultProxy) -> None:  # noqa: F811
    store = _store(s3_repo_url, fault_proxy, max_attempts=2)
    key = "locks/" + "ab" * 16 + ".json"
    fault_proxy.drop_response_for(lambda r: r.method == "PUT")
    fault_proxy.set_rates(error=1.0, limit=1)  # the retry: 500 or 503, and botocore gives up
    store.put(key, b'{"lock": 1}', kind=ObjectKind.LOCK, create_only=True)  # the first attempt had landed
    assert fault_proxy.counts["drop"] == 1 and fault_proxy.counts["error"] == 1
    fault_proxy.drop_response_for(lambda r: r.method == "PUT")
    fault_proxy.set_rates(error=1.0, limit=1)
    with pytest.raises(StorageError, match="S3 error"):  # nothing of ours landed: the failure stands
        store.put("locks/" + "cd" * 16 + ".json", b'{"lock": 2}', kind=ObjectKind.LOCK, create_only=False)


# -- the proxy itself -----------------------------------------------------------------------


def test_proxy_speaks_http_like_s3_clients_do(s3_repo_url: str, fault_proxy: FaultProxy) -> None:  # noqa: F811
    seen: list[ProxiedRequest] = []
    fault_proxy.drop_response_for(lambda r: seen.append(r) is not None)  # records, never drops
    store = _store(s3_repo_url, fault_proxy)
    big = os.urandom(11 * MiB)
    store.put("data/cd/big", big, kind=ObjectKind.PACK)  # multipart: UploadPart bodies are file-like, Expect: 100-continue
    assert store.get("data/cd/big") == big
    assert store.exists("data/cd/big") and not store.exists("data/cd/none")
    assert any(r.headers.get("expect") == "100-continue" for r in seen if "partNumber=" in r.path)
    assert sum(r.method == "HEAD" for r in seen) >= 3  # HeadBucket + two HeadObject

    bucket, prefix = parse_s3_url(s3_repo_url)
    conn = http.client.HTTPConnection("127.0.0.1", int(fault_proxy.url.rsplit(":", 1)[1]), timeout=10)
    try:
        path = f"/{bucket}/{prefix}/chunked"
        # Any signature will do (moto checks none), but unsigned requests are anonymous ones.
        auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
                                 "SignedHeaders=host, Signature=00"}
        conn.request("PUT", path, body=iter([b"abc", b"defg"]), headers=auth, encode_chunked=True)
        put = conn.getresponse()
        assert (put.status, put.read()) == (200, b"")
        sock = conn.sock
        conn.request("GET", path, headers=auth)
        assert conn.getresponse().read() == b"abcdefg"
        assert conn.sock is sock is not None  # the same connection: kept alive
    finally:
        conn.close()
    assert store.get("chunked") == b"abcdefg"
    fault_proxy.set_rates(error=1.0)
    fault_proxy.enabled = False
    assert store.get("chunked") == b"abcdefg" and fault_proxy.injected == 0


# -- bad endpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "http://[::1]:99999", "ftp://host"])
def test_bad_endpoint_is_one_line(cli: Any, s3_endpoint: str, url: str) -> None:
    res = cli("--repo", "s3://bucket/p", "--endpoint-url", url, "list")
    assert res.code in (2, 13), res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert url in res.stderr


# -- end to end through the CLI -----------------------------------------------------------------

#: Attempts per request for the 10-round run. At 10% errors, 5% resets and 5% truncations a
#: run of 10 rounds makes about 570 GETs, 100 LISTs and 120 HEAD/PUT/DELETEs; the chance that
#: one of them fails every attempt is about 6% per run with StoreOptions' default of 5 (seen:
#: 1 run in 25 failed), 4e-4 with 8 and 1e-5 with 10 (with 5% garbled bodies on top: about 1e-3).
ROUNDS_ATTEMPTS = 10
#: Attempts in the 30% round: few enough that about half the commands fail, which is the point.
HARSH_ATTEMPTS = 2


@pytest.fixture
def cli_attempts(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``cli_attempts(n)``: every S3Store the CLI opens from now on makes up to n attempts
    (the CLI has no option for it; StoreOptions' default is used otherwise)."""

    def set_attempts(n: int) -> None:
        original = S3Store.__init__

        def init(self: S3Store, bucket: str, prefix: str = "", options: StoreOptions | None = None,
                 **kwargs: Any) -> None:
            original(self, bucket, prefix, replace(options or StoreOptions(), max_attempts=n), **kwargs)

        monkeypatch.setattr(S3Store, "__init__", init)

    return set_attempts


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _assert_same_db(restored: Path, source: dict[str, bytes]) -> None:
    got = _files(restored)
    assert set(got) == set(source)
    for rel, data in source.items():
        if rel == "chroma.sqlite3":  # SQLite's online backup rewrites header counters (bytes < 100)
            assert len(got[rel]) == len(data) and got[rel][100:] == data[100:]
        else:
            assert got[rel] == data, rel


def _clean_failure(res: Any) -> None:
    """A command that failed under faults did so as designed: a known exit code, one line."""
    assert res.code not in (0, 1), res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.slow  # ten create/restore rounds through the fault proxy
def test_ten_rounds_at_10_5_5_5_percent(
    cli: Any, fault_proxy: FaultProxy, s3_repo_url: str, s3_endpoint: str,  # noqa: F811
    chroma_dir: Path, tmp_path: Path, cli_attempts: Callable[[int], None],
) -> None:
    cli_attempts(ROUNDS_ATTEMPTS)
    repo = ("--repo", s3_repo_url, "--endpoint-url", fault_proxy.url)
    fault_proxy.set_rates(error=0.10, reset=0.05, truncate=0.05, corrupt=0.05)
    sources: dict[str, dict[str, bytes]] = {}
    for rnd in range(10):
        if rnd in (3, 6):
            grow(chroma_dir, "docs", 30, seed=rnd)
        source = _files(chroma_dir)
        res = cli(*repo, "create", chroma_dir, "--json")
        assert res.code == 0, f"round {rnd} create: {res.stderr}"
        sid = res.json()["id"]
        sources[sid] = source
        target = tmp_path / "restored" / str(rnd)
        res = cli(*repo, "restore", sid, target, "--skip-chroma-check")
        assert res.code == 0, f"round {rnd} restore: {res.stderr}"
        _assert_same_db(target, source)
        res = cli(*repo, "check", "--read-data")
        assert res.code == 0, f"round {rnd} check: {res.stdout} {res.stderr}"
        res = cli(*repo, "prune", "--keep-last", "3", "--grace", "0s")
        assert res.code == 0, f"round {rnd} prune: {res.stderr}"
    injected = dict(fault_proxy.counts)
    assert min(injected.get(k, 0) for k in ("error", "reset", "truncate", "corrupt")) >= 10, injected

    # Straight from moto, no proxy: the three kept snapshots, each byte for byte.
    direct = ("--repo", s3_repo_url, "--endpoint-url", s3_endpoint)
    listed = [s["id"] for s in cli(*direct, "list", "--json").json()]
    assert listed == list(sources)[-3:]
    for sid in listed:
        target = tmp_path / "final" / sid
        res = cli(*direct, "restore", sid, target, "--skip-chroma-check")
        assert res.code == 0, res.stderr
        _assert_same_db(target, sources[sid])
    assert cli(*direct, "check", "--read-data").code == 0


@pytest.mark.slow  # many create/restore rounds through the fault proxy
def test_a_round_at_30_percent_fails_cleanly_and_loses_nothing(
    cli: Any, fault_proxy: FaultProxy, s3_repo_url: str, s3_endpoint: str,  # noqa: F811
    chroma_dir: Path, tmp_path: Path, cli_attempts: Callable[[int], None],
) -> None:
    """create, restore (over a target and into a fresh one), check and prune at 30% faults."""
    cli_attempts(HARSH_ATTEMPTS)
    repo = ("--repo", s3_repo_url, "--endpoint-url", fault_proxy.url)
    direct = ("--repo", s3_repo_url, "--endpoint-url", s3_endpoint)
    saved: set[str] = set()  # what create reported saved
    sources: dict[str, dict[str, bytes]] = {}  # every snapshot in the repository, by what it holds

    def listed() -> list[str]:
        return [s["id"] for s in cli(*direct, "list", "--json").json()]

    first = cli(*direct, "create", chroma_dir, "--json")
    saved.add(first.json()["id"])
    sources[first.json()["id"]] = _files(chroma_dir)
    target = tmp_path / "target"  # an existing restore target: replaced whole, or not at all
    assert cli(*direct, "restore", "latest", target, "--skip-chroma-check").code == 0

    fault_proxy.set_rates(error=0.15, reset=0.075, truncate=0.075)
    codes: list[int] = []
    for i in range(6):
        if i == 3:
            grow(chroma_dir, "notes", 30, seed=100 + i)
        source = _files(chroma_dir)
        res = cli(*repo, "create", chroma_dir, "--json")
        codes.append(res.code)
        if res.code == 0:
            saved.add(res.json()["id"])
        else:
            _clean_failure(res)
        new = set(listed()) - set(sources)  # a failed create may have committed all the same
        assert len(new) <= 1 and (res.code != 0 or new == {res.json()["id"]}), (new, res.stderr)
        sources.update(dict.fromkeys(new, source))

        before = tree_digest(target)
        res = cli(*repo, "restore", "latest", target, "--force", "--skip-chroma-check", "--json")
        codes.append(res.code)
        if res.code == 0:
            _assert_same_db(target, sources[res.json()["id"]])
        else:
            _clean_failure(res)
            assert tree_digest(target) == before

        fresh = tmp_path / f"fresh{i}"
        res = cli(*repo, "restore", "latest", fresh, "--skip-chroma-check")
        codes.append(res.code)
        if res.code != 0:
            _clean_failure(res)
            assert not fresh.exists()

        for command in (("check", "--read-data"), ("prune", "--keep-last", "100", "--grace", "0s")):
            res = cli(*repo, *command)  # prune keeps every snapshot, collects what failed creates left
            codes.append(res.code)
            if res.code != 0:
                _clean_failure(res)
                assert res.code != 4, f"{command[0]} reported damage that is not there: {res.stderr}"
    assert 0 in codes and any(codes), (codes, dict(fault_proxy.counts))  # some failed, some not

    # Faults off, straight from moto: every snapshot a create reported saved is there, whole.
    assert saved <= set(listed()) == set(sources)
    for sid, source in sources.items():
        out = tmp_path / "final" / sid
        res = cli(*direct, "restore", sid, out, "--skip-chroma-check")
        assert res.code == 0, res.stderr
        _assert_same_db(out, source)


def test_restore_and_check_when_every_object_is_garbled_once(
    cli: Any, fault_proxy: FaultProxy, s3_repo_url: str, s3_endpoint: str,  # noqa: F811
    chroma_dir: Path, tmp_path: Path,
) -> None:
    """The first GET of every key comes back the right length with a byte flipped: whole
    objects (config, manifest, a pack of chunk tables) fail S3's checksum, ranges their hash.
    Each is read again and the commands succeed (once a whole GET exited 5, a range 4)."""
    assert cli("--repo", s3_repo_url, "--endpoint-url", s3_endpoint, "create", chroma_dir).code == 0
    source = _files(chroma_dir)
    seen: set[str] = set()

    def first_read(r: ProxiedRequest) -> bool:
        key = r.path.split("?")[0]
        if r.method != "GET" or key in seen:
            return False
        seen.add(key)
        return True

    repo = ("--repo", s3_repo_url, "--endpoint-url", fault_proxy.url)
    fault_proxy.corrupt_for(first_read, times=10**6)
    res = cli(*repo, "restore", "latest", tmp_path / "out", "--skip-chroma-check")
    assert res.code == 0, res.stderr
    _assert_same_db(tmp_path / "out", source)
    assert fault_proxy.counts["corrupt"] >= 3  # config, manifest, packs
    seen.clear()
    res = cli(*repo, "check", "--read-data")
    assert res.code == 0, res.stdout + res.stderr


def test_prune_survives_a_manifest_read_failing_once(
    cli: Any, fault_proxy: FaultProxy, s3_repo_url: str, s3_endpoint: str,  # noqa: F811
    chroma_dir: Path,
) -> None:
    """Every attempt of the first manifest read fails, a later read of it works: prune either
    goes on or stops with a storage error (it once crashed with AssertionError('unreachable'))."""
    assert cli("--repo", s3_repo_url, "--endpoint-url", s3_endpoint, "create", chroma_dir).code == 0
    manifest_get = lambda r: r.method == "GET" and "/snapshots/" in r.path.split("?")[0]  # noqa: E731
    fault_proxy.drop_response_for(manifest_get, times=ATTEMPTS)  # every attempt of the first read
    res = cli("--repo", s3_repo_url, "--endpoint-url", fault_proxy.url, "prune", "--keep-last", "3")
    if res.code not in (0, 5) or "Traceback" in res.stderr:
        pytest.fail(f"prune after one failed manifest read: exit {res.code}: {res.stderr}")
    assert fault_proxy.counts["drop"] == ATTEMPTS


def test_check_calls_an_unreadable_config_a_storage_error(
    cli: Any, fault_proxy: FaultProxy, s3_repo_url: str, s3_endpoint: str,  # noqa: F811
    chroma_dir: Path,
) -> None:
    assert cli("--repo", s3_repo_url, "--endpoint-url", s3_endpoint, "create", chroma_dir).code == 0
    config_reads = itertools.count()

    def reread(r: ProxiedRequest) -> bool:  # the open reads config.json, then check re-reads it
        return r.method == "GET" and r.path.split("?")[0].endswith("/config.json") and next(config_reads) > 0

    fault_proxy.drop_response_for(reread, times=ATTEMPTS)  # every attempt of the re-read
    res = cli("--repo", s3_repo_url, "--endpoint-url", fault_proxy.url, "check")
    assert fault_proxy.counts["drop"] == ATTEMPTS
    assert res.code == 5, res.stderr
