"""Objects in an archive storage class (S3 GLACIER, DEEP_ARCHIVE, moved there by a lifecycle
rule): found before anything is read, counted, and restored on request.

A pack in such a class cannot be read until S3 has restored a copy of it (minutes to two days,
by tier). Restore and ``check --read-data`` therefore stop before reading anything (exit 17),
naming how many objects and bytes are archived; with ``--request-restore`` they ask S3 to restore
them and say when to run again. GLACIER_IR is read like any other class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from snapshot.errors import ArchivedError, UsageError
from snapshot.format import layout
from snapshot.format.manifest import Manifest
from snapshot.repo.repository import Repository
from snapshot.repo.usage import Usage
from snapshot.storage import ARCHIVE_CLASSES, ArchiveState

TIERS = ("Standard", "Bulk", "Expedited")
#: How long S3 takes to restore, by class and tier (its documentation's figures).
_TAKES = {
    ("GLACIER", "Expedited"): "1-5 minutes", ("GLACIER", "Standard"): "3-5 hours",
    ("GLACIER", "Bulk"): "5-12 hours", ("DEEP_ARCHIVE", "Standard"): "up to 12 hours",
    ("DEEP_ARCHIVE", "Bulk"): "up to 48 hours",
}
_HEADS = 8


@dataclass(frozen=True)
class RestoreRequest:
    """``--request-restore [--days N] [--tier T]``: how long the restored copies stay, how fast."""

    days: int = 7
    tier: str = "Standard"

    def __post_init__(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, int) or not 1 <= self.days <= 3650:
            raise UsageError(f"--days must be a whole number of days from 1 to 3650, not {self.days!r}")
        if self.tier not in TIERS:
            raise UsageError(f"--tier must be one of {', '.join(TIERS)}, not {self.tier!r}")


def _count(objects: int, size: int) -> str:
    return f"{objects} object{'' if objects == 1 else 's'}, {size:,} bytes"


def archive_class_packs(repo: Repository) -> dict[str, int]:
    """Every pack listed in an archive class, and its size (one listing)."""
    return {oid: info.size for oid, info in repo.list_objects()
            if oid is not None and info.storage_class in ARCHIVE_CLASSES}


def archived(repo: Repository, object_ids: Iterable[str] | None,
             listed: Mapping[str, int] | None = None) -> dict[str, tuple[int, ArchiveState]]:
    """Those of ``object_ids`` (None: every pack) in an archive class whose restored copy is not
    readable: id -> (size, state). One listing (none when ``listed`` gives the packs in an archive
    class already), then one HEAD per such pack."""
    wanted = None if object_ids is None else set(object_ids)
    every = archive_class_packs(repo) if listed is None else listed
    cold = {oid: size for oid, size in every.items() if wanted is None or oid in wanted}
    if not cold:
        return {}
    with ThreadPoolExecutor(max_workers=_HEADS, thread_name_prefix="head") as pool:
        states = dict(zip(cold, pool.map(lambda oid: repo.store.archive_state(layout.object_key(oid)), cold),
                          strict=True))
    return {oid: (cold[oid], st) for oid, st in states.items() if st is not None and st.state != "restored"}


def tables_of(manifests: Iterable[Manifest]) -> set[str]:
    """The packs holding the chunk tables of ``manifests`` (known without reading anything)."""
    return {f.table.object for m in manifests for f in m.files if f.table is not None}


def require_snapshot_readable(repo: Repository, m: Manifest, what: str,
                              request: RestoreRequest | None = None) -> None:
    """:func:`require_readable` for every pack snapshot ``m`` needs. While its chunk tables are
    archived, which packs those are cannot be known: then every archived pack counts."""
    if archived(repo, tables_of([m])):
        require_readable(repo, None, f"{what} (its chunk tables are archived too, so every archived "
                         "pack of the repository counts)", request)
    else:
        require_readable(repo, Usage(repo).objects(m), what, request)


def require_readable(repo: Repository, object_ids: Iterable[str] | None, what: str,
                     request: RestoreRequest | None = None, listed: Mapping[str, int] | None = None) -> None:
    """Raise :class:`ArchivedError` (exit 17) when some of ``object_ids`` (None: any pack) are
    archived and not restored; with ``request``, first ask S3 to restore those not already on
    their way. ``listed``: see :func:`archived`."""
    pending = archived(repo, object_ids, listed)
    if not pending:
        return
    size = sum(s for s, _ in pending.values())
    classes = sorted({st.storage_class for _, st in pending.values()})
    on_way = sum(1 for _, st in pending.values() if st.state == "restoring")
    head = f"{what} needs {_count(len(pending), size)} in {'/'.join(classes)} that are not restored"
    if request is None:
        raise ArchivedError(f"{head} ({on_way} being restored); run it again with --request-restore "
                            f"[--days N] [--tier {'|'.join(TIERS)}] to ask S3 for them")
    asked = [oid for oid, (_, st) in pending.items() if st.state == "archived"]
    if "DEEP_ARCHIVE" in classes and request.tier == "Expedited":
        raise UsageError("--tier Expedited does not restore from DEEP_ARCHIVE: use Standard or Bulk")
    with ThreadPoolExecutor(max_workers=_HEADS, thread_name_prefix="restore") as pool:
        list(pool.map(lambda oid: repo.store.request_restore(layout.object_key(oid), days=request.days,
                                                             tier=request.tier), asked))
    takes = "; ".join(f"{c}: {_TAKES.get((c, request.tier), 'hours')}" for c in classes)
    raise ArchivedError(f"{head}: asked S3 to restore {len(asked)} of them for {request.days} days at tier "
                        f"{request.tier} ({on_way} were already on their way; {takes}); run the same "
                        "command again once they are restored")
