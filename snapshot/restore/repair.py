"""Bringing a restored directory back to exactly the snapshot after chromadb opened it
(``restore --chroma-check``).

chromadb writes to chroma.sqlite3 whenever it opens a directory (a few pages, scattered over
the file), and rewrites the index files of every collection whose queue entries it applies
(collections under its sync threshold, e.g. most of a multi-tenant DB). The restore keeps local
copies of those files, taken before chromadb opens them (:func:`keep_copies`), and puts the
changed chunks back from there: the check reads nothing more from the repository than the
restore itself, which is what ``restore --dry-run`` predicts. A file chromadb changed beyond
those is put back chunk by chunk from the repository.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from snapshot.chroma.consistency import SqliteSide, read_sqlite_side, replayed_segments
from snapshot.chroma.schema import DB_NAME
from snapshot.errors import IntegrityError, naming_full_disk
from snapshot.format.chunking import ChunkedFile, is_regular_file, read_verified
from snapshot.format.hashing import FileHasher
from snapshot.format.manifest import Chunk, FileEntry, Manifest
from snapshot.repo.repository import Repository
from snapshot.restore.materialise import Fetcher, write_file
from snapshot.util.fsync import fsync_path
from snapshot.util.progress import Reporter
from snapshot.util.tempdirs import MARKER


def keep_copies(root: Path, m: Manifest, into: Path, side: SqliteSide | None) -> None:
    """Copy what chromadb will rewrite of ``root`` (restored and verified) into ``into``, a
    fresh directory on the same filesystem: chroma.sqlite3 (written on every open) and the
    files of the segments it applies queue entries to (``side``: chroma.sqlite3's half of the
    consistency checks, if it was read). Copied in the kernel (a clone where the filesystem
    shares extents)."""
    segments = replayed_segments(side or read_sqlite_side(root, sqlite_check=False))
    for f in m.files:
        if f.path == DB_NAME or f.path.split("/", 1)[0] in segments:
            (into / f.path).parent.mkdir(parents=True, exist_ok=True)
            _copy(root / f.path, into / f.path)


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        left = os.fstat(fin.fileno()).st_size
        try:
            while left > 0:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), left)
                if n == 0:
                    break
                left -= n
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
            shutil.copyfileobj(fin, fout, 1 << 20)


def _intact(path: Path, f: FileEntry) -> bool:
    if not is_regular_file(path) or path.stat().st_size != f.size:
        return False
    hasher = FileHasher()
    with open(path, "rb") as fh:
        while data := fh.read(1 << 20):
            hasher.update(data)
    return hasher.hexdigest() == f.hash


def repair(repo: Repository, root: Path, m: Manifest, fetcher: Fetcher, reporter: Reporter,
           kept: Path | None = None) -> int:
    """Bring ``root`` back to exactly the snapshot after chromadb opened it: files it added
    are removed, chunks it rewrote are restored (from ``kept``, see :func:`keep_copies`, else
    from the repository), and every file hash is verified again. Returns how many chunks had
    to be restored."""
    wanted = {f.path: f for f in m.files}
    # the owner marker stays until the swap: a killed restore's dir is then swept at once
    parents = {"/".join(p.split("/")[:k]) for p in wanted for k in range(1, p.count("/") + 1)} | {MARKER}
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rel not in wanted and rel not in parents:
                if full.is_dir() and not full.is_symlink():
                    shutil.rmtree(full)
                else:
                    full.unlink()
    fixed = 0
    for f in m.files:
        dest = root / f.path
        copy = kept / f.path if kept is not None else None
        if copy is not None and is_regular_file(copy):
            fixed += _put_back(copy, dest, f, m.chunk_size)
            continue
        if _intact(dest, f):
            continue
        chunks = repo.chunks(m, f)
        if not dest.is_file() or dest.is_symlink():
            dest.unlink(missing_ok=True)
            write_file(root, f, chunks, {}, fetcher, None, reporter)
            fsync_path(dest)
            fixed += len(chunks)
            continue
        with naming_full_disk(dest):
            fixed += _repair_file(dest, f, chunks, fetcher)
    # Removals durable before the swap: a journal chromadb left behind that came back after a
    # crash would be rolled into the restored database. (File contents were synced already.)
    for d in sorted({root} | {(root / f.path).parent for f in m.files}, key=lambda d: -len(d.parts)):
        fsync_path(d)
    return fixed


def _put_back(copy: Path, dest: Path, f: FileEntry, chunk_size: int) -> int:
    """Write the chunks of ``copy`` that ``dest`` no longer holds back into it; returns how
    many. ``copy`` was taken of the verified file: its hash is checked again as it is read."""
    if not is_regular_file(dest):
        if dest.is_dir():
            shutil.rmtree(dest)
        dest.unlink(missing_ok=True)
        dest.touch(0o600)
    fixed = 0
    chunks = ChunkedFile(copy, chunk_size)
    with open(dest, "r+b") as fh:
        for raw in chunks:
            fh.seek(raw.offset)
            if fh.read(len(raw.data)) != raw.data:
                fh.seek(raw.offset)
                fh.write(raw.data)
                fixed += 1
        grown = os.fstat(fh.fileno()).st_size != f.size
        fh.truncate(f.size)
        fh.flush()
        if fixed or grown:
            os.fsync(fh.fileno())
    if chunks.size != f.size or chunks.hash != f.hash:
        raise IntegrityError(f"{f.path}: could not restore the file after Chroma opened it")
    os.chmod(dest, f.mode & 0o777 or 0o644)
    return fixed


def _repair_file(dest: Path, f: FileEntry, chunks: Sequence[Chunk], fetcher: Fetcher) -> int:
    fixed = 0
    hasher = FileHasher()
    with open(dest, "r+b") as fh:
        offset = 0
        for chunk in chunks:
            data = read_verified(dest, offset, chunk.size, chunk.hash)
            if data is None:
                data, _ = fetcher.get(chunk, {})
                fh.seek(offset)
                fh.write(data)
                fixed += 1
            hasher.update(data)
            offset += chunk.size
        grown = os.fstat(fh.fileno()).st_size != f.size
        fh.truncate(f.size)
        fh.flush()
        if fixed or grown:
            os.fsync(fh.fileno())
    if hasher.hexdigest() != f.hash:
        raise IntegrityError(f"{f.path}: could not restore the file after Chroma opened it")
    os.chmod(dest, f.mode & 0o777 or 0o644)
    return fixed
