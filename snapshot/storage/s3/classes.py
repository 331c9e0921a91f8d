"""S3 storage classes: which one each object is written in, and what the cold ones bill.

Packs (:attr:`ObjectKind.PACK`) go to the class the options name (STANDARD_IA by default);
everything else, and a pack smaller than what that class bills anyway, to STANDARD.
"""

from __future__ import annotations

from collections.abc import Sequence

from snapshot.errors import UsageError
from snapshot.storage.base import ColdClass, ObjectKind

DEFAULT_STORAGE_CLASS = "STANDARD_IA"
#: What infrequent-access storage classes bill an object at least (S3 STANDARD_IA, ONEZONE_IA).
MIN_BILLED_SIZE = 128 << 10
#: ... and for at least this long: deleting a younger object costs the rest of it anyway.
MIN_BILLED_SECONDS = 30 * 86400

#: The classes whose minimums prune reports (what deleting a young pack costs).
COLD_CLASSES = {
    name: ColdClass(name, MIN_BILLED_SIZE, MIN_BILLED_SECONDS) for name in ("STANDARD_IA", "ONEZONE_IA")
}


def check_storage_class(name: str, known: Sequence[str]) -> str:
    """``name`` if S3 knows it (``known``: the classes of botocore's service model; empty
    means STANDARD): S3 would refuse it only at the first large pack, after the repository's
    config was written."""
    name = name.strip()
    if name and name not in known:
        raise UsageError(f"unknown --storage-class {name!r} (S3 knows {', '.join(known)})")
    return name


def cold_class(name: str) -> ColdClass | None:
    """The billing minimums of the class packs are written in, if it has any."""
    return COLD_CLASSES.get(name or "STANDARD")


def class_for(kind: ObjectKind, size: int, pack_class: str) -> str | None:
    """The storage class to write an object of ``kind`` and ``size`` in; None for S3's default
    (STANDARD). Infrequent-access classes bill a 128 KiB minimum per object: a smaller pack
    (the last one of a small incremental) costs less in STANDARD, which has no minimum."""
    if kind is ObjectKind.PACK and pack_class not in ("", "STANDARD") and size >= MIN_BILLED_SIZE:
        return pack_class
    return None
