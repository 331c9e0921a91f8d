"""The copy journal: the packs a copy into this repository has uploaded so far, so that a copy
killed (or failed) part way does not upload them again when it is run again.

A pack's id is the hash of its stored bytes and a pack holds no index of its frames, so a rerun
cannot learn from the repository what a leftover pack holds. As each pack is sealed, before its
upload starts, the copy appends one line: the pack's id and size and, per frame, its place
(offset, length), codec, decoded size, content hash and what it decodes against: the content
hash of its delta base, none for a full frame, or ``table`` for a chunk table. A delta decodes
against its base's content whichever chain produced it, so a rerun rebuilds chains from these
frames as it does from the repository's own chunk tables.

A leftover pack is used only if one listing shows it with the size recorded (an upload lands
whole or not at all, and its name is the hash of its bytes: it holds exactly what was recorded)
and no prune has condemned it. The journal lives beside the base cache
(``<cache root>/<destination id>/copy-<source id>.journal``), one line per pack, ``<xxh3 of the
JSON> <JSON>``: a line torn by a kill, or changed, is skipped. It names hashes, pack ids and
sizes only, never a password or data; a copy that completes removes it. It never fails a copy:
a journal that cannot be written or read only means uploading again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapshot.format import layout
from snapshot.format.hashing import digest
from snapshot.format.manifest import Frame
from snapshot.repo.packs import PendingFrame

FORMAT_VERSION = 1
#: A journal longer than this is not read (a DB's worth of frames takes a few hundred KB).
MAX_BYTES = 64 << 20
#: What a chunk table's frame decodes against, in the journal.
TABLE = "table"
_HASH = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class JournalFrame:
    frame: Frame
    #: The content hash of this delta frame's base; None: a full frame; TABLE: a chunk table.
    base: str | None


@dataclass(frozen=True)
class JournalPack:
    id: str
    size: int
    frames: tuple[JournalFrame, ...]


class CopyJournal:
    """The journal of copies from one source repository into one destination."""

    def __init__(self, root: Path, dest_id: str, source_id: str, codec: str) -> None:
        self.path = root / dest_id / f"copy-{source_id}.journal"
        self.codec = codec
        self._lock = threading.Lock()
        self._broken = False

    def record(self, pack_id: str, size: int, frames: Sequence[tuple[PendingFrame, str | None]]) -> None:
        """Append that pack ``pack_id`` (``size`` bytes) holds ``frames`` (each with its base);
        called before its upload starts (:meth:`usable` checks that it landed)."""
        entry = {"v": FORMAT_VERSION, "pack": pack_id, "size": size,
                 "frames": [[pf.offset, pf.length, pf.codec, pf.size, pf.hash, base] for pf, base in frames]}
        body = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        line = f"{digest(body.encode())} {body}\n".encode()
        with self._lock:
            if self._broken:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)  # one write: a kill tears at most this line
                finally:
                    os.close(fd)
            except OSError:
                self._broken = True  # no journal: a rerun uploads these packs again

    def load(self) -> list[JournalPack]:
        """The packs recorded (lines that do not parse or check are skipped)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except OSError:
            return []
        if len(raw) > MAX_BYTES:
            return []
        return [p for line in raw.split(b"\n") if (p := self._parse(line)) is not None]

    def usable(self, present: Mapping[str, int], condemned: Collection[str]) -> list[JournalFrame]:
        """The frames of recorded packs that are stored with the size recorded (``present``:
        object id -> size, from one listing) and not condemned, in the order written."""
        return [jf for p in self.load() if present.get(p.id) == p.size and p.id not in condemned
                for jf in p.frames]

    def _parse(self, line: bytes) -> JournalPack | None:
        check, _, body = line.partition(b" ")
        if not body or digest(body) != check.decode("ascii", "replace"):
            return None
        try:
            entry: Any = json.loads(body)
            if entry.get("v") != FORMAT_VERSION:
                return None
            pack, size = entry["pack"], entry["size"]
            if not (isinstance(pack, str) and layout.is_object_id(pack) and _count(size)):
                return None
            frames = tuple(self._frame(pack, size, item) for item in entry["frames"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None
        return JournalPack(pack, size, frames)

    def _frame(self, pack: str, pack_size: int, item: Any) -> JournalFrame:
        offset, length, codec, size, content, base = item
        if not (_count(offset) and _count(length) and length > 0 and offset + length <= pack_size
                and codec == self.codec and _count(size) and _is_hash(content)
                and (base is None or base == TABLE or _is_hash(base))):
            raise ValueError("bad frame")
        return JournalFrame(Frame(pack, offset, length, codec, size, content), base)

    def discard(self) -> None:
        """Forget the journal (every snapshot it served is committed)."""
        with contextlib.suppress(OSError):  # a stale journal costs the next copy one listing
            self.path.unlink(missing_ok=True)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and bool(_HASH.match(value))
