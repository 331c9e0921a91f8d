"""Hermetic AWS environment and a real moto S3 server for the tests.

Imported by conftest.py with ``from s3_fixtures import *``. The server is moto's own HTTP
server in a subprocess on a port the OS picks (``-p 0``, read back from its startup line), so
every S3 request goes through botocore, HTTP and moto's S3 implementation; nothing is mocked
in-process. It is reset before each test that asks for ``s3_endpoint``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from snapshot.storage import StoreOptions

__all__ = [
    "_hermetic_aws_env",
    "_moto_admin_client",
    "moto_server",
    "s3_endpoint",
    "s3_repo_url",
    "s3_client",
    "s3_options",
    "SEED_PREFIX",
]

#: A seed-style deep prefix: repositories in the tests live this far down a bucket.
SEED_PREFIX = "processed/informatika/kelas_10/chromadb"

_STARTUP = re.compile(r"Running on https?://127\.0\.0\.1:(\d+)")
_START_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _hermetic_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real AWS settings reach a test: fake keys, no config files, no instance metadata."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CHROMA_SNAPSHOT_REPO", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # Without this botocore asks 169.254.169.254 for credentials when the keys are removed,
    # which is slow everywhere and finds real credentials on a cloud CI runner.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"moto server could not be started (CI is set, so this fails): {reason}")
    pytest.skip(f"moto server could not be started: {reason}")


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _MotoServer:
    """One moto server process shared by every fixture definition that imports this module."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def acquire(self, log_dir: Path) -> str:
        with self.lock:
            if self.proc is None:
                self._start(log_dir)
            self.users += 1
            return self.endpoint

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0 and self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                self.proc = None

    def _start(self, log_dir: Path) -> None:
        log_path = log_dir / "moto-server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # The log file, not a pipe: moto logs every request and would block on a full pipe.
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            except OSError as exc:
                _unavailable(f"cannot run {sys.executable} -m moto.server: {exc}")
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            found = _STARTUP.search(log_path.read_text(errors="replace"))
            if found:
                endpoint = f"http://127.0.0.1:{found.group(1)}"
                if _answers(endpoint):
                    self.proc, self.endpoint = proc, endpoint
                    return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        tail = log_path.read_text(errors="replace")[-800:]
        _unavailable(f"no answer within {_START_TIMEOUT:.0f}s (exit code {proc.returncode}): {tail}")


_SERVER = _MotoServer()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto S3 server running as a subprocess for the whole session."""
    endpoint = _SERVER.acquire(tmp_path_factory.mktemp("moto"))
    try:
        yield endpoint
    finally:
        _SERVER.release()


@pytest.fixture
def s3_endpoint(moto_server: str, _hermetic_aws_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto endpoint, emptied for this test and set as AWS_ENDPOINT_URL."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200, f"moto reset answered {resp.status}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


def s3_options(endpoint: str, **overrides: Any) -> StoreOptions:
    """StoreOptions for the moto server: explicit endpoint, short timeouts, few retries."""
    settings: dict[str, Any] = {
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "connect_timeout": 2.0,
        "read_timeout": 20.0,
        "max_attempts": 2,
    }
    settings.update(overrides)
    return StoreOptions(**settings)


@pytest.fixture(scope="session")
def _moto_admin_client(moto_server: str) -> Any:
    # Explicit fake keys: this client must not depend on any one test's environment.
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client("s3", endpoint_url=moto_server)


@pytest.fixture
def s3_client(s3_endpoint: str, _moto_admin_client: Any) -> Any:
    """A plain boto3 client on the moto server, to look at objects behind the store's back."""
    return _moto_admin_client


@pytest.fixture
def s3_repo_url(s3_client: Any) -> str:
    """``s3://<fresh bucket>/<SEED_PREFIX>`` with the bucket created on the moto server."""
    bucket = f"snap-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/{SEED_PREFIX}"
