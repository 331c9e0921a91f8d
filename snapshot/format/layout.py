"""The only place storage keys are built or parsed.

A repository (local folder or S3 prefix) holds::

    config.json                 repository config, written once, create-only
    snapshots/<id>.json         one manifest per snapshot, the commit point, create-only
    data/<ab>/<object id>       packs of compressed frames, named by xxh3-128 of their bytes
    locks/<lock id>.json        shared and exclusive locks of running commands
    keys/<key id>               encrypted repositories only: the master key wrapped by one password
    condemned/<record id>.json  packs a prune found unreferenced, with when (the deletion protocol)
"""

from __future__ import annotations

import re
from collections.abc import Callable

from snapshot.format.ids import is_snapshot_id

CONFIG_KEY = "config.json"
SNAPSHOTS_PREFIX = "snapshots/"
DATA_PREFIX = "data/"
LOCKS_PREFIX = "locks/"
KEYS_PREFIX = "keys/"
CONDEMNED_PREFIX = "condemned/"

#: Keys that never exist: deleting them (a no-op where deleting is allowed) tells whether the
#: credentials may delete under each prefix a prune deletes from, before it changes anything.
DELETE_PROBE_KEYS = (f"{SNAPSHOTS_PREFIX}.delete-probe", f"{DATA_PREFIX}.delete-probe",
                     f"{CONDEMNED_PREFIX}.delete-probe")

_OBJECT_ID = re.compile(r"^[0-9a-f]{32}$")


def _json_key(prefix: str, name: str, valid: Callable[[str], bool], what: str) -> str:
    if not valid(name):
        raise ValueError(f"not a {what}: {name!r}")
    return f"{prefix}{name}.json"


def _json_name(prefix: str, key: str, valid: Callable[[str], bool]) -> str | None:
    if not (key.startswith(prefix) and key.endswith(".json")):
        return None
    name = key[len(prefix) : -len(".json")]
    return name if valid(name) else None


def snapshot_key(snapshot_id: str) -> str:
    return _json_key(SNAPSHOTS_PREFIX, snapshot_id, is_snapshot_id, "snapshot id")


def snapshot_id_from_key(key: str) -> str | None:
    """The snapshot id a manifest key names, or None for any other key."""
    return _json_name(SNAPSHOTS_PREFIX, key, is_snapshot_id)


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


def _is_lock_id(value: str) -> bool:
    return bool(_OBJECT_ID.match(value))  # 32 random hex digits, like object ids


def lock_key(lock_id: str) -> str:
    return _json_key(LOCKS_PREFIX, lock_id, _is_lock_id, "lock id")


def lock_id_from_key(key: str) -> str | None:
    return _json_name(LOCKS_PREFIX, key, _is_lock_id)


def is_key_id(value: str) -> bool:
    return bool(_OBJECT_ID.match(value))  # 32 random hex digits: a name that says nothing


def key_key(key_id: str) -> str:
    if not is_key_id(key_id):
        raise ValueError(f"not a key id: {key_id!r}")
    return f"{KEYS_PREFIX}{key_id}"


def key_id_from_key(key: str) -> str | None:
    name = key[len(KEYS_PREFIX) :] if key.startswith(KEYS_PREFIX) else ""
    return name if is_key_id(name) else None


def condemned_key(record_id: str) -> str:
    return _json_key(CONDEMNED_PREFIX, record_id, is_object_id, "condemned record id")


def condemned_id_from_key(key: str) -> str | None:
    return _json_name(CONDEMNED_PREFIX, key, is_object_id)
