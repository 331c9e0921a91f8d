"""What a repository costs on S3 each month, and what restoring a snapshot from it costs, from a
table of list prices (built in, or a JSON file of the same shape: ``stats --cost --prices F``).

Billing rules applied (as S3 bills them): a GB is 2**30 bytes; an object in an infrequent-access
class (STANDARD_IA, ONEZONE_IA, GLACIER_IR) is billed as at least 128 KiB; an object in GLACIER or
DEEP_ARCHIVE carries 40 KiB more (32 KiB at its class's rate, 8 KiB at STANDARD's); reading from
a class with a retrieval fee pays it per GB read; data leaving AWS pays the egress rate. The
minimum storage durations (30, 90, 180 days) are reported, not spread over the month: deleting a
younger object bills the rest of its minimum at once (prune reports those).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from snapshot.errors import UsageError
from snapshot.repo.prediction import PredictedCost, Prediction
from snapshot.repo.repository import Repository
from snapshot.repo.selection import SnapshotFilter
from snapshot.upkeep.stats import Listing, RepoStats, SnapshotStats, collect

GB = 1 << 30

#: Amazon S3 list prices, US East (N. Virginia), first-tier (up to 50 TB a month), USD.
BUILTIN_PRICES: dict[str, Any] = {
    "source": "Amazon S3 list prices, US East (N. Virginia), first 50 TB tier",
    "date": "2025-06",
    "region": "us-east-1",
    "currency": "USD",
    "egress_per_gb": 0.09,
    "classes": {
        "STANDARD": {"storage_gb_month": 0.023, "put_per_1000": 0.005, "get_per_1000": 0.0004,
                     "retrieval_per_gb": 0.0, "min_object_bytes": 0, "min_days": 0},
        "INTELLIGENT_TIERING": {"storage_gb_month": 0.023, "put_per_1000": 0.005, "get_per_1000": 0.0004,
                                "retrieval_per_gb": 0.0, "min_object_bytes": 0, "min_days": 0},
        "STANDARD_IA": {"storage_gb_month": 0.0125, "put_per_1000": 0.01, "get_per_1000": 0.001,
                        "retrieval_per_gb": 0.01, "min_object_bytes": 131072, "min_days": 30},
        "ONEZONE_IA": {"storage_gb_month": 0.01, "put_per_1000": 0.01, "get_per_1000": 0.001,
                       "retrieval_per_gb": 0.01, "min_object_bytes": 131072, "min_days": 30},
        "GLACIER_IR": {"storage_gb_month": 0.004, "put_per_1000": 0.02, "get_per_1000": 0.01,
                       "retrieval_per_gb": 0.03, "min_object_bytes": 131072, "min_days": 90},
        "GLACIER": {"storage_gb_month": 0.0036, "put_per_1000": 0.03, "get_per_1000": 0.0004,
                    "retrieval_per_gb": 0.01, "min_object_bytes": 0, "min_days": 90,
                    "overhead_bytes": 32768, "overhead_standard_bytes": 8192},
        "DEEP_ARCHIVE": {"storage_gb_month": 0.00099, "put_per_1000": 0.05, "get_per_1000": 0.0004,
                         "retrieval_per_gb": 0.02, "min_object_bytes": 0, "min_days": 180,
                         "overhead_bytes": 32768, "overhead_standard_bytes": 8192},
    },
}

_CLASS_FIELDS = ("storage_gb_month", "put_per_1000", "get_per_1000", "retrieval_per_gb", "min_object_bytes",
                 "min_days")


@dataclass(frozen=True)
class ClassPrice:
    storage_gb_month: float
    put_per_1000: float
    get_per_1000: float
    retrieval_per_gb: float
    min_object_bytes: int
    min_days: int
    overhead_bytes: int = 0
    overhead_standard_bytes: int = 0


@dataclass(frozen=True)
class Prices:
    source: str
    date: str
    region: str
    currency: str
    egress_per_gb: float
    classes: Mapping[str, ClassPrice]

    def of(self, storage_class: str) -> ClassPrice:
        try:
            return self.classes[storage_class]
        except KeyError:
            raise UsageError(f"the price table has no storage class {storage_class!r} "
                             f"(it has {', '.join(sorted(self.classes))})") from None


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise UsageError(f"price table: {where} must be a number >= 0, not {value!r}")
    return float(value)


def parse_prices(doc: Any, what: str = "price table") -> Prices:
    """A price table from its JSON form (the shape of :data:`BUILTIN_PRICES`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), dict) or not doc["classes"]:
        raise UsageError(f"{what}: expected an object with a non-empty \"classes\" object")
    classes = {}
    for name, row in doc["classes"].items():
        if not isinstance(row, dict):
            raise UsageError(f"{what}: class {name!r} must be an object")
        missing = [k for k in _CLASS_FIELDS if k not in row]
        if missing:
            raise UsageError(f"{what}: class {name!r} lacks {', '.join(missing)}")
        known = ClassPrice.__dataclass_fields__
        values = {k: _number(f"{name}.{k}", v) for k, v in row.items() if k in known}
        classes[str(name)] = ClassPrice(**{k: (int(v) if k.endswith(("bytes", "days")) else v)  # type: ignore[arg-type]
                                           for k, v in values.items()})
    if "STANDARD" not in classes:
        raise UsageError(f"{what}: the STANDARD class is required (small objects are stored in it)")
    return Prices(source=str(doc.get("source", what)), date=str(doc.get("date", "?")),
                  region=str(doc.get("region", "?")), currency=str(doc.get("currency", "USD")),
                  egress_per_gb=_number("egress_per_gb", doc.get("egress_per_gb", 0.0)), classes=classes)


def load_prices(path: str | Path | None) -> Prices:
    """The built-in table, or the one in the JSON file ``path``."""
    if path is None:
        return parse_prices(BUILTIN_PRICES)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the price table {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"the price table {path} is not valid JSON: {exc}") from None
    return parse_prices(doc, f"price table {path}")


@dataclass(frozen=True)
class ClassCost:
    storage_class: str
    objects: int
    stored_bytes: int
    #: What S3 bills: minimum object sizes and archive overheads included.
    billed_bytes: int
    monthly: float
    min_days: int


@dataclass(frozen=True)
class RestoreCost:
    snapshot: str
    #: At least one GET per pack the snapshot needs (restore reads several frames of a pack at once).
    get_requests: int
    bytes: int
    requests_cost: float
    retrieval_cost: float
    egress_cost: float

    @property
    def total(self) -> float:
        return self.requests_cost + self.retrieval_cost + self.egress_cost


@dataclass(frozen=True)
class CostEstimate:
    prices: Prices
    #: True when the repository is a local folder: priced as if its objects were in S3 in the
    #: classes a create would write them in (packs in ``assumed_pack_class``).
    assumed: bool
    assumed_pack_class: str | None
    classes: tuple[ClassCost, ...]
    restores: tuple[RestoreCost, ...]

    @property
    def monthly(self) -> float:
        return sum(c.monthly for c in self.classes)


#: Where a local repository's objects would go in S3, as a create writes them there by default:
#: packs of at least 128 KiB in STANDARD_IA, everything else in STANDARD.
ASSUMED_PACK_CLASS = "STANDARD_IA"
_ASSUMED_MIN_SIZE = 128 << 10
#: Objects that are not billed for long (locks live as long as a command).
_TRANSIENT = ("locks",)


def _billed(size: int, price: ClassPrice) -> int:
    return max(size, price.min_object_bytes) + price.overhead_bytes


def estimate(stats: RepoStats, listing: Listing, prices: Prices) -> CostEstimate:
    """The monthly bill of the objects ``listing`` names and the cost of restoring each snapshot
    of ``stats``. A local repository's objects are priced where a create would write them in S3."""
    standard = prices.of("STANDARD")
    local = all(info.storage_class is None for _, info in listing)
    sizes: dict[str, list[int]] = {}
    for kind, info in listing:
        if kind in _TRANSIENT:
            continue
        name = info.storage_class
        if name is None:
            name = ASSUMED_PACK_CLASS if kind == "data" and info.size >= _ASSUMED_MIN_SIZE else "STANDARD"
        sizes.setdefault(name, []).append(info.size)
    rows = []
    extra_standard = 0
    for name, group in sorted(sizes.items()):
        price = prices.of(name)
        billed = sum(_billed(size, price) for size in group)
        extra_standard += price.overhead_standard_bytes * len(group)
        rows.append(ClassCost(name, len(group), sum(group), billed, billed / GB * price.storage_gb_month,
                              price.min_days))
    if extra_standard:
        rows.append(ClassCost("STANDARD (archive metadata)", 0, 0, extra_standard,
                              extra_standard / GB * standard.storage_gb_month, 0))
    pack_class = max(sizes, key=lambda k: sum(sizes[k])) if sizes else "STANDARD"
    pack_price = prices.of(pack_class)
    restores = tuple(_restore(s, pack_price, prices) for s in stats.snapshots)
    return CostEstimate(prices, local, ASSUMED_PACK_CLASS if local else None, tuple(rows), restores)


def _restore(s: SnapshotStats, price: ClassPrice, prices: Prices) -> RestoreCost:
    gets = s.packs + 2  # the config and the root
    return RestoreCost(
        snapshot=s.id, get_requests=gets, bytes=s.referenced_bytes,
        requests_cost=gets / 1000 * price.get_per_1000,
        retrieval_cost=s.referenced_bytes / GB * price.retrieval_per_gb,
        egress_cost=s.referenced_bytes / GB * prices.egress_per_gb,
    )


#: Request kinds S3 bills at its PUT rate (PUT, COPY, POST, LIST) and at its GET rate (GET,
#: HEAD and the rest); DELETE is free.
_PUT_RATE = ("put", "list", "restore")
_FREE = ("delete",)


def pack_class_of(repo: Repository) -> str:
    """The storage class a repository's packs are priced in: the one its store writes them in,
    or for a local repository the one a create would write them in on S3."""
    return repo.pack_class or ASSUMED_PACK_CLASS


def price_prediction(p: Prediction, prices: Prices, pack_class: str) -> Prediction:
    """``p`` with its cost: requests on packs at ``pack_class``'s rates and the others at
    STANDARD's, the retrieval fee of the pack bytes read, egress for every byte read."""
    standard, packs = prices.of("STANDARD"), prices.of(pack_class)

    def rate(kind: str, price: ClassPrice) -> float:
        if kind in _FREE:
            return 0.0
        return (price.put_per_1000 if kind in _PUT_RATE else price.get_per_1000) / 1000

    requests = 0.0
    for kind, count in p.requests.items():
        if kind != "total":
            on_packs = p.pack_requests.get(kind, 0)
            requests += on_packs * rate(kind, packs) + (count - on_packs) * rate(kind, standard)
    retrieval = p.pack_bytes_down / GB * packs.retrieval_per_gb
    egress = p.bytes_down / GB * prices.egress_per_gb
    cost = PredictedCost(f"{prices.source}, {prices.date}", prices.currency, pack_class, requests, retrieval,
                         egress, requests + retrieval + egress)
    return replace(p, cost=cost)


@dataclass(frozen=True)
class StatsReport:
    stats: RepoStats
    cost: CostEstimate | None = None


def repository_report(repo: Repository, refs: Sequence[str] = (), filters: SnapshotFilter | None = None, *,
                      cost: bool = False, prices_file: str | Path | None = None) -> StatsReport:
    """``stats``: the repository's figures and those of the snapshots ``refs`` name (ids,
    prefixes, ``latest``; every snapshot when none), with ``cost`` the estimated bill."""
    prices = load_prices(prices_file) if cost or prices_file is not None else None
    ids = None
    if refs:
        known = repo.snapshot_ids()
        ids = [repo.resolve(ref, known, filters) for ref in refs]
    stats, listing = collect(repo, ids, None if ids is not None else filters)
    return StatsReport(stats, estimate(stats, listing, prices) if prices is not None else None)
