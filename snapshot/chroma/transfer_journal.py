"""The small journal that makes a collection copy resumable.

One JSON file per (journal key, source collection, target name) in the caller's journal dir,
replaced atomically (temp file, fsync, rename) after each batch the target confirmed. It says
under which temporary name (and collection id) the copy is being built, how many of the
source's records (in the source's own order) the target has confirmed, and whether the copy was
verified. A kill between a batch's upsert and the journal's update sends that one batch again
on the next run (upsert by id makes that harmless).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from snapshot.util.fsync import fsync_path

COPYING = "copying"
VERIFIED = "verified"


@dataclass(frozen=True)
class Entry:
    key: str
    source: str  # the source collection's name
    target_name: str  # the name it gets in the target
    temp_name: str  # the name it is built under
    temp_id: str | None  # that collection's id, once created
    sent: int  # records of the source, in its order, the target confirmed
    phase: str  # COPYING or VERIFIED
    replace: bool

    def but(self, **changes: Any) -> Entry:
        return replace(self, **changes)


class Journal:
    def __init__(self, folder: Path, key: str, source: str, target_name: str) -> None:
        digest = hashlib.sha256(json.dumps([key, source, target_name]).encode()).hexdigest()[:32]
        self.folder = folder
        self.path = folder / f"collection-copy-{digest}.json"

    def load(self) -> Entry | None:
        try:
            data = json.loads(self.path.read_text())
            return Entry(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            return None  # unreadable: start over (the target is checked, not trusted, anyway)

    def save(self, entry: Entry) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(entry), f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_path(self.folder)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
