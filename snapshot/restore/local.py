"""What this machine already holds of a snapshot being restored: the target's own files
(re-hydration) and the staging directories of restores into the same target that were killed
(resuming them).

A restore builds its result in a staging directory beside the target,
``.<name>.restore-<pid>-<hex>``: owned (snapshot/util/tempdirs.py), its marker also naming the
target and the snapshot. A restore that is killed, or loses power, leaves it behind with the
files it had written. The next restore into the same target claims every such directory whose
owner is gone and whose marker names this target, and uses it as one more local source:

- a file it holds whole (size and file hash as the manifest says, read once to check) is
  moved into the new staging directory instead of being written again;
- otherwise its chunks are indexed like the target's: a chunk whose hash matches is copied
  from there, read again and checked as it is copied. Whatever a kill or a power cut left (a
  file cut short, a hole, zeros where writeback never happened) fails its hash, and that chunk
  is read from the repository.

So nothing in a leftover is trusted for its name or its snapshot: a leftover of a restore of
another snapshot into the same target is used the same way (a chunk is the content its hash
names). A leftover whose marker names another target, or that has no readable marker, is never
used; sweeping removes it as before. What a restore took from its leftovers is removed from
them as soon as it is written; what remains goes with them once the restore is done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from snapshot.format.chunking import ChunkedFile, is_regular_file
from snapshot.format.manifest import Chunk, FileEntry
from snapshot.restore.swap import journal_refs
from snapshot.util import tempdirs

#: The purpose a staging directory's marker records (tempdirs.owned_dir): the absolute target.
_TARGET = "restore_target"
_SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class LocalChunk:
    path: Path
    offset: int
    size: int
    #: In the staging directory of an interrupted restore, not in the target.
    staged: bool = False


#: hash -> where that content already lies on this machine
Local = dict[str, LocalChunk]


def inside(root: Path, rel: str) -> Path | None:
    """``root/rel`` if it is a regular file reached without any symlink, else None."""
    p = root
    for part in rel.split("/"):
        p = p / part
        if p.is_symlink():
            return None
    return p if is_regular_file(p) else None


def index_copy(root: Path, f: FileEntry, chunks: Sequence[Chunk], chunk_size: int, *,
               staged: bool = False) -> tuple[Local, Path | None]:
    """What the copy of ``f`` under ``root`` holds of ``chunks``: final chunk contents, and the
    intermediate contents of delta chains (a copy of the parent's version of a chunk needs
    only the newer delta frames); and that copy's path if it is ``f`` whole (size and hash)."""
    found: Local = {}
    if not root.is_dir() or root.is_symlink():
        return found, None
    p = inside(root, f.path)
    if p is None:
        return found, None
    wanted = {fr.hash for c in chunks for fr in c.frames}
    copy = ChunkedFile(p, chunk_size)
    try:
        for raw in copy:
            if raw.hash in wanted:
                found.setdefault(raw.hash, LocalChunk(p, raw.offset, len(raw.data), staged))
    except OSError:
        return {}, None
    return found, (p if copy.size == f.size and copy.hash == f.hash else None)


def index_local_file(target: Path, f: FileEntry, chunks: Sequence[Chunk], chunk_size: int) -> Local:
    """What the target's copy of ``f`` already holds of ``chunks`` (see :func:`index_copy`)."""
    return index_copy(target, f, chunks, chunk_size)[0]


# -- staging directories ---------------------------------------------------------------------


def _prefix(target: Path) -> str:
    return f".{target.name}.restore-"


def _where(target: Path) -> str:
    """``target`` as a staging dir's marker names it: its folder's real path, and its name."""
    return os.path.join(os.path.realpath(target.parent), target.name)


def staging_dir(target: Path, snapshot_id: str) -> Path:
    """A fresh staging directory beside ``target`` (same filesystem), owned by this process
    and marked as building ``snapshot_id`` into ``target``."""
    return tempdirs.owned_dir(target.parent, _prefix(target),
                              {_TARGET: _where(target), _SNAPSHOT: snapshot_id})


def leftovers(target: Path) -> list[Path]:
    """The staging directories of restores into ``target`` whose owner is gone (a kill, a
    power cut), in name order: marked with this target, not named by an unfinished swap's
    journal. None at all while that journal cannot be read."""
    target = Path(os.path.abspath(target))
    refs = journal_refs(target)
    if refs is None:
        return []
    try:
        names = sorted(os.listdir(target.parent))
    except OSError:
        return []
    found, where = [], _where(target)
    for name in names:
        path = target.parent / name
        pid = tempdirs.name_pid(name, _prefix(target))
        if pid is None or pid == os.getpid() or path in refs or not tempdirs.is_real_dir(path):
            continue
        purpose = tempdirs.purpose_of(path)
        if purpose is None or purpose.get(_TARGET) != where or tempdirs.owner_alive(path):
            continue
        found.append(path)
    return found


def claim_leftovers(target: Path) -> Staged:
    """Claim the :func:`leftovers` of ``target`` for this restore (renamed to names of this
    process: a sweep leaves them alone while it runs, and they are leftovers again if it dies)."""
    claimed = (tempdirs.claim(p, _prefix(target)) for p in leftovers(target))
    return Staged([p for p in claimed if p is not None])


class Staged:
    """The staging directories of killed restores that this restore claimed, as a source."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = list(dirs)

    def index(self, f: FileEntry, chunks: Sequence[Chunk], chunk_size: int) -> tuple[Local, Path | None]:
        """What the claimed directories hold of ``chunks`` (see :func:`index_copy`), and a copy
        of ``f`` that is whole, if one is."""
        local: Local = {}
        for d in self.dirs:
            found, whole = index_copy(d, f, chunks, chunk_size, staged=True)
            if whole is not None:
                return found, whole
            for h, lc in found.items():
                local.setdefault(h, lc)
        return local, None

    @staticmethod
    def take(whole: Path, root: Path, f: FileEntry) -> bool:
        """Move ``whole`` (a copy of ``f`` found whole by :meth:`index`) to its place under
        ``root``; False when it could not (nothing is left at that place then)."""
        dest = root / f.path
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(dest):
                return False
            os.rename(whole, dest)
        except OSError:
            return False
        try:
            os.chmod(dest, f.mode & 0o777 or 0o644)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(dest)
            return False
        return True

    def consume(self, f: FileEntry) -> None:
        """Drop the claimed copies of ``f``: it is written (disk stays about one copy)."""
        for d in self.dirs:
            p = inside(d, f.path)
            if p is not None:
                with contextlib.suppress(OSError):
                    os.unlink(p)

    def remove(self) -> None:
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
