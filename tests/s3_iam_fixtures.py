"""A second moto server, with IAM enforced, and the README's three policies (backup,
restore-only, admin) as users of it.

Enforcement is server-wide, so these tests get their own moto process (the shared one of
s3_fixtures.py stays open). Per test: the server is reset with enforcement off, the bucket, the
users, their policies (the JSON blocks of README's "Securing the bucket", placeholders filled in)
and access keys are created, then ``/moto-api/reset-auth 0`` turns enforcement on for every
request after. Moto's deviations from AWS, added to the README's policies here only: it checks
``s3:ListObjectsV2`` and ``s3:HeadObject`` as actions of their own (AWS checks them as
``s3:ListBucket`` and ``s3:GetObject``).
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from s3_fixtures import SEED_PREFIX, _MotoServer

README = Path(__file__).resolve().parent.parent / "README.md"
ROLES = ("backup", "restore-only", "admin")
_POLICY = re.compile(r"<!-- policy: ([a-z-]+) -->\s*```json\n(.*?)```", re.S)
#: What moto checks on top of what AWS does (see the module docstring).
_MOTO_EXTRA = {"s3:ListBucket": "s3:ListObjectsV2", "s3:GetObject": "s3:HeadObject"}

_IAM_SERVER = _MotoServer()


def readme_policies(bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The README's policies by role, for ``bucket`` and ``prefix``."""
    found = dict(_POLICY.findall(README.read_text(encoding="utf-8")))
    assert set(found) == set(ROLES), f"README has policies for {sorted(found)}"
    return {role: json.loads(text.replace("BUCKET", bucket).replace("PREFIX", prefix))
            for role, text in found.items()}


def for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` with moto's extra action names beside the ones AWS checks."""
    out = json.loads(json.dumps(policy))
    for st in out["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else list(st["Action"])
        st["Action"] = actions + [_MOTO_EXTRA[a] for a in actions if a in _MOTO_EXTRA]
    return out


def _post(endpoint: str, path: str, body: bytes) -> None:
    # text/plain: urllib's default form type would leave the body to Flask's form parser
    req = urllib.request.Request(f"{endpoint}{path}", method="POST", data=body,
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200, f"{path} answered {resp.status}"


@dataclass
class Roles:
    endpoint: str
    url: str
    bucket: str
    prefix: str
    keys: dict[str, tuple[str, str]]

    def use(self, monkeypatch: pytest.MonkeyPatch, role: str) -> None:
        """Make ``role``'s credentials the ones the next commands use."""
        key, secret = self.keys[role]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)


@pytest.fixture(scope="session")
def iam_moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    endpoint = _IAM_SERVER.acquire(tmp_path_factory.mktemp("moto-iam"))
    try:
        yield endpoint
    finally:
        _IAM_SERVER.release()


@pytest.fixture
def iam_roles(iam_moto_server: str, _hermetic_aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Roles]:
    """A fresh bucket on the IAM-enforcing server and the README's three roles as users."""
    import boto3

    endpoint = iam_moto_server
    _post(endpoint, "/moto-api/reset-auth", b"inf")
    _post(endpoint, "/moto-api/reset", b"")
    session = boto3.session.Session(aws_access_key_id="setup", aws_secret_access_key="setup",
                                    region_name="us-east-1")
    bucket, prefix = f"iam-{uuid.uuid4().hex[:12]}", SEED_PREFIX
    session.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    iam = session.client("iam", endpoint_url=endpoint)
    keys = {}
    for role, policy in readme_policies(bucket, prefix).items():
        user = f"chroma-snapshot-{role}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=role, PolicyDocument=json.dumps(for_moto(policy)))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[role] = (key["AccessKeyId"], key["SecretAccessKey"])
    _post(endpoint, "/moto-api/reset-auth", b"0")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        yield Roles(endpoint, f"s3://{bucket}/{prefix}", bucket, prefix, keys)
    finally:
        _post(endpoint, "/moto-api/reset-auth", b"inf")
