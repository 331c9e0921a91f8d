"""The storage contract every backend keeps; the layers above know nothing else about stores.

A store is a flat key/value object store holding one repository. Keys are POSIX-style relative
strings (``config.json``, ``snapshots/<id>.json``, ``data/ab/<hash>``) that a store neither
builds nor parses: the repository layer owns them, and tells :meth:`Store.put` what kind of
object each one is (:class:`ObjectKind`), which is all a backend may base per-object settings
on. What a backend can do beyond the contract it says in :attr:`Store.capabilities`, so that no
caller needs to know which backend it holds.

Every failure is raised as a :class:`snapshot.errors.SnapshotError` subclass whose message
names the operation and the key: :class:`NotFoundError` for a missing key,
:class:`AlreadyExistsError` for a create-only key that exists, :class:`IntegrityError` for an
object shorter than a range asked of it, :class:`StorageError` (or one of its subclasses) for
everything else. Library exceptions (OSError, botocore's) never escape a backend.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from snapshot.storage.link import Link


class ObjectKind(enum.Enum):
    """What a stored object is, as far as a backend may care (say, to pick a storage class)."""

    #: A pack of frames and chunk tables under ``data/``: immutable, named by its hash, the bulk
    #: of a repository's bytes, written once and read again only by restores and checks.
    PACK = "pack"
    #: A snapshot's manifest (root), the commit point of a create; written create-only, and
    #: replaced whole by a repack.
    ROOT = "root"
    #: The repository config, written once, create-only.
    CONFIG = "config"
    #: A key object of an encrypted repository.
    KEY = "key"
    #: A lock: created create-only, rewritten while it is refreshed, deleted when released.
    LOCK = "lock"
    #: A record of packs condemned by a prune (the first phase of deleting them).
    CONDEMNED = "condemned"


#: The kinds written under Object Lock retention when a repository has it: what a restore needs
#: (key objects too: without one an encrypted repository cannot be read). Locks and condemned
#: records, which every command and prune delete, are not retained.
LOCKED_KINDS = frozenset({ObjectKind.PACK, ObjectKind.ROOT, ObjectKind.CONFIG, ObjectKind.KEY})


@dataclass(frozen=True)
class ObjectLock:
    """S3 Object Lock retention: each object of :data:`LOCKED_KINDS` is put with ``mode`` and a
    retain-until date ``days`` after the store's clock at the put."""

    mode: str
    days: int


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key in a versioned bucket (a delete marker has ``deleted`` and size 0)."""

    key: str
    version_id: str
    size: int
    #: When the version was written (the store's clock), seconds since the epoch.
    mtime: float
    latest: bool
    deleted: bool = False
    #: What the store says of the bytes (S3's ETag): equal for a version and its copy.
    etag: str = ""


@dataclass(frozen=True)
class ColdClass:
    """A storage class that bills an object at least ``min_size`` bytes for at least
    ``min_seconds`` (deleting a younger object costs the rest of its time anyway)."""

    name: str
    min_size: int
    min_seconds: float


@dataclass(frozen=True)
class Capabilities:
    """What a store offers beyond the contract, for the layers above to ask instead of
    probing which backend they hold."""

    #: The folder holding the repository's keys as files, when the store is one (restore
    #: refuses to replace it, and reads it with more threads than it would a remote store).
    local_root: Path | None = None
    #: The class packs of at least its ``min_size`` are written in, when it bills minimums
    #: (prune then reports what deleting young packs costs); None when nothing does.
    cold_class: ColdClass | None = None
    #: Whether the store can keep versions of its objects and hold them under Object Lock (S3):
    #: where False, :meth:`Store.versioning` is None and nothing has versions or retention.
    versions: bool = False
    #: The gauge of a remote store's link, which says how many requests to keep in flight
    #: (snapshot/storage/link.py); None for a folder, read and written with fixed counts.
    link: Link | None = field(default=None, compare=False)


#: Storage classes whose objects must be restored before they can be read (S3).
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


@dataclass(frozen=True)
class ArchiveState:
    """An object in an archive class: whether a restored copy is readable, or on its way."""

    storage_class: str
    #: "archived" (no restore asked), "restoring" (asked, not ready) or "restored" (readable).
    state: str
    #: Until when the restored copy stays (as S3 says it), if restored.
    expiry: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    #: Last modification, seconds since the epoch (UTC), by the store's clock (:meth:`Store.now`).
    mtime: float
    #: The S3 storage class the listing gives (None: a local store, or not reported).
    storage_class: str | None = None


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


@runtime_checkable
class Store(Protocol):
    """A flat key/value object store holding one repository (see the module docstring).

    Methods are safe to call from several threads at once. A backend that retries a request
    (a lost connection, a throttled or cut-off response) does so inside the call: a caller sees
    one outcome, and :attr:`stats` counts every request actually made.
    """

    #: Requests made through this store, by kind (``get``, ``get_range``, ``put``, ``head``,
    #: ``list``, ``delete``) and the bytes they moved; for reports and request economy.
    stats: RequestStats

    @property
    def url(self) -> str:
        """Where the repository lives, for messages (never includes credentials)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What this store offers beyond the contract (constant for the store's lifetime)."""
        ...

    def get(self, key: str) -> bytes:
        """The whole object, exactly the bytes last put; :class:`NotFoundError` if the key is
        missing. A response cut off or garbled on the way is requested again, never returned."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes of the object starting at ``offset`` (``length`` 0 gives
        ``b""`` for an existing key). :class:`NotFoundError` for a missing key,
        :class:`IntegrityError` when the object ends before ``offset + length``. A short or
        cut-off response is requested again; the bytes may still have been garbled on the way
        (S3 sends no checksum with a range), so callers check what they read."""
        ...

    def put(self, key: str, data: bytes | bytearray, *, kind: ObjectKind, create_only: bool = False) -> None:
        """Store ``data`` under ``key``, atomically: a reader sees the old object, no object or
        the whole new one, never a part, and a failed put leaves no part under ``key``.

        Without ``create_only`` an existing object is replaced (for content-addressed keys with
        the same bytes). With ``create_only=True`` an existing key raises
        :class:`AlreadyExistsError` and is left untouched, also when two writers race for it
        (S3 ``If-None-Match: *``, locally an exclusive link); a retried create-only put whose
        earlier attempt landed unseen is a success, since such keys are unique to their writer.
        ``kind`` says what the object is (:class:`ObjectKind`): the only thing a backend may
        base per-object settings on (such as a storage class); it never changes the contract.
        """
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under exactly ``key``; False (never an error) when not.
        One request; an unusable store (no bucket, no access) raises as any other call."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every key starting with ``prefix`` (a plain string prefix, not a folder: ``data/ab``
        also lists ``data/abc``), in lexicographic (code point) order; nothing for a prefix
        without keys. Read-after-write: a key put before the call is listed, one deleted
        before it is not; keys put or deleted while it runs may or may not be."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error. A deleted key reads as missing."""
        ...

    def archive_state(self, key: str) -> ArchiveState | None:
        """Whether ``key`` is in an archive class and must be restored to be read (one request
        on a store that has such classes); None when it is readable as it is."""
        ...

    def request_restore(self, key: str, *, days: int, tier: str) -> None:
        """Ask the store to restore an archived object for ``days`` at ``tier``'s speed; a
        restore already under way is not an error."""
        ...

    def use_object_lock(self, lock: ObjectLock | None, *, check_bucket: bool = False) -> None:
        """From now on, put (and copy back) objects of :data:`LOCKED_KINDS` under ``lock``; None
        stops. With ``check_bucket`` (a new repository), first ask whether the bucket has Object
        Lock enabled (UsageError if not); a store without versions then refuses (UsageError),
        and otherwise ignores the lock (it cannot retain anything)."""
        ...

    def retention(self, key: str) -> float | None:
        """Until when (seconds since the epoch) the current version of ``key`` is retained under
        Object Lock, as the store says (one request; it may lie in the past); None when it has
        no retention. :class:`NotFoundError` for a missing key."""
        ...

    def versioning(self) -> str | None:
        """The bucket's versioning status, ``Enabled`` or ``Suspended``; None when it never had
        versioning (one request; always None where :attr:`Capabilities.versions` is False)."""
        ...

    def versions(self, prefix: str) -> Iterator[ObjectVersion]:
        """Every version and delete marker of the keys starting with ``prefix``, by key, newest
        first within a key (nothing where there are no versions)."""
        ...

    def copy_back(self, key: str, version_id: str, *, kind: ObjectKind, size: int) -> None:
        """Make version ``version_id`` of ``key`` its current version again, as a new version
        holding the same bytes (written as a put of ``kind`` and ``size`` would be: class,
        retention). A store without versions raises UsageError."""
        ...

    def now(self) -> float:
        """The store's own clock (seconds since the epoch): the clock that stamps the ``mtime``
        of what it lists. Ages of stored objects (locks, condemned packs) are measured against
        it, so a host whose clock is off cannot misjudge them."""
        ...
