"""The one exception hierarchy of chroma-snapshot; each class carries its CLI exit code.

A class that introduces an exit code also says what it means (``meaning``): :func:`exit_codes`
builds the exit-code table from them, and a test compares README.md's table with it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass


class SnapshotError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; ``kind`` names it in --json;
    ``meaning`` is the exit-code table's line for the code (set where a class introduces one)."""

    exit_code = 1
    kind = "error"
    meaning = "unexpected error"
    #: Set when the outcome was already shown (e.g. check's JSON report): the CLI then prints
    #: the one-line error on stderr only.
    reported = False


class UsageError(SnapshotError):
    """Bad arguments or options (also what click itself uses)."""

    exit_code = 2
    kind = "usage"
    meaning = "usage error: bad arguments, ambiguous snapshot id prefix"


class AmbiguousIdError(UsageError):
    """A snapshot id prefix matches more than one snapshot."""

    kind = "ambiguous-id"


class NotFoundError(SnapshotError):
    """A snapshot, object, repository, source or collection that does not exist."""

    exit_code = 3
    kind = "not-found"
    meaning = "not found: snapshot, repository, object, source path or collection"


class IntegrityError(SnapshotError):
    """Stored data or a manifest does not match what it claims to be."""

    exit_code = 4
    kind = "integrity"
    meaning = "integrity: hash mismatch, corrupt object or manifest, unsafe path, Chroma check failed"


class UnsafePathError(IntegrityError):
    """A manifest path that would escape the restore target."""

    kind = "unsafe-path"


class ChromaCheckError(IntegrityError):
    """A restored directory that Chroma refuses to open, or that opens with wrong contents."""

    kind = "chroma-check"


class StorageError(SnapshotError):
    """The store failed an operation (I/O error, unexpected response)."""

    exit_code = 5
    kind = "storage"
    meaning = "storage error: the store failed an operation"


class SourceError(SnapshotError):
    """The directory to snapshot is not a usable Chroma persist dir, or capture failed."""

    exit_code = 6
    kind = "source"
    meaning = "source error: not a Chroma persist dir, no consistent capture, or it fails a consistency check"


class InconsistentSourceError(SourceError):
    """The captured directory fails a consistency check (its HNSW files and chroma.sqlite3
    disagree), also when taken again."""

    kind = "inconsistent-source"


class TargetError(SnapshotError):
    """The restore target cannot be used (not empty without --force, not a directory, ...), or a
    copy's destination holds another snapshot under an id it copies."""

    exit_code = 7
    kind = "target"
    meaning = ("target error: restore target not empty (use --force) or unusable; copy destination holds "
               "other content under a snapshot id")


class TargetUnreachableError(TargetError):
    """A Chroma server given as the target does not answer (refused, timed out, network gone)."""

    kind = "target-unreachable"


class TargetAuthError(TargetError):
    """A Chroma server given as the target refused the credentials (HTTP 401/403)."""

    kind = "target-auth"


class CopyCheckError(IntegrityError):
    """A collection copied into a persist dir or a server differs from its source (count, ids,
    sampled fields, or a sampled embedding that does not find itself)."""

    kind = "copy-check"


class FormatVersionError(SnapshotError):
    """A repository or manifest written in a format this version cannot read."""

    exit_code = 8
    kind = "format-version"
    meaning = "format version: repository or manifest from a newer, unknown format"


class LockedError(SnapshotError):
    """The repository is locked by another process whose lock conflicts with ours."""

    exit_code = 9
    kind = "locked"
    meaning = "locked: another process holds a conflicting repository lock"


class DiskFullError(SnapshotError):
    """A local filesystem ran out of space (ENOSPC); the message names the filesystem."""

    exit_code = 15
    kind = "disk-full"
    meaning = "disk full: no space left on a local filesystem (named in the message)"


class WrongPasswordError(SnapshotError):
    """No key of an encrypted repository opens with the password given (or the key file was
    altered: the two cannot be told apart)."""

    exit_code = 16
    kind = "wrong-password"
    meaning = "wrong password: no key of the encrypted repository opens with it (or its key file was altered)"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: what the CLI's SIGINT handler raises (any KeyboardInterrupt exits the same way)."""

    exit_code = 130
    kind = "interrupted"
    meaning = "interrupted (Ctrl-C)"


class Terminated(Interrupted):
    """SIGTERM, raised in the main thread so that cleanup runs as for Ctrl-C."""

    exit_code = 143
    kind = "terminated"
    meaning = "terminated (SIGTERM); temporary files were removed"


def mount_point(path: str | os.PathLike[str]) -> str:
    """The mount point of the filesystem holding ``path`` (or its nearest existing parent)."""
    p = os.path.abspath(os.fspath(path))
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    while not os.path.ismount(p):
        p = os.path.dirname(p)
    return p


def disk_full(exc: OSError, path: str | os.PathLike[str] | None = None) -> DiskFullError | None:
    """A DiskFullError naming the full filesystem if ``exc`` is ENOSPC/EDQUOT, else None."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = path if path is not None else exc.filename
    fs = f"the filesystem at {mount_point(where)}" if where else "a local filesystem"
    quota = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left"
    err = DiskFullError(f"{quota} on {fs} (writing {where or '?'}); free some space and run again")
    err.__cause__ = exc
    return err


@contextlib.contextmanager
def naming_full_disk(path: str | os.PathLike[str]) -> Iterator[None]:
    """Raise a full disk in the block as a DiskFullError naming ``path`` and its filesystem
    (what ``os.write`` or ``fsync`` raise names neither)."""
    try:
        yield
    except OSError as exc:
        full = disk_full(exc, path)
        if full is None:
            raise
        raise full from exc


class AlreadyExistsError(StorageError):
    """A create-only write found the key already present."""

    kind = "already-exists"


class BucketNotFoundError(StorageError):
    """The bucket (or container) a remote repository location names does not exist."""

    exit_code = 10
    kind = "bucket-not-found"
    meaning = "S3: bucket does not exist"


class AccessDeniedError(StorageError):
    """The store refused the request with the credentials given."""

    exit_code = 11
    kind = "access-denied"
    meaning = "S3: access denied"


class ArchivedError(StorageError):
    """Objects a command must read are in an archive storage class (S3 GLACIER, DEEP_ARCHIVE)
    and not restored: nothing is read until they are (``--request-restore``)."""

    exit_code = 17
    kind = "archived"
    meaning = "S3: objects in an archive class (GLACIER, DEEP_ARCHIVE) must be restored first " \
        "(--request-restore)"


class HeldError(SnapshotError):
    """A snapshot to forget has its root retained by S3 Object Lock: nothing is deleted before
    its retain-until date (named in the message)."""

    exit_code = 18
    kind = "held"
    meaning = "S3 Object Lock: the snapshot is retained until the date named; forget it after that"


class CredentialsError(StorageError):
    """No usable credentials for a remote store (none found, incomplete, or expired)."""

    exit_code = 12
    kind = "no-credentials"
    meaning = "S3: no credentials found"


class EndpointError(StorageError):
    """A remote store's endpoint cannot be reached."""

    exit_code = 13
    kind = "endpoint-unreachable"
    meaning = "S3: endpoint unreachable"


class WrongRegionError(StorageError):
    """The bucket is in another region than the one asked (the message names it if known)."""

    exit_code = 14
    kind = "wrong-region"
    meaning = "S3: wrong region for the bucket"


@dataclass(frozen=True)
class ExitCode:
    """One row of the exit-code table."""

    code: int
    name: str
    meaning: str


SUCCESS = ExitCode(0, "success", "success")


def exit_codes() -> tuple[ExitCode, ...]:
    """The exit-code table, by code: success, then one row per class of this module that
    introduces a code (its ``kind`` and ``meaning``); its subclasses share the row."""
    rows = [SUCCESS]
    todo: list[type[SnapshotError] | type[Interrupted]] = [SnapshotError, Interrupted]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "exit_code" in vars(cls) and cls.__module__ == __name__:
            rows.append(ExitCode(cls.exit_code, cls.kind, cls.meaning))
    return tuple(sorted(rows, key=lambda r: r.code))
