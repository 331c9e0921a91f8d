"""A collection's provenance as a manifest records it: its metadata and configuration (distance
space, HNSW parameters, the name of the embedding function it was created with). No I/O.

Both are optional in a manifest (snapshots taken before they were recorded load without them)
and untrusted on reading: :func:`parse_metadata` and :func:`parse_configuration` accept only
the shapes written here, with bounded sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from snapshot.errors import IntegrityError

#: A metadata value as Chroma stores a collection's (str, int, float, bool; None for a key
#: whose value it could not read).
MetaValue = str | int | float | bool | None

#: No collection's metadata or HNSW parameters in a manifest may hold more keys than this.
MAX_KEYS = 1024
#: Nor a key or a string value longer than this.
MAX_TEXT = 1 << 16


@dataclass(frozen=True)
class CollectionConfig:
    """What Chroma was told when the collection was made: ``space`` (l2, cosine, ip), the HNSW
    parameters (ef_construction, max_neighbors, ...), and ``embedding_function``: its name
    (``default``, ``openai``, ...; ``legacy`` for one Chroma did not record; None: none)."""

    space: str | None = None
    hnsw: dict[str, int | float] = field(default_factory=dict)
    embedding_function: str | None = None

    def describe(self) -> str:
        """One line for people: ``space cosine, ef_construction 100, ...; embedding function x``."""
        parts = [f"space {self.space or '?'}"] + [f"{k} {v}" for k, v in sorted(self.hnsw.items())]
        return ", ".join(parts) + f"; embedding function {self.embedding_function or '-'}"


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise IntegrityError(f"{what} is not a string of at most {MAX_TEXT} characters")
    return value


def parse_metadata(raw: Any, what: str) -> dict[str, MetaValue] | None:
    """A collection's recorded metadata (None: not recorded)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) > MAX_KEYS:
        raise IntegrityError(f"{what} is not an object of at most {MAX_KEYS} keys")
    out: dict[str, MetaValue] = {}
    for key, value in raw.items():
        _text(key, f"{what} key")
        if isinstance(value, str):
            _text(value, f"{what}.{key}")
        elif value is not None and not isinstance(value, (int, float, bool)):
            raise IntegrityError(f"{what}.{key} has the wrong type")
        out[key] = value
    return out


def parse_configuration(raw: Any, what: str) -> CollectionConfig | None:
    """A collection's recorded configuration (None: not recorded)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise IntegrityError(f"{what} is not an object")
    space = raw.get("space")
    ef = raw.get("embedding_function")
    hnsw = raw.get("hnsw", {})
    if space is not None:
        _text(space, f"{what}.space")
    if ef is not None:
        _text(ef, f"{what}.embedding_function")
    if not isinstance(hnsw, dict) or len(hnsw) > MAX_KEYS:
        raise IntegrityError(f"{what}.hnsw is not an object of at most {MAX_KEYS} keys")
    for key, value in hnsw.items():
        _text(key, f"{what}.hnsw key")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise IntegrityError(f"{what}.hnsw.{key} is not a number")
    return CollectionConfig(space, dict(hnsw), ef)
