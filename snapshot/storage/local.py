"""A repository in a local folder: the same keys as S3, one file per key.

Writes are atomic (temp file + fsync + rename; create-only through an exclusive hard link), so
a crash never leaves a half-written object under its final name. Temp files start with ``.``
and are never listed.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from snapshot.errors import (
    AlreadyExistsError,
    IntegrityError,
    NotFoundError,
    StorageError,
    UsageError,
    disk_full,
)
from snapshot.storage.base import (
    ArchiveState,
    Capabilities,
    ObjectInfo,
    ObjectKind,
    ObjectLock,
    ObjectVersion,
    RequestStats,
)
from snapshot.util.fsync import fsync_path


class LocalStore:
    """Store keys as files under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.stats = RequestStats()

    @property
    def url(self) -> str:
        return str(self.root)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(local_root=self.root)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid storage key {key!r}")
        return self.root / key

    def _open_fd(self, path: Path, key: str) -> int:
        """Open for reading only a regular file: a FIFO or device in the repository (damage or
        malice) must not block or feed us forever."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageError(f"{key} in {self.url} is not a regular file")
        return fd

    def _open_regular(self, path: Path, key: str) -> BinaryIO:
        return os.fdopen(self._open_fd(path, key), "rb")

    def get(self, key: str) -> bytes:
        path = self._path(key)
        self.stats.add("get")
        try:
            with self._open_regular(path, key) as fh:
                data = fh.read()
        except FileNotFoundError as exc:
            raise NotFoundError(f"object {key} not found in {self.url}") from exc
        except OSError as exc:
            raise StorageError(f"reading {key} from {self.url}: {exc.strerror or exc}") from exc
        self.stats.bytes_down += len(data)
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        path = self._path(key)
        self.stats.add("get_range", down=length)
        try:
            fd = self._open_fd(path, key)  # no file object: a restore makes thousands of these reads
            try:
                data = os.pread(fd, length, offset)
                while 0 < len(data) < length:  # a short read is not the end of the file yet
                    more = os.pread(fd, length - len(data), offset + len(data))
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
        except FileNotFoundError as exc:
            raise NotFoundError(f"object {key} not found in {self.url}") from exc
        except OSError as exc:
            raise StorageError(f"reading {key} from {self.url}: {exc.strerror or exc}") from exc
        if len(data) != length:
            raise IntegrityError(
                f"object {key} is truncated: wanted bytes {offset}..{offset + length}, "
                f"got {len(data)}"
            )
        return data

    def put(self, key: str, data: bytes | bytearray, *, kind: ObjectKind, create_only: bool = False) -> None:
        path = self._path(key)
        self.stats.add("put", up=len(data))
        tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(6)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if create_only:
                try:
                    os.link(tmp, path)
                except FileExistsError as exc:
                    raise AlreadyExistsError(f"{key} already exists in {self.url}") from exc
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise
                    # Filesystems without hard links: O_EXCL create, then fill it.
                    self._exclusive_write(path, data, key)
            else:
                os.replace(tmp, path)
            fsync_path(path.parent)
        except AlreadyExistsError:
            raise
        except OSError as exc:
            full = disk_full(exc, path.parent)
            if full is not None:
                raise full from exc
            raise StorageError(f"writing {key} to {self.url}: {exc.strerror or exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _exclusive_write(self, path: Path, data: bytes | bytearray, key: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError as exc:
            raise AlreadyExistsError(f"{key} already exists in {self.url}") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def exists(self, key: str) -> bool:
        self.stats.add("head")
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.stats.add("list")
        base = self.root
        # Walk only the deepest directory the prefix names, then filter by the full prefix.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = base / head if head else base
        if not start.is_dir():
            return
        found: list[ObjectInfo] = []
        try:
            for dirpath, dirnames, filenames in os.walk(start):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if name.startswith("."):
                        continue
                    full = Path(dirpath) / name
                    key = full.relative_to(base).as_posix()
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = full.stat()
                    except FileNotFoundError:  # deleted since the walk saw it: not listed
                        continue
                    found.append(ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime))
        except OSError as exc:
            raise StorageError(f"listing {prefix!r} in {self.url}: {exc.strerror or exc}") from exc
        yield from sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        self.stats.add("delete")
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"deleting {key} from {self.url}: {exc.strerror or exc}") from exc

    def archive_state(self, key: str) -> ArchiveState | None:
        """A local folder has no archive classes."""
        return None

    def request_restore(self, key: str, *, days: int, tier: str) -> None:
        """Nothing to restore in a local folder."""

    def use_object_lock(self, lock: ObjectLock | None, *, check_bucket: bool = False) -> None:
        """A folder retains nothing: refused for a new repository, ignored for a copy of one
        that has Object Lock in its bucket (``aws s3 sync``'d down)."""
        if lock is not None and check_bucket:
            raise UsageError(f"Object Lock needs an S3 bucket with Object Lock enabled, not the folder "
                             f"{self.url}")

    def retention(self, key: str) -> float | None:
        """A local folder retains nothing."""
        return None

    def versioning(self) -> str | None:
        return None

    def versions(self, prefix: str) -> Iterator[ObjectVersion]:
        """A local folder keeps no versions."""
        return iter(())

    def copy_back(self, key: str, version_id: str, *, kind: ObjectKind, size: int) -> None:
        raise UsageError(f"{self.url} keeps no versions of its objects (only a versioned S3 bucket does)")

    def now(self) -> float:
        """This host's clock: it also stamps the mtimes of the files listed here."""
        return time.time()


def open_location(location: str, options: object = None) -> LocalStore:
    """The store of a path or ``file:///path`` (the backend registry's entry point); a local
    folder takes no options."""
    if location.startswith("file://"):
        path = location[len("file://") :]
        if not path.startswith("/"):
            raise UsageError(f"file URL must hold an absolute path: {location}")
        return LocalStore(path)
    return LocalStore(location)
