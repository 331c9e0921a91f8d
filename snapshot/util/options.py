"""The operations' option objects (CreateOptions, RestoreOptions, PruneOptions) and the keyword
arguments of their older signatures: the one rule for how the two meet."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from snapshot.errors import UsageError

T = TypeVar("T")


def from_keywords(cls: type[T], options: T | None, keywords: Mapping[str, Any], operation: str) -> T:
    """``options``, or a ``cls`` built from ``keywords`` (each names one of its fields).

    Both at once is a UsageError: which of the two would win is not obvious to a reader of the
    call. A keyword that is no field is a TypeError, as for any function."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(keywords) - names)
    if unknown:
        raise TypeError(f"{operation}() got an unexpected keyword argument {unknown[0]!r}")
    if options is None:
        return cls(**keywords)
    if not isinstance(options, cls):
        raise TypeError(f"{operation}(): options must be a {cls.__name__}, not {type(options).__name__}")
    if keywords:
        raise UsageError(f"{operation}(): pass a {cls.__name__} or keyword arguments "
                         f"({', '.join(sorted(keywords))}), not both")
    return options


def check_flags(**flags: object) -> None:
    """Refuse a flag that is not a bool (``force="no"`` would be true)."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise UsageError(f"{name} must be True or False, not {value!r}")
