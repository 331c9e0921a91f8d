"""The one exception hierarchy of chroma-snapshot; each class carries its CLI exit code.

The exit-code table in README.md is generated from nothing: keep the two in step by hand
(a test compares them).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

EXIT_OK = 0
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class SnapshotError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; ``kind`` names it in --json."""

    exit_code = 1
    kind = "error"
    #: Set when the outcome was already shown (e.g. check's JSON report): the CLI then prints
    #: the one-line error on stderr only.
    reported = False


class UsageError(SnapshotError):
    """Bad arguments or options (also what click itself uses)."""

    exit_code = 2
    kind = "usage"


class AmbiguousIdError(UsageError):
    """A snapshot id prefix matches more than one snapshot."""

    kind = "ambiguous-id"


class NotFoundError(SnapshotError):
    """A snapshot, object, repository or source that does not exist."""

    exit_code = 3
    kind = "not-found"


class IntegrityError(SnapshotError):
    """Stored data or a manifest does not match what it claims to be."""

    exit_code = 4
    kind = "integrity"


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


class SourceError(SnapshotError):
    """The directory to snapshot is not a usable Chroma persist dir, or capture failed."""

    exit_code = 6
    kind = "source"


class InconsistentSourceError(SourceError):
    """The captured directory fails a consistency check (its HNSW files and chroma.sqlite3
    disagree), also when taken again."""

    kind = "inconsistent-source"


class TargetError(SnapshotError):
    """The restore target cannot be used (not empty without --force, not a directory, ...)."""

    exit_code = 7
    kind = "target"


class FormatVersionError(SnapshotError):
    """A repository or manifest written in a format this version cannot read."""

    exit_code = 8
    kind = "format-version"


class LockedError(SnapshotError):
    """The repository is locked by another process whose lock conflicts with ours."""

    exit_code = 9
    kind = "locked"


class DiskFullError(SnapshotError):
    """A local filesystem ran out of space (ENOSPC); the message names the filesystem."""

    exit_code = 15
    kind = "disk-full"


class WrongPasswordError(SnapshotError):
    """No key of an encrypted repository opens with the password given (or the key file was
    altered: the two cannot be told apart)."""

    exit_code = 16
    kind = "wrong-password"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that cleanup runs as for Ctrl-C (exit 143)."""


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


class AccessDeniedError(StorageError):
    """The store refused the request with the credentials given."""

    exit_code = 11
    kind = "access-denied"


class CredentialsError(StorageError):
    """No usable credentials for a remote store (none found, incomplete, or expired)."""

    exit_code = 12
    kind = "no-credentials"


class EndpointError(StorageError):
    """A remote store's endpoint cannot be reached."""

    exit_code = 13
    kind = "endpoint-unreachable"


class WrongRegionError(StorageError):
    """The bucket is in another region than the one asked (the message names it if known)."""

    exit_code = 14
    kind = "wrong-region"


#: (exit code, meaning) in the order README.md documents them.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "unexpected error"),
    (2, "usage error: bad arguments, ambiguous snapshot id prefix"),
    (3, "not found: snapshot, repository, object or source path"),
    (4, "integrity: hash mismatch, corrupt object or manifest, unsafe path, Chroma check failed"),
    (5, "storage error: the store failed an operation"),
    (6, "source error: not a Chroma persist dir, no consistent capture, or it fails a consistency check"),
    (7, "target error: restore target not empty (use --force) or unusable"),
    (8, "format version: repository or manifest from a newer, unknown format"),
    (9, "locked: another process holds a conflicting repository lock"),
    (10, "S3: bucket does not exist"),
    (11, "S3: access denied"),
    (12, "S3: no credentials found"),
    (13, "S3: endpoint unreachable"),
    (14, "S3: wrong region for the bucket"),
    (15, "disk full: no space left on a local filesystem (named in the message)"),
    (16, "wrong password: no key of the encrypted repository opens with it (or its key file was altered)"),
    (130, "interrupted (Ctrl-C)"),
    (143, "terminated (SIGTERM); temporary files were removed"),
)
