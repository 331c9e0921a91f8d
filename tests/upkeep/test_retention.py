"""Retention planning (pure): literal timelines in, kept/removed snapshots and reasons out."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from snapshot.errors import UsageError
from snapshot.repo.selection import parse_tag_options
from snapshot.upkeep.retention import (
    Duration,
    RetentionPlan,
    RetentionPolicy,
    SnapshotTime,
    parse_duration,
    parse_time,
    plan_retention,
)


def snap(stamp: str, *tags: str) -> SnapshotTime:
    """``2026-11-27 10:00`` -> a snapshot taken then (UTC), id derived from the time."""
    t = datetime.strptime(stamp, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
    return SnapshotTime(t.strftime("%Y%m%dT%H%M%S") + "-0000abcd", t, tuple(tags))


def timeline(*stamps: str) -> list[SnapshotTime]:
    return [snap(s) for s in stamps]


def kept(plan: RetentionPlan) -> dict[str, tuple[str, ...]]:
    """stamp (YYYY-mm-dd HH:MM) -> reasons, for every kept snapshot."""
    return {_stamp(d.id): d.reasons for d in plan.keep}


def removed(plan: RetentionPlan) -> list[str]:
    return [_stamp(d.id) for d in plan.remove]


def _stamp(sid: str) -> str:
    return datetime.strptime(sid[:15], "%Y%m%dT%H%M%S").strftime("%Y-%m-%d %H:%M")


SEVERAL_PER_DAY = timeline(
    "2026-11-25 08:00", "2026-11-25 20:00",
    "2026-11-26 09:00", "2026-11-26 10:00", "2026-11-26 23:59",
    "2026-11-27 01:00",
    "2026-11-28 12:00", "2026-11-28 13:00",
)


def test_keep_last_keeps_the_newest_n_numbered() -> None:
    plan = plan_retention(SEVERAL_PER_DAY, RetentionPolicy(last=3))
    assert kept(plan) == {
        "2026-11-28 13:00": ("last 1",),
        "2026-11-28 12:00": ("last 2",),
        "2026-11-27 01:00": ("last 3",),
    }
    assert len(plan.remove) == 5
    assert [d.id for d in plan.keep] == sorted((d.id for d in plan.keep), reverse=True)  # newest first


def test_keep_daily_keeps_the_newest_of_each_day_with_several_per_day() -> None:
    plan = plan_retention(SEVERAL_PER_DAY, RetentionPolicy(daily=3))
    assert kept(plan) == {
        "2026-11-28 13:00": ("daily 2026-11-28",),
        "2026-11-27 01:00": ("daily 2026-11-27",),
        "2026-11-26 23:59": ("daily 2026-11-26",),
    }
    assert removed(plan) == [
        "2026-11-28 12:00", "2026-11-26 10:00", "2026-11-26 09:00", "2026-11-25 20:00", "2026-11-25 08:00",
    ]


def test_days_without_snapshots_do_not_use_up_buckets() -> None:
    snaps = timeline("2026-11-01 10:00", "2026-11-10 10:00", "2026-11-10 11:00", "2026-11-28 10:00")
    plan = plan_retention(snaps, RetentionPolicy(daily=3))
    assert set(kept(plan)) == {"2026-11-01 10:00", "2026-11-10 11:00", "2026-11-28 10:00"}
    assert removed(plan) == ["2026-11-10 10:00"]


def test_more_buckets_than_snapshots_keeps_newest_of_each_bucket_only() -> None:
    snaps = timeline("2026-11-27 10:00", "2026-11-27 11:00", "2026-11-28 10:00")
    plan = plan_retention(snaps, RetentionPolicy(daily=30))
    # restic would also keep the oldest (counts left over); here: newest per bucket, as documented
    assert set(kept(plan)) == {"2026-11-27 11:00", "2026-11-28 10:00"}
    assert removed(plan) == ["2026-11-27 10:00"]


def test_keep_hourly() -> None:
    snaps = timeline("2026-11-28 10:05", "2026-11-28 10:55", "2026-11-28 11:10", "2026-11-28 13:00")
    plan = plan_retention(snaps, RetentionPolicy(hourly=2))
    assert kept(plan) == {
        "2026-11-28 13:00": ("hourly 2026-11-28T13",),
        "2026-11-28 11:10": ("hourly 2026-11-28T11",),
    }


def test_keep_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    snaps = timeline(
        "2026-11-28 10:00",  # Sat, 2026-W48
        "2026-11-29 10:00",  # Sun, 2026-W48
        "2026-11-30 10:00",  # Mon, 2026-W49
        "2026-12-31 10:00",  # Thu, 2026-W53
        "2027-01-01 10:00",  # Fri, still 2026-W53
        "2027-01-04 10:00",  # Mon, 2027-W01
    )
    plan = plan_retention(snaps, RetentionPolicy(weekly=3))
    assert kept(plan) == {
        "2027-01-04 10:00": ("weekly 2027-W01",),
        "2027-01-01 10:00": ("weekly 2026-W53",),
        "2026-11-30 10:00": ("weekly 2026-W49",),
    }
    assert removed(plan) == ["2026-12-31 10:00", "2026-11-29 10:00", "2026-11-28 10:00"]


def test_keep_monthly_and_yearly() -> None:
    snaps = timeline(
        "2024-12-31 23:00", "2025-06-01 00:00", "2025-12-01 00:00",
        "2026-01-15 00:00", "2026-01-31 00:00", "2026-02-01 00:00",
    )
    monthly = plan_retention(snaps, RetentionPolicy(monthly=2))
    assert kept(monthly) == {
        "2026-02-01 00:00": ("monthly 2026-02",),
        "2026-01-31 00:00": ("monthly 2026-01",),
    }
    yearly = plan_retention(snaps, RetentionPolicy(yearly=3))
    assert kept(yearly) == {
        "2026-02-01 00:00": ("yearly 2026",),
        "2025-12-01 00:00": ("yearly 2025",),
        "2024-12-31 23:00": ("yearly 2024",),
    }


def test_keep_within_is_relative_to_the_newest_snapshot_and_strict() -> None:
    snaps = timeline("2026-11-20 12:00", "2026-11-26 12:00", "2026-11-26 12:01", "2026-11-28 12:00")
    plan = plan_retention(snaps, RetentionPolicy(within=parse_duration("2d")))
    assert kept(plan) == {"2026-11-28 12:00": ("within 2d",), "2026-11-26 12:01": ("within 2d",)}
    assert removed(plan) == ["2026-11-26 12:00", "2026-11-20 12:00"]  # exactly 2d before: out


def test_keep_within_calendar_months_and_years() -> None:
    snaps = timeline("2025-01-30 00:00", "2025-01-31 00:01", "2026-03-31 00:00")
    plan = plan_retention(snaps, RetentionPolicy(within=parse_duration("1y2m")))
    assert set(kept(plan)) == {"2026-03-31 00:00", "2025-01-31 00:01"}


def test_keep_tag_single_and_all_of_a_set() -> None:
    snaps = [
        snap("2026-11-25 10:00", "nightly"),
        snap("2026-11-26 10:00", "release", "v1"),
        snap("2026-11-27 10:00", "release"),
        snap("2026-11-28 10:00", "nightly"),
    ]
    plan = plan_retention(snaps, RetentionPolicy(tags=parse_tag_options(["release,v1"])))
    assert kept(plan) == {"2026-11-26 10:00": ("tag release,v1",), "2026-11-28 10:00": ("newest",)}
    plan = plan_retention(snaps, RetentionPolicy(tags=parse_tag_options(["nightly", "v1"])))
    assert kept(plan) == {
        "2026-11-28 10:00": ("tag nightly",),
        "2026-11-26 10:00": ("tag v1",),
        "2026-11-25 10:00": ("tag nightly",),
    }


def test_newest_is_kept_even_when_no_rule_keeps_it() -> None:
    snaps = [snap("2026-11-27 10:00", "nightly"), snap("2026-11-28 10:00")]
    plan = plan_retention(snaps, RetentionPolicy(tags=(("nightly",),)))
    assert kept(plan) == {"2026-11-28 10:00": ("newest",), "2026-11-27 10:00": ("tag nightly",)}
    assert plan.remove == ()


def test_policies_are_ored_and_reasons_accumulate() -> None:
    snaps = [*SEVERAL_PER_DAY, snap("2026-11-01 00:00", "release")]
    policy = RetentionPolicy(last=2, daily=2, monthly=1, within=parse_duration("12h"), tags=(("release",),))
    plan = plan_retention(snaps, policy)
    assert kept(plan) == {
        "2026-11-28 13:00": ("last 1", "daily 2026-11-28", "monthly 2026-11", "within 12h"),
        "2026-11-28 12:00": ("last 2", "within 12h"),
        "2026-11-27 01:00": ("daily 2026-11-27",),
        "2026-11-01 00:00": ("tag release",),
    }
    assert len(plan.keep) + len(plan.remove) == len(snaps)


def test_input_order_does_not_matter() -> None:
    shuffled = list(SEVERAL_PER_DAY)
    random.Random(7).shuffle(shuffled)
    policy = RetentionPolicy(last=1, daily=2)
    assert plan_retention(shuffled, policy) == plan_retention(SEVERAL_PER_DAY, policy)


def test_same_second_snapshots_order_by_id() -> None:
    t = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
    a, b = SnapshotTime("20261128T100000-0000000a", t), SnapshotTime("20261128T100000-0000000b", t)
    plan = plan_retention([a, b], RetentionPolicy(last=1))
    assert [d.id for d in plan.keep] == [b.id]
    assert [d.id for d in plan.remove] == [a.id]


def test_empty_policy_is_refused_and_no_snapshots_is_an_empty_plan() -> None:
    with pytest.raises(UsageError):
        plan_retention(SEVERAL_PER_DAY, RetentionPolicy())
    assert RetentionPolicy().empty and not RetentionPolicy(daily=1).empty
    assert plan_retention([], RetentionPolicy(last=1)) == RetentionPlan((), ())


def test_decisions_carry_time_and_tags() -> None:
    plan = plan_retention([snap("2026-11-28 10:00", "x")], RetentionPolicy(last=1))
    d = plan.keep[0]
    assert d.created_at == "2026-11-28T10:00:00Z" and d.tags == ("x",)


@pytest.mark.parametrize(
    ("text", "years", "months", "days", "seconds"),
    [
        ("30d", 0, 0, 30, 0),
        ("12h", 0, 0, 0, 43200),
        ("2w", 0, 0, 14, 0),
        ("1y2m", 1, 2, 0, 0),
        ("1y2m3d4h", 1, 2, 3, 14400),
        ("90min", 0, 0, 0, 5400),
        ("0s", 0, 0, 0, 0),
        (" 1D ", 0, 0, 1, 0),
    ],
)
def test_parse_duration(text: str, years: int, months: int, days: int, seconds: int) -> None:
    d = parse_duration(text)
    assert (d.years, d.months, d.days, d.seconds) == (years, months, days, seconds)


@pytest.mark.parametrize("text", ["", "d", "5", "5x", "1.5d", "-1d", "1d 2h", "30 days"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_duration_before_normalises_month_ends_like_go() -> None:
    t = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)
    assert parse_duration("1m").before(t) == datetime(2026, 3, 3, 12, 0, tzinfo=timezone.utc)  # "Feb 31"
    assert parse_duration("1y1m").before(t) == datetime(2025, 3, 3, 12, 0, tzinfo=timezone.utc)
    assert parse_duration("1d12h").before(t) == datetime(2026, 3, 30, 0, 0, tzinfo=timezone.utc)
    assert parse_duration("5000y").before(t).year == 1  # no overflow error: everything is within
    assert Duration("1h", seconds=3600).total_seconds(t) == 3600


def test_parse_time_and_fallback_to_the_id() -> None:
    assert parse_time("2026-11-28T01:50:12.123456Z", "x") == datetime(
        2026, 11, 28, 1, 50, 12, 123456, tzinfo=timezone.utc
    )
    assert parse_time("garbage", "20261128T015012-1a2b3c4d") == datetime(
        2026, 11, 28, 1, 50, 12, tzinfo=timezone.utc
    )


def test_parse_tag_options_refuses_empty_tags() -> None:
    assert parse_tag_options(["a,b", "c"]) == (("a", "b"), ("c",))
    with pytest.raises(UsageError):
        parse_tag_options(["a,"])
