"""What every writer checks before it commits a root (create, copy): the deletion protocol's
side of a writer (snapshot/format/condemned.py, README "Concurrent commands").

A root may be committed only once every object it references exists and none of them has been
condemned for half the deletion bound or longer: a prune may delete such an object before the
root is listed. A younger condemnation is harmless: the root, once committed, rescues it.
"""

from __future__ import annotations

import time
from collections.abc import Set

from snapshot.errors import LockedError, SnapshotError
from snapshot.repo.repository import Repository

#: A writer younger than this commits without reading the condemned records again: a pack
#: condemned while it ran cannot be overdue unless a prune runs with a bound under twice this
#: (``--delete-after`` that short is for repositories no writer runs against, like 0).
RECHECK_AFTER = 60.0


def check_condemned(repo: Repository, needed: Set[str], started: float, seen: frozenset[str], *,
                    command: str, recheck_after: float = RECHECK_AFTER) -> None:
    """Refuse (LockedError) to commit a root that needs an object condemned for half the bound
    or longer. ``started``: when the writer read the records first (monotonic); ``seen``: what
    was condemned then (a pack written again with the very same bytes is one of them)."""
    if time.monotonic() - started < recheck_after and not needed & seen:
        return
    condemned = repo.condemned()
    if not condemned.since:
        return
    overdue = condemned.overdue(needed, now=repo.now(), age=condemned.create_bound() / 2)
    if overdue:
        raise LockedError(
            f"{len(overdue)} object(s) this snapshot needs were condemned by a prune that ran while "
            f"it was being made (e.g. {sorted(overdue)[0]}); nothing was committed: run {command} again"
        )


def check_present(repo: Repository, needed: Set[str], *, command: str) -> None:
    """Refuse to commit a root that names an object the repository does not hold (one listing)."""
    missing = repo.missing_objects(needed)
    if missing:
        raise SnapshotError(
            f"{len(missing)} object(s) this snapshot needs vanished during {command} (e.g. "
            f"{sorted(missing)[0]}); nothing was committed, run {command} again"
        )
