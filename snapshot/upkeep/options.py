"""What prune and forget can be told about removing snapshots and the data only they used
(:class:`PruneOptions`), checked when the options are built. Which snapshots a prune keeps is
its policy (snapshot/upkeep/retention.py), not an option."""

from __future__ import annotations

import math
from dataclasses import dataclass

from snapshot.errors import UsageError
from snapshot.upkeep.repack import RepackOptions
from snapshot.util.options import check_flags


@dataclass(frozen=True)
class PruneOptions:
    """How :func:`~snapshot.upkeep.prune.prune` and :func:`~snapshot.upkeep.prune.forget`
    remove. ``None`` is the default of each.

    ``dry_run``: work out the plan, change nothing, take no lock. ``grace``: seconds an
    unreferenced object must be old before it is condemned (a create may still be writing it)
    [1 h]. ``delete_after``: seconds a pack must have been condemned before it is deleted [24 h;
    0 deletes in the same run, only for a repository no create runs against]. ``wait``:
    seconds to wait for the repository's lock [0]. ``repack``: how far to repack [RepackOptions()]."""

    dry_run: bool = False
    grace: float | None = None
    delete_after: float | None = None
    wait: float | None = None
    repack: RepackOptions | None = None
    #: Also predict the requests and bytes (``PruneResult.predicted``; a dry run always does),
    #: from the plan the prune makes: no request more.
    predict: bool = False

    def __post_init__(self) -> None:
        check_flags(dry_run=self.dry_run, predict=self.predict)
        for what, value in (("the grace period", self.grace), ("--delete-after", self.delete_after),
                            ("the lock wait", self.wait)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or math.isnan(value)):
                raise UsageError(f"{what} must be a number of seconds, not {value!r}")
            if value is not None and value < 0:
                raise UsageError(f"{what} cannot be negative")
        if self.repack is not None and not isinstance(self.repack, RepackOptions):
            raise UsageError(f"repack must be a RepackOptions, not {self.repack!r}")
