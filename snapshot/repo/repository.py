"""A repository: the one owner of every read and write of a store holding snapshots.

Config, manifests, objects (packs), keys, locks and request statistics all go through
:class:`Repository`; the operations (create, restore, diff, prune, check) sit above it and
never build a storage key or call the store themselves.

Repository itself holds opening (snapshot/repo/config.py reads and writes the config), the
encryption keys and the sealing of frames; for the rest it delegates, under its own method
names, to one module each: manifests.py (roots: ids, resolve, cached reads, commit), tables.py
(chunk tables), objects.py (packs, listings, deletion), condemned_records.py and clock.py (the
deletion protocol's records and clock), locks.py, metering.py (requests measured and foreseen).
A rule belongs in one of those, not here: this module only wires them together.

An encrypted repository is opened with a password (a :class:`KeySource`); Repository then
seals what it writes and opens what it reads (snapshot/format/crypto.py): manifest roots in
manifests.py, frames and chunk tables through :meth:`Repository.seal_frame` and
:meth:`Repository.read_frame`. The operations see plaintext and never know whether a repository
is encrypted.
"""

from __future__ import annotations

import builtins
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from snapshot.errors import NotFoundError, UsageError
from snapshot.format import crypto, layout
from snapshot.format.condemned import Condemned
from snapshot.format.manifest import Chunk, FileEntry, Frame, LockSetting, Manifest, RepoConfig
from snapshot.repo import config, metering
from snapshot.repo import keys as keyfiles
from snapshot.repo.clock import CLOCK_SHIFT_ENV as CLOCK_SHIFT_ENV  # re-exported: imported from here
from snapshot.repo.clock import store_now
from snapshot.repo.condemned_records import CondemnedRecords
from snapshot.repo.config import OpenedConfig
from snapshot.repo.keys import KeyInfo, KeySource
from snapshot.repo.locks import LockInfo, RepositoryLock, acquire, list_locks, remove_stale_locks
from snapshot.repo.manifests import Manifests, ManifestScan
from snapshot.repo.manifests import SnapshotSummary as SnapshotSummary  # re-exported: imported from here
from snapshot.repo.metering import Measurement as Measurement  # re-exported: imported from here
from snapshot.repo.objects import Objects
from snapshot.repo.objects import checked_read as checked_read  # re-exported: imported from here
from snapshot.repo.selection import SnapshotFilter
from snapshot.repo.tables import plan_table_reads, read_chunks, read_table_content, read_tables
from snapshot.storage import ColdClass, ObjectInfo, Store, StoreOptions, open_store
from snapshot.util import pausepoints


class Repository:
    """Open with :meth:`open` (``create=True`` initialises an empty location)."""

    def __init__(self, store: Store, config: RepoConfig, access: OpenedConfig | None = None,
                 key_source: KeySource | None = None) -> None:
        self.store = store
        self.config = config
        access = access or OpenedConfig(config)
        self._cipher = access.cipher
        self._key_id = access.key_id
        self._key_source = key_source
        self._objects = Objects(store, self._cipher)
        self._condemned = CondemnedRecords(store, self.now)
        self._manifests = Manifests(store, self._cipher)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str],
        options: StoreOptions | None = None,
        *,
        create: bool = False,
        encrypt: bool = False,
        key_source: KeySource | None = None,
        chunk_size: int | None = None,
        codec: str | None = None,
        level: int | None = None,
        max_chain: int | None = None,
        object_lock: LockSetting | None = None,
    ) -> Repository:
        """Open the repository at ``location``; an encrypted one reads its password from
        ``key_source``. The settings (encryption, chunk size, codec, level, chain bound, Object
        Lock) apply when this call initialises it; given for an existing repository, encryption
        of an unencrypted one, or a chunk size, codec or Object Lock other than its own, is
        refused."""
        config.check_settings(chunk_size, codec, level)
        store = open_store(os.fspath(location), options)
        try:
            raw = store.get(layout.CONFIG_KEY)
        except NotFoundError:
            if not create:
                raise NotFoundError(
                    f"no repository at {store.url} (create a snapshot there first)"
                ) from None
            opened = config.initialise(store, chunk_size, codec, level, max_chain, encrypt, key_source,
                                       object_lock)
        else:
            opened = config.load(store, raw, key_source)
        return cls._opened(store, opened, key_source, chunk_size, codec, encrypt, object_lock)

    @classmethod
    def _opened(cls, store: Store, opened: OpenedConfig, key_source: KeySource | None, chunk_size: int | None,
                codec: str | None, encrypt: bool, object_lock: LockSetting | None) -> Repository:
        repo = cls(store, opened.config, opened, key_source)
        config.refuse_other_settings(opened, store.url, chunk_size, codec, encrypt, object_lock)
        config.use_lock(store, opened.config.object_lock)
        return repo

    @classmethod
    def init(
        cls,
        location: str | os.PathLike[str],
        options: StoreOptions | None = None,
        *,
        encrypt: bool = False,
        key_source: KeySource | None = None,
        chunk_size: int | None = None,
        codec: str | None = None,
        level: int | None = None,
        max_chain: int | None = None,
        object_lock: LockSetting | None = None,
    ) -> Repository:
        """Initialise a new repository at ``location`` (refused where one exists)."""
        config.check_settings(chunk_size, codec, level)
        store = open_store(os.fspath(location), options)
        if store.exists(layout.CONFIG_KEY):
            raise UsageError(f"a repository already exists at {store.url}")
        opened = config.initialise(store, chunk_size, codec, level, max_chain, encrypt, key_source,
                                   object_lock)
        return cls._opened(store, opened, key_source, chunk_size, codec, encrypt, object_lock)

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def local_root(self) -> Path | None:
        """The repository's folder when it is on this machine (restore must not overwrite it)."""
        return self.store.capabilities.local_root

    def verify_config(self) -> None:
        """Re-read and validate the stored config: raises what is wrong with it (a
        StorageError when it could not be read at all)."""
        config.verify(self.store, OpenedConfig(self.config, self._cipher, self._key_id))

    # ------------------------------------------------------------------ encryption and keys

    @property
    def encrypted(self) -> bool:
        return self._cipher is not None

    @property
    def key_id(self) -> str | None:
        """The key the password in use opened (None when the repository is not encrypted)."""
        return self._key_id

    def _need_cipher(self) -> tuple[crypto.Cipher, str]:
        if self._cipher is None or self._key_id is None:
            raise UsageError(f"the repository at {self.url} is not encrypted: it has no keys")
        return self._cipher, self._key_id

    def list_keys(self) -> builtins.list[KeyInfo]:
        cipher, current = self._need_cipher()
        return keyfiles.describe_keys(self.store, cipher, current)

    def add_key(self, password: bytes) -> str:
        """Let ``password`` open the repository too; the new key's id."""
        cipher, _ = self._need_cipher()
        return keyfiles.add_key(self.store, cipher, password)

    def remove_key(self, ref: str) -> str:
        """Remove key ``ref`` (id or unique prefix); never the last one, nor the one in use unless
        the password in use opens another key too. The id removed."""
        cipher, current = self._need_cipher()
        source = self._key_source
        assert source is not None
        return keyfiles.remove_key(self.store, cipher, ref, current, lambda: source.read(False))

    def change_password(self, password: bytes) -> tuple[str, str]:
        """Replace the key in use by one that ``password`` opens: (old id, new id). The new key
        is written before the old one is removed, so an interruption leaves both usable."""
        cipher, current = self._need_cipher()
        new = keyfiles.add_key(self.store, cipher, password)
        pausepoints.point("repository.key-added")
        keyfiles.delete_key(self.store, current)
        self._key_id = new
        return current, new

    def seal_frame(
        self, data: bytes, codec: str, size: int, hash_: str, *, table: bool = False
    ) -> bytes | bytearray:
        """The bytes to store for a frame (``codec``-compressed ``data`` decoding to ``size``
        bytes hashing to ``hash_``): sealed in an encrypted repository, else ``data`` itself."""
        if self._cipher is None:
            return data
        return self._cipher.seal_frame(data, codec, size, hash_, table=table)

    def measure(self) -> AbstractContextManager[Measurement]:
        """Count the requests and bytes of the block (the figures are set when it ends)."""
        return metering.measure(self.store)

    def list_requests(self, keys: int) -> int:
        """The requests one listing of ``keys`` keys takes (S3 pages them; a folder does not)."""
        return metering.list_requests(self.store, keys)

    def put_requests(self, size: int) -> int:
        """The requests writing an object of ``size`` bytes takes (S3 sends big ones in parts)."""
        return metering.put_requests(self.store, size)

    def root_size(self, m: Manifest) -> int:
        """The stored size of ``m``'s root (what reading or writing it moves)."""
        return len(self._manifests.root_bytes(m))

    # ------------------------------------------------------------------ snapshots

    def snapshot_ids(self) -> list[str]:
        """Every snapshot id, oldest first (ids sort by creation time)."""
        return self._manifests.ids()

    def resolve(self, ref: str, ids: Sequence[str] | None = None,
                filters: SnapshotFilter | None = None) -> str:
        """An id from ``latest``, a full id or any unique prefix; with ``filters``, among the
        snapshots that pass them (``latest``: the newest that does; a prefix must match
        exactly one that does). See snapshot/repo/selection.py."""
        return self._manifests.resolve(ref, ids, filters)

    def manifest(self, snapshot_id: str, *, fresh: bool = False) -> Manifest:
        """The parsed, validated manifest of an exact id (cached; ``fresh``: read again, for a
        reader that outlives a prune's rewrite of the root)."""
        return self._manifests.get(snapshot_id, fresh=fresh)

    def get(self, ref: str, filters: SnapshotFilter | None = None) -> Manifest:
        return self.manifest(self.resolve(ref, filters=filters))

    def manifests(self, ids: Sequence[str] | None = None) -> list[Manifest]:
        """The manifests of ``ids`` (default: all), in that order, fetched in parallel."""
        return self._manifests.many(ids)

    def scan_manifests(self) -> Iterator[ManifestScan]:
        """Every key under snapshots/, oldest first, with its manifest or the error reading it
        (for check and list, which report a broken manifest instead of stopping at it)."""
        return self._manifests.scan()

    def list_snapshots(self) -> builtins.list[SnapshotSummary]:
        """Every snapshot's summary, oldest first; one whose manifest cannot be read is listed
        with its error (so that a user can find it to forget it) instead of failing the listing."""
        return self._manifests.summaries()

    def list(self) -> builtins.list[SnapshotSummary]:
        """Deprecated name of :meth:`list_snapshots` (it shadowed the builtin)."""
        warnings.warn("Repository.list() is now Repository.list_snapshots()", DeprecationWarning,
                      stacklevel=2)
        return self.list_snapshots()

    def has_snapshot(self, snapshot_id: str) -> bool:
        return self._manifests.exists(snapshot_id)

    def save_manifest(self, m: Manifest) -> None:
        """Commit a snapshot: its manifest, create-only (see :meth:`Manifests.save`)."""
        self._manifests.save(m)

    def replace_manifest(self, m: Manifest) -> None:
        """Rewrite an existing snapshot's root (repack moved frames it points at), atomically:
        see :meth:`Manifests.replace`."""
        self._manifests.replace(m)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._manifests.delete(snapshot_id)

    def chunks(self, m: Manifest, f: FileEntry) -> tuple[Chunk, ...]:
        """The chunks of file ``f`` of snapshot ``m``: inline (format 1) or read from its
        table (format 2: one range read, decoded bounded by its declared size, hash-checked)."""
        return read_chunks(self, m, f)

    def table_content(self, m: Manifest, f: FileEntry) -> bytes:
        """The bytes of file ``f``'s chunk table (format 2), read and checked as :meth:`chunks`
        reads them, not parsed (snapshot/format/chunk_tables.py ``parse_lines`` parses them)."""
        return read_table_content(self, m, f)

    def tables(
        self, m: Manifest, files: Sequence[FileEntry] | None = None
    ) -> Iterator[tuple[FileEntry, tuple[Chunk, ...]]]:
        """Each of ``files`` (default: all of ``m``'s) with its chunks, in order, a pack holding
        many of their tables read whole: see :func:`snapshot.repo.tables.read_tables`."""
        return read_tables(self, m, files)

    def table_reads(self, files: Sequence[FileEntry]) -> builtins.list[tuple[str, int]]:
        """The requests :meth:`tables` makes for ``files`` when nothing fails, as (kind, bytes):
        see :func:`snapshot.repo.tables.plan_table_reads`."""
        return plan_table_reads(files)

    # ------------------------------------------------------------------ locks

    def lock(self, kind: str, command: str, *, wait: float = 0.0) -> RepositoryLock:
        """Take a shared (writers) or exclusive (prune) lock; see snapshot/repo/locks.py. Ages are
        judged by the store's clock, so a host whose clock is off misjudges no lock."""
        return acquire(self.store, kind, command, wait=wait, clock=self.now)

    def list_locks(self) -> builtins.list[tuple[LockInfo | None, ObjectInfo, bool]]:
        return list_locks(self.store, clock=self.now)

    def remove_stale_locks(self, *, all_locks: bool = False) -> builtins.list[str]:
        return remove_stale_locks(self.store, all_locks=all_locks, clock=self.now)

    # ------------------------------------------------------------------ the deletion protocol

    def now(self) -> float:
        """The store's clock (the one that stamps listed mtimes), in seconds since the epoch,
        moved by ``CHROMA_SNAPSHOT_CLOCK_SHIFT`` seconds where that is set (benchmarks that
        simulate nights, tests that let days pass)."""
        return store_now(self.store)

    def condemned(self) -> Condemned:
        """Every condemned object and when (see snapshot/format/condemned.py); one listing plus one
        small read per record (a prune leaves one record behind)."""
        return self._condemned.read()

    def condemn(self, objects: Mapping[str, float], *, delete_after: float) -> builtins.list[str]:
        """Record ``objects`` (id -> when) as condemned, in new create-only record objects."""
        return self._condemned.condemn(objects, delete_after=delete_after)

    def replace_condemned(self, remaining: Mapping[str, float], old: Iterable[str], *,
                          delete_after: float) -> None:
        """The records ``old`` are replaced by one holding ``remaining``: the new one is written
        first, so an interruption leaves a duplicate (harmless), never a pack uncondemned."""
        self._condemned.replace(remaining, old, delete_after=delete_after)

    # ------------------------------------------------------------------ objects

    def put_object(self, object_id: str, data: bytes | bytearray) -> None:
        self._objects.put(object_id, data)

    def read_object(self, object_id: str) -> bytes:
        """A whole pack, checked against its name (the xxh3-128 of its bytes)."""
        return self._objects.read(object_id)

    @property
    def cold_class(self) -> ColdClass | None:
        """The storage class packs are written in when it bills a minimum size and duration
        (S3's STANDARD_IA and ONEZONE_IA, the default for packs); None when none does."""
        return self.store.capabilities.cold_class

    @property
    def pack_class(self) -> str | None:
        """The storage class packs are written in (None: the repository is no S3 bucket)."""
        if self.local_root is not None:
            return None
        return str(getattr(getattr(self.store, "options", None), "storage_class", "") or "STANDARD")

    def read_range(self, object_id: str, offset: int, length: int) -> bytes:
        """Stored bytes of a pack, as they are (several frames at once: see ChunkReader)."""
        return self._objects.read_range(object_id, offset, length)

    def read_frame(
        self, frame: Frame, *, table: bool = False, scratch: bytearray | None = None,
        fetched: bytes | memoryview | None = None,
    ) -> bytes | memoryview:
        """The compressed bytes of one frame, opened in an encrypted repository: see
        :meth:`snapshot.repo.objects.Objects.read_frame`."""
        return self._objects.read_frame(frame, table=table, scratch=scratch, fetched=fetched)

    def list_objects(self) -> Iterator[tuple[str | None, ObjectInfo]]:
        """(object id, listing) for every key under data/; the id is None for a stray key."""
        return self._objects.listing()

    def inventory(self) -> Iterator[tuple[str, str | None, ObjectInfo]]:
        """Every object of the repository as (kind, id, listing), one listing per kind: see
        :meth:`snapshot.repo.objects.Objects.inventory`."""
        return self._objects.inventory()

    def listed(self, kind: str) -> builtins.list[ObjectInfo]:
        """The objects of one kind of :meth:`inventory` (one listing; stray keys included)."""
        return self._objects.listed(kind)

    def check_deletes_allowed(self, command: str) -> None:
        """Raise :class:`AccessDeniedError` unless the credentials may delete, before ``command``
        changes anything: see :meth:`snapshot.repo.objects.Objects.check_deletes_allowed`."""
        self._objects.check_deletes_allowed(command)

    def missing_objects(self, object_ids: Iterable[str]) -> set[str]:
        """Which of ``object_ids`` the repository does not hold (one listing)."""
        return self._objects.missing(object_ids)

    def delete_objects(self, object_ids: Iterable[str]) -> None:
        self._objects.delete(object_ids)
