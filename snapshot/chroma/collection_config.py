"""Reading a collection's configuration out of what Chroma stored in ``collections``: the
distance space, the HNSW parameters and the embedding function's name, whichever chromadb
wrote it. Pure functions over the stored JSON strings; anything unreadable is left out.

Where chromadb keeps it:
  * 1.5: ``schema_str``, under ``keys["#embedding"].float_list.vector_index.config``
    (``config_json_str`` is ``{}``);
  * 1.0 to 1.4: ``config_json_str`` = ``{"hnsw": {"space": ...}, "embedding_function": {...}}``;
  * 0.5 and 0.6: ``config_json_str`` = ``{"hnsw_configuration": {"space": ...}, ...}``;
  * before: only the collection metadata's ``hnsw:*`` keys (``hnsw:space``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from snapshot.format.provenance import CollectionConfig, MetaValue

#: HNSW parameters worth recording (the rest are per-process tuning: num_threads, batch_size).
HNSW_KEYS = ("ef_construction", "ef_search", "max_neighbors", "M", "resize_factor", "sync_threshold")


def _json(raw: object) -> dict[str, Any]:
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _ef_name(ef: Any) -> str | None:
    if not isinstance(ef, dict):
        return None
    name = ef.get("name")
    if isinstance(name, str):
        return name
    kind = ef.get("type")
    return kind if isinstance(kind, str) else None


def _numbers(d: Any) -> dict[str, int | float]:
    if not isinstance(d, dict):
        return {}
    return {k: v for k, v in d.items()
            if k in HNSW_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _from_legacy_metadata(metadata: Mapping[str, MetaValue]) -> CollectionConfig:
    space = metadata.get("hnsw:space")
    hnsw: dict[str, int | float] = {}
    for key in HNSW_KEYS:
        value = metadata.get(f"hnsw:{key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            hnsw[key] = value
    if "M" in hnsw:
        hnsw["max_neighbors"] = hnsw.pop("M")
    return CollectionConfig(space if isinstance(space, str) else None, hnsw, None)


def configuration(config_json: object, schema_json: object,
                  metadata: Mapping[str, MetaValue]) -> CollectionConfig:
    """The configuration a collection was made with, from its ``config_json_str`` and
    ``schema_str`` columns (either may be NULL or absent) and its metadata."""
    schema, config = _json(schema_json), _json(config_json)
    vector = _dig(schema, "keys", "#embedding", "float_list", "vector_index", "config")
    if isinstance(vector, dict):
        hnsw = _numbers(vector.get("hnsw"))
        space = vector.get("space")
        return CollectionConfig(space if isinstance(space, str) else None, hnsw,
                                _ef_name(vector.get("embedding_function")))
    hnsw_raw = config.get("hnsw") or config.get("hnsw_configuration")
    if isinstance(hnsw_raw, dict):
        space = hnsw_raw.get("space")
        numbers = _numbers(hnsw_raw)
        if "M" in numbers:
            numbers["max_neighbors"] = numbers.pop("M")
        return CollectionConfig(space if isinstance(space, str) else None, numbers,
                                _ef_name(config.get("embedding_function")))
    return _from_legacy_metadata(metadata)
