"""Hostile bytes where chroma-snapshot expects an id map, a manifest, a repository config or a
chunk table: every one becomes one of the project's errors (SnapshotError), never a crash,
a RecursionError, a MemoryError or another exception. Fuzzed with hypothesis, then end to end:
a hostile index_metadata.pickle in a source (create, exit 6) and in a snapshot (restore and
check --read-data, exit 4), each leaving nothing behind."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import tree_digest
from conftest import create_snapshot, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot.chroma import idmap
from snapshot.chroma.consistency import verify_dir
from snapshot.errors import IntegrityError, SnapshotError
from snapshot.format import layout
from snapshot.format.chunk_tables import encode_table, parse_table
from snapshot.format.crypto import parse_key_file
from snapshot.format.manifest import dumps, parse_config, parse_manifest
from snapshot.repo.repository import Repository

MILLION = 1_000_000
FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ id maps as chromadb writes them


def _maps(n: int) -> dict[str, Any]:
    ids = [f"doc-{i}" for i in range(n)]
    return {"dimensionality": 64, "total_elements_added": n, "max_seq_id": None,
            "id_to_label": {k: i + 1 for i, k in enumerate(ids)},
            "label_to_id": {i + 1: k for i, k in enumerate(ids)}}


class _PersistentData:
    """Pickled under chromadb's name (older chromadb pickled this class)."""


class _LegacyPickler(pickle._Pickler):  # type: ignore[misc]
    """Writes _PersistentData as chromadb's class without importing chromadb (and hnswlib)."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if self.proto >= 4:
            self.save("chromadb.segment.impl.vector.local_persistent_hnsw")
            self.save("PersistentData")
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + b"chromadb.segment.impl.vector.local_persistent_hnsw\n"
                       b"PersistentData\n")
        self.memoize(obj)


def _legacy(n: int, proto: int) -> bytes:
    obj = _PersistentData()
    obj.__dict__.update(_maps(n), max_seq_id=2**40 + 7)
    buf = io.BytesIO()
    _LegacyPickler(buf, proto).dump(obj)
    return buf.getvalue()


def _unmemoized(n: int) -> bytes:
    """The layout chromadb >= 1.0 writes: protocol 3, no memo."""
    buf = io.BytesIO()
    p = pickle.Pickler(buf, 3)
    p.fast = True
    p.dump(_maps(n))
    return buf.getvalue()


SEEDS = {
    "chromadb 1.x": _unmemoized(40),
    "dict, protocol 5": pickle.dumps(_maps(40), 5),
    "PersistentData, protocol 5": _legacy(40, 5),
    "PersistentData, protocol 2": _legacy(40, 2),
}

#: Shapes that built (or would build) something huge or endlessly nested, or that run code.
HOSTILE = {
    "tuple a million deep as a dict key": b"\x80\x04}(" + b"(" * MILLION + b")" + b"t" * MILLION + b"K\x01u.",
    "tuple a million deep": b"\x80\x04" + b"(" * MILLION + b")" + b"t" * MILLION + b".",
    "TUPLE1 a million times": b"\x80\x04)" + b"\x85" * MILLION + b".",
    "a million lists": b"\x80\x04" + b"]" * MILLION + b"a" * (MILLION - 1) + b".",
    "lists nested through the memo": b"\x80\x04]\x94" + b"]\x94h\x00a" * 10_000 + b".",
    "a list holding itself": b"\x80\x04]\x94h\x00a.",
    "a memo index of 2**31": b"\x80\x04Nr\xff\xff\xff\x7f.",
    "a string of 2**64 bytes": b"\x80\x04\x8d" + b"\xff" * 8 + b".",
    "a frame of 2**64 bytes": b"\x80\x04\x95" + b"\xff" * 8 + b"N.",
    "an integer of a million digits": b"\x80\x02L" + b"9" * MILLION + b"L\n.",
    "os.system": b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.",
    "empty": b"",
}


def _assert_id_map_or_error(data: bytes) -> None:
    try:
        ids, seq = idmap.id_map(data)
    except SnapshotError:
        return
    assert isinstance(ids, dict) and all(type(k) is str for k in ids)
    assert isinstance(seq, int) and seq >= 0


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_the_id_maps_chromadb_writes_are_read_as_pickle_reads_them(name: str) -> None:
    ids, seq = idmap.id_map(SEEDS[name])
    assert ids == _maps(40)["id_to_label"]
    assert seq == (2**40 + 7 if name.startswith("PersistentData") else 0)


def test_a_real_index_metadata_pickle_reads_as_pickle_reads_it(chroma_template: Path) -> None:
    found = sorted(chroma_template.glob(f"*/{idmap.PICKLE}"))
    assert found
    for p in found:
        assert idmap.read_id_map(p)[0] == pickle.loads(p.read_bytes())["id_to_label"]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickles_are_refused_before_anything_is_built(name: str) -> None:
    with pytest.raises(IntegrityError, match=r"seg/index_metadata\.pickle"):
        idmap.id_map(HOSTILE[name], "seg/index_metadata.pickle")


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"]))
def test_random_bytes_are_an_id_map_or_an_integrity_error(data: bytes, proto: bytes) -> None:
    _assert_id_map_or_error(proto + data)


_OPCODES = [bytes([b]) for b in range(256)]


@st.composite
def _mutated_pickles(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(sorted(SEEDS.values()))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "opcode", "repeat", "truncate"]))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 32))]
        elif kind == "opcode":
            data[at:at] = draw(st.sampled_from(_OPCODES)) * draw(st.integers(1, 5000))
        elif kind == "repeat":
            piece = data[at:at + draw(st.integers(1, 8))]
            data[at:at] = piece * draw(st.integers(1, 2000))
        else:
            del data[at:]
    return bytes(data)


@FUZZ
@given(_mutated_pickles())
def test_mutated_id_maps_are_an_id_map_or_an_integrity_error(data: bytes) -> None:
    _assert_id_map_or_error(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(9, 200_000), st.sampled_from([b"(", b"]", b"}", b")", b"(]"]))
def test_deep_nesting_of_any_depth_is_refused(depth: int, opener: bytes) -> None:
    closer = {b"(": b"t", b"]": b"a", b"}": b"u", b")": b"\x85", b"(]": b"e"}[opener]
    with pytest.raises(IntegrityError, match="not a chromadb id map"):
        idmap.id_map(b"\x80\x04" + opener * depth + closer * depth + b".")


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


@pytest.mark.slow  # 2000 examples; the literal cases are in tests/format/ and test_untrusted_metadata.py
@FUZZ
@given(st.data())
def test_mutated_manifests_parse_or_raise_snapshot_errors(
    samples: dict[str, Any], data: st.DataObject
) -> None:
    raw = data.draw(_mutated_json(samples[data.draw(st.sampled_from(["manifest", "manifest v1"]))]))
    _only_snapshot_errors(lambda: parse_manifest(raw, "manifest x"))


@pytest.mark.slow  # 2000 examples; the literal cases are in tests/format/ and test_untrusted_metadata.py
@FUZZ
@given(st.data())
def test_mutated_configs_parse_or_raise_snapshot_errors(samples: dict[str, Any], data: st.DataObject) -> None:
    raw = data.draw(_mutated_json(samples["config"]))
    _only_snapshot_errors(lambda: parse_config(raw))


@pytest.mark.slow  # 2000 examples; the literal cases are in tests/format/ and test_untrusted_metadata.py
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


# ------------------------------------------------------------------ end to end


HOSTILE_PICKLE = HOSTILE["tuple a million deep as a dict key"]


def _vector_segment(db: Path, collection: str) -> str:
    with sqlite3.connect(db / "chroma.sqlite3") as conn:
        (seg,) = conn.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE c.name = ? AND s.scope = 'VECTOR'", (collection,)).fetchone()
    return str(seg)


def _run(repo: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process: a crash there fails the test instead of killing pytest."""
    return subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(repo), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def _error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The one error line (warnings may come before it), after asserting the exit code."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and lines[-1].startswith("chroma-snapshot: error: "), proc.stderr
    assert all(line.startswith("chroma-snapshot: warning: ") for line in lines[:-1]), proc.stderr
    return lines[-1]


def _leftovers(repo: Path) -> list[str]:
    cache = Path(os.environ["CHROMA_SNAPSHOT_CACHE"])
    staged = [p.name for p in cache.rglob(".*") if p.is_dir()] if cache.exists() else []
    return staged + [p.name for p in (repo / "locks").glob("*")]


def test_a_hostile_pickle_in_the_source_is_a_source_error(chroma_dir: Path, repo_path: Path) -> None:
    create_snapshot(repo_path, chroma_dir)
    seg = _vector_segment(chroma_dir, "docs")
    (chroma_dir / seg / idmap.PICKLE).write_bytes(HOSTILE_PICKLE)
    line = _error_line(_run(repo_path, "create", chroma_dir), 6)
    assert f"{seg}/{idmap.PICKLE}" in line and "collection 'docs'" in line, line
    assert len(list((repo_path / "snapshots").glob("*.json"))) == 1
    assert _leftovers(repo_path) == []


@pytest.fixture
def forged(chroma_dir: Path, repo_path: Path) -> Callable[..., tuple[str, str]]:
    """A snapshot whose capture was called consistent although ``damage`` was done to it
    after the checks (as a repository altered after the fact would hold): (id, segment)."""

    def make(damage: Callable[[Path], None]) -> tuple[str, str]:
        sound = verify_dir(chroma_dir)
        seg = _vector_segment(chroma_dir, "docs")
        damage(chroma_dir / seg)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("snapshot.create.pipeline.verify_dir", lambda *_a, **_k: sound)
            sid = create_snapshot(repo_path, chroma_dir)
        return sid, seg

    return make


def _target(tmp_path: Path) -> Path:
    target = tmp_path / "restore-here" / "t"
    target.mkdir(parents=True)
    (target / "chroma.sqlite3").write_text("the app's current DB")
    return target


def test_a_hostile_pickle_in_a_snapshot_fails_restore_and_check(
    forged: Callable[..., tuple[str, str]], repo_path: Path, tmp_path: Path
) -> None:
    sid, seg = forged(lambda folder: (folder / idmap.PICKLE).write_bytes(HOSTILE_PICKLE))
    target = _target(tmp_path)
    before = tree_digest(target)
    line = _error_line(_run(repo_path, "restore", sid, target, "--force"), 4)
    assert "consistency check" in line and f"{seg}/{idmap.PICKLE}" in line, line
    assert tree_digest(target) == before
    assert [p.name for p in target.parent.iterdir()] == ["t"]  # nothing left beside the target
    assert _leftovers(repo_path) == []
    proc = _run(repo_path, "check", "--read-data", "--json")
    assert proc.returncode == 4, proc.stderr[-2000:]
    problems = [p for p in json.loads(proc.stdout)["problems"] if p["kind"] == "consistency"]
    assert [(p["snapshot"], p["path"]) for p in problems] == [(sid, f"{seg}/{idmap.PICKLE}")], proc.stdout
    assert "not a chromadb id map" in problems[0]["message"] and sid in problems[0]["message"]
    assert _run(repo_path, "check").returncode == 0  # structure alone cannot see it
    assert _leftovers(repo_path) == []


def _truncate_header(folder: Path) -> None:
    h = folder / "header.bin"
    h.write_bytes(h.read_bytes()[:40])


def _short_length(folder: Path) -> None:
    f = folder / "length.bin"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _too_many_ids(folder: Path) -> None:
    p = folder / idmap.PICKLE
    data = pickle.loads(p.read_bytes())
    for i in range(10):
        data["id_to_label"][f"extra-{i}"] = 10_000 + i
        data["label_to_id"][10_000 + i] = f"extra-{i}"
    p.write_bytes(pickle.dumps(data))


def _no_pickle(folder: Path) -> None:
    (folder / idmap.PICKLE).unlink()


@pytest.mark.parametrize(("damage", "says"), [
    (_truncate_header, "header.bin is 40 bytes"),
    (_short_length, "length.bin is"),
    (_too_many_ids, "maps 3010 ids, the index holds 3000"),
    (_no_pickle, "3000 elements in the index but no index_metadata.pickle"),
])
def test_check_read_data_runs_the_segment_checks_restore_runs(
    forged: Callable[..., tuple[str, str]], repo_path: Path, tmp_path: Path, damage: Callable[[Path], None],
    says: str,
) -> None:
    sid, seg = forged(damage)
    res = run_cli("--repo", repo_path, "restore", sid, tmp_path / "t")
    assert res.code == 4 and says in res.stderr and seg in res.stderr, res.stderr
    res = run_cli("--repo", repo_path, "check", "--read-data")
    assert res.code == 4, res.stderr
    assert says in res.stderr and sid in res.stderr and seg in res.stderr, res.stderr
    assert res.stdout.count("[consistency]") == 1, res.stdout
    assert run_cli("--repo", repo_path, "check", "--read-data-subset", "1/1").code == 0


def test_check_read_data_passes_sound_snapshots_and_skips_inconsistent_ones(
    chroma_dir: Path, repo_path: Path
) -> None:
    create_snapshot(repo_path, chroma_dir)
    _truncate_header(chroma_dir / _vector_segment(chroma_dir, "notes"))
    create_snapshot(repo_path, chroma_dir, "--allow-inconsistent")  # restore skips its checks too
    res = run_cli("--repo", repo_path, "check", "--read-data", "--json")
    assert res.code == 0, res.stderr
    assert res.json()["files_verified"] > 0 and res.json()["problems"] == []
