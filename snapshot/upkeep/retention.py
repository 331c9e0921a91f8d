"""Retention: which snapshots a keep policy keeps, and why. Pure functions, no I/O.

The semantics are restic's (``restic forget --keep-*``): every policy is evaluated over the
snapshots newest first and the results are OR-ed.

* ``last N`` keeps the N newest snapshots;
* ``hourly/daily/weekly/monthly/yearly N`` keep the newest snapshot in each of the last N
  distinct buckets (UTC hours, days, ISO weeks, months, years) that hold a snapshot;
* ``within D`` keeps every snapshot taken less than D before the *newest* snapshot (not before
  now, so a repository left alone is not emptied by time passing);
* ``tag T`` keeps every snapshot carrying T (``a,b`` means both a and b).

Like restic, snapshots are grouped by source (host and path) by default and the policy applies
to each group on its own (``group_by``: ``host,path``, ``host``, ``path`` or ``none``). Unlike
restic, the newest snapshot of every group is always kept ("newest"), and a bucket policy does
not also keep the oldest snapshot when it has counts left over.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from snapshot.errors import UsageError
from snapshot.format.ids import id_time
from snapshot.format.manifest import Manifest

_DURATION_PART = re.compile(r"(\d+)(min|y|m|w|d|h|s)")
_UNITS = "y (years), m (months), w (weeks), d (days), h (hours), min (minutes), s (seconds)"


@dataclass(frozen=True)
class Duration:
    """A calendar duration like restic's: years and months are calendar steps."""

    text: str
    years: int = 0
    months: int = 0
    days: int = 0
    seconds: int = 0

    def before(self, moment: datetime) -> datetime:
        """``moment`` minus this duration (month ends normalise like Go's AddDate)."""
        month0 = moment.year * 12 + (moment.month - 1) - self.years * 12 - self.months
        year, month = divmod(month0, 12)
        try:
            first = moment.replace(year=year, month=month + 1, day=1)
            shifted = first + timedelta(days=moment.day - 1)
            return shifted - timedelta(days=self.days, seconds=self.seconds)
        except (ValueError, OverflowError):  # before year 1: everything is "within"
            return datetime.min.replace(tzinfo=moment.tzinfo)

    def total_seconds(self, at: datetime) -> float:
        return (at - self.before(at)).total_seconds()

    def __str__(self) -> str:
        return self.text


def parse_duration(text: str) -> Duration:
    """``30d``, ``12h``, ``2w``, ``1y2m``, ``90min``, ``0s`` (``m`` is months, as in restic)."""
    s = text.strip().lower()
    parts = _DURATION_PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise UsageError(f"bad duration {text!r}: use numbers with units {_UNITS}, e.g. 30d or 1y2m")
    acc = {"y": 0, "m": 0, "w": 0, "d": 0, "h": 0, "min": 0, "s": 0}
    for number, unit in parts:
        acc[unit] += int(number)
    return Duration(
        text=s,
        years=acc["y"],
        months=acc["m"],
        days=acc["d"] + 7 * acc["w"],
        seconds=3600 * acc["h"] + 60 * acc["min"] + acc["s"],
    )


@dataclass(frozen=True)
class RetentionPolicy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None
    #: Each entry is a set of tags that must all be present; entries are OR-ed.
    tags: tuple[tuple[str, ...], ...] = ()

    @property
    def empty(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return not any(counts) and self.within is None and not self.tags


GROUP_BY_CHOICES = ("host,path", "host", "path", "none")
DEFAULT_GROUP_BY = "host,path"


def check_group_by(value: str) -> str:
    v = value.replace(" ", "")
    if v == "path,host":
        v = "host,path"
    if v not in GROUP_BY_CHOICES:
        raise UsageError(f"bad --group-by {value!r}: choose from {', '.join(GROUP_BY_CHOICES)}")
    return v


@dataclass(frozen=True)
class SnapshotTime:
    """What retention needs to know about a snapshot."""

    id: str
    time: datetime
    tags: tuple[str, ...] = ()
    host: str = ""
    path: str = ""

    def group(self, group_by: str) -> str:
        parts = {"host,path": [self.host, self.path], "host": [self.host], "path": [self.path]}
        return ":".join(parts.get(group_by, [])) or "all"


@dataclass(frozen=True)
class Decision:
    id: str
    created_at: str
    tags: tuple[str, ...]
    reasons: tuple[str, ...]
    group: str = "all"


@dataclass(frozen=True)
class RetentionPlan:
    """Both lists newest first; every kept snapshot has at least one reason."""

    keep: tuple[Decision, ...]
    remove: tuple[Decision, ...]


def parse_time(created_at: str, snapshot_id: str) -> datetime:
    """A manifest's creation time (UTC); the id's timestamp if created_at is unreadable."""
    try:
        t = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        t = id_time(snapshot_id)
    if t.tzinfo is None:
        return t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def snapshot_time(m: Manifest) -> SnapshotTime:
    return SnapshotTime(m.id, parse_time(m.created_at, m.id), m.tags, m.source_host, m.source_path)


def _iso_week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"{year}-W{week:02d}"


_BUCKETS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("hourly", lambda t: t.strftime("%Y-%m-%dT%H")),
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", _iso_week),
    ("monthly", lambda t: t.strftime("%Y-%m")),
    ("yearly", lambda t: t.strftime("%Y")),
)


def plan_retention(
    snapshots: Sequence[SnapshotTime], policy: RetentionPolicy, group_by: str = "none"
) -> RetentionPlan:
    """Which snapshots ``policy`` keeps and why, applied to each group of ``group_by`` on its
    own; see the module docstring for the rules. Both lists are newest first."""
    if policy.empty:
        raise UsageError("no retention policy given: pass at least one --keep-* option")
    group_by = check_group_by(group_by)
    groups: dict[str, list[SnapshotTime]] = {}
    for snap in snapshots:
        groups.setdefault(snap.group(group_by), []).append(snap)
    keep: list[Decision] = []
    remove: list[Decision] = []
    for name in sorted(groups):
        k, r = _plan_group(groups[name], policy, name)
        keep += k
        remove += r
    order = {s.id: (s.time, s.id) for s in snapshots}
    newest_first = lambda d: order[d.id]  # noqa: E731
    return RetentionPlan(
        tuple(sorted(keep, key=newest_first, reverse=True)),
        tuple(sorted(remove, key=newest_first, reverse=True)),
    )


def _plan_group(
    snapshots: Sequence[SnapshotTime], policy: RetentionPolicy, group: str
) -> tuple[list[Decision], list[Decision]]:
    ordered = sorted(snapshots, key=lambda s: (s.time, s.id), reverse=True)
    newest = ordered[0]
    cutoff = policy.within.before(newest.time) if policy.within is not None else None
    left = {name: getattr(policy, name) for name, _ in _BUCKETS}
    last_bucket: dict[str, str | None] = {name: None for name, _ in _BUCKETS}
    kept_last = 0
    keep: list[Decision] = []
    remove: list[Decision] = []
    for snap in ordered:
        reasons: list[str] = []
        if kept_last < policy.last:
            kept_last += 1
            reasons.append(f"last {kept_last}")
        for name, bucket_of in _BUCKETS:
            bucket = bucket_of(snap.time)
            if left[name] > 0 and bucket != last_bucket[name]:
                left[name] -= 1
                last_bucket[name] = bucket
                reasons.append(f"{name} {bucket}")
        if cutoff is not None and snap.time > cutoff:
            reasons.append(f"within {policy.within}")
        for wanted in policy.tags:
            if wanted and set(wanted) <= set(snap.tags):
                reasons.append("tag " + ",".join(wanted))
        if not reasons and snap is newest:
            reasons.append("newest")
        created = snap.time.isoformat().replace("+00:00", "Z")
        (keep if reasons else remove).append(Decision(snap.id, created, snap.tags, tuple(reasons), group))
    return keep, remove
