"""Taking a snapshot: the pipeline (capture, chunk, pack, commit), the builder that packs a
capture, and the local base cache of the last snapshot taken."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"create_snapshot": "snapshot.create.pipeline", "CreateResult": "snapshot.create.pipeline",
         "CreateOptions": "snapshot.create.options"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
