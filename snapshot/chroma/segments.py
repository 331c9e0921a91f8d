"""What ``check --read-data`` proves of each snapshot's segment folders besides their hashes.

A restore re-checks the capture's consistency on the files it built (snapshot/chroma/consistency.py):
every HNSW file present, ``header.bin`` whole and ``length.bin`` / ``data_level0.bin`` sized
for its element count, ``index_metadata.pickle`` a plain id map (read with the same bounded
reader) mapping no more ids than the index holds. Check runs those checks without building a
directory: sizes come from the manifest, and the bytes of each distinct ``header.bin`` and
``index_metadata.pickle`` are gathered while their chunks are verified (spooled to a temporary
file past 1 MiB, read back one at a time), then judged once per version. The half that needs
chroma.sqlite3 (ids against its records) is left to restore. Snapshots made without checks or
of an inconsistent directory are skipped, as restore skips them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from typing import IO

from snapshot.chroma.consistency import HEADER, HnswHeader, parse_header, segment_problem
from snapshot.chroma.idmap import PICKLE, id_map
from snapshot.errors import SnapshotError
from snapshot.format.manifest import Manifest

#: What is known of one version of a watched file: its header, the number of ids its pickle
#: maps, or why it is unusable.
Fact = HnswHeader | int | str

_SPOOL = 1 << 20


def watched(path: str, role: str) -> bool:
    """Whether check gathers the bytes of this file (a segment folder's header or id map)."""
    return role == "segment" and path.count("/") == 1 and path.rsplit("/", 1)[1] in (HEADER, PICKLE)


def spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL)


def judge(path: str, content: IO[bytes]) -> Fact:
    """The fact of a watched file from its verified bytes (``content`` is closed)."""
    with content:
        content.seek(0)
        if path.endswith("/" + HEADER):
            try:
                return parse_header(content.read(64 << 10))
            except ValueError as exc:
                return str(exc)
        try:
            return len(id_map(content.read(), path)[0])
        except SnapshotError as exc:
            return str(exc)


def segment_problems(m: Manifest, facts: Mapping[str, Fact]) -> Iterable[tuple[str, str]]:
    """(path, problem) of ``m``'s segment folders, from the facts of its watched files by
    path. A watched file without a fact had damaged data (reported as such): its folder, or
    its pickle, is not judged."""
    if m.verified is None or m.verified.problems:
        return
    folders: dict[str, dict[str, int]] = {}
    for f in m.files:
        if f.role == "segment" and f.path.count("/") == 1:
            segment, name = f.path.split("/")
            folders.setdefault(segment, {})[name] = f.size
    for segment, sizes in sorted(folders.items()):
        header = facts.get(f"{segment}/{HEADER}", "no header" if HEADER not in sizes else None)
        if header is None or isinstance(header, int):
            continue
        problem = segment_problem(sizes, header)
        if problem is not None or isinstance(header, str):
            yield segment, f"segment {segment}: {problem}"
            continue
        path = f"{segment}/{PICKLE}"
        pickled = facts.get(path)
        if isinstance(pickled, str):
            yield path, pickled
        elif isinstance(pickled, int) and pickled > header.count:
            yield path, f"{path} maps {pickled} ids, the index holds {header.count}"
