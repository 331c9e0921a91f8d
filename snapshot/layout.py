"""The only place storage keys are built or parsed.

A repository (local folder or S3 prefix) holds::

    config.json                 repository config, written once, create-only
    snapshots/<id>.json         one manifest per snapshot, the commit point, create-only
    data/<ab>/<object id>       packs of compressed frames, named by xxh3-128 of their bytes
    locks/<lock id>.json        shared and exclusive locks of running commands
"""

from __future__ import annotations

import re

from snapshot.ids import is_snapshot_id

CONFIG_KEY = "config.json"
SNAPSHOTS_PREFIX = "snapshots/"
DATA_PREFIX = "data/"
LOCKS_PREFIX = "locks/"

_OBJECT_ID = re.compile(r"^[0-9a-f]{32}$")


def snapshot_key(snapshot_id: str) -> str:
    if not is_snapshot_id(snapshot_id):
        raise ValueError(f"not a snapshot id: {snapshot_id!r}")
    return f"{SNAPSHOTS_PREFIX}{snapshot_id}.json"


def snapshot_id_from_key(key: str) -> str | None:
    """The snapshot id a manifest key names, or None for any other key."""
    if not (key.startswith(SNAPSHOTS_PREFIX) and key.endswith(".json")):
        return None
    sid = key[len(SNAPSHOTS_PREFIX) : -len(".json")]
    return sid if is_snapshot_id(sid) else None


def object_key(object_id: str) -> str:
    if not _OBJECT_ID.match(object_id):
        raise ValueError(f"not an object id: {object_id!r}")
    return f"{DATA_PREFIX}{object_id[:2]}/{object_id}"


def object_id_from_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != DATA_PREFIX:
        return None
    oid = parts[2]
    return oid if _OBJECT_ID.match(oid) and parts[1] == oid[:2] else None


def is_object_id(value: str) -> bool:
    return bool(_OBJECT_ID.match(value))


def is_data_key(key: str) -> bool:
    """Data objects are large and rarely read (cold storage classes suit them)."""
    return key.startswith(DATA_PREFIX)


_LOCK_ID = re.compile(r"^[0-9a-f]{32}$")


def lock_key(lock_id: str) -> str:
    if not _LOCK_ID.match(lock_id):
        raise ValueError(f"not a lock id: {lock_id!r}")
    return f"{LOCKS_PREFIX}{lock_id}.json"


def lock_id_from_key(key: str) -> str | None:
    if not (key.startswith(LOCKS_PREFIX) and key.endswith(".json")):
        return None
    lid = key[len(LOCKS_PREFIX) : -len(".json")]
    return lid if _LOCK_ID.match(lid) else None
