"""Hostile bytes where chroma-snapshot expects a manifest, a repository config or a chunk
table: every one becomes one of the project's errors (SnapshotError), never a RecursionError,
a ValueError or another exception. Fuzzed with hypothesis."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import create_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot import layout
from snapshot.crypto import parse_key_file
from snapshot.errors import IntegrityError, SnapshotError
from snapshot.manifest import dumps, parse_config, parse_manifest
from snapshot.repository import Repository
from snapshot.tables import encode_table, parse_table

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ manifests, configs, chunk tables


class _Samples(dict[str, Any]):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return "samples"


@pytest.fixture(scope="module")
def samples(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real manifest (format 2, and the same as format 1), repository config and chunk table."""
    tmp = tmp_path_factory.mktemp("samples")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHROMA_SNAPSHOT_CACHE", str(tmp / "cache"))
        repo_path = tmp / "repo"
        sid = create_snapshot(repo_path, chroma_template, "--chunk-size", "65536")
    raw = (repo_path / layout.snapshot_key(sid)).read_bytes()
    repo = Repository.open(repo_path)
    m = repo.get(sid)
    f = max(m.files, key=lambda f: f.chunk_count)
    chunks = repo.chunks(m, f)
    v1 = replace(m, format_version=1, files=tuple(replace(e, chunks=repo.chunks(m, e), table=None)
                                                   for e in m.files))
    return _Samples({"manifest": _Doc(raw), "manifest v1": _Doc(dumps(v1)),
                     "config": _Doc((repo_path / layout.CONFIG_KEY).read_bytes()),
                     "table": encode_table(chunks), "file": f, "chunk size": m.chunk_size})


_HUGE, _DEEP = "\x00huge\x00", "\x00deep\x00"
_SCALAR = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
           | st.sampled_from(["", "..", "/etc/passwd", "a/../b", "zstd", "gzip", "0" * 32, "f" * 64, "\ud800",
                              "20260101T000000-00000000", _HUGE, _DEEP]))
_JSON_VALUES = (_SCALAR | st.lists(_SCALAR, max_size=3)
                | st.dictionaries(st.text(max_size=8), _SCALAR, max_size=3))


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, (*at, k))


def _node(doc: Any, at: tuple[Any, ...]) -> Any:
    """The node at path ``at`` of ``doc``, or None if an earlier change removed it."""
    for k in at:
        found = (isinstance(doc, dict) and isinstance(k, str) and k in doc) or (
            isinstance(doc, list) and isinstance(k, int) and k < len(doc))
        if not found:
            return None
        doc = doc[k]
    return doc


class _Doc(bytes):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"<{len(self)} bytes of JSON>"


@st.composite
def _mutated_json(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` (a JSON document) with values replaced, keys removed, deep nesting or numbers
    too long to convert planted, then maybe its bytes cut or changed."""
    doc = json.loads(raw)
    paths = list(_paths(doc))
    for _ in range(draw(st.integers(1, 3))):
        at = paths[draw(st.integers(0, len(paths) - 1))]
        parent = _node(doc, at[:-1])
        key = at[-1] if at else None
        if isinstance(parent, dict) and key in parent and draw(st.booleans()):
            del parent[key]
        elif (isinstance(parent, dict) and isinstance(key, str)) or (
                isinstance(parent, list) and isinstance(key, int) and key < len(parent)):
            parent[key] = draw(_JSON_VALUES)
    text = json.dumps(doc)
    depth = draw(st.integers(1, 3000) | st.just(200_000))
    text = text.replace(json.dumps(_HUGE), "9" * draw(st.integers(4000, 6000)))
    text = text.replace(json.dumps(_DEEP), "[" * depth + "]" * depth)
    out = bytearray(text.encode("utf-8", "surrogatepass"))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(out)))
        out[at:at + draw(st.integers(0, 4))] = draw(st.binary(max_size=4))
    return bytes(out)


def _only_snapshot_errors(parse: Callable[[], object]) -> None:
    """Run ``parse``: any exception but a SnapshotError fails the test."""
    with contextlib.suppress(SnapshotError):
        parse()


@FUZZ
@given(st.data())
def test_mutated_manifests_parse_or_raise_snapshot_errors(
    samples: dict[str, Any], data: st.DataObject
) -> None:
    raw = data.draw(_mutated_json(samples[data.draw(st.sampled_from(["manifest", "manifest v1"]))]))
    _only_snapshot_errors(lambda: parse_manifest(raw, "manifest x"))


@FUZZ
@given(st.data())
def test_mutated_configs_parse_or_raise_snapshot_errors(samples: dict[str, Any], data: st.DataObject) -> None:
    raw = data.draw(_mutated_json(samples["config"]))
    _only_snapshot_errors(lambda: parse_config(raw))


@FUZZ
@given(st.data())
def test_mutated_chunk_tables_parse_or_raise_snapshot_errors(
    samples: dict[str, Any], data: st.DataObject
) -> None:
    lines = samples["table"].splitlines()
    at = data.draw(st.integers(0, len(lines) - 1))
    lines[at] = data.draw(_mutated_json(_Doc(lines[at])))
    raw = b"\n".join(lines) + b"\n"
    _only_snapshot_errors(lambda: parse_table(raw, samples["file"], samples["chunk size"], "snapshot x"))


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_are_no_manifest_config_or_table(samples: dict[str, Any], raw: bytes) -> None:
    _only_snapshot_errors(lambda: parse_manifest(raw))
    _only_snapshot_errors(lambda: parse_config(raw))
    _only_snapshot_errors(lambda: parse_table(raw, samples["file"], samples["chunk size"], "snapshot x"))
    _only_snapshot_errors(lambda: parse_key_file(raw, "k"))


def test_numbers_too_long_to_convert_are_integrity_errors(samples: dict[str, Any]) -> None:
    doc = samples["manifest"].replace(b'"chunk_size":65536', b'"chunk_size":' + b"9" * 5000)
    with pytest.raises(IntegrityError, match="not valid JSON"):
        parse_manifest(doc)
    with pytest.raises(IntegrityError, match="line 1 is not JSON"):
        parse_table(b'{"size":' + b"9" * 5000 + b"}\n" + samples["table"].split(b"\n", 1)[1],
                    samples["file"], samples["chunk size"], "snapshot x")
    with pytest.raises(IntegrityError, match="key k is not valid JSON"):
        parse_key_file(b'{"format_version":' + b"9" * 5000 + b"}", "k")
