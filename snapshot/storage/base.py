"""The storage contract every backend keeps; the operations know nothing else about stores.

Keys are POSIX-style relative strings built only by :mod:`snapshot.format.layout`
(``config.json``, ``snapshots/<id>.json``, ``data/ab/<hash>``). A backend:

* ``get(key)`` returns the whole object or raises :class:`NotFoundError`.
* ``get_range(key, offset, length)`` returns exactly ``length`` bytes starting at ``offset``;
  raises :class:`NotFoundError` for a missing key and :class:`IntegrityError` when the object
  is shorter than the requested range.
* ``put(key, data)`` stores the bytes atomically: a reader sees the old object, no object, or
  the whole new one, never a part. Overwriting is allowed (objects are content-addressed, so it
  writes the same bytes).
* ``put(key, data, create_only=True)`` raises :class:`AlreadyExistsError` if the key exists and
  leaves the existing object untouched (S3 ``If-None-Match: *``, locally an exclusive link).
* ``exists(key)`` is True/False, never raises for a missing key.
* ``list(prefix)`` yields :class:`ObjectInfo` for every key starting with ``prefix``, in
  lexicographic key order; a prefix with no keys yields nothing.
* ``delete(key)`` removes the key; deleting a missing key is not an error.
* ``stats`` counts requests made through this backend (for reports and request economy).
* ``now()`` is the store's own clock (seconds since the epoch): the clock that stamps the
  ``mtime`` of what it lists. Ages of stored objects (locks, condemned packs) are measured
  against it, so a host whose clock is off cannot misjudge them.

Every failure is raised as a :class:`snapshot.errors.SnapshotError` subclass whose message
names the operation and the key; library exceptions (OSError, botocore) never escape.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    #: Last modification, seconds since the epoch (UTC).
    mtime: float


@dataclass
class RequestStats:
    """Requests made to a store, by kind. Thread-safe counters."""

    counts: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, *, up: int = 0, down: int = 0) -> None:
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.bytes_up += up
            self.bytes_down += down

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            out = dict(sorted(self.counts.items()))
        out["total"] = sum(v for k, v in out.items())
        return out


#: What infrequent-access storage classes bill an object at least (S3 STANDARD_IA, ONEZONE_IA).
MIN_BILLED_SIZE = 128 << 10
#: ... and for at least this long: deleting a younger object costs the rest of it anyway.
MIN_BILLED_SECONDS = 30 * 86400


@runtime_checkable
class Store(Protocol):
    """A flat key/value object store holding one repository (see module docstring)."""

    stats: RequestStats

    @property
    def url(self) -> str:
        """Where the repository lives, for messages (never includes credentials)."""
        ...

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, offset: int, length: int) -> bytes: ...

    def put(self, key: str, data: bytes | bytearray, *, create_only: bool = False) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def now(self) -> float: ...


@dataclass(frozen=True)
class StoreOptions:
    """Options for remote stores; a local folder ignores them.

    ``None`` means "boto3's standard chain decides" (profile, region, endpoint from the
    environment or ~/.aws). ``sse`` is ``"AES256"``, ``"aws:kms"`` or ``"none"``.
    ``checksum`` is botocore's request/response checksum mode: ``"when_supported"`` (the
    default) or ``"when_required"`` for stores that reject flexible checksums.
    """

    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str = "STANDARD_IA"
    sse: str = "AES256"
    sse_kms_key_id: str | None = None
    checksum: str | None = None
    max_concurrency: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    #: Tries per request, botocore's and our own for bodies cut off mid-read (a restore must
    #: finish on a network that drops 5-10% of responses).
    max_attempts: int = 10
