"""Which snapshots a copy moves, what the destination already holds, and what a copy reports
(``--dry-run``'s figures and prediction: snapshot/copy/predict.py): the checks that refuse a
copy before anything is written, and the index of the
destination's chains (snapshot/copy/index.py) built from its chunk tables and from the packs a
killed copy uploaded."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from snapshot.copy.index import ChainIndex
from snapshot.errors import TargetError, UsageError
from snapshot.format.manifest import Manifest, TableRef
from snapshot.repo.journal import TABLE, CopyJournal
from snapshot.repo.repository import Repository
from snapshot.repo.selection import SnapshotFacts, SnapshotFilter
from snapshot.repo.usage import Usage

COPIED, PRESENT, VANISHED, TO_COPY = "copied", "present", "vanished", "to copy"


@dataclass(frozen=True)
class SnapshotCopy:
    """One snapshot of a copy: ``status`` is ``copied`` (``to copy`` with --dry-run),
    ``present`` (the destination holds it: skipped) or ``vanished`` (removed from the source
    while the copy ran: skipped)."""

    id: str
    status: str
    chunks: int = 0
    #: Chunks whose frames were stored (copied as they are, or re-encoded), and re-encoded.
    chunks_stored: int = 0
    chunks_reencoded: int = 0
    #: Stored bytes of the data frames written (--dry-run: of the source frames to copy as
    #: they are; a re-encoded chunk counts its raw size there).
    bytes_stored: int = 0


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    dry_run: bool
    snapshots: tuple[SnapshotCopy, ...]
    copied: int
    skipped: int
    #: Bytes read from the source, written to the destination (packs, tables, roots, locks).
    bytes_read: int = 0
    bytes_written: int = 0
    #: Bytes read from the destination (its chunk tables, the bases of the deltas copied).
    bytes_read_destination: int = 0
    #: Stored bytes of the data frames written (the copy's share of bytes_written).
    bytes_stored: int = 0
    #: Packs a killed copy had uploaded whose frames this one used instead of uploading them.
    packs_resumed: int = 0
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    #: What the copy takes on each side (snapshot/copy/predict.py): always with dry_run, and
    #: with ``CopyOptions.predict``. A CopyPrediction.
    predicted: Any = None


def check_pair(dest: Repository, source: Repository) -> None:
    """Refuse a copy that cannot work, before anything is read or written."""
    if dest.config.id == source.config.id or dest.url == source.url:
        raise UsageError(f"the source and the destination are the same repository ({source.url}, id "
                         f"{source.config.id}); copy needs two repositories")
    if dest.config.chunk_size != source.config.chunk_size:
        raise UsageError(
            f"the source's chunk size is {source.config.chunk_size} and the destination's "
            f"{dest.config.chunk_size}: copy needs equal chunk sizes (init the destination with "
            f"--chunk-size {source.config.chunk_size})")


def select(source: Repository, refs: Sequence[str], filters: SnapshotFilter) -> list[str]:
    """The source snapshots to copy, oldest first: those ``refs`` name (each resolved among the
    snapshots that pass ``filters``), or with no ref every one that passes them."""
    ids = source.snapshot_ids()
    if refs:
        return sorted({source.resolve(ref, ids, filters) for ref in refs})
    if not filters:
        return ids
    return [m.id for m in source.manifests(ids)
            if filters.matches(SnapshotFacts(m.id, m.tags, m.source_host, m.source_path))]


def same_content(a: Manifest, b: Manifest) -> bool:
    """Whether two roots of one id describe the same snapshot (every file, same bytes)."""
    def files(m: Manifest) -> set[tuple[str, int, str]]:
        return {(f.path, f.size, f.hash) for f in m.files}

    return files(a) == files(b)


def split_present(dest: Repository, source: Repository, ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """(to copy, already in the destination). A destination snapshot of the same id with other
    content is refused (TargetError): nothing is copied."""
    there = set(dest.snapshot_ids())
    present = [sid for sid in ids if sid in there]
    for sid in present:
        if not same_content(source.manifest(sid), dest.manifest(sid)):
            raise TargetError(f"snapshot {sid} exists in {dest.url} with other content than in "
                              f"{source.url}; nothing was copied")
    return [sid for sid in ids if sid not in there], present


@dataclass
class DestIndex:
    """What the destination holds: chains by content, chunk tables by hash."""

    chains: ChainIndex
    tables: dict[str, TableRef]


def index_destination(dest: Repository, condemned: Collection[str]) -> DestIndex:
    """Walk every chunk table of the destination once (a table that cannot be read is left out:
    its chunks are then copied again)."""
    index = DestIndex(ChainIndex(dest.config.codec, dest.config.max_chain, condemned), {})
    roots = [scan.manifest for scan in dest.scan_manifests() if scan.manifest is not None]
    for ref in Usage(dest).walk(roots):
        if ref.error is not None:
            continue
        if ref.chunks is not None:
            index.chains.add_chunks(ref.chunks)
        if ref.table is not None and ref.table.object not in condemned:
            index.tables.setdefault(ref.table.hash, ref.table)
    return index


def index_resumed(known: DestIndex, journal: CopyJournal, dest: Repository, condemned: frozenset[str]) -> int:
    """Index the frames of the packs a killed copy uploaded; how many packs they are in."""
    if not journal.load():
        return 0
    present = {oid: info.size for oid, info in dest.list_objects() if oid is not None}
    frames = journal.usable(present, condemned)
    for jf in frames:  # a delta's base may be in a pack sealed after its own, or in none that landed
        if jf.base == TABLE:
            f = jf.frame
            known.tables.setdefault(f.hash, TableRef(f.object, f.offset, f.length, f.size, f.hash, f.codec))
        elif jf.base is None:
            known.chains.add((jf.frame,))
        else:
            known.chains.add_delta(jf.base, jf.frame)
    return len({jf.frame.object for jf in frames})
