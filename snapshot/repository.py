"""A repository: a store plus its config; finds, reads and resolves snapshots.

The operations (create, restore, diff, prune, check) live in their own modules and are exposed
here as methods so that ``from snapshot import Repository`` is all a caller needs.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapshot import layout
from snapshot.errors import (
    AlreadyExistsError,
    AmbiguousIdError,
    NotFoundError,
    UsageError,
)
from snapshot.manifest import Manifest, RepoConfig, dumps, parse_config, parse_manifest
from snapshot.storage import Store, StoreOptions, open_store

if TYPE_CHECKING:
    from snapshot.check import CheckResult, Subset
    from snapshot.create import CreateResult
    from snapshot.diff import SnapshotDiff
    from snapshot.progress import Reporter
    from snapshot.prune import PruneResult
    from snapshot.restore import RestorePlan, RestoreResult
    from snapshot.retention import RetentionPolicy

DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_CODEC = "zstd"
DEFAULT_LEVEL = 1
DEFAULT_MAX_CHAIN = 8


@dataclass(frozen=True)
class SnapshotSummary:
    id: str
    parent: str | None
    created_at: str
    tags: tuple[str, ...]
    message: str
    source_path: str
    source_host: str
    bytes_total: int
    bytes_new: int
    collections: dict[str, int]

    @classmethod
    def of(cls, m: Manifest) -> SnapshotSummary:
        return cls(
            id=m.id,
            parent=m.parent,
            created_at=m.created_at,
            tags=m.tags,
            message=m.message,
            source_path=m.source_path,
            source_host=m.source_host,
            bytes_total=m.totals.bytes,
            bytes_new=m.totals.bytes_new,
            collections={c.name: c.records for c in m.collections},
        )


def new_snapshot_id(now: float | None = None) -> str:
    """``YYYYMMDDTHHMMSS-ffffrrrr``: UTC seconds, then the fraction of the second in 1/65536
    (so ids sort by creation time even within a second), then 16 random bits."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    fraction = int((now % 1) * 65536)
    return f"{stamp}-{fraction:04x}{secrets.token_hex(2)}"


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Repository:
    """Open with :meth:`open` (existing) or :meth:`open` with ``create=True``."""

    def __init__(self, store: Store, config: RepoConfig) -> None:
        self.store = store
        self.config = config
        self._manifests: dict[str, Manifest] = {}

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str],
        options: StoreOptions | None = None,
        *,
        create: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        codec: str = DEFAULT_CODEC,
        level: int = DEFAULT_LEVEL,
        max_chain: int = DEFAULT_MAX_CHAIN,
    ) -> Repository:
        store = open_store(os.fspath(location), options)
        try:
            raw = store.get(layout.CONFIG_KEY)
        except NotFoundError:
            if not create:
                raise NotFoundError(
                    f"no repository at {store.url} (create a snapshot there first)"
                ) from None
            return cls._init(store, chunk_size, codec, level, max_chain)
        return cls(store, parse_config(raw, f"repository config at {store.url}"))

    @classmethod
    def _init(cls, store: Store, chunk_size: int, codec: str, level: int, max_chain: int) -> Repository:
        if not 4096 <= chunk_size <= 1 << 30 or chunk_size & (chunk_size - 1):
            raise UsageError(f"chunk size must be a power of two between 4 KiB and 1 GiB, got {chunk_size}")
        if next(iter(store.list("")), None) is not None:
            raise UsageError(
                f"{store.url} is not empty and holds no chroma-snapshot repository (no config.json)"
            )
        config = RepoConfig(
            id=secrets.token_hex(16),
            chunk_size=chunk_size,
            codec=codec,
            level=level,
            max_chain=max_chain,
            created_at=utc_now_iso(),
        )
        try:
            store.put(layout.CONFIG_KEY, dumps(config), create_only=True)
        except AlreadyExistsError:  # another process initialised it first: use theirs
            return cls(store, parse_config(store.get(layout.CONFIG_KEY)))
        return cls(store, config)

    # ------------------------------------------------------------------ snapshots

    def snapshot_ids(self) -> list[str]:
        """Every snapshot id, oldest first (ids sort by creation time)."""
        ids = []
        for info in self.store.list(layout.SNAPSHOTS_PREFIX):
            sid = layout.snapshot_id_from_key(info.key)
            if sid is not None:
                ids.append(sid)
        return sorted(ids)

    def resolve(self, ref: str, ids: Sequence[str] | None = None) -> str:
        """An id from ``latest``, a full id or any unique prefix."""
        ids = list(ids) if ids is not None else self.snapshot_ids()
        if not ref:
            raise UsageError("empty snapshot id")
        if ref == "latest":
            if not ids:
                raise NotFoundError(f"no snapshots in {self.store.url}")
            return ids[-1]
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)]
        if not matches:
            raise NotFoundError(f"no snapshot matches {ref!r} in {self.store.url}")
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
            raise AmbiguousIdError(f"{ref!r} matches {len(matches)} snapshots: {shown}")
        return matches[0]

    def manifest(self, snapshot_id: str) -> Manifest:
        """The parsed, validated manifest of an exact id (cached)."""
        if snapshot_id not in self._manifests:
            key = layout.snapshot_key(snapshot_id)
            try:
                raw = self.store.get(key)
            except NotFoundError:
                raise NotFoundError(f"snapshot {snapshot_id} not found in {self.store.url}") from None
            m = parse_manifest(raw, f"manifest {snapshot_id}")
            if m.id != snapshot_id:
                from snapshot.errors import IntegrityError

                raise IntegrityError(f"manifest {snapshot_id} claims to be snapshot {m.id}")
            self._manifests[snapshot_id] = m
        return self._manifests[snapshot_id]

    def get(self, ref: str) -> Manifest:
        return self.manifest(self.resolve(ref))

    def manifests(self) -> list[Manifest]:
        """Every manifest, oldest first (fetched in parallel: one GET each on S3)."""
        ids = self.snapshot_ids()
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="manifest") as pool:
            return list(pool.map(self.manifest, ids))

    def list(self) -> list[SnapshotSummary]:
        return [SnapshotSummary.of(m) for m in self.manifests()]

    def forget_cached(self, snapshot_id: str) -> None:
        self._manifests.pop(snapshot_id, None)

    # ------------------------------------------------------------------ operations

    def create(self, source: str | os.PathLike[str], **kwargs: Any) -> CreateResult:
        from snapshot.create import create_snapshot

        return create_snapshot(self, Path(source), **kwargs)

    def restore(
        self,
        ref: str,
        target: str | os.PathLike[str],
        *,
        force: bool = False,
        verify_chroma: bool = True,
        reporter: Reporter | None = None,
    ) -> RestoreResult:
        from snapshot.restore import restore_snapshot

        return restore_snapshot(
            self, ref, Path(target), force=force, verify_chroma=verify_chroma, reporter=reporter
        )



    def plan_restore(self, ref: str, target: str | os.PathLike[str]) -> RestorePlan:
        """What a restore into ``target`` would reuse and read (changes nothing)."""
        from snapshot.restore import index_local, plan_restore

        m = self.get(ref)
        return plan_restore(m, index_local(Path(target).expanduser().absolute(), m))

    def diff(
        self,
        before: str,
        after: str | os.PathLike[str],
        *,
        records: bool = False,
        record_limit: int | None = None,
        tmp_dir: str | os.PathLike[str] | None = None,
    ) -> SnapshotDiff:
        """Snapshot ``before`` against snapshot ``after``, or against a live dir at ``after``."""
        from snapshot.diff import diff_snapshots

        return diff_snapshots(
            self, before, after, records=records, record_limit=record_limit,
            tmp_dir=None if tmp_dir is None else Path(tmp_dir),
        )

    def prune(
        self, policy: RetentionPolicy, *, dry_run: bool = False, grace: float = 3600.0
    ) -> PruneResult:
        """Apply a retention policy, then delete packs no remaining snapshot references."""
        from snapshot.prune import prune

        return prune(self, policy, dry_run=dry_run, grace=grace)

    def forget(
        self, refs: Sequence[str], *, dry_run: bool = False, grace: float = 3600.0
    ) -> PruneResult:
        """Drop the named snapshots, then the same garbage collection as prune."""
        from snapshot.prune import forget

        return forget(self, refs, dry_run=dry_run, grace=grace)

    def check(self, *, read_data: bool = False, subset: Subset | None = None) -> CheckResult:
        """Verify config, manifests and objects (``read_data``: every frame's hash)."""
        from snapshot.check import check_repository

        return check_repository(self, read_data=read_data, subset=subset)
