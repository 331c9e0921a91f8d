"""Condemned packs: the first of the two phases in which a pack is deleted.

A prune never deletes a pack in the run that found it unreferenced. It records it as
*condemned*, with the time (the store's clock), in a small object of its own
(``condemned/<record id>.json``, written create-only). A later prune deletes a condemned pack
only when, at that moment, no root it lists references it and it has been condemned for at
least the prune's ``--delete-after`` bound (24 h by default); a root that references it
rescues it (the prune drops it from the records). A create does not build on condemned packs,
and one that ran for half the bound or longer re-verifies before it commits (create.py).

Why: locks can stop excluding (an operator's ``unlock --remove-all``, a same-named host in
another pid namespace, a prune suspended past the stale time, a skewed clock). A create that
slipped in then either commits within the bound, and its root rescues what it uses, or finds
what it needs condemned for too long and commits nothing. Either way no committed snapshot
references a deleted pack.

Records are plain JSON (they name pack ids, which any listing shows). An unreadable record
condemns nothing: its packs, if still unreferenced, are condemned afresh by the next prune.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from snapshot.errors import IntegrityError
from snapshot.format import layout

FORMAT_VERSION = 1
#: How long a pack stays condemned before a prune may delete it (the default of --delete-after).
DEFAULT_DELETE_AFTER = 24 * 3600.0
#: Objects per record object (a record stays small enough to read in one request).
MAX_RECORD_OBJECTS = 100_000


@dataclass(frozen=True)
class CondemnedRecord:
    """One record object: the packs one prune condemned (or a merge of older records)."""

    id: str
    #: When the record was written (store clock); for people.
    created: float
    #: The bound the writing prune used, so a create knows how long it may take.
    delete_after: float
    host: str
    #: Object id -> when it was condemned (store clock).
    objects: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps({
            "format_version": FORMAT_VERSION, "id": self.id, "created": self.created,
            "delete_after": self.delete_after, "host": self.host,
            "objects": dict(sorted(self.objects.items())),
        }, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, record_id: str) -> CondemnedRecord:
        """Parse and validate a record (every value bounded); :class:`IntegrityError` if not."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise IntegrityError(f"condemned record {record_id} is not JSON") from exc
        if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
            raise IntegrityError(f"condemned record {record_id} has an unknown format")
        objects = raw.get("objects")
        if raw.get("id") != record_id or not isinstance(objects, dict) or len(objects) > MAX_RECORD_OBJECTS:
            raise IntegrityError(f"condemned record {record_id} is malformed")
        for oid, when in objects.items():
            if not layout.is_object_id(oid) or not _is_time(when):
                raise IntegrityError(f"condemned record {record_id} names {oid!r} badly")
        created: Any = raw.get("created")
        bound: Any = raw.get("delete_after")
        host = raw.get("host")
        if not (_is_time(created) and _is_time(bound) and isinstance(host, str)) or float(bound) < 0:
            raise IntegrityError(f"condemned record {record_id} is malformed")
        return cls(record_id, float(created), float(bound), host, {k: float(v) for k, v in objects.items()})


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def new_record(record_id: str, objects: Mapping[str, float], *, now: float,
               delete_after: float) -> CondemnedRecord:
    return CondemnedRecord(record_id, now, delete_after, socket.gethostname(), dict(objects))


@dataclass(frozen=True)
class Condemned:
    """Every condemned object, over all readable records."""

    #: Object id -> when it was condemned: the latest time any record gives (a duplicate left
    #: by an interrupted rewrite can only make a pack wait longer).
    since: Mapping[str, float]
    #: The record ids read (readable or not), to replace once a prune has acted on them.
    records: tuple[str, ...] = ()
    #: Record ids that could not be parsed (they condemn nothing).
    unreadable: tuple[str, ...] = ()
    #: The smallest bound a record was written with (None: no record).
    min_delete_after: float | None = None

    @classmethod
    def merge(cls, records: Iterable[CondemnedRecord], unreadable: Iterable[str] = ()) -> Condemned:
        since: dict[str, float] = {}
        ids: list[str] = []
        bounds: list[float] = []
        for rec in records:
            ids.append(rec.id)
            bounds.append(rec.delete_after)
            for oid, when in rec.objects.items():
                since[oid] = max(when, since.get(oid, when))
        bad = tuple(unreadable)
        return cls(since, tuple(sorted([*ids, *bad])), bad, min(bounds) if bounds else None)

    def __contains__(self, object_id: object) -> bool:
        return object_id in self.since

    def adding(self, objects: Iterable[str], *, now: float, records: Iterable[str],
               delete_after: float) -> Condemned:
        """These records plus ``records`` just written, condemning ``objects`` at ``now``."""
        since = {**self.since, **dict.fromkeys(objects, now)}
        bound = delete_after if self.min_delete_after is None else min(self.min_delete_after, delete_after)
        return Condemned(since, tuple(sorted([*self.records, *records])), self.unreadable, bound)

    def create_bound(self) -> float:
        """The bound a create must assume: the default, or the shortest a record was written
        with (0 is a bound)."""
        least = self.min_delete_after
        return DEFAULT_DELETE_AFTER if least is None else min(DEFAULT_DELETE_AFTER, least)

    def overdue(self, object_ids: Iterable[str], *, now: float, age: float) -> set[str]:
        """Which of ``object_ids`` have been condemned for ``age`` seconds or longer (with
        ``age`` 0, every condemned one: clocks of two processes may differ by a second)."""
        return {oid for oid in object_ids if oid in self.since and (age <= 0 or now - self.since[oid] >= age)}


#: No condemned packs.
NOTHING = Condemned({})


@dataclass(frozen=True)
class DeletionPlan:
    """What the second phase does, decided from the records and one listing of roots: pure."""

    #: Condemned for at least the bound and referenced by no root listed now.
    delete: frozenset[str]
    #: Condemned, but a root references them again: no longer condemned.
    rescued: frozenset[str]
    #: Condemned and gone from the store already (an interrupted prune deleted them).
    gone: frozenset[str]
    #: Stay condemned (object id -> since).
    remaining: Mapping[str, float]
    #: Due, but retained by S3 Object Lock (object id -> until when): they stay condemned (in
    #: ``remaining``), and a prune after that date deletes them.
    held: Mapping[str, float] = field(default_factory=dict)


def plan_deletion(condemned: Condemned, referenced: set[str], present: set[str], *, now: float,
                  delete_after: float, keep: frozenset[str] = frozenset(),
                  held: Mapping[str, float] | None = None) -> DeletionPlan:
    """``referenced``: objects the roots listed at this moment need; ``present``: the objects
    the store holds; ``keep``: objects written by this run (never deleted by it); ``held``:
    objects the store retains, and until when (never deleted before)."""
    held = held or {}
    delete, rescued, gone, remaining, holding = set(), set(), set(), {}, {}
    for oid, since in condemned.since.items():
        if oid in referenced:
            rescued.add(oid)
        elif oid not in present:
            gone.add(oid)
        elif (delete_after <= 0 or now - since >= delete_after) and oid not in keep and oid not in held:
            delete.add(oid)
        else:
            remaining[oid] = since
            if oid in held and oid not in keep:
                holding[oid] = held[oid]
    return DeletionPlan(frozenset(delete), frozenset(rescued), frozenset(gone), remaining, holding)
