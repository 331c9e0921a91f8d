"""What a restore will read, in requests and bytes, from its snapshot's chunk tables and what
the target (and the leftovers of killed restores into it) already hold: the chunk tables as
:meth:`Repository.tables` reads them (a pack holding eight or more of them whole, the others
one range each), and the frames as :func:`~snapshot.restore.materialise.materialise` plans
them (from a remote store, one range read per run of close frames of a pack; from a folder,
one per frame). The counts are exact when nothing fails; the bytes of a table pack read whole
are taken as the end of its last table the snapshot names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from snapshot.format.manifest import Chunk, FileEntry
from snapshot.repo.prediction import Prediction, Tally
from snapshot.repo.repository import Repository
from snapshot.restore.local import Staged
from snapshot.restore.materialise import ReadEstimate, sources


def predict_reads(repo: Repository, target: Path, staged: Staged, chunk_size: int,
                  tables: Sequence[tuple[FileEntry, Sequence[Chunk]]]) -> Prediction:
    """The reads of a restore writing ``tables`` (files in write order, with their chunks)."""
    tally = Tally()
    for kind, size in repo.table_reads([f for f, _chunks in tables]):
        tally.add(kind, down=size, pack=True)
        if kind == "get":
            tally.note("a pack of chunk tables read whole is counted to the end of its last table used")
    reads = ReadEstimate(remote=repo.local_root is None)
    for f, chunks in tables:
        local, whole = sources(target, staged, f, chunks, chunk_size)
        if whole is None:
            reads.add(chunks, local)
    down = reads.total()
    tally.add("get_range", reads.requests, down=down, pack=True)
    return tally.result()
