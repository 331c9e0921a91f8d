"""The storage contract of snapshot/storage/base.py, as one reusable class.

:class:`StoreContract` holds the tests; a backend runs them by subclassing it with a ``store``
fixture (and says what its :attr:`Store.capabilities` are). Here: a local folder and S3 on a
real moto server (deep prefix). Backend-specific behaviour lives in tests/storage/test_s3_*.py.
Then the backend registry: how ``open_store`` picks a backend from a location.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from s3_fixtures import *  # noqa: F403  (conftest.py imports it too; this lets the module run alone)
from s3_fixtures import s3_options

from snapshot import storage
from snapshot.errors import AlreadyExistsError, IntegrityError, NotFoundError, UsageError
from snapshot.storage import Capabilities, ColdClass, LocalStore, ObjectKind, Store, StoreOptions, open_store
from snapshot.storage.s3 import S3Store, parse_s3_url

MiB = 1024 * 1024
DATA_KEY = "data/ab/ab" + "0" * 30
MANIFEST_KEY = "snapshots/20261128T015012-1a2b3c4d.json"
PAYLOAD = bytes(range(256)) * 12 + b"tail"  # 3076 bytes, every byte value
PACK, ROOT, CONFIG = ObjectKind.PACK, ObjectKind.ROOT, ObjectKind.CONFIG


def s3_test_store(url: str, endpoint: str, **options: object) -> S3Store:
    """An S3Store on the moto server whose multipart threshold (5 MiB) tests can reach."""
    bucket, prefix = parse_s3_url(url)
    return S3Store(
        bucket,
        prefix,
        s3_options(endpoint, **options),
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
    )


class StoreContract:
    """Every test a backend must pass. A subclass provides the ``store`` fixture (an empty
    repository location) and ``expected_capabilities(store)``."""

    def expected_capabilities(self, store: Store) -> Capabilities:
        raise NotImplementedError

    def test_capabilities(self, store: Store) -> None:
        assert store.capabilities == self.expected_capabilities(store)
        assert isinstance(store, Store)  # every method and property of the protocol is there

    def test_put_get_round_trip(self, store: Store) -> None:
        store.put("config.json", PAYLOAD, kind=CONFIG)
        store.put(DATA_KEY, b"", kind=PACK)
        assert store.get("config.json") == PAYLOAD
        assert store.get(DATA_KEY) == b""

    @pytest.mark.parametrize("kind", list(ObjectKind))
    def test_every_kind_keeps_the_contract(self, store: Store, kind: ObjectKind) -> None:
        """A kind may change how an object is stored (a storage class), never what a reader
        gets, whatever the key looks like."""
        big = os.urandom((128 << 10) + 1)  # above the cold classes' billed minimum
        for key in ("data/cd/" + "cd" * 16, "odd/place", MANIFEST_KEY):
            store.put(key, big, kind=kind)
            assert store.get(key) == big
            assert store.get_range(key, 1000, 10) == big[1000:1010]
        store.put("created/once", b"first", kind=kind, create_only=True)
        with pytest.raises(AlreadyExistsError):
            store.put("created/once", b"second", kind=kind, create_only=True)
        assert store.get("created/once") == b"first"

    def test_get_missing_key_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError, match=re.escape("snapshots/nope.json")):
            store.get("snapshots/nope.json")

    def test_get_range_exact_bytes(self, store: Store) -> None:
        store.put(DATA_KEY, PAYLOAD, kind=PACK)
        n = len(PAYLOAD)
        assert store.get_range(DATA_KEY, 0, 10) == PAYLOAD[:10]
        assert store.get_range(DATA_KEY, 1000, 333) == PAYLOAD[1000:1333]
        assert store.get_range(DATA_KEY, n - 4, 4) == b"tail"
        assert store.get_range(DATA_KEY, 0, n) == PAYLOAD
        assert store.get_range(DATA_KEY, 5, 0) == b""

    def test_get_range_past_the_end_is_integrity_error(self, store: Store) -> None:
        store.put(DATA_KEY, PAYLOAD, kind=PACK)
        n = len(PAYLOAD)
        with pytest.raises(IntegrityError):
            store.get_range(DATA_KEY, n - 4, 10)  # overlaps the end
        with pytest.raises(IntegrityError):
            store.get_range(DATA_KEY, n + 100, 10)  # wholly past the end

    def test_get_range_missing_key_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError, match=DATA_KEY):
            store.get_range(DATA_KEY, 0, 10)
        with pytest.raises(NotFoundError):
            store.get_range(DATA_KEY, 0, 0)

    def test_put_overwrites(self, store: Store) -> None:
        store.put("config.json", b"first", kind=CONFIG)
        store.put("config.json", b"second, longer", kind=CONFIG)
        assert store.get("config.json") == b"second, longer"

    def test_create_only(self, store: Store) -> None:
        store.put(MANIFEST_KEY, b"original", kind=ROOT, create_only=True)
        assert store.get(MANIFEST_KEY) == b"original"
        with pytest.raises(AlreadyExistsError, match=MANIFEST_KEY):
            store.put(MANIFEST_KEY, b"intruder", kind=ROOT, create_only=True)
        assert store.get(MANIFEST_KEY) == b"original"

    def test_exists(self, store: Store) -> None:
        assert store.exists("config.json") is False
        store.put("config.json", b"{}", kind=CONFIG)
        assert store.exists("config.json") is True
        assert store.exists("config") is False

    def test_list_sorted_and_filtered(self, store: Store) -> None:
        keys = ["data/cd/cd1", "config.json", "data/ab/ab2", MANIFEST_KEY, "data/ab/ab1", "data/abc"]
        for i, key in enumerate(keys):
            store.put(key, b"x" * i, kind=PACK)
        before = store.now()

        listed = list(store.list("data/"))
        assert [o.key for o in listed] == ["data/ab/ab1", "data/ab/ab2", "data/abc", "data/cd/cd1"]
        assert {o.key: o.size for o in listed} == {k: keys.index(k) for k in [o.key for o in listed]}
        assert all(abs(o.mtime - before) < 300 for o in listed)
        assert [o.key for o in store.list("data/ab/")] == ["data/ab/ab1", "data/ab/ab2"]
        assert [o.key for o in store.list("data/ab")] == ["data/ab/ab1", "data/ab/ab2", "data/abc"]
        assert [o.key for o in store.list("")] == sorted(keys)
        assert list(store.list("nothing/here/")) == []

    def test_delete(self, store: Store) -> None:
        store.put("config.json", b"{}", kind=CONFIG)
        store.delete("config.json")
        assert not store.exists("config.json")
        with pytest.raises(NotFoundError):
            store.get("config.json")
        assert list(store.list("config")) == []
        store.delete("config.json")  # missing is fine
        store.delete("data/zz/never-written")

    def test_now_is_the_clock_of_listed_mtimes(self, store: Store) -> None:
        before = store.now()
        store.put(DATA_KEY, b"x", kind=PACK)
        [info] = store.list("data/")
        assert before - 2 <= info.mtime <= store.now() + 2  # S3's clock has whole seconds
        assert abs(store.now() - time.time()) < 300

    def test_stats_count_requests_and_bytes(self, store: Store) -> None:
        store.exists("warm-up")  # the S3 store's one-time bucket probe happens here
        counts, up, down = dict(store.stats.counts), store.stats.bytes_up, store.stats.bytes_down

        store.put(DATA_KEY, PAYLOAD, kind=PACK)
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

    def test_large_object_round_trip(self, store: Store) -> None:
        data = os.urandom(10 * MiB + 12345)
        store.put(DATA_KEY, data, kind=PACK)
        assert store.get(DATA_KEY) == data
        boundary = 5 * MiB  # a multipart part boundary on S3
        assert store.get_range(DATA_KEY, boundary - 7, 20) == data[boundary - 7 : boundary + 13]
        assert [o.size for o in store.list("data/")] == [len(data)]

    # One test method run by each backend's subclass: different executors, by design.
    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(offset=st.integers(0, len(PAYLOAD) + 50), length=st.integers(0, 400))
    def test_get_range_property(self, store: Store, offset: int, length: int) -> None:
        if not store.exists(DATA_KEY):
            store.put(DATA_KEY, PAYLOAD, kind=PACK)
        if offset + length <= len(PAYLOAD) or length == 0:
            assert store.get_range(DATA_KEY, offset, length) == PAYLOAD[offset : offset + length]
        else:
            with pytest.raises(IntegrityError):
                store.get_range(DATA_KEY, offset, length)


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "repo")

    def expected_capabilities(self, store: Store) -> Capabilities:
        assert isinstance(store, LocalStore)
        return Capabilities(local_root=store.root, cold_class=None)


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_repo_url: str, s3_endpoint: str) -> Store:
        return s3_test_store(s3_repo_url, s3_endpoint)

    def expected_capabilities(self, store: Store) -> Capabilities:
        return Capabilities(local_root=None, cold_class=ColdClass("STANDARD_IA", 128 << 10, 30 * 86400),
                            versions=True)


# -- the backend registry ----------------------------------------------------------------------


def test_open_store_picks_the_local_backend(tmp_path: Path) -> None:
    for location in (str(tmp_path / "a"), f"file://{tmp_path}/a"):
        store = open_store(location)
        assert isinstance(store, LocalStore) and store.root == tmp_path / "a"
    with pytest.raises(UsageError, match="absolute path"):
        open_store("file://relative/path")
    with pytest.raises(UsageError, match="no repository given"):
        open_store("")


def test_open_store_refuses_an_unknown_scheme() -> None:
    with pytest.raises(UsageError) as info:
        open_store("gs://bucket/prefix")
    assert str(info.value) == "unsupported repository scheme 'gs' in gs://bucket/prefix (use a path or s3://)"


def test_a_backend_is_one_registry_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A module holding ``open_location`` and its line in BACKENDS: open_store then reaches it,
    passes it the options, and names it among the schemes it knows."""
    opened: list[tuple[str, StoreOptions]] = []
    module = types.ModuleType("mem_backend")

    def open_location(location: str, options: StoreOptions) -> Store:
        opened.append((location, options))
        return LocalStore(tmp_path / location.removeprefix("mem://"))

    module.open_location = open_location  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mem_backend", module)
    monkeypatch.setitem(storage.BACKENDS, "mem", "mem_backend")

    options = StoreOptions(region="eu-west-1")
    store = open_store("mem://here", options)
    assert isinstance(store, LocalStore) and store.root == tmp_path / "here"
    assert opened == [("mem://here", options)]
    with pytest.raises(UsageError, match=re.escape("(use a path or s3:// or mem://)")):
        open_store("ftp://host/x")


def test_a_local_repository_never_imports_boto3(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from snapshot.storage import StoreOptions, ObjectKind, open_store\n"
        f"s = open_store({str(tmp_path / 'r')!r}, StoreOptions())\n"
        "s.put('config.json', b'{}', kind=ObjectKind.CONFIG)\n"
        "assert 'snapshot.storage.s3.options' in sys.modules\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
