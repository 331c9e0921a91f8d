"""Durability helper shared by the local store and restore."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's entries: creations, renames, removals)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


_SYNCFS = _libc_syncfs() if sys.platform.startswith("linux") else None


def sync_filesystem(path: Path) -> bool:
    """One durability pass for everything written under ``path``: Linux syncfs(2) commits the
    whole filesystem holding it at once (far cheaper than an fsync per file for thousands of
    small files). False where it is not available: the caller then fsyncs file by file."""
    if _SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return _SYNCFS(fd) == 0
    finally:
        os.close(fd)
