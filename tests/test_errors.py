"""The exit-code table is built from the error classes: each code once, each class's code in it."""

from __future__ import annotations

import click

from snapshot import errors
from snapshot.errors import ExitCode, Interrupted, SnapshotError, exit_codes


def _error_classes() -> list[type[BaseException]]:
    return [c for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, (SnapshotError, Interrupted))]


def test_the_table_has_one_row_per_class_that_introduces_a_code() -> None:
    table = exit_codes()
    assert [r.code for r in table] == sorted({r.code for r in table})
    introducing = [c for c in _error_classes() if "exit_code" in vars(c)]
    assert sorted(r.code for r in table) == sorted([0] + [c.exit_code for c in introducing])
    for cls in introducing:  # a new code says what it means, not what its parent's code means
        assert {"kind", "meaning"} <= set(vars(cls)), cls


def test_every_error_exits_with_a_code_of_the_table_named_by_its_row() -> None:
    by_code = {r.code: r for r in exit_codes()}
    assert by_code[0] == ExitCode(0, "success", "success")
    assert by_code[1] == ExitCode(1, "error", "unexpected error")
    assert by_code[4].name == "integrity" and by_code[14].meaning == "S3: wrong region for the bucket"
    assert (by_code[130].name, by_code[143].name) == ("interrupted", "terminated")
    for cls in _error_classes():
        assert cls.exit_code in by_code, cls
    assert errors.AmbiguousIdError.exit_code == errors.UsageError.exit_code == 2
    assert errors.Terminated.exit_code == 143 and issubclass(errors.Terminated, KeyboardInterrupt)


def test_click_usage_errors_exit_as_usage_errors_do() -> None:
    assert click.UsageError("x").exit_code == errors.UsageError.exit_code
