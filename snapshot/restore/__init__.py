"""Restoring a snapshot: the pipeline, writing files chunk by chunk (materialise), the atomic
swap into the target, and the repair after a chromadb trial open."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {n: "snapshot.restore.pipeline"
         for n in ("restore_snapshot", "prepare_restore", "RestoreResult", "RestorePlan", "RestoreSummary")}
_LAZY["RestoreOptions"] = "snapshot.restore.options"
_LAZY |= {n: "snapshot.restore.collections" for n in (
    "restore_collection", "materialise_collections", "CollectionRestoreResult", "PartialRestore")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
