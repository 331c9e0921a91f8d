"""The CLI's value parsers on literal input: durations (--grace, --delete-after, --wait), sizes
(--max-repack-size) and shares (--max-unused). Bad input is a UsageError (exit 2) naming the
option and the value."""

from __future__ import annotations

import math

import pytest

from snapshot.cli.options import byte_size, fraction, seconds
from snapshot.errors import UsageError

DAY = 86400


@pytest.mark.parametrize("text,expected", [
    (None, None), ("0", 0.0), (" 0 ", 0.0), ("0s", 0.0), ("45s", 45.0), ("90min", 5400.0),
    ("1h30min", 5400.0), ("12h", 12 * 3600.0), ("2w", 14.0 * DAY), ("1d12h", 1.5 * DAY), ("3D", 3.0 * DAY),
])
def test_durations_in_seconds(text: str | None, expected: float | None) -> None:
    assert seconds(text) == expected


def test_months_and_years_are_calendar_steps() -> None:
    month = seconds("1m")  # m is months, as in restic
    year = seconds("1y")
    assert month is not None and 28 * DAY <= month <= 31 * DAY
    assert year is not None and 365 * DAY <= year <= 366 * DAY


@pytest.mark.parametrize("text", ["", "5", "1x", "-5s", "1.5h", "h", "5 s", "1h 30min", "soon"])
def test_a_bad_duration_says_what_is_wrong(text: str) -> None:
    with pytest.raises(UsageError, match="bad duration") as err:
        seconds(text)
    assert repr(text.strip().lower()) in str(err.value) or repr(text) in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("text,expected", [
    (None, None), ("0", 0), ("1048576", 1 << 20), ("500M", 500 << 20), ("500m", 500 << 20),
    ("2GiB", 2 << 30), ("2g", 2 << 30), ("1T", 1 << 40), ("10 kib", 10 << 10), (" 7b ", 7),
    ("1.5k", 1536), ("0.5M", 512 << 10),
])
def test_sizes_in_bytes(text: str | None, expected: int | None) -> None:
    assert byte_size(text, "--max-repack-size") == expected


@pytest.mark.parametrize("text", ["", "M", "-1M", "500MB", "5x", "1e6", "1,5G", "2 G B", "lots"])
def test_a_bad_size_names_the_option_and_the_value(text: str) -> None:
    with pytest.raises(UsageError) as err:
        byte_size(text, "--max-repack-size")
    assert str(err.value) == f"--max-repack-size: not a size: {text!r} (e.g. 500M, 2G, 1048576)"
    assert err.value.exit_code == 2


@pytest.mark.parametrize("text,expected", [
    ("5%", 0.05), ("0.1", 0.1), ("0", 0.0), ("0%", 0.0), ("100%", 1.0), ("1", 1.0), (" 12.5% ", 0.125),
])
def test_shares(text: str, expected: float) -> None:
    assert fraction(text, "--max-unused") == pytest.approx(expected)


@pytest.mark.parametrize("text", ["unlimited", " Unlimited "])
def test_unlimited_is_no_bound(text: str) -> None:
    assert math.isinf(fraction(text, "--max-unused"))


@pytest.mark.parametrize("text", ["", "%", "five", "5 %%", "1/2"])
def test_a_bad_share_names_the_option_and_the_value(text: str) -> None:
    with pytest.raises(UsageError) as err:
        fraction(text, "--max-unused")
    assert str(err.value) == f"--max-unused: not a share: {text!r} (e.g. 5%, 0.1, unlimited)"


@pytest.mark.parametrize("text", ["150%", "1.5", "-1%", "-0.1", "nan", "inf"])
def test_a_share_outside_0_to_100_percent_is_refused(text: str) -> None:
    with pytest.raises(UsageError) as err:
        fraction(text, "--max-unused")
    assert str(err.value) == f"--max-unused: {text!r} is not between 0% and 100%"
