"""``export SNAP --collection NAME [--format jsonl|parquet] OUT|-``: the records of one collection
of a snapshot, equal to the source's (embeddings bit for bit as float32), written whole or not
at all, streamed to stdout with `-`. The tests that read records with chromadb are marked slow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chroma_helpers import records_by_id, run_chroma
from conftest import create_snapshot, one_line_error, show_files

from snapshot.errors import StorageError
from snapshot.util import pausepoints

ROOT = Path(__file__).resolve().parents[2]
MIXED = {
    "ids": ["m-b", "m-a", "m-c", "m-d", "m-e", "m-f"],
    "documents": ["plain", None, "ünïcödé ✓\nsecond line", "", "quote \" and \\ backslash", "x"],
    "metadatas": [{"i": 1, "f": 0.1, "s": "x", "b": True}, None, {"arr": [1, 2, 3]}, {"sarr": ["a", "b"]},
                  {"big": 2**62, "neg": -1.5e-300}, {"flag": False}],
    "uris": ["s3://bucket/b", None, "file:///c", None, "https://e", None],
}


@pytest.fixture(scope="module")
def source(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A copy of the template plus a collection "mixed" (uris, missing documents and metadata,
    every metadata type, unicode), and a repository with one snapshot of it."""
    base = tmp_path_factory.mktemp("export")
    db = base / "vector_db"
    shutil.copytree(chroma_template, db)
    vectors = np.random.default_rng(7).standard_normal((len(MIXED["ids"]), 64)).astype("float32")
    run_chroma("add_records", db, name="mixed", embeddings=vectors.tolist(), metadata={"hnsw:space": "cosine"},
               **MIXED)
    repo = base / "snapshots"
    return db, repo, create_snapshot(repo, db, "--no-cache")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _as_source(rows: list[dict[str, Any]]) -> dict[str, tuple[bytes, Any, Any, Any]]:
    """Exported rows in the form of chroma_helpers.records: the embedding read as JSON numbers
    (float64) and cast to float32."""
    out = {}
    for r in rows:
        emb = np.asarray(r["embedding"], dtype=np.float64).astype(np.float32).tobytes()
        out[r["id"]] = (emb, r["document"], r["metadata"], r["uri"])
    return out


@pytest.mark.slow  # opens chromadb (in a child process)
@pytest.mark.parametrize("name", ["mixed", "docs"])
def test_jsonl_records_equal_the_collections_records(cli, source, tmp_path: Path, name: str) -> None:
    db, repo, sid = source
    out = tmp_path / f"{name}.jsonl"
    res = cli("--repo", repo, "export", sid, "--collection", name, out, "--json")
    assert res.code == 0, res.stderr
    rows = _jsonl(out)
    assert all(list(r) == ["id", "embedding", "document", "metadata", "uri"] for r in rows)
    expected = records_by_id(db, name)
    assert len(rows) == len(expected) == res.json()["records"]
    assert _as_source(rows) == expected
    assert res.json()["bytes_written"] == out.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left


@pytest.mark.slow  # opens chromadb (in a child process)
def test_two_exports_of_a_snapshot_are_the_same_bytes(cli, source, tmp_path: Path) -> None:
    _db, repo, sid = source
    for n in ("1", "2"):
        assert cli("--repo", repo, "export", sid, "--collection", "mixed", tmp_path / n).code == 0
    assert (tmp_path / "1").read_bytes() == (tmp_path / "2").read_bytes()


@pytest.mark.slow  # opens chromadb (in a child process)
def test_parquet_records_equal_the_collections_records(cli, source, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    db, repo, sid = source
    out = tmp_path / "mixed.parquet"
    res = cli("--repo", repo, "export", sid, "--collection", "mixed", "--format", "parquet", out)
    assert res.code == 0, res.stderr
    table = pq.read_table(out)
    assert table.schema.field("embedding").type.value_type == "float"  # float32, not widened
    got = {}
    for r in table.to_pylist():
        emb = np.asarray(r["embedding"], dtype=np.float32).tobytes()
        got[r["id"]] = (emb, r["document"], None if r["metadata"] is None else json.loads(r["metadata"]), r["uri"])
    assert got == records_by_id(db, "mixed")
    info = json.loads(table.schema.metadata[b"chroma:collection"])
    assert info["name"] == "mixed" and info["metadata"] == {"hnsw:space": "cosine"}


def _cli_process(*args: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real CLI in a child process (its stdout is a real file descriptor)."""
    full = dict(os.environ, **(env or {}))
    full["PYTHONPATH"] = os.pathsep.join(p for p in (*(env or {}).get("PYTHONPATH", "").split(os.pathsep),
                                                      str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "snapshot", *map(str, args)], capture_output=True, env=full,
                          timeout=300, check=False)


@pytest.mark.slow  # opens chromadb (in a child process)
def test_dash_streams_the_records_to_stdout_and_the_report_to_stderr(cli, source, tmp_path: Path) -> None:
    _db, repo, sid = source
    assert cli("--repo", repo, "export", sid, "--collection", "notes", tmp_path / "notes.jsonl").code == 0
    proc = _cli_process("--repo", repo, "export", sid, "--collection", "notes", "-", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (tmp_path / "notes.jsonl").read_bytes()
    report = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    assert report["output"] == "-" and report["records"] == 1000 == len(proc.stdout.splitlines())


@pytest.mark.slow  # opens chromadb (in a child process)
def test_only_the_collections_files_and_the_database_are_read(cli, source, tmp_path: Path) -> None:
    """Exporting the 6-record "mixed" reads chroma.sqlite3 and its segment folder, not the
    segment folders of docs (3000) and notes (1000) beside it."""
    _db, repo, sid = source
    shown = cli("--repo", repo, "show", sid, "--json").json()
    [seg] = [c["segments"][0] for c in shown["collections"] if c["name"] == "mixed"]
    stored = {f["path"]: sum(fr["length"] for c in f["chunks"] for fr in c["frames"])
              for f in show_files(repo, sid)}
    own = stored["chroma.sqlite3"] + sum(n for p, n in stored.items() if p.startswith(seg + "/"))
    files = 1 + sum(p.startswith(seg + "/") for p in stored)
    res = cli("--repo", repo, "export", sid, "--collection", "mixed", tmp_path / "mixed.jsonl", "--json")
    assert res.code == 0, res.stderr
    read = res.json()["bytes_downloaded"]
    # its frames, plus the chunk tables of its files (a few hundred bytes each)
    assert own <= read <= own + 1024 * files, (read, own)
    assert read < 0.5 * sum(stored.values()), (read, sum(stored.values()))


def test_an_unknown_collection_is_refused_naming_the_collections(cli, source, tmp_path: Path) -> None:
    _db, repo, sid = source
    res = cli("--repo", repo, "export", sid, "--collection", "nope", tmp_path / "out.jsonl")
    line = one_line_error(res, 3)
    assert "'nope'" in line and "docs, mixed, notes" in line
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_format_is_a_usage_error(cli, source, tmp_path: Path) -> None:
    _db, repo, sid = source
    res = cli("--repo", repo, "export", sid, "--collection", "docs", "--format", "csv", tmp_path / "out")
    assert "csv" in one_line_error(res, 2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # opens chromadb (in a child process)
def test_an_existing_output_is_refused_unless_force(cli, source, tmp_path: Path) -> None:
    _db, repo, sid = source
    out = tmp_path / "out.jsonl"
    out.write_text("keep me")
    res = cli("--repo", repo, "export", sid, "--collection", "mixed", out)
    assert "--force" in one_line_error(res, 7)
    assert out.read_text() == "keep me"
    res = cli("--repo", repo, "export", sid, "--collection", "mixed", out, "--force")
    assert res.code == 0, res.stderr
    assert len(_jsonl(out)) == len(MIXED["ids"])
    assert one_line_error(cli("--repo", repo, "export", sid, "--collection", "mixed", tmp_path), 7)


@pytest.mark.slow  # opens chromadb (in a child process)
@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_while_writing_leaves_no_partial_output(cli, source, tmp_path: Path, existing: bool) -> None:
    _db, repo, sid = source
    out = tmp_path / "docs.jsonl"
    if existing:
        out.write_text("old")

    def fail() -> None:
        raise StorageError("the disk went away")

    with pausepoints.on("export.block", fail):
        res = cli("--repo", repo, "export", sid, "--collection", "docs", out, "--force")
    assert "the disk went away" in one_line_error(res, StorageError.exit_code)
    assert [p.name for p in tmp_path.iterdir()] == (["docs.jsonl"] if existing else [])
    if existing:
        assert out.read_text() == "old"


def test_parquet_without_pyarrow_is_a_clear_error(source, tmp_path: Path) -> None:
    _db, repo, sid = source
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoPyarrow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pyarrow' or name.startswith('pyarrow.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoPyarrow())\n")
    out = tmp_path / "out.parquet"
    proc = _cli_process("--repo", repo, "export", sid, "--collection", "docs", "--format", "parquet", out,
                        env={"PYTHONPATH": str(hook)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "pyarrow" in lines[0] and "chroma-snapshot[parquet]" in lines[0], lines
    assert not out.exists()


@pytest.mark.slow  # opens chromadb (in a child process)
def test_the_python_api_exports_to_a_binary_stream(source) -> None:
    import io

    import snapshot

    db, repo, sid = source
    sink = io.BytesIO()
    result = snapshot.export_collection(snapshot.Repository.open(repo), "latest", "mixed", sink)
    assert isinstance(result, snapshot.ExportResult)
    assert (result.snapshot, result.records, result.output) == (sid, len(MIXED["ids"]), "-")
    rows = [json.loads(line) for line in sink.getvalue().decode().splitlines()]
    assert _as_source(rows) == records_by_id(db, "mixed")
