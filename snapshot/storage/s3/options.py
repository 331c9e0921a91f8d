"""The options of an S3 repository and their checks; no boto3 here (the CLI and the Python API
build these without importing it)."""

from __future__ import annotations

from dataclasses import dataclass

from snapshot.errors import UsageError
from snapshot.storage.s3.classes import DEFAULT_STORAGE_CLASS

#: Server-side encryption choices (``none`` for stores that refuse any).
SSE_CHOICES = ("AES256", "aws:kms", "none")
DEFAULT_SSE = "AES256"
#: botocore's request/response checksum modes.
CHECKSUM_MODES = ("when_supported", "when_required")


@dataclass(frozen=True)
class S3Options:
    """Options for an S3 store; a local folder ignores them (``snapshot.storage.StoreOptions``).

    ``None`` means "boto3's standard chain decides" (profile, region, endpoint from the
    environment or ~/.aws). ``sse`` is ``"AES256"``, ``"aws:kms"`` or ``"none"``.
    ``checksum`` is botocore's request/response checksum mode: ``"when_supported"`` (the
    default) or ``"when_required"`` for stores that reject flexible checksums.
    ``storage_class`` is the class of packs (see :mod:`snapshot.storage.s3.classes`).
    """

    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str = DEFAULT_STORAGE_CLASS
    sse: str = DEFAULT_SSE
    sse_kms_key_id: str | None = None
    checksum: str | None = None
    max_concurrency: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    #: Tries per request, botocore's and our own for bodies cut off mid-read (a restore must
    #: finish on a network that drops 5-10% of responses).
    max_attempts: int = 10


def sse_args(options: S3Options) -> dict[str, str]:
    """The server-side encryption parameters every PutObject carries; UsageError for a bad
    choice."""
    sse = options.sse.strip()
    if sse not in ("AES256", "aws:kms") and sse.lower() != "none":
        raise UsageError(f"unknown server-side encryption {options.sse!r} (use AES256, aws:kms or none)")
    if options.sse_kms_key_id and sse != "aws:kms":
        raise UsageError("--sse-kms-key-id needs --sse aws:kms")
    if sse.lower() == "none":
        return {}
    args = {"ServerSideEncryption": sse}
    if options.sse_kms_key_id:
        args["SSEKMSKeyId"] = options.sse_kms_key_id
    return args


def check_checksum_mode(options: S3Options) -> None:
    if options.checksum not in (None, *CHECKSUM_MODES):
        raise UsageError(f"unknown checksum mode {options.checksum!r} (use when_supported or when_required)")
