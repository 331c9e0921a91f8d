"""The repository's clock: the store's (the one that stamps listed mtimes), moved by
``CHROMA_SNAPSHOT_CLOCK_SHIFT`` seconds where that is set (benchmarks that simulate nights,
tests that let days pass). Locks and the deletion protocol judge ages by it. It must not read
or write anything but the environment and the store's clock.
"""

from __future__ import annotations

import math
import os

from snapshot.errors import UsageError
from snapshot.storage import Store

CLOCK_SHIFT_ENV = "CHROMA_SNAPSHOT_CLOCK_SHIFT"


def store_now(store: Store) -> float:
    """``store``'s clock, shifted, in seconds since the epoch."""
    return store.now() + clock_shift()


def clock_shift() -> float:
    """The seconds of ``CHROMA_SNAPSHOT_CLOCK_SHIFT`` (0 when unset); not a finite number: UsageError."""
    raw = os.environ.get(CLOCK_SHIFT_ENV)
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UsageError(f"{CLOCK_SHIFT_ENV} must be a number of seconds, not {raw!r}")
    return value
