"""Chroma's rule for collection names, checked before anything is written (chromadb 1.x refuses
the same names when it creates or renames a collection, only later and in a child process)."""

from __future__ import annotations

import ipaddress
import re

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a Chroma collection, or None if it can."""
    if not _NAME.fullmatch(name):
        return ("a collection name has 3-512 characters from [a-zA-Z0-9._-] and starts and ends "
                "with a letter or digit")
    if ".." in name:
        return "a collection name may not contain two consecutive periods"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return None
    return "a collection name may not be an IPv4 address"
