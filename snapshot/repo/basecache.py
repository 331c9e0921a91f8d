"""The local base cache: the consistent copy of the last snapshot taken of a source.

A changed chunk is stored as a delta against the parent snapshot's chunk at the same offset,
so create needs that parent chunk's bytes. Reading them back from the repository costs a
download of most of the previous snapshot (S3 egress is billed, and delta chains must be
decoded); keeping the capture of the last create on local disk costs one copy of the DB
instead. Every cached chunk is hash-checked against the parent's manifest before use, so a
stale or damaged cache only means falling back to the repository.

Layout: ``<root>/<repository id>/<source key>/`` holds ``cache.json`` (the snapshot id and a
map from snapshot path to cached file) and the captured files themselves.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

from snapshot.format.chunking import read_verified
from snapshot.format.hashing import digest
from snapshot.format.manifest import Chunk
from snapshot.util import pausepoints
from snapshot.util.tempdirs import owned_dir, sweep

ENV = "CHROMA_SNAPSHOT_CACHE"
_INDEX = "cache.json"
_TABLES = "tables"
_HASH = re.compile(r"^[0-9a-f]{32}$")


def default_root() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "chroma-snapshot"


def slot_key(source: Path) -> str:
    """The name of the cache slot (and resume journal) of ``source`` on this host."""
    return hashlib.sha256(f"{socket.gethostname()}\0{source}".encode()).hexdigest()[:20]


class BaseCache:
    """The cache slot of one (repository, host, source path): create's (named by
    :func:`slot_key`), or another one named ``key`` (a copy keeps its own, never taken for a
    capture)."""

    def __init__(self, root: Path, repo_id: str, source: Path, *, key: str | None = None) -> None:
        self.area = root / repo_id
        self.slot = self.area / (key or slot_key(source))
        self._files: dict[str, Path] | None = None
        self.snapshot_id: str | None = None
        #: Everything ``cache.json`` holds (the ``extra`` fields a commit wrote among them).
        self.index: dict[str, object] = {}
        try:
            index = json.loads((self.slot / _INDEX).read_text())
            self.snapshot_id = str(index["snapshot"])
            self._files = {rel: self.slot / str(p) for rel, p in dict(index["files"]).items()}
            self.index = dict(index)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass

    @property
    def files(self) -> dict[str, Path]:
        """Snapshot path -> the cached file (none when the slot holds nothing readable)."""
        return dict(self._files or {})

    def new_staging(self) -> Path:
        """A fresh folder on the cache's filesystem, so commit is a rename. Staging folders a
        killed create left behind (their owner is gone) are removed first."""
        self.area.mkdir(parents=True, exist_ok=True)
        sweep(self.area, ".staging-")
        sweep(self.area, ".old-")
        return owned_dir(self.area, ".staging-")

    def base(self, snapshot_id: str, rel: str, offset: int, chunk: Chunk) -> bytes | None:
        """The parent's chunk at ``offset`` of ``rel`` if the cache holds exactly it."""
        if self._files is None or self.snapshot_id != snapshot_id or rel not in self._files:
            return None
        return read_verified(self._files[rel], offset, chunk.size, chunk.hash)

    def table(self, expected: str) -> bytes | None:
        """The cached chunk table with hash ``expected`` (the last snapshot's tables are kept
        with its capture, so the next create reads none from the repository)."""
        if self._files is None or not _HASH.match(expected):
            return None
        try:
            raw = (self.slot / _TABLES / expected).read_bytes()
        except OSError:
            return None
        return raw if digest(raw) == expected else None

    def commit(
        self, staging: Path, snapshot_id: str, files: dict[str, Path], tables: dict[str, bytes] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Make ``staging`` (holding ``files``: snapshot path -> staged file) the cached copy of
        ``snapshot_id``, with its chunk ``tables`` (hash -> bytes) and ``extra`` fields in its
        ``cache.json``. The old copy is replaced whole; a failure leaves no half cache."""
        rels = {r: p.relative_to(staging).as_posix() for r, p in files.items()}
        index = {**(extra or {}), "snapshot": snapshot_id, "files": rels}
        if tables:
            (staging / _TABLES).mkdir(exist_ok=True)
            for h, raw in tables.items():
                (staging / _TABLES / h).write_bytes(raw)
        (staging / _INDEX).write_text(json.dumps(index, sort_keys=True))
        self.area.mkdir(parents=True, exist_ok=True)
        old = self.area / f".old-{os.getpid()}-{secrets.token_hex(4)}"
        if self.slot.exists():
            os.rename(self.slot, old)
        pausepoints.point("cache.swapping")  # (a kill here leaves no cache: never half of one)
        try:
            os.rename(staging, self.slot)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copytree(staging, self.slot)  # staging was on another filesystem (--tmp-dir)
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
