"""Snapshot ids: the one place their format is known (generate, validate, read the time back).

``20261128T015012-1a2b3c4d``: UTC creation time in seconds, then the fraction of that second in
1/65536 (so ids sort by creation time even within a second), then 16 random bits.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import datetime, timezone

SNAPSHOT_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}$")
_STAMP = "%Y%m%dT%H%M%S"


def is_snapshot_id(value: object) -> bool:
    return isinstance(value, str) and bool(SNAPSHOT_ID.match(value))


def new_snapshot_id(now: float | None = None) -> str:
    now = time.time() if now is None else now
    stamp = time.strftime(_STAMP, time.gmtime(now))
    fraction = int((now % 1) * 65536)
    return f"{stamp}-{fraction:04x}{secrets.token_hex(2)}"


def id_time(snapshot_id: str) -> datetime:
    """The creation time (UTC, to the second) an id starts with."""
    return datetime.strptime(snapshot_id[:15], _STAMP).replace(tzinfo=timezone.utc)


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
