"""Predictions in the CLI: priced from the built-in price table, and rendered as one line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from snapshot.cli.render import prediction_lines

if TYPE_CHECKING:  # a command imports only what it runs
    from snapshot.repo.prediction import Prediction
    from snapshot.repo.repository import Repository

T = TypeVar("T")


@dataclass(frozen=True)
class DryRun:
    """What ``create --dry-run`` prints: the prediction, and what working it out took."""

    dry_run: bool
    predicted: Prediction
    requests: dict[str, int]
    bytes_down: int


def priced(obj: T, repo: Repository) -> T:
    """``obj`` (a result with a ``predicted`` field) with its prediction priced."""
    from snapshot.upkeep.cost import load_prices, pack_class_of, price_prediction

    p: Any = getattr(obj, "predicted", None)
    if p is None:
        return obj
    priced_p = price_prediction(p, load_prices(None), pack_class_of(repo))
    return dataclasses.replace(obj, predicted=priced_p)  # type: ignore[type-var]


def priced_copy(obj: T, source: Repository, dest: Repository) -> T:
    """A copy's result with each side of its prediction priced: the source's reads and egress
    in the source's pack class, the destination's writes in its own."""
    from snapshot.upkeep.cost import load_prices, pack_class_of, price_prediction

    p: Any = getattr(obj, "predicted", None)
    if p is None:
        return obj
    prices = load_prices(None)
    both = dataclasses.replace(p, source=price_prediction(p.source, prices, pack_class_of(source)),
                               destination=price_prediction(p.destination, prices, pack_class_of(dest)))
    return dataclasses.replace(obj, predicted=both)  # type: ignore[type-var]


def render_dry_run(d: DryRun) -> list[str]:
    return ["create (dry run): nothing was captured into the repository", *prediction_lines(d.predicted)]
