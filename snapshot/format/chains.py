"""Delta chains: how deep a chunk's chain may grow before a create starts a new one, and how a
prune re-bases and moves frames without changing what any chain decodes to.

A chunk's frames are a chain: a full frame, then zstd deltas each against the content the one
before decodes to. Two rules keep the space a schedule of nightly snapshots needs near one
full copy plus the kept deltas:

* **Staggered limits.** Every (file, chunk index) has its own depth limit, between 3/4 of the
  repository's ``max_chain`` and ``max_chain``, derived from its path and index. Chroma rewrites
  nearly every chunk every night, so with one limit for all every chain would reach it on the
  same night and the repository would hold two full copies at once.
* **Re-basing on prune** (see :mod:`snapshot.upkeep.repack`): once the snapshots a chain's first
  frames were written for are gone, prune replaces that dead prefix by one full frame of the
  oldest content still kept, so a create rarely needs to reset a chain at all.
"""

from __future__ import annotations

from collections.abc import Mapping

from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk, Frame


def chain_limit(max_chain: int, path: str, index: int) -> int:
    """How many frames the chain of chunk ``index`` of ``path`` may have before the next change
    of that chunk is stored as a full frame (between 3/4 of ``max_chain`` and ``max_chain``)."""
    spread = max_chain // 4 + 1
    if spread <= 1:
        return max_chain
    return max_chain - int(digest(f"{path}\0{index}".encode())[:8], 16) % spread


#: A frame's place in a pack.
Location = tuple[str, int]


def location(frame: Frame) -> Location:
    return frame.object, frame.offset


def rewrite_chain(
    frames: tuple[Frame, ...], rebased: Mapping[Location, Frame], moved: Mapping[Location, Frame]
) -> tuple[Frame, ...]:
    """``frames`` with its prefix up to the last re-based frame replaced by that frame's new
    full frame, and every frame moved to another pack at its new place. Every frame decodes to
    the same content as before, so the chain still ends at the chunk's hash."""
    start = 0
    for i in range(len(frames) - 1, -1, -1):
        if location(frames[i]) in rebased:
            start = i
            break
    out = list(frames[start:])
    if start or location(out[0]) in rebased:
        out[0] = rebased[location(out[0])]
    return tuple(moved.get(location(fr), fr) for fr in out)


def rewrite_chunks(
    chunks: tuple[Chunk, ...], rebased: Mapping[Location, Frame], moved: Mapping[Location, Frame]
) -> tuple[Chunk, ...]:
    return tuple(Chunk(c.hash, c.size, rewrite_chain(c.frames, rebased, moved)) for c in chunks)
