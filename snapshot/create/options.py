"""What a create can be told (:class:`CreateOptions`), checked when the options are built:
nothing about them is refused after the repository has been touched."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from snapshot.errors import UsageError
from snapshot.format.codecs import check_codec
from snapshot.util.options import check_flags


@dataclass(frozen=True)
class CreateOptions:
    """How :func:`~snapshot.create.pipeline.create_snapshot` takes a snapshot.

    ``tags`` and ``message`` are stored with it (one line of UTF-8 each; a tag has no comma and
    no edge spaces). ``includes``: extra files or folders kept next to the DB;
    ``include_orphans``: also segment folders no collection references. ``parent``: the
    snapshot to dedup and delta against [the newest of this source]. ``level``: compression
    level of full frames [the repository's]; ``delta``: store changed chunks as deltas to the
    parent's. ``tmp_dir``: where the consistent copy is staged; ``use_cache``/``cache_dir``:
    keep it in the base cache (default $CHROMA_SNAPSHOT_CACHE or ~/.cache/chroma-snapshot) so
    the next create deltas against it without reading the repository. ``in_place``: copy only
    chroma.sqlite3 and read the segment files where they lie, proven unchanged by size and mtime
    once read (no DB-sized copy on disk; keeps no base cache; a writer that changes a segment
    file meanwhile makes the create read again). ``pack_size``: bytes per
    pack [None: sized to the database, repo/packs.py pack_size_for]. ``wait``: seconds to wait
    for a prune holding the repository [0].
    ``allow_inconsistent``: snapshot a directory that fails the consistency checks anyway."""

    tags: Sequence[str] = ()
    message: str = ""
    includes: Sequence[str | os.PathLike[str]] = ()
    include_orphans: bool = False
    parent: str | None = None
    level: int | None = None
    delta: bool = True
    tmp_dir: str | os.PathLike[str] | None = None
    use_cache: bool = True
    cache_dir: str | os.PathLike[str] | None = None
    pack_size: int | None = None
    wait: float | None = None
    allow_inconsistent: bool = False
    #: Also predict the requests and bytes (``CreateResult.predicted``), once captured.
    predict: bool = False
    in_place: bool = False

    def __post_init__(self) -> None:
        for name, items in (("tags", self.tags), ("includes", self.includes)):
            if isinstance(items, (str, bytes, os.PathLike)):
                raise UsageError(f"{name} is a list, not one value: {name}=[{items!r}]")
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "includes", tuple(self.includes))
        for t in self.tags:
            if not isinstance(t, str) or not t or "," in t or t != t.strip():
                raise UsageError(f"bad tag {t!r}: tags are non-empty, without commas or edge spaces")
        if not isinstance(self.message, str):
            raise UsageError(f"message must be text, not {self.message!r}")
        for what, text in [("--tag", t) for t in self.tags] + [("--message", self.message)]:
            check_text(what, text)
            _check_one_line(what, text)
        check_flags(include_orphans=self.include_orphans, delta=self.delta, use_cache=self.use_cache,
                    allow_inconsistent=self.allow_inconsistent, predict=self.predict,
                    in_place=self.in_place)
        if self.in_place and self.cache_dir is not None:
            raise UsageError("in_place keeps no base cache (it would be a DB-sized copy): drop cache_dir")
        if self.pack_size is not None and (
            isinstance(self.pack_size, bool) or not isinstance(self.pack_size, int) or self.pack_size < 1
        ):
            raise UsageError(f"pack_size must be a positive number of bytes, not {self.pack_size!r}")
        if self.wait is not None and not self.wait >= 0:
            raise UsageError(f"wait must be 0 or more seconds, not {self.wait!r}")

    def check_level(self, codec: str | None) -> None:
        """The level against the codec of the repository (zstd for a new one)."""
        check_codec(codec or "zstd", self.level if self.level is not None else 1)


def check_text(what: str, text: str) -> None:
    """Manifests are UTF-8 JSON: refuse text that cannot be encoded (undecodable bytes from the
    command line arrive as lone surrogates) before anything is uploaded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8: {text.encode('utf-8', 'replace')!r}") from None


def _check_one_line(what: str, text: str) -> None:
    """Tags and messages are shown one per line (list, show): no newline, tab or other control
    character, which would break a line or forge one."""
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise UsageError(f"{what} contains the control character U+{ord(bad):04X}: it must be one line of "
                         "printable text")
