"""Decoding is bounded by the size the manifest declares: a frame that lies about its size (in
its header, or by having none) is refused without allocating what it claims."""

from __future__ import annotations

import subprocess
import sys

import pytest
import zstandard

from snapshot.errors import IntegrityError
from snapshot.format.codecs import decompress


def _peak_rss_of(code: str) -> tuple[str, int]:
    script = ("import resource, sys\n" + code +
              "\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    return lines[0], int(lines[-1]) // 1024


def test_frames_lying_about_their_size_are_refused_in_bounded_memory() -> None:
    baseline = _peak_rss_of("import snapshot.format.codecs\nprint('ok')")[1]
    lying = """
import zstandard
from snapshot.format.codecs import decompress
from snapshot.errors import IntegrityError
# a small frame whose header claims 512 MiB; the manifest says 1 MiB
frame = zstandard.ZstdCompressor().compress(bytes(512 << 20))
# one with no size in its header that decodes to 512 MiB
streamed = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(512 << 20))
out = []
for f in (frame, streamed):
    try:
        decompress(f, "zstd", 1 << 20)
    except IntegrityError as exc:
        out.append(type(exc).__name__)
print(",".join(out))
"""
    result, peak = _peak_rss_of(lying)
    assert result == "IntegrityError,IntegrityError"
    assert peak < baseline + 1100, (peak, baseline)  # the two 512 MiB inputs, never their output
    tiny = zstandard.ZstdCompressor().compress(b"")  # 100 GiB claimed by a hand-made header
    with pytest.raises(IntegrityError):
        decompress(tiny[:5] + b"\xff" * 8 + tiny[13:], "zstd", 1 << 20)
