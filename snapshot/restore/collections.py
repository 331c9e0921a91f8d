"""Restoring chosen collections of a snapshot (``restore SNAP TARGET --collection NAME``).

Only chroma.sqlite3 and the named collections' segment folders are read from the repository
and written, every chunk and file hash checked (:func:`materialise_collections`). Then, by
TARGET:

* a path that does not exist or an empty directory: a new persist dir holding only those
  collections. The copy is built beside TARGET; chromadb (in a child process) drops the other
  collections from it and renames one with ``--as``; the result must pass the capture's
  consistency checks, with the snapshot's record counts and the kept segment folders still
  byte-identical to the snapshot's; only then is it moved into place, atomically;
* an existing persist dir or an ``http(s)://`` server: the copy is made in a private temporary
  directory and the collections are copied from it through chromadb's client API
  (``snapshot.chroma.transfer.copy_collections``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshot.chroma.consistency import verify_dir
from snapshot.chroma.keep_collections import keep_only
from snapshot.chroma.names import name_problem
from snapshot.chroma.persist_dir import check_restore_target
from snapshot.chroma.restore_rules import recorded_schema, write_order
from snapshot.chroma.schema import DB_NAME
from snapshot.errors import IntegrityError, NotFoundError, TargetError, UsageError
from snapshot.format.hashing import FileHasher
from snapshot.format.manifest import CollectionInfo, Manifest, check_rel_path
from snapshot.repo.basecache import default_root
from snapshot.repo.repository import Repository
from snapshot.restore.materialise import materialise, sync_tree
from snapshot.restore.pipeline import target_mode, target_path
from snapshot.restore.swap import recover, swap_into_place, sweep_beside, temp_beside
from snapshot.util import pausepoints, tempdirs
from snapshot.util.progress import NullReporter, Reporter

SERVER_SCHEMES = ("http://", "https://")
#: Where a copy into an existing persist dir or a server keeps its private copy's temp dirs.
_PRIVATE_PREFIX = "chroma-snapshot-collections-"


@dataclass(frozen=True)
class PartialRestore:
    """What :func:`materialise_collections` wrote and read."""

    id: str
    collections: tuple[str, ...]
    files: int
    bytes_total: int
    #: Bytes read from the repository (chunk tables and frames).
    bytes_downloaded: int
    requests: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerOptions:
    """How to reach a Chroma server or a database in it (see chromadb's client Settings)."""

    tenant: str | None = None
    database: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionRestoreResult:
    id: str
    target: str
    #: "new-dir", "persist-dir" (added to an existing one) or "server".
    mode: str
    #: Name at the target -> records restored.
    collections: dict[str, int]
    #: Name in the snapshot -> name at the target, for collections restored under a new name.
    renamed: dict[str, str]
    files: int
    bytes_total: int
    bytes_downloaded: int
    #: The whole snapshot's size, to set ``bytes_downloaded`` against.
    bytes_snapshot: int
    #: What was proven: "hashes" (every file read from the repository), then for a new dir the
    #: consistency checks it passed, for a persist dir or a server what the copy's verification
    #: compared (``snapshot.chroma.transfer.CHECKS``).
    checks: tuple[str, ...]
    warnings: tuple[str, ...]
    seconds: float
    requests: dict[str, int] = field(default_factory=dict)
    #: Records this run wrote: into a new dir, those of the restored collections; into a
    #: persist dir or a server, those it sent (a resumed run skips what the target had confirmed).
    records_written: int = 0
    #: What the copy into an existing persist dir or a server did, per collection
    #: (``snapshot.chroma.transfer.CollectionCopy``: records sent, resumed at, batch size,
    #: records sampled, replaced).
    copies: tuple[Any, ...] = ()


# ------------------------------------------------------------------ pure: what is restored


def select_collections(m: Manifest, names: Sequence[str],
                       rename: str | None = None) -> tuple[CollectionInfo, ...]:
    """The collections of ``m`` named ``names`` (in that order, each once), or a usage error:
    none named, a name the snapshot lacks (the error lists its collections), ``rename`` with
    more than one collection or not a valid collection name."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        raise UsageError("name at least one collection to restore (--collection NAME)")
    by_name = {c.name: c for c in m.collections}
    missing = [n for n in wanted if n not in by_name]
    if missing:
        have = ", ".join(sorted(by_name)) or "none"
        raise NotFoundError(f"snapshot {m.id} has no collection {', '.join(map(repr, missing))} "
                            f"(its collections: {have})")
    if rename is not None:
        if len(wanted) != 1:
            raise UsageError(f"--as renames one collection; {len(wanted)} were named "
                             f"({', '.join(wanted)})")
        problem = name_problem(rename)
        if problem is not None:
            raise UsageError(f"invalid collection name {rename!r} for --as: {problem}")
    return tuple(by_name[n] for n in wanted)


def collection_files(m: Manifest, names: Sequence[str]) -> Manifest:
    """``m`` narrowed to chroma.sqlite3 and the segment folders of the collections ``names``
    (and to those collections): what a restore of them reads and writes."""
    chosen = select_collections(m, names)
    folders = {s for c in chosen for s in c.segments}
    files = tuple(f for f in m.files
                  if f.path == DB_NAME or (f.role == "segment" and f.path.split("/", 1)[0] in folders))
    if not any(f.path == DB_NAME for f in files):
        raise IntegrityError(f"snapshot {m.id} holds no {DB_NAME}")
    return dataclasses.replace(m, files=files, collections=chosen)


# ------------------------------------------------------------------ materialising


def materialise_collections(repo: Repository, manifest: Manifest, names: Sequence[str], dest: Path, *,
                            reporter: Reporter | None = None) -> PartialRestore:
    """Write into ``dest`` (an empty directory) chroma.sqlite3 and the segment folders of the
    collections ``names`` of ``manifest``, every chunk and file hash checked, reading from the
    repository only those files. Files are not yet synced to disk (:func:`sync_tree`)."""
    sub = collection_files(manifest, names)
    for f in sub.files:
        check_rel_path(f.path)
    if set(os.listdir(dest)) - {tempdirs.MARKER}:
        raise TargetError(f"{dest} is not empty")
    reporter = reporter or NullReporter()
    with repo.measure() as moved:
        materialise(repo, sub, dest, dest, reporter, order=write_order(sub))
    return PartialRestore(
        id=manifest.id,
        collections=tuple(c.name for c in sub.collections),
        files=len(sub.files),
        bytes_total=sum(f.size for f in sub.files),
        bytes_downloaded=moved.bytes_down,
        requests=moved.requests,
    )


def _file_hash(path: Path) -> str:
    hasher = FileHasher()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


def _check_result(built: Path, sub: Manifest, expected: dict[str, int]) -> tuple[tuple[str, ...], list[str]]:
    """The private copy after chromadb dropped and renamed: every segment file still the
    snapshot's bytes, the capture's consistency checks (SQLite's quick_check included:
    chroma.sqlite3 was rewritten) and exactly the ``expected`` collections and counts.
    (checks passed, warnings): a snapshot taken without checks or of an inconsistent
    directory (--allow-inconsistent) is held to its hashes only, with a warning."""
    for f in sub.files:
        if f.path != DB_NAME and _file_hash(built / f.path) != f.hash:
            raise IntegrityError(f"{f.path} changed while the other collections were dropped")
    v = verify_dir(built)
    found = v.problems[0] if v.problems else None
    if found is None and v.collections != expected:
        found = f"the restored directory holds {v.collections}, the snapshot recorded {expected}"
    if found is None:
        return ("hashes", "segments-unchanged", *v.checks), []
    if sub.verified is None or sub.verified.problems:
        return ("hashes", "segments-unchanged"), [
            f"snapshot {sub.id} was made without consistency checks or of an inconsistent directory, "
            f"and the restored collections show it: {found}"]
    raise IntegrityError(f"the restored collections fail a consistency check: {found}")


# ------------------------------------------------------------------ restoring


class _Noting:
    """A reporter that passes everything on and keeps the warnings, for the result."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.warnings: list[str] = []

    def phase(self, name: str, total: int) -> None:
        self.inner.phase(name, total)

    def advance(self, amount: int) -> None:
        self.inner.advance(amount)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.inner.warn(message)

    def done(self) -> None:
        self.inner.done()


def is_server(target: str) -> bool:
    return target.lower().startswith(SERVER_SCHEMES)


def restore_collection(
    repo: Repository, ref: str, target: str | os.PathLike[str], names: Sequence[str], *,
    rename: str | None = None, replace: bool = False, server: ServerOptions | None = None,
    batch_size: int | None = None, reporter: Reporter | None = None,
    on_commit: Callable[[], None] | None = None,
) -> CollectionRestoreResult:
    """Restore the collections ``names`` of snapshot ``ref`` into ``target`` (``rename``: the
    one collection's name there): a new persist dir when ``target`` does not exist or is empty,
    else added to the persist dir or server it names (``replace``: over a collection of the same
    name there; ``batch_size``: fewer records per request than the target's limit). Bad input
    fails before anything is read or written."""
    started = time.monotonic()
    reporter = reporter or NullReporter()
    m = repo.get(ref)
    chosen = select_collections(m, names, rename)
    raw = os.fspath(target)
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"a batch holds at least 1 record, not {batch_size}")
    copy = _Copy(rename, replace, server or ServerOptions(), batch_size)
    if is_server(raw):
        return _into_chroma(repo, m, chosen, raw, copy, reporter, started)
    path = target_path(raw)
    recovered = recover(path)  # an earlier restore killed mid-swap is finished or rolled back
    if path.is_dir() and not path.is_symlink() and (path / DB_NAME).exists():
        return _into_chroma(repo, m, chosen, str(path), copy, reporter, started)
    if batch_size is not None:
        raise UsageError("--batch-size applies to a restore into an existing persist dir or a server")
    result = _into_new_dir(repo, m, chosen, path, rename, reporter, on_commit, started)
    if recovered is not None:
        result = dataclasses.replace(result, warnings=(recovered, *result.warnings))
    return result


def _protected(repo: Repository) -> list[tuple[Path, str]]:
    protected = [(default_root(), "the base cache")]
    if repo.local_root is not None:
        protected.append((repo.local_root, "the repository"))
    return protected


def _into_new_dir(repo: Repository, m: Manifest, chosen: tuple[CollectionInfo, ...], target: Path,
                  rename: str | None, reporter: Reporter, on_commit: Callable[[], None] | None,
                  started: float) -> CollectionRestoreResult:
    if target.is_dir() and not target.is_symlink() and os.listdir(target):
        raise TargetError(f"restore target {target} is neither empty nor a Chroma persist dir (no "
                          f"{DB_NAME}): restore collections into a new or empty directory, a persist dir "
                          "or a server URL")
    check_restore_target(target, force=False, protected=_protected(repo))
    names = [c.name for c in chosen]
    renamed = {names[0]: rename} if rename is not None and rename != names[0] else {}
    expected = {renamed.get(c.name, c.name): c.records for c in chosen}
    drop = [c.name for c in m.collections if c.name not in names]
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_beside(target)
    built = temp_beside(target, "restore")
    try:
        part = materialise_collections(repo, m, names, built, reporter=reporter)
        sub = collection_files(m, names)
        pausepoints.point("collections.materialised")
        if drop or renamed:
            keep_only(built, drop, next(iter(renamed.items())) if renamed else None, recorded_schema(m))
        pausepoints.point("collections.kept")
        checks, warnings = _check_result(built, sub, expected)
        for note in warnings:
            reporter.warn(note)
        sync_tree(built, sub)
        pausepoints.point("collections.verified")
        os.chmod(built, target_mode(target))
        swap_into_place(built, target, on_commit or (lambda: None))
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    finally:
        reporter.done()
    return CollectionRestoreResult(
        id=m.id, target=str(target), mode="new-dir", collections=expected, renamed=renamed,
        files=part.files, bytes_total=part.bytes_total,
        bytes_downloaded=part.bytes_downloaded, bytes_snapshot=m.totals.bytes, checks=checks,
        warnings=tuple(warnings), seconds=round(time.monotonic() - started, 3), requests=part.requests,
        records_written=sum(expected.values()),
    )


def _transfer() -> Any:
    """chroma/transfer.py, which copies collections into an existing persist dir or a server."""
    try:
        return importlib.import_module("snapshot.chroma.transfer")
    except ImportError as exc:
        if exc.name != "snapshot.chroma.transfer":
            raise
        raise UsageError("restoring collections into an existing persist dir or a Chroma server is not "
                         "available in this version: restore into a new or empty directory") from None


@dataclass(frozen=True)
class _Copy:
    """How collections are copied into an existing persist dir or a server."""

    rename: str | None
    replace: bool
    server: ServerOptions
    batch_size: int | None


def _into_chroma(repo: Repository, m: Manifest, chosen: tuple[CollectionInfo, ...], location: str,
                 how: _Copy, reporter: Reporter, started: float) -> CollectionRestoreResult:
    transfer = _transfer()
    server, rename = how.server, how.rename
    names = [c.name for c in chosen]
    chroma_target = transfer.ChromaTarget(location=location, tenant=server.tenant, database=server.database,
                                          headers=dict(server.headers), settings=dict(server.settings))
    noting = _Noting(reporter)
    journal_dir = default_root() / "transfers"
    journal_dir.mkdir(parents=True, exist_ok=True)
    tempdirs.sweep(Path(tempfile.gettempdir()), _PRIVATE_PREFIX)
    # The target is reached and checked (server, credentials, a name clash) before the
    # snapshot's files are read: a refusal costs no download.
    dimensions = {c.name: c.dimension for c in chosen}
    with transfer.start_copy(names, chroma_target, rename=rename, replace=how.replace,
                             journal_dir=journal_dir, journal_key=f"{m.id} {','.join(names)} {location}",
                             reporter=noting, batch_size=how.batch_size, dimensions=dimensions) as pending:
        private = tempdirs.owned_dir(Path(tempfile.gettempdir()), _PRIVATE_PREFIX)
        try:
            source = private / "db"
            source.mkdir()
            part = materialise_collections(repo, m, names, source, reporter=noting)
            copies = pending.run(source)
        finally:
            shutil.rmtree(private, ignore_errors=True)
            reporter.done()
    renamed = {names[0]: rename} if rename is not None and rename != names[0] else {}
    return CollectionRestoreResult(
        id=m.id, target=location, mode="server" if is_server(location) else "persist-dir",
        collections={renamed.get(c.name, c.name): c.records for c in chosen}, renamed=renamed,
        files=part.files, bytes_total=part.bytes_total, bytes_downloaded=part.bytes_downloaded,
        bytes_snapshot=m.totals.bytes, checks=("hashes", *transfer.CHECKS), warnings=tuple(noting.warnings),
        seconds=round(time.monotonic() - started, 3), requests=part.requests,
        records_written=sum(c.records_sent for c in copies), copies=tuple(copies),
    )
