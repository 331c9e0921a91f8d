"""Which objects and frames snapshots reference: the one walk from roots to file entries to
chunk tables to chunks to frames (restic's ``FindUsedBlobs``). Prune, repack and check ask it;
restore and diff read chunks through :meth:`Repository.chunks` and need no walk.

A file entry keeps its chunks inline (format 1) or names a chunk table, a frame in a pack
(format 2); :func:`_source` is the one place the two part. A table is read once per hash and
walker: equal hashes, equal chunks. The table's *own* object is taken from each file entry,
never from what was read: the same table content can be stored in several packs (a file that
changed back, a repack that moved it), and each copy an entry names is in use.

Three views:

* :meth:`Usage.objects`: every object one snapshot needs. The objects of each table read are
  remembered (a few pack ids each), so the roots of a whole repository cost one read per
  distinct table.
* :meth:`Usage.walk`: each file entry of some snapshots with its table and, the first time that
  table is met, its chunks, or the error reading them (``check`` reports it and goes on).
* :meth:`Usage.paths`: one file path at a time across some snapshots, holding only that path's
  tables: its distinct versions, per chunk index the distinct chains (a delta frame's base is
  the frame before it), per table location the chunks it lists, and the objects.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass

from snapshot.errors import SnapshotError
from snapshot.format.chains import Location, location
from snapshot.format.manifest import Chunk, FileEntry, Frame, Manifest, TableRef
from snapshot.repo.repository import Repository

#: Asked of every chunk table a walk meets: read it? (check: is its frame's object there and
#: long enough?). A table not read is not counted as read: a later entry naming the same
#: content elsewhere still reads it.
Readable = Callable[[Manifest, FileEntry, TableRef], bool]


def _source(f: FileEntry) -> tuple[Hashable, TableRef | None]:
    """What names ``f``'s list of chunks (equal names, equal lists) and the chunk table to read
    it from: the table's hash and the table (format 2), or the inline chunks themselves and
    None (format 1)."""
    if f.table is None:
        return f.chunks, None
    return f.table.hash, f.table


def frame_objects(chunks: Iterable[Chunk]) -> frozenset[str]:
    """The objects the frames of ``chunks`` are in."""
    return frozenset(fr.object for c in chunks for fr in c.frames)


@dataclass(frozen=True)
class FileRefs:
    """One file entry of one snapshot, as :meth:`Usage.walk` meets it."""

    manifest: Manifest
    entry: FileEntry
    #: Its chunk table (format 2) as this entry names it; None when its chunks are inline.
    table: TableRef | None
    #: Its chunks: always when inline; for a table, the first time this walker reads it.
    #: None when the table was read before, was not to be read, or could not be read.
    chunks: tuple[Chunk, ...] | None
    #: Why the table could not be read (storage: the store failed; else it is damaged).
    error: SnapshotError | None = None

    @property
    def objects(self) -> frozenset[str]:
        """The objects this entry shows: its table's and those of the chunks read here."""
        own = frozenset() if self.table is None else frozenset({self.table.object})
        return own | frame_objects(self.chunks or ())


@dataclass(frozen=True)
class Version:
    """One distinct list of chunks of a file path."""

    chunks: tuple[Chunk, ...]
    #: Every copy of its table the snapshots name (format 2; one per location); () when inline.
    tables: tuple[TableRef, ...]
    #: The snapshots that recorded it.
    snapshots: tuple[str, ...]


@dataclass(frozen=True)
class PathUse:
    """What some snapshots reference for one file path."""

    path: str
    versions: tuple[Version, ...]

    @property
    def chunk_count(self) -> int:
        return max((len(v.chunks) for v in self.versions), default=0)

    def chains(self, index: int) -> set[tuple[Frame, ...]]:
        """The distinct chains of chunk ``index`` (each ends at the frame holding the content;
        a delta frame's base is the frame before it)."""
        return {v.chunks[index].frames for v in self.versions if index < len(v.chunks)}

    def tables(self) -> dict[Location, tuple[TableRef, tuple[Chunk, ...]]]:
        """Per stored chunk table (by location): the table and the chunks it lists."""
        return {location(t.frame()): (t, v.chunks) for v in self.versions for t in v.tables}

    @property
    def objects(self) -> frozenset[str]:
        """Every object this path's versions need: their tables' and their frames'."""
        out = {t.object for v in self.versions for t in v.tables}
        for v in self.versions:
            out |= frame_objects(v.chunks)
        return frozenset(out)


class Usage:
    """Walks what snapshots reference in ``repo``. Reading a table can raise
    :class:`SnapshotError` (:meth:`objects`, :meth:`paths`) or be reported (:meth:`walk`)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        #: Table hash -> the objects its frames are in, for every table this walker read.
        self._tables: dict[Hashable, frozenset[str]] = {}
        #: Where a table could not be read, and why (another copy of its content may be fine).
        self._failed: dict[Location, SnapshotError] = {}

    def walk(self, manifests: Iterable[Manifest], readable: Readable | None = None) -> Iterator[FileRefs]:
        """Each file entry of ``manifests``, in order, with its chunks the first time its table
        is met by this walker (see :class:`FileRefs`). ``readable`` is asked of every table
        met, read before or not. A table that could not be read is not read again from the
        same location: each entry naming that location carries the same error."""
        for m in manifests:
            for f in m.files:
                key, table = _source(f)
                if table is not None:
                    wanted = readable is None or readable(m, f, table)
                    if not wanted or key in self._tables:
                        yield FileRefs(m, f, table, None)
                        continue
                    failed = self._failed.get(location(table.frame()))
                    if failed is not None:  # read already: its error again, not a second read
                        yield FileRefs(m, f, table, None, failed)
                        continue
                try:
                    chunks = self.repo.chunks(m, f)
                except SnapshotError as exc:
                    if table is not None:
                        self._failed[location(table.frame())] = exc
                    yield FileRefs(m, f, table, None, exc)
                    continue
                if table is not None:
                    self._tables[key] = frame_objects(chunks)
                yield FileRefs(m, f, table, chunks)

    def objects(self, m: Manifest) -> frozenset[str]:
        """Every object snapshot ``m`` needs: each file's table and the objects of every frame
        of every chain in it. Raises what reading a table raised."""
        out: set[str] = set()
        for ref in self.walk([m]):
            if ref.error is not None:
                raise ref.error
            out |= ref.objects
            if ref.chunks is None and ref.table is not None:
                out |= self._tables[ref.table.hash]
        return frozenset(out)

    def objects_of(self, manifests: Iterable[Manifest]) -> set[str]:
        """Every object any of ``manifests`` needs."""
        out: set[str] = set()
        for m in manifests:
            out |= self.objects(m)
        return out

    def paths(self, manifests: Iterable[Manifest]) -> Iterator[PathUse]:
        """What ``manifests`` reference, one file path at a time in path order; each distinct
        list of chunks of a path is read once, and only one path's are held. Raises what
        reading a table raised."""
        by_path: dict[str, dict[Hashable, list[tuple[Manifest, FileEntry]]]] = {}
        for m in manifests:
            for f in m.files:
                by_path.setdefault(f.path, {}).setdefault(_source(f)[0], []).append((m, f))
        for path in sorted(by_path):
            versions = []
            # The versions of a path share most frames (a kept chain is the one before it plus
            # a link): equal frames and chains become one object, not one per chunk table read.
            frames: dict[Frame, Frame] = {}
            chains: dict[tuple[Frame, ...], tuple[Frame, ...]] = {}
            for key, entries in by_path[path].items():
                m, f = entries[0]
                chunks = _shared(self.repo.chunks(m, f), frames, chains)
                found = {location(t.frame()): t for _, e in entries if (t := _source(e)[1]) is not None}
                if found:
                    self._tables[key] = frame_objects(chunks)
                versions.append(Version(chunks, tuple(found.values()), tuple(m.id for m, _ in entries)))
            yield PathUse(path, tuple(versions))


def _shared(
    chunks: tuple[Chunk, ...], frames: dict[Frame, Frame], chains: dict[tuple[Frame, ...], tuple[Frame, ...]]
) -> tuple[Chunk, ...]:
    """``chunks`` with each frame and each chain replaced by the equal one met before."""
    out = []
    for c in chunks:
        chain = tuple(frames.setdefault(fr, fr) for fr in c.frames)
        out.append(Chunk(c.hash, c.size, chains.setdefault(chain, chain)))
    return tuple(out)
