"""The tools bench/s3.py runs through its shaping proxy, each step its own process: the command
lines of chroma-snapshot, of restic's S3 backend and of the gzip-everything way, the buckets they
use, and the two repositories of 100 tiny snapshots that ``list`` is timed on.

Each method gives a step's command line; bench/s3.py runs and times it and reads what crossed
the proxy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import run

BENCH = Path(__file__).resolve().parent
REGION = "us-east-1"
KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true"}
#: The incremental creates, applied one after another to the full DB (bench/dataset.py's).
CHANGES = ("insert", "update", "delete")
#: Snapshots in the repositories ``list`` runs on.
LISTED = 100


def client(endpoint: str) -> Any:
    import boto3

    session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench",
                                    region_name=REGION)
    return session.client("s3", endpoint_url=endpoint)


def new_bucket(endpoint: str, name: str) -> str:
    drop_bucket(endpoint, name)
    client(endpoint).create_bucket(Bucket=name)
    return name


def drop_bucket(endpoint: str, name: str) -> None:
    """Delete ``name`` and everything in it (moto keeps objects in memory and temp files)."""
    s3 = client(endpoint)
    try:
        pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=name))
    except s3.exceptions.NoSuchBucket:
        return
    keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
    for lo in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=name, Delete={"Objects": keys[lo:lo + 1000]})
    s3.delete_bucket(Bucket=name)


def aws_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(KEYS, AWS_CONFIG_FILE=str(home / "none"), AWS_SHARED_CREDENTIALS_FILE=str(home / "none"),
               ANONYMIZED_TELEMETRY="False")
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Ours:
    """chroma-snapshot of ``checkout`` (PYTHONPATH) against ``s3://bucket/repo`` at ``endpoint``."""

    checkout: Path
    endpoint: str
    bucket: str
    home: Path  # the run's folder: caches, temp files, restores

    @property
    def env(self) -> dict[str, str]:
        # The checkout's code first on the path, not the current directory's (the steps run in
        # the run's folder).
        return aws_env(self.home, {"PYTHONPATH": str(self.checkout)})

    def cli(self, bucket: str | None = None) -> list[str]:
        return [sys.executable, "-m", "snapshot", "--repo", f"s3://{bucket or self.bucket}/repo",
                "--endpoint-url", self.endpoint]

    def check_code(self) -> None:
        code = run([sys.executable, "-c", "import snapshot; print(snapshot.__file__)"], env=self.env,
                   cwd=self.home)
        if not code.stdout.startswith(str(self.checkout)):
            raise RuntimeError(f"the code of {self.checkout} does not run: {code.stdout or code.stderr}")

    def create(self, src: Path) -> list[str]:
        return [*self.cli(), "create", str(src), "--json", "--tmp-dir", str(self.home / "tmp"),
                "--cache-dir", str(self.home / "cache")]

    def restore(self, target: Path) -> list[str]:
        return [*self.cli(), "restore", "latest", str(target), "--json"]

    def check(self) -> list[str]:
        return [*self.cli(), "check", "--read-data", "--json"]

    def prune(self) -> list[str]:
        return [*self.cli(), "prune", "--keep-last", "1", "--max-unused", "0%", "--json"]

    def list(self, bucket: str) -> list[str]:
        return [*self.cli(bucket), "list", "--json"]


@dataclass(frozen=True)
class Restic:
    """restic's S3 backend against ``s3:endpoint/bucket/restic`` (its cache in the run's folder)."""

    endpoint: str
    bucket: str
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return aws_env(self.home, {"RESTIC_PASSWORD": "chroma-snapshot-bench",
                                   "RESTIC_CACHE_DIR": str(self.home / "restic-cache")})

    def cmd(self, *args: str, bucket: str | None = None) -> list[str]:
        binary = shutil.which("restic")
        if binary is None:
            raise RuntimeError("restic is not installed: `apt-get install restic` or see restic.net")
        repo = f"s3:{self.endpoint}/{bucket or self.bucket}/restic"
        return [binary, "-o", f"s3.region={REGION}", "-r", repo, *args]

    def init(self) -> None:
        run(self.cmd("init"), env=self.env).check("restic init")

    def backup(self, src: Path) -> list[str]:
        return self.cmd("backup", "--json", "--host", "bench", str(src))

    def restore(self, target: Path) -> list[str]:
        return self.cmd("restore", "latest", "--target", str(target))

    def check(self) -> list[str]:
        return self.cmd("check", "--read-data")

    def prune(self) -> list[str]:
        return self.cmd("forget", "--keep-last", "1", "--prune", "--max-unused", "0")

    def list(self, bucket: str) -> list[str]:
        return self.cmd("snapshots", "--json", bucket=bucket)


def gzip_up(endpoint: str, bucket: str, src: Path, home: Path) -> list[str]:
    return [sys.executable, str(BENCH / "baselines.py"), "gzip-s3-up", str(src), str(home / "gz"),
            "--endpoint", endpoint, "--bucket", bucket]


def gzip_down(endpoint: str, bucket: str, target: Path) -> list[str]:
    return [sys.executable, str(BENCH / "baselines.py"), "gzip-s3-down", str(target), str(target),
            "--endpoint", endpoint, "--bucket", bucket]


def build_list_repos(endpoint: str, tiny: Path, home: Path, tools: list[str]) -> tuple[str, str]:
    """Buckets ``list-ours`` and ``list-restic`` (of ``tools``), each a repository of LISTED
    snapshots of the tiny DB ``tiny``, written straight to moto (not through the proxy): ours by
    this checkout's library in one process, restic's by LISTED backups."""
    home.mkdir(parents=True, exist_ok=True)
    ours, theirs = "list-ours", "list-restic"
    if "ours" in tools:
        _list_repo_ours(endpoint, new_bucket(endpoint, ours), tiny, home)
    if "restic" in tools:
        restic = Restic(endpoint, new_bucket(endpoint, theirs), home)
        restic.init()
        for _ in range(LISTED):
            subprocess.run(restic.backup(tiny), env=restic.env, check=True, capture_output=True)
    return ours, theirs


def _list_repo_ours(endpoint: str, ours: str, tiny: Path, home: Path) -> None:
    code = (
        "import sys\n"
        "from snapshot.create.pipeline import create_snapshot\n"
        "from snapshot.repo.repository import Repository\n"
        "from snapshot.storage import StoreOptions\n"
        f"repo = Repository.open('s3://{ours}/repo', StoreOptions(endpoint_url={endpoint!r}), create=True)\n"
        f"for _ in range({LISTED}):\n"
        f"    create_snapshot(repo, {str(tiny)!r}, use_cache=False)\n"
    )
    run([sys.executable, "-c", code], env=aws_env(home, {"PYTHONPATH": str(BENCH.parent)}),
        cwd=home).check("building the repository of 100 snapshots")
