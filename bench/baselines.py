"""The two baselines that are not backup tools, run as a child process so they can be measured.

``gzip SRC OUT``: the old approach. Every file is compressed whole with gzip level 6 (Python's
gzip module, i.e. zlib, the same deflate as ``gzip -6``), one file after another on one core,
and the whole set is uploaded again at every backup.

``zstd-pipe SRC OUT --threads T``: ``tar | zstd -1 -T<T>`` done in Python, used only when the
``zstd`` or ``tar`` binary is missing. It is the speed-limit proxy: read everything once and
compress it with the fastest zstd level on every core, nothing else.

``gzip-s3-up SRC WORK --endpoint URL --bucket B``: the gzip-everything way to S3 (bench/s3.py):
each file gzipped at level 6 into WORK, then uploaded with boto3's ``upload_file``, one file
after another, under ``gz/``. ``gzip-s3-down OUT OUT ...``: each object under ``gz/`` fetched with
``download_file`` (boto3 splits a big one into parallel ranged GETs on its own) and gunzipped
into OUT.

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


def _s3(endpoint: str) -> object:
    import boto3

    return boto3.session.Session(region_name="us-east-1").client("s3", endpoint_url=endpoint)


def gzip_s3_up(src: Path, work: Path, endpoint: str, bucket: str) -> dict[str, int]:
    shutil.rmtree(work, ignore_errors=True)
    res = gzip_all(src, work)
    s3 = _s3(endpoint)
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"gz/{path.relative_to(work).as_posix()}")  # type: ignore[attr-defined]
    shutil.rmtree(work)
    return res


def gzip_s3_down(out: Path, endpoint: str, bucket: str) -> dict[str, int]:
    s3 = _s3(endpoint)
    files = bytes_in = bytes_out = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="gz/"):  # type: ignore[attr-defined]
        for obj in page.get("Contents", []):
            rel = obj["Key"].removeprefix("gz/")
            gz = out / rel
            gz.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(gz))  # type: ignore[attr-defined]
            dest = gz.with_name(gz.name.removesuffix(".gz"))
            with gzip.open(gz, "rb") as fin, open(dest, "wb") as fout:
                shutil.copyfileobj(fin, fout, BLOCK)
            gz.unlink()
            files += 1
            bytes_in += obj["Size"]
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
    ap.add_argument("what", choices=("gzip", "zstd-pipe", "gzip-s3-up", "gzip-s3-down"))
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--endpoint", help="gzip-s3-*: the S3 endpoint URL")
    ap.add_argument("--bucket", help="gzip-s3-*: the bucket")
    args = ap.parse_args(argv)
    if args.what == "gzip-s3-up":
        result = gzip_s3_up(args.src, args.out, args.endpoint, args.bucket)
    elif args.what == "gzip-s3-down":
        result = gzip_s3_down(args.out, args.endpoint, args.bucket)
    elif args.what == "gzip":
        result = gzip_all(args.src, args.out)
    else:
        result = zstd_pipe(args.src, args.out, args.threads)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
