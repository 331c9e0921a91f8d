"""A local repository whose files are not what they should be: a pack replaced by a FIFO (a
read that would block forever) fails fast with a one-line error instead of hanging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import Seeded, pack_files


def test_a_fifo_in_place_of_a_pack_fails_fast(seeded: Seeded, tmp_path: Path) -> None:
    for pack in pack_files(seeded.repo):
        pack.unlink()
        os.mkfifo(pack)
    env = dict(os.environ)
    for args in (["restore", seeded.sid, str(tmp_path / "t"), "--skip-chroma-check"],
                 ["diff", seeded.sid, seeded.sid, "--records"], ["check", "--read-data"]):
        # a child process: a blocking open of the FIFO would hang this test, not fail it
        proc = subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(seeded.repo), *args],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode in (4, 5), (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        said = proc.stdout + proc.stderr
        assert "not a regular file" in said or "0 bytes, shorter than a frame" in said, said
    assert not (tmp_path / "t").exists()
