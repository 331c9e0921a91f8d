"""What a restore can be told (:class:`RestoreOptions`), checked when the options are built."""

from __future__ import annotations

from dataclasses import dataclass

from snapshot.repo.archive import RestoreRequest
from snapshot.util.options import check_flags


@dataclass(frozen=True)
class RestoreOptions:
    """How :func:`~snapshot.restore.pipeline.restore_snapshot` restores.

    ``force``: replace a non-empty target (only an empty dir or a Chroma persist dir, never a
    folder holding anything else). ``chroma_check``: also open the result with chromadb
    (collections in batches, in child processes) before swapping it in. ``strict``: refuse
    instead of warning when the installed chromadb cannot open the snapshot's database schema.
    ``request_restore``: packs in an archive class (GLACIER, DEEP_ARCHIVE) are asked back first."""

    force: bool = False
    chroma_check: bool = False
    strict: bool = False
    #: Ask S3 to restore archived packs the snapshot needs (then stop: run again once restored).
    request_restore: RestoreRequest | None = None
    #: Also predict the requests and bytes (reported as ``RestoreResult.predicted``): the chunk
    #: tables are read before the first file is written, and the target is indexed twice.
    predict: bool = False

    def __post_init__(self) -> None:
        check_flags(force=self.force, chroma_check=self.chroma_check, strict=self.strict,
                    predict=self.predict)
