"""The environment of the child processes that run chromadb (chromadb is never imported in the
library's own process)."""

from __future__ import annotations

import os
from pathlib import Path

#: The folder holding the ``snapshot`` package (not the package folder itself: on a child's
#: path that would let ``snapshot/copy`` stand in for the standard library's ``copy``).
_ROOT = Path(__file__).resolve().parent.parent.parent


def child_env() -> dict[str, str]:
    """This environment, for a child that imports this very package (installed or not) and
    sends chromadb no telemetry."""
    path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, ANONYMIZED_TELEMETRY="False", PYTHONPATH=path)
