"""The S3 backend: a repository under ``s3://bucket/prefix``; the only package that imports boto3.

One job per module: :mod:`.options` the options and their checks, :mod:`.classes` the storage
classes and what they bill, :mod:`.location` the URL, :mod:`.client` building the boto3 clients,
:mod:`.translate` turning every boto3/botocore failure into a :mod:`snapshot.errors` class,
:mod:`.store` the :class:`S3Store` itself.

Importing this package (or its options) does not import boto3: :class:`S3Store` and
:func:`translate_error` load on first use, so a local repository never pays for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from snapshot.storage.s3.classes import MIN_BILLED_SECONDS, MIN_BILLED_SIZE
from snapshot.storage.s3.location import parse_s3_url
from snapshot.storage.s3.options import S3Options

if TYPE_CHECKING:
    from snapshot.storage.base import Store
    from snapshot.storage.s3.store import S3Store
    from snapshot.storage.s3.translate import translate_error

__all__ = [
    "MIN_BILLED_SECONDS", "MIN_BILLED_SIZE", "S3Options", "S3Store", "open_location", "parse_s3_url",
    "translate_error",
]

_LAZY = {"S3Store": "snapshot.storage.s3.store", "translate_error": "snapshot.storage.s3.translate"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_location(location: str, options: S3Options) -> Store:
    """The store of an ``s3://bucket/prefix`` location (the backend registry's entry point)."""
    from snapshot.storage.s3.store import S3Store

    return S3Store.from_url(location, options)
