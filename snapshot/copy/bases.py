"""Where the base of each delta a copy verifies comes from: the content the frames it reads
decode from (snapshot/copy/index.py ``Step.base``), hash-checked wherever it is taken.

In order: the contents this run decoded and kept (snapshot/copy/contents.py: in memory or
spilled to local disk); the image of the snapshot's source being built (the latest content
decoded at each offset) or the one the last copy left (snapshot/copy/image.py); the
destination's chain to it (its range reads planned ahead unless one of those holds it; also
read when the one held is damaged or was overwritten since); the source's own frames, when
that chain has frames in a pack still being written, or when the source is a folder and the
destination is not (reading the folder costs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from snapshot.copy.contents import Contents
from snapshot.copy.image import Images, Source
from snapshot.copy.index import Step
from snapshot.format.manifest import Chunk, Frame
from snapshot.repo.packs import ChunkReader


@dataclass
class Bases:
    """The bases of the deltas copied; ``reader`` reads the source, ``dest_reader`` the
    destination."""

    reader: ChunkReader
    dest_reader: ChunkReader
    contents: Contents
    images: Images

    def _from_source(self) -> bool:
        return self.reader.repo.local_root is not None and self.dest_reader.repo.local_root is None

    def dest_chain(self, step: Step) -> list[Frame] | None:
        """The destination chain to ``step``'s base (None: it has frames in a pack not yet
        written, or bases come from the source)."""
        if self._from_source():
            return None
        stored = [fr for fr in step.base if isinstance(fr, Frame)]
        return stored if stored and len(stored) == len(step.base) else None

    def to_read(self, chunk: Chunk, step: Step, source: Source) -> list[Frame]:
        """The destination frames to read ahead for ``step``'s base (none when this run or the
        image of ``source`` holds it)."""
        content = step.base_hash(chunk)
        if content is None or content in self.contents or self.images.holds(source, content):
            return []
        return self.dest_chain(step) or []

    def get(self, chunk: Chunk, step: Step, source: Source) -> bytes | None:
        """The content ``step``'s frames decode from (None: the first is a full frame)."""
        content = step.base_hash(chunk)
        if content is None:
            return None
        size = chunk.frames[step.skip - 1].size
        held = self.contents.get(content) or self.images.get(source, content, size)
        if held is not None:
            return held
        chain = self.dest_chain(step)
        if chain is not None:
            return self.dest_reader.decode_chain(chain, None)
        return self.reader.decode_chain(chunk.frames[: step.skip], None)
