"""The runnable examples guard what they are pointed at (the full run of examples/quickstart.py
is in test_packaging.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from chroma_helpers import tree_digest

pytestmark = pytest.mark.slow  # each runs the example in a child process that imports chromadb

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


def _quickstart(workdir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(QUICKSTART), str(workdir)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_quickstart_leaves_a_non_empty_workdir_untouched(tmp_path: Path) -> None:
    workdir = tmp_path / "my-project"
    (workdir / "data").mkdir(parents=True)
    (workdir / "notes.txt").write_text("mine\n")
    (workdir / "data" / "embeddings.npy").write_bytes(b"\x93NUMPY" + bytes(200))
    before = tree_digest(workdir)
    out = _quickstart(workdir, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and str(workdir) in err[0] and "is not empty" in err[0]
    assert "Traceback" not in out.stderr
    assert tree_digest(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["data", "notes.txt"]


def test_quickstart_refuses_a_file_as_workdir(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4")
    out = _quickstart(path, tmp_path)
    assert out.returncode == 2 and "is not a folder" in out.stderr
    assert path.read_bytes() == b"%PDF-1.4"
