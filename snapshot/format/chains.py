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


def rebase_share(ratio: float, path: str, index: int) -> float:
    """The share of its full frame that the dead links of chunk ``index`` of ``path`` must cost
    before a prune re-bases its chain: between 1/2 and 3/2 of ``ratio``, derived from its path
    and index. With one share for all, chunks that change alike reach it on the same night, and
    that prune frees (and condemns) a large part of the repository at once."""
    return ratio * (0.5 + int(digest(f"rebase\0{path}\0{index}".encode())[:8], 16) % 1001 / 1000)


#: A frame's place in a pack.
Location = tuple[str, int]


def location(frame: Frame) -> Location:
    return frame.object, frame.offset


def rebases_at(
    chains: set[tuple[Frame, ...]], limit: int, ratio: float, out: dict[Location, tuple[Frame, ...]],
    optional: dict[Location, tuple[Frame, ...]], over: dict[Location, Frame] | None = None,
) -> None:
    """Decide the re-bases among the kept chains of one chunk (one file, one index); those with
    dead links that do not qualify go to ``optional``, by their full frame's location.

    A chain re-based only for its depth whose frames up to the re-based one cost less than
    ``ratio`` of its full frame changed little since that frame: it goes to ``over`` too (the
    re-based frame's location -> the full frame), to be stored as a delta against the full
    frame, which stays, instead of as a new full frame (the old one would only be rewritten)."""
    ends = {location(ch[-1]) for ch in chains}
    by_root: dict[Location, list[tuple[int, tuple[Frame, ...]]]] = {}
    for ch in chains:
        first = next(i for i, fr in enumerate(ch) if location(fr) in ends)
        if first > 0:
            by_root.setdefault(location(ch[0]), []).append((first, ch))
    for cands in by_root.values():
        firsts = {location(ch[first]) for first, ch in cands}
        if len(firsts) != 1:
            continue  # branches share these links: a re-base of one would not free them
        first, ch = cands[0]
        dead = sum(fr.length for fr in ch[1:first])
        deepest = max(len(c) for _, c in cands)
        if dead >= ratio * ch[0].length or deepest >= limit - 1:
            out[location(ch[first])] = ch[: first + 1]
            if over is not None and sum(fr.length for fr in ch[1 : first + 1]) < ratio * ch[0].length:
                over[location(ch[first])] = ch[0]
        else:
            optional[location(ch[0])] = ch[: first + 1]


def live_frames(
    chain: tuple[Frame, ...], rebases: Mapping[Location, tuple[Frame, ...]],
    over: Mapping[Location, Frame] | None = None,
) -> tuple[Frame, ...]:
    """The old frames ``chain`` still needs once the planned re-bases are done (a re-base
    stored over a full frame keeps that frame)."""
    for i in range(len(chain) - 1, -1, -1):
        loc = location(chain[i])
        if loc in rebases:
            base = over.get(loc) if over else None
            return chain[i + 1 :] if base is None else (base, *chain[i + 1 :])
    return chain


def rewrite_chain(
    frames: tuple[Frame, ...], rebased: Mapping[Location, Frame], moved: Mapping[Location, Frame],
    over: Mapping[Location, Frame] | None = None,
) -> tuple[Frame, ...]:
    """``frames`` with its prefix up to the last re-based frame replaced by that frame's new
    full frame (or by the full frame in ``over`` and the new frame, a delta against it), and
    every frame moved to another pack at its new place. Every frame decodes to the same
    content as before, so the chain still ends at the chunk's hash."""
    start = 0
    for i in range(len(frames) - 1, -1, -1):
        if location(frames[i]) in rebased:
            start = i
            break
    out = list(frames[start:])
    loc = location(out[0])
    if start or loc in rebased:
        out[0] = rebased[loc]
        base = over.get(loc) if over else None
        if base is not None:
            out.insert(0, base)
    return tuple(moved.get(location(fr), fr) for fr in out)


def rewrite_chunks(
    chunks: tuple[Chunk, ...], rebased: Mapping[Location, Frame], moved: Mapping[Location, Frame],
    over: Mapping[Location, Frame] | None = None,
) -> tuple[Chunk, ...]:
    return tuple(Chunk(c.hash, c.size, rewrite_chain(c.frames, rebased, moved, over)) for c in chunks)
