"""The chromadb child processes import this very package and the standard library as it is:
the folder holding ``snapshot/`` goes on their path, never the package folder (where
``snapshot/copy`` would stand in for ``copy``, which chromadb imports)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import snapshot
from snapshot.chroma.child import child_env


def test_a_child_imports_the_standard_library_and_this_package() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import copy, snapshot; copy.deepcopy([1]); print(snapshot.__file__)"],
        env=child_env(), capture_output=True, text=True, check=True, cwd="/",
    ).stdout.strip()
    assert Path(out).resolve() == Path(snapshot.__file__).resolve()
