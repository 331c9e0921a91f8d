"""The copy's image of each source: the decoded files of the last snapshot a copy moved of each
(host, path), kept in the destination's base cache area so that the next copy takes the bases
of its deltas from local disk instead of reading the destination's chains (billed egress).

Layout: the slot ``<root>/<destination id>/copy-<key>/`` (snapshot/repo/basecache.py; not
create's slot: a create on the same machine never takes it for its capture) holds a file per
snapshot path (``files/<n>``, the chunks at their offsets), and ``cache.json`` naming the
snapshot and, per chunk content held, where it lies. It costs one copy of the DB per
(destination, host, path); while a copy runs, the new image is built beside the old one.

The new image is built as the copy runs (:class:`Builder`): each chunk the copy decodes is
written at its offset; once a snapshot is copied, each of its chunks not written is taken from
the old image, or from elsewhere in the new one (another offset with the same content), or
from the contents the run holds, each hash-checked; a chunk found nowhere is left out (the
next copy reads that base from the destination). While the copy runs, the new image is where
the bases of the next snapshots' deltas are found too (the content at their offset in the
snapshot copied before), whatever the memory bound. It replaces the old image whole once the
copy completes (a killed copy leaves the old one, or none: never half of one); with
``--no-cache`` it is dropped instead and the old one is not read. Every read of an image is
hash-checked: a stale or damaged image only means reading the destination's chains instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from snapshot.format.chunking import read_verified
from snapshot.format.manifest import Chunk, FileEntry, Manifest
from snapshot.repo.basecache import BaseCache
from snapshot.util import pausepoints
from snapshot.util.tempdirs import remove_tree

#: Where a content lies in an image: (snapshot path, offset, size).
Place = tuple[str, int, int]
Source = tuple[str, str]
Tables = Sequence[tuple[FileEntry, Sequence[Chunk]]]


def image_key(host: str, path: str) -> str:
    """The name of the copy's slot for snapshots of ``path`` on ``host``."""
    return "copy-" + hashlib.sha256(f"{host}\0{path}".encode()).hexdigest()[:20]


def source_of(m: Manifest) -> Source:
    return m.source_host, m.source_path


class Image:
    """A committed image (read only): content hash -> its bytes, hash-checked. With ``load``
    false (``--no-cache``) it holds nothing; its slot still names where a new one is staged."""

    def __init__(self, root: Path, repo_id: str, source: Source, load: bool = True) -> None:
        self.cache = BaseCache(root, repo_id, Path(source[1]), key=image_key(*source))
        files = self.cache.files
        self._at: dict[str, tuple[Path, int, int]] = {}
        chunks = self.cache.index.get("chunks") if load else None
        if isinstance(chunks, dict):
            for h, place in chunks.items():
                try:
                    rel, offset, size = place
                    self._at[str(h)] = (files[rel], int(offset), int(size))
                except (KeyError, TypeError, ValueError):
                    continue

    def __contains__(self, content: object) -> bool:
        return content in self._at

    def get(self, content: str) -> bytes | None:
        place = self._at.get(content)
        return None if place is None else read_verified(place[0], place[1], place[2], content)


class Placement:
    """Which content lies at each (snapshot path, offset) of an image being built (no I/O:
    the copy's prediction keeps one too)."""

    def __init__(self) -> None:
        self.at: dict[tuple[str, int], str] = {}
        self._where: dict[str, set[tuple[str, int]]] = {}

    def put(self, at: tuple[str, int], content: str) -> None:
        self.forget(at)
        self.at[at] = content
        self._where.setdefault(content, set()).add(at)

    def forget(self, at: tuple[str, int]) -> None:
        old = self.at.pop(at, None)
        if old is not None:
            self._where[old].discard(at)
            if not self._where[old]:
                del self._where[old]

    def __contains__(self, content: object) -> bool:
        return content in self._where

    def places(self, content: str) -> list[tuple[str, int]]:
        return sorted(self._where.get(content, ()))


class Builder:
    """The new image of one source, staged beside the old one. While the copy runs it is also
    where the latest content decoded at each offset is found (a delta's base is most often the
    content at its offset in the snapshot copied before)."""

    def __init__(self, old: Image, chunk_size: int) -> None:
        self.old = old
        self.chunk_size = chunk_size
        self.staging = old.cache.new_staging()
        (self.staging / "files").mkdir()
        self._names: dict[str, Path] = {}
        self.placed = Placement()
        self._lock = threading.Lock()
        #: The last snapshot settled: its id and (path, size, chunks) per file.
        self.last: tuple[str, list[tuple[str, int, Sequence[Chunk]]]] | None = None

    def _file(self, rel: str) -> Path:
        with self._lock:
            path = self._names.get(rel)
            if path is None:
                path = self._names[rel] = self.staging / "files" / str(len(self._names))
            return path

    def put(self, rel: str, offset: int, content: str, data: bytes) -> None:
        """Write ``data`` (content ``content``, hash-checked by the caller) at ``offset`` of
        ``rel``."""
        path = self._file(rel)
        with self._lock:
            self.placed.forget((rel, offset))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        with self._lock:
            self.placed.put((rel, offset), content)

    def holds(self, content: str) -> bool:
        with self._lock:
            return content in self.placed

    def get(self, content: str, size: int) -> bytes | None:
        """``content`` (``size`` bytes) from where it was written, hash-checked (a put may
        have overwritten it since: then it is not found)."""
        with self._lock:
            places = [(self._names[rel], offset) for rel, offset in self.placed.places(content)]
        for path, offset in places:
            data = read_verified(path, offset, size, content)
            if data is not None:
                return data
        return None

    def settle(self, sid: str, tables: Tables, held: Callable[[str], bytes | None]) -> None:
        """Snapshot ``sid`` is copied: fill in each of its chunks the copy did not decode (from
        the old image, the new one or ``held``), and make it the one :meth:`commit` commits."""
        files = []
        for f, chunks in tables:
            files.append((f.path, f.size, chunks))
            for i, c in enumerate(chunks):
                at = (f.path, i * self.chunk_size)
                if self.placed.at.get(at) == c.hash:
                    continue
                data = self.old.get(c.hash) or self.get(c.hash, c.size) or held(c.hash)
                if data is not None:
                    self.put(at[0], at[1], c.hash, data)
                else:
                    with self._lock:
                        self.placed.forget(at)
        self.last = (sid, files)

    def commit(self) -> None:
        """Replace the old image by the last snapshot settled (nothing when none was)."""
        if self.last is None:
            self.abort()
            return
        sid, files = self.last
        staged: dict[str, Path] = {}
        chunks: dict[str, Place] = {}
        for rel, size, cs in files:
            path = self._file(rel)
            with open(path, "ab") as fh:
                fh.truncate(size)
            staged[rel] = path
            for i, c in enumerate(cs):
                if self.placed.at.get((rel, i * self.chunk_size)) == c.hash:
                    chunks.setdefault(c.hash, (rel, i * self.chunk_size, c.size))
        for rel in set(self._names) - set(staged):
            self._names[rel].unlink(missing_ok=True)
        pausepoints.point("copy.image-staged")
        self.old.cache.commit(self.staging, sid, staged, extra={"chunks": chunks})

    def abort(self) -> None:
        remove_tree(self.staging)


class Images:
    """The images of the sources a copy moves snapshots of: the committed ones it takes bases
    from, and the new ones it builds and takes bases from as it runs. With ``keep`` false
    (``--no-cache``) no committed image is read and the new ones are dropped at the end. Local
    disk trouble with a new image (a full disk) drops that image with a warning: only the
    reads of bases get dearer."""

    def __init__(self, root: Path, repo_id: str, chunk_size: int, keep: bool = True,
                 warn: Callable[[str], None] | None = None) -> None:
        self.root, self.repo_id, self.chunk_size, self.keep = root, repo_id, chunk_size, keep
        self._warn = warn or (lambda _msg: None)
        self._old: dict[Source, Image] = {}
        self._new: dict[Source, Builder] = {}
        self._failed: set[Source] = set()
        self._lock = threading.Lock()

    def old(self, source: Source) -> Image:
        with self._lock:
            image = self._old.get(source)
            if image is None:
                image = self._old[source] = Image(self.root, self.repo_id, source, load=self.keep)
            return image

    def _current(self, source: Source) -> Builder | None:
        with self._lock:
            return self._new.get(source)

    def get(self, source: Source, content: str, size: int) -> bytes | None:
        """``content`` (``size`` bytes), from the new image or else the old one, hash-checked."""
        new = self._current(source)
        data = new.get(content, size) if new is not None else None
        return data if data is not None else self.old(source).get(content)

    def holds(self, source: Source, content: str) -> bool:
        new = self._current(source)
        return (new is not None and new.holds(content)) or content in self.old(source)

    def _builder(self, source: Source) -> Builder | None:
        image = self.old(source)
        with self._lock:
            if source in self._failed:
                return None
            new = self._new.get(source)
            if new is None:
                try:
                    new = self._new[source] = Builder(image, self.chunk_size)
                except OSError as exc:
                    self._fail(source, exc)
            return new

    def _fail(self, source: Source, exc: OSError) -> None:
        """(Held by the lock.)"""
        self._failed.add(source)
        new = self._new.pop(source, None)
        if new is not None:
            new.abort()
        self._warn(f"could not keep the copy's image of {source[1]} on {source[0]}: {exc}")

    def put(self, source: Source, rel: str, offset: int, content: str, data: bytes) -> None:
        new = self._builder(source)
        if new is None:
            return
        try:
            new.put(rel, offset, content, data)
        except OSError as exc:
            with self._lock:
                if source not in self._failed:
                    self._fail(source, exc)

    def settle(self, source: Source, sid: str, tables: Tables, held: Callable[[str], bytes | None]) -> None:
        new = self._builder(source)
        if new is None:
            return
        try:
            new.settle(sid, tables, held)
        except OSError as exc:
            with self._lock:
                self._fail(source, exc)

    def commit(self) -> None:
        """Replace each old image by the new one (once the copy is done; with ``keep`` false,
        drop the new ones)."""
        for source, new in self._builders():
            try:
                new.commit() if self.keep else new.abort()
            except OSError as exc:
                new.abort()
                self._warn(f"could not keep the copy's image of {source[1]} on {source[0]}: {exc}")

    def abort(self) -> None:
        for _source, new in self._builders():
            new.abort()

    def _builders(self) -> list[tuple[Source, Builder]]:
        with self._lock:
            out, self._new = list(self._new.items()), {}
        return out
