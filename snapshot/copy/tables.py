"""The chunk tables of a snapshot copied: each file's chunks as the destination stores them,
encoded once its packs are written; a table the destination holds already is reused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from snapshot.copy.index import DestFrame
from snapshot.copy.plan import DestIndex
from snapshot.format.chunk_tables import encode_table
from snapshot.format.codecs import compress
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk, FileEntry, Frame, TableRef
from snapshot.repo.journal import TABLE, CopyJournal
from snapshot.repo.packs import PackWriter, PendingFrame
from snapshot.repo.repository import Repository

#: A file copied: its entry, its source chunks and the destination chain of each.
CopiedFile = tuple[FileEntry, tuple[Chunk, ...], list[tuple[DestFrame, ...]]]


def write_tables(dest: Repository, known: DestIndex, journal: CopyJournal, files: Sequence[CopiedFile],
                 done: dict[PendingFrame, Frame], pack_size: int) -> tuple[list[FileEntry], set[str]]:
    """Each file's chunk table (the destination's when it holds the same one, else written
    now) and every object the root will name."""
    codec, level = dest.config.codec, dest.config.level
    tables = PackWriter(dest, pack_size=pack_size, on_sealed=journal.record)
    needed: set[str] = set()
    pending: list[tuple[FileEntry, int, TableRef | PendingFrame]] = []
    written: dict[str, PendingFrame] = {}
    try:
        for f, src_chunks, chains in files:
            chunks = tuple(Chunk(c.hash, c.size, tuple(done[fr] if isinstance(fr, PendingFrame) else fr
                                                       for fr in chain))
                           for c, chain in zip(src_chunks, chains, strict=True))
            needed |= {fr.object for c in chunks for fr in c.frames}
            raw = encode_table(chunks)
            h = digest(raw)
            ref: TableRef | PendingFrame | None = known.tables.get(h) or written.get(h)
            if ref is None:
                frame = dest.seal_frame(compress(raw, codec, level), codec, len(raw), h, table=True)
                ref = written[h] = tables.add(frame, codec, len(raw), h, note=TABLE)
            pending.append((f, len(chunks), ref))
        tables.close()
    except BaseException:
        tables.abort()
        raise
    entries = []
    for f, count, ref in pending:
        if isinstance(ref, PendingFrame):
            fr = tables.resolve(ref)
            ref = TableRef(fr.object, fr.offset, fr.length, fr.size, fr.hash, fr.codec)
            known.tables[fr.hash] = ref
        needed.add(ref.object)
        entries.append(replace(f, chunks=(), table=ref, chunk_count=count))
    return entries, needed
