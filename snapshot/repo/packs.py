"""Packs: many independent compressed frames in one content-addressed object.

Frames arrive as the bytes to store (sealed by Repository.seal_frame in an encrypted
repository), so every offset and length recorded is the stored one, and a pack's id is the
hash of what is stored: of ciphertext in an encrypted repository, never of plaintext.

Writing: :class:`PackWriter` appends frames to an in-memory pack and uploads it (in the
background, bounded) once it reaches the target size; a pack's id, and so every frame's
``object``, is known only once the pack is sealed, so frames are handed out as
:class:`PendingFrame` and resolved after :meth:`PackWriter.close`. A writer fills one pack per
*lane* at a time: frames expected to stop being needed together (a night's delta frames; full
frames, which outlive them) go to the same lane, so a prune can later delete their packs whole
instead of copying what is still needed out of half-dead ones.

Reading: :class:`ChunkReader` fetches a chunk's frames with range reads, decodes the delta
chain and checks every hash on the way. A frame that fails its check is read again, on its
own, before it is called damaged (Repository's ``checked_read``): S3 sends no checksum with a
range, so bytes garbled on the way arrive looking like a damaged pack.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from snapshot.errors import IntegrityError, SnapshotError
from snapshot.format.codecs import decompress
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk, Frame
from snapshot.repo.links import uploads_gauge
from snapshot.repo.repository import Repository, checked_read
from snapshot.storage.link import HIGH
from snapshot.util import pausepoints
from snapshot.util.gate import GatedExecutor

DEFAULT_PACK_SIZE = 16 << 20
#: The smallest pack size :func:`pack_size_for` picks.
MIN_PACK_SIZE = 4 << 20
#: Lanes of a :class:`PackWriter` (see the module docstring).
FULL_FRAMES, DELTA_FRAMES = "full", "delta"


def pack_size_for(db_bytes: int) -> int:
    """The pack size for a database of ``db_bytes`` (uncompressed): 1/32 of it, between 4 and
    16 MiB. A prune deletes packs only whole; in a small repository a 16 MiB pack is a
    quarter of a full copy, and what is still needed of a half-dead one is copied out."""
    return max(MIN_PACK_SIZE, min(DEFAULT_PACK_SIZE, db_bytes // 32))


@dataclass(frozen=True)
class PendingFrame:
    pack: int
    offset: int
    length: int
    codec: str
    size: int
    hash: str


#: Told a pack's id, size and frames (each with the note given to :meth:`PackWriter.add`: a
#: create's resume journal records the delta base there) when it is sealed, before its upload
#: starts: whoever reads that record checks that the pack landed (a PUT lands whole or not at all).
SealHook = Callable[[str, int, Sequence[tuple[PendingFrame, str | None]]], None]

#: Packs uploaded at once to a folder, and to a remote store without a link gauge: there each
#: upload waits a round trip and one connection moves only a share of the link, so more run at
#: once (each holds a pack in memory until it is stored). A remote store's gauge says how many
#: (snapshot/storage/link.py: from 4, as many as the uplink carries, within its memory budget).
_LOCAL_UPLOADS = 2
_REMOTE_UPLOADS = 4


class PackWriter:
    """Collects frames into packs of about ``pack_size`` bytes, one pack at a time per lane,
    and uploads them, ``uploads`` at once [by the store: see _REMOTE_UPLOADS]."""

    def __init__(
        self, repo: Repository, pack_size: int = DEFAULT_PACK_SIZE, uploads: int | None = None,
        on_sealed: SealHook | None = None,
    ) -> None:
        gauge = uploads_gauge(repo) if uploads is None else None
        if uploads is None:
            uploads = _LOCAL_UPLOADS if repo.local_root is not None else _REMOTE_UPLOADS
        fixed = uploads
        #: Uploads at once, now (the gauge's width, or the fixed count).
        self._width: Callable[[], int] = (lambda: gauge.width) if gauge is not None else (lambda: fixed)
        self.repo = repo
        self.pack_size = pack_size
        #: lane -> (its pack's number, the pack's bytes so far)
        self._open: dict[str, tuple[int, bytearray]] = {}
        self._pack_no = 0
        self._ids: dict[int, str] = {}
        self._on_sealed = on_sealed
        #: pack number -> its frames and their notes (only with ``on_sealed``)
        self._notes: dict[int, list[tuple[PendingFrame, str | None]]] = {}
        self._pool: Executor = (
            GatedExecutor(self._width, HIGH, thread_name_prefix="upload") if gauge is not None
            else ThreadPoolExecutor(max_workers=uploads, thread_name_prefix="upload"))
        self._inflight: list[Future[None]] = []
        #: Packs sealed and not yet stored: at most one more than uploads at once.
        self._held = 0
        self._stored = threading.Condition()
        self.objects_uploaded = 0
        self.bytes_uploaded = 0
        self._lock = threading.Lock()

    def add(
        self, frame: bytes | bytearray, codec: str, size: int, hash_: str, lane: str = "",
        note: str | None = None,
    ) -> PendingFrame:
        """Append ``frame``, the stored bytes (already sealed in an encrypted repository), to
        the pack being filled for ``lane``; ``note`` is handed to ``on_sealed`` with it."""
        if lane not in self._open:
            self._open[lane] = (self._pack_no, bytearray())
            self._pack_no += 1
        no, buf = self._open[lane]
        pf = PendingFrame(no, len(buf), len(frame), codec, size, hash_)
        # Copy into one buffer: zstd hands back frames in ~1 MiB allocations shrunk to fit, and
        # holding hundreds of them would pin that much memory until the pack is sealed.
        buf += frame
        if self._on_sealed is not None:
            self._notes.setdefault(no, []).append((pf, note))
        if len(buf) >= self.pack_size:
            self._seal(lane)
        return pf

    def _seal(self, lane: str) -> None:
        no, data = self._open.pop(lane)  # handed over, not copied
        if not data:
            return
        oid = digest(data)
        self._ids[no] = oid
        with self._stored:  # bounds packs held in memory while uploading
            self._stored.wait_for(lambda: self._held <= self._width())
            self._held += 1
        notes = self._notes.pop(no, [])
        if self._on_sealed is not None:
            self._on_sealed(oid, len(data), notes)
        self._inflight.append(self._pool.submit(self._upload, oid, data))
        self._raise_failed()

    def _upload(self, oid: str, data: bytearray) -> None:
        try:
            # Always written, also when a pack with these bytes exists (left by a create that
            # was killed): the write makes it fresh, so a prune's grace period protects it.
            self.repo.put_object(oid, data)
            with self._lock:
                self.objects_uploaded += 1
                self.bytes_uploaded += len(data)
            pausepoints.point("create.pack-uploaded")
        finally:
            with self._stored:
                self._held -= 1
                self._stored.notify_all()

    def _raise_failed(self) -> None:
        for f in [f for f in self._inflight if f.done()]:
            f.result()  # re-raises an upload error in the caller's thread

    def close(self) -> None:
        """Seal each lane's last pack and wait for every upload; raises the first upload error."""
        try:
            for lane in list(self._open):
                self._seal(lane)
            for f in self._inflight:
                f.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def object_ids(self) -> list[str]:
        """Every pack this writer sealed (uploaded now, or found already stored)."""
        return list(self._ids.values())

    def resolve(self, pf: PendingFrame) -> Frame:
        return Frame(
            object=self._ids[pf.pack],
            offset=pf.offset,
            length=pf.length,
            codec=pf.codec,
            size=pf.size,
            hash=pf.hash,
        )


#: Frames of one pack at most this far apart are read with one request (remote stores).
_GAP = 512 << 10
#: Nor is one such request longer than this (several are read at once, by different readers).
_SPAN = 4 << 20


def read_ranges(frames: Iterable[Frame]) -> list[tuple[str, int, int]]:
    """The ranges (pack, start, end) :meth:`ChunkReader.prefetch` reads ``frames`` with:
    frames of one pack no more than _GAP apart in one range of at most _SPAN (a frame
    listed twice is read once)."""
    wanted: dict[str, list[tuple[int, int]]] = {}
    for fr in frames:
        wanted.setdefault(fr.object, []).append((fr.offset, fr.offset + fr.length))
    out: list[tuple[str, int, int]] = []
    for obj, ranges in wanted.items():
        ranges.sort()
        start, end = ranges[0]
        for s, e in ranges[1:]:
            if s - end <= _GAP and max(e, end) - start <= _SPAN:
                end = max(end, e)
            else:
                out.append((obj, start, end))
                start, end = s, e
        out.append((obj, start, end))
    return out


@dataclass(eq=False)
class Span:
    """A range of a pack that holds frames some files about to be written need."""

    object: str
    start: int
    end: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    data: bytes | None = None
    released: bool = False
    #: Its read by the read-ahead pool, once handed to it.
    ahead: Future[None] | None = None


class ChunkReader:
    """Rebuilds chunks from their frames, verifying each decoded frame's hash."""

    def __init__(self, repo: Repository, read_ahead: Executor | None = None) -> None:
        self.repo = repo
        #: Reads the ranges :meth:`prefetch` plans as soon as they are planned, several at once
        #: (a remote store answers each after a round trip, a connection at a time); None: each
        #: range is read by the first reader that needs it.
        self._read_ahead = read_ahead
        self._lock = threading.Lock()
        self._scratch = threading.local()
        self._spans: dict[str, list[Span]] = {}
        self.bytes_fetched = 0

    @property
    def reads_ahead(self) -> bool:
        """Whether planned ranges are read ahead by a pool (a remote store)."""
        return self._read_ahead is not None

    def prefetch(self, frames: Iterable[Frame]) -> list[Span]:
        """Plan to read ``frames`` (what a batch of files is about to need) with few requests:
        frames of one pack no more than _GAP apart are read as one range (of at most _SPAN), by
        the read-ahead pool, if there is one, or else the first reader that needs any of them. A
        restore of many small files from S3 makes a request per range instead of one per file.
        Returns the ranges, for :meth:`release`."""
        spans = [Span(obj, start, end) for obj, start, end in read_ranges(frames)]
        with self._lock:
            for sp in spans:
                self._spans.setdefault(sp.object, []).append(sp)
        if self._read_ahead is not None:
            for sp in spans:
                sp.ahead = self._read_ahead.submit(self._load_ahead, sp)
        return spans

    def _load(self, span: Span) -> bytes:
        with span.lock:
            if span.data is None:
                span.data = self.repo.read_range(span.object, span.start, span.end - span.start)
                with self._lock:
                    self.bytes_fetched += len(span.data)
            return span.data

    def _load_ahead(self, span: Span) -> None:
        if span.released:
            return
        # On failure the reader that needs the range reads it again, and reports what fails.
        with contextlib.suppress(SnapshotError):
            self._load(span)

    def release(self, spans: Sequence[Span]) -> None:
        """Forget ranges planned by :meth:`prefetch` (and the bytes read of them)."""
        if not spans:
            return
        with self._lock:
            for sp in spans:
                sp.released = True
                held = self._spans.get(sp.object, [])
                if sp in held:
                    held.remove(sp)
                if not held:
                    self._spans.pop(sp.object, None)

    def _fetched(self, frame: Frame) -> memoryview | None:
        """``frame``'s stored bytes out of a planned range (read now if no one has yet)."""
        with self._lock:
            span = next((sp for sp in self._spans.get(frame.object, ())
                         if sp.start <= frame.offset and frame.offset + frame.length <= sp.end), None)
        if span is None:
            return None
        if span.ahead is not None:
            # Read by the pool, in the planned order and only as many at once as the link
            # carries (a reader reading ahead of its turn would add to them); if that read
            # failed, or was cancelled, the reader reads the range itself below.
            wait([span.ahead])
        at = frame.offset - span.start
        return memoryview(self._load(span))[at : at + frame.length]

    def _stored(self, frame: Frame, *, again: bool = False) -> bytes | memoryview:
        """One frame's stored bytes: out of a planned range, or read on their own (always,
        with ``again``)."""
        fetched = self._fetched(frame) if self._spans and not again else None
        if fetched is not None:
            return fetched
        data = self.repo.read_range(frame.object, frame.offset, frame.length)
        with self._lock:
            self.bytes_fetched += frame.length  # what was downloaded: the stored length
        return data

    def _open(self, frame: Frame, stored: bytes | memoryview) -> bytes | memoryview:
        scratch = getattr(self._scratch, "buf", None)
        if scratch is None or len(scratch) < frame.length:
            scratch = self._scratch.buf = bytearray(max(frame.length, 1 << 20) + (64 << 10))
        return self.repo.read_frame(frame, scratch=scratch, fetched=stored)

    def read_frame(self, frame: Frame) -> bytes | memoryview:
        """The compressed bytes of one frame (opened, in an encrypted repository: into this
        thread's scratch buffer, so the result is valid until this thread's next call)."""
        return self._open(frame, self._stored(frame))

    def decode(self, frame: Frame, base: bytes | None, *, verify: bool = True) -> bytes:
        """One frame's content (``base``: what the previous link decodes to), hash-checked
        unless ``verify`` is False (a link whose result the next frame's check covers). A frame
        whose bytes fail is read again, on its own, before the failure stands (checked_read);
        what the store itself says (missing, too short) stands at once."""
        return checked_read(
            self._stored(frame), lambda: self._stored(frame, again=True),
            lambda stored: self._decode(self._open(frame, stored), frame, base, verify),
        )

    def decode_keeping(self, frame: Frame, base: bytes | None) -> tuple[bytes, bytes]:
        """One frame's compressed bytes (opened, in an encrypted repository) and its content,
        hash-checked, for a writer that stores the same frame elsewhere (a copy between
        repositories): a frame is written only once what it decodes to is proven."""

        def check(stored: bytes | memoryview) -> tuple[bytes, bytes]:
            raw = bytes(self._open(frame, stored))
            return raw, self._decode(raw, frame, base, True)

        return checked_read(self._stored(frame), lambda: self._stored(frame, again=True), check)

    @staticmethod
    def _decode(raw: bytes | memoryview, frame: Frame, base: bytes | None, verify: bool) -> bytes:
        try:
            content = decompress(raw, frame.codec, frame.size, base)
        except SnapshotError as exc:
            raise IntegrityError(
                f"object {frame.object} at offset {frame.offset}: {exc}"
            ) from exc
        if verify and digest(content) != frame.hash:
            raise IntegrityError(
                f"object {frame.object} at offset {frame.offset}: content hash mismatch"
            )
        return content

    def decode_chain(self, frames: Sequence[Frame], base: bytes | None) -> bytes:
        """The content the last of ``frames`` decodes to, starting from ``base``. Only the
        result is hashed (each link is a function of the one before, so a damaged link cannot
        give the right result); when it does not match, the chain is decoded again checking
        every link, to name the damaged one (or, if that link's bytes were only garbled on the
        way, to read it again: then the chain is whole)."""
        content = base
        try:
            for i, frame in enumerate(frames):
                content = self.decode(frame, content, verify=i == len(frames) - 1)
        except IntegrityError:
            content = base
            for frame in frames:
                content = self.decode(frame, content)
        assert content is not None
        return content

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The chunk's content: its chain decoded from the full frame, every link verified
        (the manifest guarantees the last frame's hash is the chunk's)."""
        content: bytes | None = None
        for frame in chunk.frames:
            content = self.decode(frame, content)
        assert content is not None
        return content
