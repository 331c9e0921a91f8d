"""``export``: one collection of a snapshot as records (JSON lines or Parquet), a logical,
versionless copy that other tools can import.

Only chroma.sqlite3 and the collection's segment folders are read from the repository and
materialised, every chunk and file hash checked, into a private temporary directory (see
:func:`_materialise_collection`), then read with chromadb in bounded batches
(:mod:`snapshot.chroma.export`). A file output is written to a temporary file
beside it, synced, and renamed into place only once every record is written and their number
equals the snapshot's verified count: an existing file is refused unless ``force``, and a
failure leaves no partial file behind. A stream (stdout) gets the records as they come.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from snapshot.chroma.export import check_format, export_dir
from snapshot.errors import IntegrityError, NotFoundError, TargetError
from snapshot.format.manifest import CollectionInfo, Manifest
from snapshot.repo.repository import Repository
from snapshot.restore.collections import materialise_collections
from snapshot.util.fsync import fsync_path
from snapshot.util.progress import NullReporter, Reporter
from snapshot.util.tempdirs import TEMP_PREFIX, owned_dir, sweep

#: What a temporary output file's name starts with (``.<name>.partial-...``).
PARTIAL = ".partial-"


@dataclass(frozen=True)
class ExportResult:
    snapshot: str
    collection: str
    format: str
    #: The output file, or "-" for a stream.
    output: str
    records: int
    bytes_written: int
    #: Bytes read from the repository to materialise the collection.
    bytes_downloaded: int
    seconds: float


def find_collection(m: Manifest, name: str) -> CollectionInfo:
    """The collection ``name`` of snapshot ``m``; NotFoundError naming the ones it has."""
    for c in m.collections:
        if c.name == name:
            return c
    names = ", ".join(sorted(c.name for c in m.collections)) or "none"
    raise NotFoundError(f"snapshot {m.id} has no collection {name!r}; its collections: {names}")


def check_output(out: Path, force: bool) -> None:
    """Refuse an output that exists (unless ``force`` and it is a file) or whose folder does not."""
    if out.is_dir():
        raise TargetError(f"{out} is a directory; give a file name to export to")
    if (out.exists() or out.is_symlink()) and not force:
        raise TargetError(f"{out} exists; use --force to replace it")
    if not out.parent.is_dir():
        raise TargetError(f"the folder of {out} does not exist")


def _materialise_collection(repo: Repository, m: Manifest, name: str, dest: Path, reporter: Reporter) -> int:
    """chroma.sqlite3 and the segment folders of collection ``name`` of ``m``, verified, in the
    new directory ``dest``; the bytes read from the repository (about the collection's share of
    the snapshot, not the whole). The other collections' rows stay in chroma.sqlite3, their
    segment folders absent: chromadb reads only the exported collection's."""
    dest.mkdir()
    return materialise_collections(repo, m, [name], dest, reporter=reporter).bytes_downloaded


def _partial(out: Path) -> Path:
    return out.with_name(f".{out.name}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}")


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Move the finished ``tmp`` to ``out``: replacing it only with ``force``, else never over
    a file that appeared meanwhile (a hard link fails on an existing name)."""
    if force:
        os.replace(tmp, out)
    else:
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise TargetError(f"{out} exists; use --force to replace it") from None
        except OSError:  # no hard links here: a rename after the check above
            if out.exists():
                raise TargetError(f"{out} exists; use --force to replace it") from None
            os.replace(tmp, out)
        else:
            tmp.unlink()
    fsync_path(out.parent)


def export_collection(
    repo: Repository,
    ref: str,
    name: str,
    out: str | os.PathLike[str] | IO[bytes],
    *,
    format: str = "jsonl",
    force: bool = False,
    tmp_dir: str | os.PathLike[str] | None = None,
    reporter: Reporter | None = None,
) -> ExportResult:
    """Export collection ``name`` of snapshot ``ref`` to ``out``: a file path (written atomically;
    an existing file only with ``force``) or a binary stream (records as they come)."""
    reporter = reporter or NullReporter()
    started = time.monotonic()
    check_format(format)
    m = repo.get(ref)
    info = find_collection(m, name)
    target, stream = (Path(os.fspath(out)).expanduser(), None) if isinstance(out, (str, os.PathLike)) \
        else (None, out)
    if target is not None:
        check_output(target, force)
    parent = Path(tmp_dir) if tmp_dir else Path(tempfile.gettempdir())
    sweep(parent, TEMP_PREFIX)
    work = owned_dir(parent, TEMP_PREFIX)
    tmp: Path | None = None
    try:
        downloaded = _materialise_collection(repo, m, name, work / "db", reporter)
        reporter.phase(f"export {name}", 0)
        if stream is not None:
            done = export_dir(work / "db", name, stream, fmt=format, on_bytes=reporter.advance)
        else:
            assert target is not None
            tmp = _partial(target)
            with open(tmp, "xb") as sink:
                done = export_dir(work / "db", name, sink, fmt=format, on_bytes=reporter.advance)
                sink.flush()
                os.fsync(sink.fileno())
        if done.records != info.records:
            raise IntegrityError(f"snapshot {m.id}: exported {done.records} records of {name!r}, "
                                 f"the snapshot's verified count is {info.records}")
        if target is not None and tmp is not None:
            _publish(tmp, target, force)
            tmp = None
    finally:
        reporter.done()
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(m.id, name, format, "-" if target is None else str(target), done.records, done.bytes,
                        downloaded, time.monotonic() - started)
