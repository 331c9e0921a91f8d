"""The two baselines that are not backup tools, run as a child process so they can be measured.

``gzip SRC OUT``: the old approach. Every file is compressed whole with gzip level 6 (Python's
gzip module, i.e. zlib, the same deflate as ``gzip -6``), one file after another on one core,
and the whole set is uploaded again at every backup.

``zstd-pipe SRC OUT --threads T``: ``tar | zstd -1 -T<T>`` done in Python, used only when the
``zstd`` or ``tar`` binary is missing. It is the speed-limit proxy: read everything once and
compress it with the fastest zstd level on every core, nothing else.

Each prints one JSON object: files, bytes_in, bytes_out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

BLOCK = 1 << 20


def gzip_all(src: Path, out: Path, level: int = 6) -> dict[str, int]:
    files = bytes_in = bytes_out = 0
    for dirpath, dirnames, names in os.walk(src):
        dirnames.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            rel = path.relative_to(src)
            dest = out / rel.parent / (rel.name + ".gz")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as fin, gzip.GzipFile(dest, "wb", compresslevel=level, mtime=0) as fout:
                shutil.copyfileobj(fin, fout, BLOCK)
            files += 1
            bytes_in += path.stat().st_size
            bytes_out += dest.stat().st_size
    return {"files": files, "bytes_in": bytes_in, "bytes_out": bytes_out}


def zstd_pipe(src: Path, out: Path, threads: int, level: int = 1) -> dict[str, int]:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level, threads=threads)
    with open(out, "wb") as fh, cctx.stream_writer(fh, closefd=False) as zw, \
            tarfile.open(fileobj=zw, mode="w|", bufsize=BLOCK) as tar:
        tar.add(str(src), arcname=".")
    files = bytes_in = 0
    for dirpath, _dirs, names in os.walk(src):
        for name in names:
            files += 1
            bytes_in += (Path(dirpath) / name).stat().st_size
    return {"files": files, "bytes_in": bytes_in, "bytes_out": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("gzip", "zstd-pipe"))
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    if args.what == "gzip":
        result = gzip_all(args.src, args.out)
    else:
        result = zstd_pipe(args.src, args.out, args.threads)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
