"""The resume journal: what a create has uploaded so far, so that a create killed (or failed)
after uploading part of its packs does not upload them again when it is run again.

A pack's id is the hash of its stored bytes and a pack holds no index of its frames, so a rerun
cannot learn from the repository what a leftover pack holds. As each pack is sealed, before
its upload starts, the create appends one line here: the pack's id and size, and per frame its place (offset,
length), codec, decoded size, content hash and the content hash of its delta base (none for a
full frame). A rerun that would store a chunk with the same content on the same base (or any
chunk whose content a full frame here holds) points at that frame instead of compressing and
uploading it again. A delta frame decodes against its base's content whichever snapshot that
base came from, so entries stay valid whatever parent the rerun picks.

A leftover pack is used only if one listing shows it with the size recorded (an upload lands
whole or not at all, and a pack's name is the hash of its bytes: then it holds exactly what was
recorded; a pack whose upload never landed is simply not there) and it is not condemned, or was
condemned less than a quarter of the deletion bound ago: the snapshot's root then rescues it
(snapshot/format/condemned.py), and the create, which needs a pack condemned when it started,
reads the records again before it commits and refuses if that pack has been condemned for half
the bound by then. A pack condemned longer is not used: its frames are stored anew.

A leftover pack is not written again (that would be the upload this saves), so it keeps the
age the killed run gave it: a prune may condemn it as unreferenced while the rerun works, and
the rerun's root then rescues it, as it rescues any pack a create uses (the grace period no
longer covers it; a prune with ``--delete-after 0`` while a create runs is not covered, as the
README says of any create).

A copy keeps the same kind of journal (:class:`CopyJournal`, ``copy-<source id>.journal``
beside the destination's base cache folder), using its packs only while no prune condemned them.

The journal is a local file beside the base cache (``<cache root>/<repository id>/<source
key>.journal``, also with ``--no-cache``), one line per pack, ``<xxh3 of the JSON> <JSON>``: a
line torn by a kill, or changed, is skipped. It names content hashes, pack ids and sizes only;
a successful create removes it. It never fails a create: a journal that cannot be written or
read only means uploading again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshot.format import layout
from snapshot.format.condemned import Condemned
from snapshot.format.hashing import digest
from snapshot.format.manifest import Frame
from snapshot.repo.basecache import slot_key
from snapshot.repo.packs import PendingFrame
from snapshot.repo.repository import Repository

FORMAT_VERSION = 1
#: A journal longer than this is not read (a DB's worth of frames takes a few hundred KB).
MAX_BYTES = 64 << 20
#: What a chunk table's frame decodes against, in a copy's journal.
TABLE = "table"
_HASH = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class JournalFrame:
    frame: Frame
    #: The content hash of the chunk this delta frame decodes against; None: a full frame;
    #: TABLE: a chunk table (a copy's journal).
    base: str | None


@dataclass(frozen=True)
class JournalPack:
    id: str
    size: int
    frames: tuple[JournalFrame, ...]


@dataclass(frozen=True)
class Resume:
    """The frames a create may take from leftover packs: (content hash, base hash) -> frame."""

    frames: Mapping[tuple[str, str | None], JournalFrame] = field(default_factory=dict)

    def find(self, content: str, base: str | None) -> JournalFrame | None:
        """A frame decoding to ``content`` on ``base`` (a chunk's hash, or None), else a full
        frame of ``content``: either may stand for the frame the create would store."""
        found = self.frames.get((content, base)) if base is not None else None
        return found or self.frames.get((content, None))


NOTHING = Resume()


def usable_packs(packs: Iterable[JournalPack], present: Mapping[str, int], condemned: Condemned,
                 now: float) -> set[str]:
    """Which leftover ``packs`` a create may build on: stored with the size recorded
    (``present``: id -> size, one listing) and not condemned, or condemned less than a quarter
    of the bound ago (the create then has another quarter of it to commit; see the module
    docstring). A bound of 0 (``--delete-after 0``) leaves no condemned pack usable."""
    quarter = condemned.create_bound() / 4
    return {p.id for p in packs if present.get(p.id) == p.size
            and (p.id not in condemned or now - condemned.since[p.id] < quarter)}


def resume_from(packs: Sequence[JournalPack], usable: set[str]) -> Resume:
    frames: dict[tuple[str, str | None], JournalFrame] = {}
    for p in packs:
        if p.id in usable:
            for jf in p.frames:
                frames.setdefault((jf.frame.hash, jf.base), jf)
    return Resume(frames)


class PackJournal:
    """Lines of packs and their frames, appended as packs are sealed (the format above): the
    part the create and copy journals share."""

    def __init__(self, path: Path, codec: str) -> None:
        self.path = path
        self.codec = codec
        self._lock = threading.Lock()
        self._broken = False
        #: Folders this journal created (removed with it when empty: --no-cache leaves none).
        self._made: list[Path] = []

    def record(self, pack_id: str, size: int, frames: Sequence[tuple[PendingFrame, str | None]]) -> None:
        """Append that pack ``pack_id`` (``size`` bytes) holds ``frames`` (each with its base's
        content hash, None or TABLE); called before its upload starts (a reader checks that
        it landed)."""
        entry = {"v": FORMAT_VERSION, "pack": pack_id, "size": size,
                 "frames": [[pf.offset, pf.length, pf.codec, pf.size, pf.hash, base] for pf, base in frames]}
        body = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        line = f"{digest(body.encode())} {body}\n".encode()
        with self._lock:
            if self._broken:
                return
            try:
                for folder in (self.path.parent.parent, self.path.parent):
                    if not folder.is_dir():
                        folder.mkdir(parents=True)
                        self._made.append(folder)
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
        """Forget the journal (what it served is committed)."""
        with contextlib.suppress(OSError):  # a stale journal costs the next run one listing
            self.path.unlink(missing_ok=True)
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):  # not empty: the base cache lives there too
                folder.rmdir()


class Journal(PackJournal):
    """The resume journal of creates of one (repository, host, source path) under the cache
    ``root``."""

    def __init__(self, root: Path, repo_id: str, source: Path, codec: str) -> None:
        super().__init__(root / repo_id / f"{slot_key(source)}.journal", codec)

    def resume(self, repo: Repository, condemned: Condemned) -> Resume:
        """What this create may take from leftover packs (one listing of the repository's
        objects, only when the journal names any)."""
        packs = self.load()
        if not packs:
            return NOTHING
        present = {oid: info.size for oid, info in repo.list_objects() if oid is not None}
        return resume_from(packs, usable_packs(packs, present, condemned, repo.now()))


class CopyJournal(PackJournal):
    """The journal of copies from one source repository into one destination: the packs a copy
    uploaded, so that a copy killed part way does not upload them again (chunk tables' frames
    are recorded with the base TABLE)."""

    def __init__(self, root: Path, dest_id: str, source_id: str, codec: str) -> None:
        super().__init__(root / dest_id / f"copy-{source_id}.journal", codec)

    def usable(self, present: Mapping[str, int], condemned: Collection[str]) -> list[JournalFrame]:
        """The frames of recorded packs that are stored with the size recorded (``present``:
        object id -> size, from one listing) and not condemned, in the order written."""
        return [jf for p in self.load() if present.get(p.id) == p.size and p.id not in condemned
                for jf in p.frames]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and bool(_HASH.match(value))
