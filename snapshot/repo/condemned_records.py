"""The condemned records of a repository: the stored side of the deletion protocol
(snapshot/format/condemned.py holds the records' format and the rules that judge them).

Holds reading every record (one listing, one small read per record), writing new create-only
records and replacing old ones by one new one, new first. It must not decide what to condemn
or delete (that is prune's) nor touch packs or manifests.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping

from snapshot.errors import IntegrityError, NotFoundError
from snapshot.format import layout
from snapshot.format.condemned import MAX_RECORD_OBJECTS, Condemned, CondemnedRecord, new_record
from snapshot.storage import ObjectKind, Store
from snapshot.util import pausepoints


class CondemnedRecords:
    """The records under condemned/ on ``store``; ``clock`` stamps new ones (the repository's
    shifted store clock, snapshot/repo/clock.py)."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self._clock = clock

    def read(self) -> Condemned:
        """Every condemned object and when (see snapshot/format/condemned.py); one listing plus one
        small read per record (a prune leaves one record behind)."""
        records: list[CondemnedRecord] = []
        bad: list[str] = []
        for info in self.store.list(layout.CONDEMNED_PREFIX):
            rid = layout.condemned_id_from_key(info.key)
            if rid is None:
                continue
            try:
                records.append(CondemnedRecord.from_json(self.store.get(info.key), rid))
            except NotFoundError:
                continue  # a concurrent prune replaced it
            except IntegrityError:
                bad.append(rid)
        return Condemned.merge(records, bad)

    def condemn(self, objects: Mapping[str, float], *, delete_after: float) -> list[str]:
        """Record ``objects`` (id -> when) as condemned, in new create-only record objects."""
        written = []
        items = sorted(objects.items())
        for start in range(0, len(items), MAX_RECORD_OBJECTS):
            rid = secrets.token_hex(16)
            rec = new_record(rid, dict(items[start:start + MAX_RECORD_OBJECTS]), now=self._clock(),
                             delete_after=delete_after)
            self.store.put(layout.condemned_key(rid), rec.to_json(), kind=ObjectKind.CONDEMNED,
                           create_only=True)
            written.append(rid)
        return written

    def replace(self, remaining: Mapping[str, float], old: Iterable[str], *, delete_after: float) -> None:
        """The records ``old`` are replaced by one holding ``remaining``: the new one is written
        first, so an interruption leaves a duplicate (harmless), never a pack uncondemned."""
        self.condemn(remaining, delete_after=delete_after)
        for rid in old:
            self.store.delete(layout.condemned_key(rid))
            pausepoints.point("repository.condemned-record-deleted")
