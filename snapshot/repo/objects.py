"""The repository's objects under data/ (packs) and the listings of every kind of object.

Holds the reads and writes of packs (whole, by range, one frame opened in an encrypted
repository), the re-read of a range that fails its check, listings, the probe of whether the
credentials may delete, and deletion. It must not parse or write manifests, chunk tables or
condemned records, nor decide what to delete: :class:`snapshot.repo.repository.Repository`
is what the operations call, and it delegates here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from snapshot.errors import AccessDeniedError, IntegrityError, NotFoundError
from snapshot.format import crypto, layout
from snapshot.format.hashing import digest
from snapshot.format.manifest import Frame
from snapshot.storage import ObjectInfo, ObjectKind, Store
from snapshot.util import pausepoints

#: Deletions in flight at once.
DELETERS = 8
#: How many times bytes read with a range that fail their check are read again (checked_read).
_REREADS = 3
_T = TypeVar("_T")


def checked_read(
    data: bytes | memoryview, reread: Callable[[], bytes | memoryview],
    check: Callable[[bytes | memoryview], _T],
) -> _T:
    """``check(data)``, where ``data`` was read with a range. S3 sends no checksum with a range,
    so bytes garbled on the way arrive looking like a damaged pack: when the check raises
    IntegrityError they are read again (``reread``) and checked again, until a check passes
    or two reads in a row return the same bytes (those are what is stored: the error stands),
    at most _REREADS times. Damage costs one read more; a garbled response, a few more."""
    for _ in range(_REREADS):
        try:
            return check(data)
        except IntegrityError:
            again = reread()
            if again == data:
                raise
            data = again
    return check(data)


#: The kinds of objects :meth:`Objects.inventory` lists: kind, key prefix, key -> id.
_INVENTORY: tuple[tuple[str, str, Callable[[str], str | None]], ...] = (
    ("config", layout.CONFIG_KEY, lambda key: None),
    ("snapshots", layout.SNAPSHOTS_PREFIX, layout.snapshot_id_from_key),
    ("data", layout.DATA_PREFIX, layout.object_id_from_key),
    ("keys", layout.KEYS_PREFIX, layout.key_id_from_key),
    ("locks", layout.LOCKS_PREFIX, layout.lock_id_from_key),
    ("condemned", layout.CONDEMNED_PREFIX, layout.condemned_id_from_key),
)


class Objects:
    """The packs of one repository on ``store``; ``cipher`` opens frames of an encrypted one."""

    def __init__(self, store: Store, cipher: crypto.Cipher | None) -> None:
        self.store = store
        self._cipher = cipher

    def put(self, object_id: str, data: bytes | bytearray) -> None:
        self.store.put(layout.object_key(object_id), data, kind=ObjectKind.PACK)

    def read(self, object_id: str) -> bytes:
        """A whole pack, checked against its name (the xxh3-128 of its bytes)."""
        try:
            data = self.store.get(layout.object_key(object_id))
        except NotFoundError as exc:
            raise NotFoundError(f"object {object_id} is missing from the repository") from exc
        if digest(data) != object_id:
            raise IntegrityError(f"object {object_id} does not match its name (damaged)")
        return data

    def read_range(self, object_id: str, offset: int, length: int) -> bytes:
        """Stored bytes of a pack, as they are (several frames at once: see ChunkReader)."""
        try:
            return self.store.get_range(layout.object_key(object_id), offset, length)
        except NotFoundError as exc:
            raise NotFoundError(f"object {object_id} is missing from the repository") from exc

    def read_frame(
        self, frame: Frame, *, table: bool = False, scratch: bytearray | None = None,
        fetched: bytes | memoryview | None = None,
    ) -> bytes | memoryview:
        """The compressed bytes of one frame (a data frame, or with ``table`` a chunk table): a
        range read of its pack, opened (authenticated) in an encrypted repository; given a
        ``scratch`` buffer, opened into it (a view valid until the buffer's next use).
        ``fetched``: the frame's stored bytes, already read with others of its pack."""
        raw = self.read_range(frame.object, frame.offset, frame.length) if fetched is None else fetched
        if self._cipher is None:
            return raw
        what = f"object {frame.object} at offset {frame.offset}"
        return self._cipher.open_frame(raw, frame, what, table=table, scratch=scratch)

    def listing(self) -> Iterator[tuple[str | None, ObjectInfo]]:
        """(object id, listing) for every key under data/; the id is None for a stray key."""
        for info in self.store.list(layout.DATA_PREFIX):
            yield layout.object_id_from_key(info.key), info

    def inventory(self) -> Iterator[tuple[str, str | None, ObjectInfo]]:
        """Every object of the repository as (kind, id, listing), one listing per kind: kind is
        config, snapshots, data, keys, locks or condemned; the id is None for a stray key (and
        for the config). Keys outside these (others' objects in a shared prefix) are not listed."""
        for kind, prefix, parse in _INVENTORY:
            for info in self.store.list(prefix):
                if kind != "config" or info.key == layout.CONFIG_KEY:
                    yield kind, parse(info.key), info

    def listed(self, kind: str) -> list[ObjectInfo]:
        """The objects of one kind of :meth:`inventory` (one listing; stray keys included)."""
        for name, prefix, _parse in _INVENTORY:
            if name == kind:
                return list(self.store.list(prefix))
        raise ValueError(f"no kind of object {kind!r}")

    def check_deletes_allowed(self, command: str) -> None:
        """Raise :class:`AccessDeniedError` (naming the action) unless the credentials may delete
        snapshots, packs and condemned records: asked of the store by deleting keys that never
        exist, before ``command`` changes anything (backup credentials may not delete)."""
        for key in layout.DELETE_PROBE_KEYS:
            try:
                self.store.delete(key)
            except AccessDeniedError as exc:
                raise AccessDeniedError(f"{command} needs to delete objects and may not: {exc}") from None

    def missing(self, object_ids: Iterable[str]) -> set[str]:
        """Which of ``object_ids`` the repository does not hold (one listing)."""
        wanted = set(object_ids)
        if not wanted:
            return set()
        present = {oid for oid, _ in self.listing() if oid is not None}
        return wanted - present

    def delete(self, object_ids: Iterable[str]) -> None:
        keys = [layout.object_key(oid) for oid in object_ids]

        def delete(key: str) -> None:
            self.store.delete(key)
            pausepoints.point("repository.object-deleted")

        with ThreadPoolExecutor(max_workers=DELETERS, thread_name_prefix="delete") as pool:
            list(pool.map(delete, keys))
