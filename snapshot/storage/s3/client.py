"""Building the boto3 clients of an S3 store from its options.

Two clients share one session: the main one, with the options' retries and timeouts, and a
probe that tries twice with short timeouts, for the one ``HeadBucket`` a store makes before its
first request (a refused port then fails in well under a second, a black-holed one in about six,
measured, whatever the main client is given). Both get a hook that turns a non-streaming
body shorter than its Content-Length into a 500, so botocore's retries take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import InvalidRegionError

from snapshot.errors import UsageError
from snapshot.storage.link import HIGH
from snapshot.storage.s3.location import safe_endpoint
from snapshot.storage.s3.options import S3Options, check_checksum_mode
from snapshot.storage.s3.translate import AWS_ERRORS, TRUNCATED_CODE, translate_error


@dataclass(frozen=True)
class Clients:
    main: Any
    probe: Any


def client_config(options: S3Options, *, probe: bool = False) -> Any:
    """The main client's config, or the probe's: two tries, 3 s to connect, 10 s to answer."""
    check_checksum_mode(options)
    kwargs: dict[str, Any] = {
        # botocore reads "max_attempts" here as retries after the first try; this is the total.
        "retries": {"mode": "standard", "total_max_attempts": 2 if probe else options.max_attempts},
        "connect_timeout": min(options.connect_timeout, 3.0) if probe else options.connect_timeout,
        "read_timeout": min(options.read_timeout, 10.0) if probe else options.read_timeout,
        # Parallel puts, each possibly multipart with its own threads, and as many reads as the
        # link's gauge may keep in flight (snapshot/storage/link.py) share this pool.
        "max_pool_connections": max(10, 2 * options.max_concurrency, HIGH + 8),
    }
    if options.checksum:
        kwargs["request_checksum_calculation"] = options.checksum
        kwargs["response_checksum_validation"] = options.checksum
    return Config(**kwargs)


def transfer_config(options: S3Options, *, multipart_threshold: int, multipart_chunksize: int) -> Any:
    """How a put at or above ``multipart_threshold`` is split into parts and sent."""
    return TransferConfig(
        multipart_threshold=multipart_threshold,
        multipart_chunksize=multipart_chunksize,
        max_concurrency=max(1, options.max_concurrency),
        preferred_transfer_client="classic",
    )


def build_clients(options: S3Options, url: str, bucket: str) -> Clients:
    """The main and probe clients for the repository at ``url``; a UsageError for a bad
    region or endpoint, the translated error for anything else boto3 refuses."""
    try:
        session = boto3.session.Session(profile_name=options.profile, region_name=options.region)
        endpoint = options.endpoint_url  # None: boto3 reads AWS_ENDPOINT_URL(_S3) itself
        main = session.client("s3", endpoint_url=endpoint, config=client_config(options))
        probe = session.client("s3", endpoint_url=endpoint, config=client_config(options, probe=True))
    except InvalidRegionError as exc:
        raise UsageError(f"bad AWS region {options.region!r}") from exc
    except ValueError as exc:  # botocore's "Invalid endpoint: ..." or urllib's "Invalid IPv6 URL"
        where = (
            safe_endpoint(options.endpoint_url)
            if options.endpoint_url
            else "set by AWS_ENDPOINT_URL(_S3) or the AWS config file"
        )
        raise UsageError(f"bad S3 endpoint URL {where}: expected http(s)://host[:port]") from exc
    except AWS_ERRORS as exc:
        raise translate_error(exc, op="open", what=url, bucket=bucket) from exc
    for client in (main, probe):
        client.meta.events.register("before-parse.s3", fail_short_body)
    return Clients(main, probe)


def known_storage_classes(client: Any) -> list[str]:
    """The storage classes of botocore's S3 service model."""
    known: list[str] = client.meta.service_model.shape_for("StorageClass").enum
    return known


def fail_short_body(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
    """A ``before-parse`` hook: a non-streaming body shorter than its Content-Length is a 500.

    botocore reads these bodies without enforcing the length and, like this hook, turns a
    200 whose XML is cut off into a 500 so its retries take over; but a body cut to nothing
    would parse as an empty (say, ListObjectsV2) result. HEAD answers carry no body.
    """
    body = response_dict.get("body")
    length = response_dict.get("headers", {}).get("content-length")
    if operation_model.http.get("method") == "HEAD" or not isinstance(body, bytes) or not length:
        return
    if length.isdigit() and len(body) < int(length):
        response_dict["status_code"] = 500
        response_dict["body"] = (
            f"<Error><Code>{TRUNCATED_CODE}</Code><Message>{len(body)} of {length} bytes"
            "</Message></Error>"
        ).encode()
