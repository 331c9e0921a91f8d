"""Where an S3 repository is: its ``s3://bucket/prefix`` URL and its endpoint, as messages may
show them (never with credentials)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from snapshot.errors import UsageError


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; the prefix may be empty."""
    if not url.startswith("s3://"):
        raise UsageError(f"not an s3:// URL: {url}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if "@" in bucket:
        # Do not echo the URL: it may hold a secret.
        raise UsageError("credentials in an s3:// URL are not supported; use a profile or AWS_* variables")
    if not bucket or any(c in bucket for c in ":?#") or any(c in prefix for c in "?#"):
        raise UsageError(f"bad S3 repository URL {url!r}: expected s3://bucket/prefix")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(f"bad S3 repository prefix in {url!r}: empty, '.' or '..' component")
    return bucket, prefix


def safe_endpoint(url: str | None) -> str:
    """The endpoint for messages, without any user:password@ part; never raises, even for
    a URL that does not parse (a bad port, an unclosed IPv6 bracket)."""
    if not url:
        return "the default AWS endpoint"
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        netloc, slash, path = rest.partition("/")
        return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{path}".split("?")[0].split("#")[0]
