"""What a copy stores for each source chunk, decided against what the destination holds.

The destination is indexed by *content*: each frame of each chain decodes to a content hash
(``frame.hash``), so every prefix of a stored chain is a chain that rebuilds that content. The
index keeps, per content hash, the shortest such chain whose packs no prune has condemned.

For a source chunk (content H, chain f0..fk):

* H is indexed: the chunk points at that chain, nothing is copied;
* else, for the last f_i whose content is indexed: the chain is index[f_i] followed by copies
  of f_{i+1}..f_k (a delta frame needs only its base's *content*, whichever chain produced it);
  with none indexed, the whole chain is copied;
* a frame of another codec than the destination's, or a chain that would outgrow the
  destination's ``max_chain``, makes the chunk one new full frame of H in the destination's
  codec instead (re-encoded).

Either way f_0..f_i are not read from the source: the frames after them are verified against
the content index[f_i] rebuilds (snapshot/copy/pipeline.py). So a snapshot copied after its
parent reads and moves about what its create uploaded, and a snapshot whose content the
destination holds moves nothing. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from snapshot.format.manifest import Chunk, Frame
from snapshot.repo.packs import PendingFrame

#: A destination frame: stored, or in a pack still being written.
DestFrame = Frame | PendingFrame
Chain = tuple[DestFrame, ...]


@dataclass(frozen=True)
class Step:
    """What the copy does for one source chunk: the new chain is ``reuse`` followed by ``copy``
    (source frames stored again as they are), or, with ``reencode``, one new full frame.

    The first ``skip`` source frames are not read: what they decode to (the content the
    others decode from) is the content the destination chain ``base`` rebuilds."""

    reuse: Chain
    copy: tuple[Frame, ...] = ()
    reencode: bool = False
    skip: int = 0
    base: Chain = ()

    @property
    def stores(self) -> bool:
        return self.reencode or bool(self.copy)

    def base_hash(self, chunk: Chunk) -> str | None:
        """The content the frames read decode from (None: the first is a full frame)."""
        return chunk.frames[self.skip - 1].hash if self.skip else None

    def reads(self, chunk: Chunk) -> tuple[Frame, ...]:
        """The source frames to read when anything is stored (each decoded against the content
        before it, to verify it): those after the ``skip`` whose result the destination holds."""
        return chunk.frames[self.skip :] if self.stores else ()


class ChainIndex:
    """Content hash -> the shortest destination chain that rebuilds it."""

    def __init__(self, codec: str, max_chain: int, condemned: Collection[str] = ()) -> None:
        self.codec = codec
        self.max_chain = max_chain
        self.condemned = condemned
        #: content hash -> (a chain, how many of its frames rebuild that content)
        self._best: dict[str, tuple[Chain, int]] = {}
        #: chains added with frames still pending (see :meth:`resolve`)
        self._pending: list[Chain] = []
        #: base content hash -> stored delta frames waiting for a chain to that content
        self._waiting: dict[str, list[Frame]] = {}

    def __contains__(self, content: object) -> bool:
        return content in self._best

    def __len__(self) -> int:
        return len(self._best)

    def add(self, chain: Sequence[DestFrame]) -> None:
        """Index every prefix of ``chain``, up to its first frame in a condemned pack."""
        chain = tuple(chain)
        if any(isinstance(fr, PendingFrame) for fr in chain):
            self._pending.append(chain)
        for n, fr in enumerate(chain, 1):
            if isinstance(fr, Frame) and fr.object in self.condemned:
                return
            best = self._best.get(fr.hash)
            if best is None or best[1] > n:
                self._best[fr.hash] = (chain, n)
                for delta in self._waiting.pop(fr.hash, ()):
                    if n < self.max_chain:
                        self.add((*chain[:n], delta))

    def add_delta(self, base: str, frame: Frame) -> None:
        """Index stored delta ``frame`` (decoding against content ``base``) once a chain to
        ``base`` is known: now, or when one is added (a copy killed part way may have stored a
        delta whose base's pack never landed; the base is stored again, the delta is not)."""
        chain = self.get(base)
        if chain is not None and len(chain) < self.max_chain:
            self.add((*chain, frame))
        elif chain is None:
            self._waiting.setdefault(base, []).append(frame)

    def add_chunks(self, chunks: Iterable[Chunk]) -> None:
        for c in chunks:
            self.add(c.frames)

    def get(self, content: str) -> Chain | None:
        best = self._best.get(content)
        return None if best is None else best[0][: best[1]]

    def plan(self, chunk: Chunk) -> Step:
        known = self.get(chunk.hash)
        if known is not None:
            return Step(known)
        frames = chunk.frames
        base: Chain = ()
        start = 0
        for i in range(len(frames) - 2, -1, -1):
            found = self.get(frames[i].hash)
            if found is not None:
                base, start = found, i + 1
                break
        tail = frames[start:]
        if all(fr.codec == self.codec for fr in tail) and len(base) + len(tail) <= self.max_chain:
            return Step(base, tail, skip=start, base=base)
        return Step((), (), reencode=True, skip=start, base=base)

    def drop_pending(self) -> None:
        """Forget the chains added since the last :meth:`resolve` (their packs were not all
        written: the copy of a snapshot failed)."""
        pending, self._pending = self._pending, []
        dropped = {id(chain) for chain in pending}
        for content in [h for h, (chain, _) in self._best.items() if id(chain) in dropped]:
            del self._best[content]

    def resolve(self, done: dict[PendingFrame, Frame]) -> None:
        """Replace the pending frames of chains added since the last call by where they were
        stored (``done``: every pending frame of the packs just closed)."""
        pending, self._pending = self._pending, []
        for chain in pending:
            stored = tuple(done[fr] if isinstance(fr, PendingFrame) else fr for fr in chain)
            for n, fr in enumerate(chain, 1):
                best = self._best.get(fr.hash)
                if best is not None and best[0] is chain:
                    self._best[fr.hash] = (stored, n)
