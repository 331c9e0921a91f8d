"""Exporting one collection of a local persist dir as records: JSON lines or Parquet, streamed.

chromadb reads the directory in a child process (its process-wide state, native crashes and
memory stay out of the caller), paging ``collection.get(limit, offset)`` in batches of
:data:`BATCH` records: what this package holds is one batch whatever the collection's size
(chromadb itself holds the collection's vector index whole once it reads from it). The
child writes the encoded records to its stdout; the caller copies that pipe into any binary
sink (a temporary file it renames into place, or its own stdout). The child's last line on
stderr is its report: ``{"records": N}`` or ``{"error": "..."}``.

JSON lines: one object per record, keys ``id``, ``embedding`` (a list of numbers: each is the
stored float32 exactly, written as the shortest decimal of its float64 value, so reading it as
float64 and casting to float32 gives back the same bits), ``document``, ``metadata`` and
``uri`` (null when absent). Parquet: the same columns, ``embedding`` a list of float32,
``metadata`` the metadata as a JSON string (its keys and types differ from record to record),
one row group per batch, and the collection's name, metadata and configuration in the file's
key-value metadata (``chroma:collection``).

The directory must be a private copy: chromadb writes to the directory it opens.

Run as ``python -m snapshot.chroma.export DIR NAME FORMAT BATCH``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from snapshot.chroma.child import child_env
from snapshot.errors import ChromaCheckError, UsageError
from snapshot.util import pausepoints

FORMATS = ("jsonl", "parquet")
BATCH = 1000
#: Bytes copied from the child's pipe at a time.
BLOCK = 1 << 20
FIELDS = ("id", "embedding", "document", "metadata", "uri")
_INCLUDE = ["embeddings", "documents", "metadatas", "uris"]


class MissingDependencyError(UsageError):
    """A format that needs a package this installation lacks."""

    kind = "missing-dependency"


@dataclass(frozen=True)
class Exported:
    records: int
    bytes: int


def parquet_available() -> bool:
    """Whether pyarrow can be imported (looked up, not imported: it is large)."""
    try:
        return importlib.util.find_spec("pyarrow") is not None
    except (ImportError, ValueError):
        return False


def check_format(fmt: str) -> None:
    """Refuse an unknown format, or Parquet without pyarrow, before any work is done."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "parquet" and not parquet_available():
        raise MissingDependencyError(
            "Parquet export needs pyarrow, which is not installed: pip install 'chroma-snapshot[parquet]' "
            "(or export --format jsonl)")


def export_dir(persist_dir: Path, name: str, sink: IO[bytes], *, fmt: str = "jsonl", batch: int = BATCH,
               on_bytes: Callable[[int], None] | None = None) -> Exported:
    """Write collection ``name`` of the persist dir (a private copy) to ``sink`` as ``fmt``.
    Raises :class:`ChromaCheckError` when chromadb cannot read it; whatever was written to
    ``sink`` before a failure stays there (the caller decides what a partial output means)."""
    check_format(fmt)
    env = child_env()
    args = [sys.executable, "-m", "snapshot.chroma.export", os.fsdecode(persist_dir), name, fmt, str(batch)]
    written = 0
    with tempfile.TemporaryFile() as errors:  # a pipe could fill and stall the child
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors, env=env)
        assert proc.stdout is not None
        try:
            while block := os.read(proc.stdout.fileno(), BLOCK):
                sink.write(block)
                written += len(block)
                if on_bytes is not None:
                    on_bytes(len(block))
                pausepoints.point("export.block")
        except BaseException:
            proc.kill()  # the sink failed or we were interrupted: the child's output has nowhere to go
            raise
        finally:
            proc.stdout.close()
            proc.wait()
        errors.seek(0)
        report = _report(errors.read().decode("utf-8", "replace"), proc.returncode)
    if "error" in report:
        raise ChromaCheckError(f"cannot export collection {name!r}: {report['error']}")
    return Exported(int(report["records"]), written)


def _report(stderr: str, code: int) -> dict[str, Any]:
    lines = stderr.strip().splitlines()
    try:
        report = json.loads(lines[-1])
        if isinstance(report, dict) and ("records" in report or "error" in report):
            return report
    except (IndexError, json.JSONDecodeError):
        pass
    return {"error": f"chromadb failed (exit {code}): {(lines or ['no output'])[-1]}"}


# ------------------------------------------------------------------ the child


def _collection_info(col: Any) -> dict[str, Any]:
    config = getattr(col, "configuration_json", None) or getattr(col, "configuration", None)
    return {"name": col.name, "metadata": col.metadata, "configuration": config}


def _pages(col: Any, batch: int) -> Any:
    offset = 0
    while True:
        got = col.get(limit=batch, offset=offset, include=_INCLUDE)
        n = len(got["ids"])
        if n:
            yield got
        if n < batch:
            return
        offset += n


def _column(got: dict[str, Any], key: str, n: int) -> list[Any]:
    values = got.get(key)
    return [None] * n if values is None or len(values) == 0 else list(values)


def _sorted(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keys in order: chromadb returns them in no fixed order, and two exports of one snapshot
    should be the same bytes."""
    return None if metadata is None else dict(sorted(metadata.items()))


def _write_jsonl(col: Any, out: IO[bytes], batch: int) -> int:
    records = 0
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    for got in _pages(col, batch):
        ids = got["ids"]
        n = len(ids)
        embs = got["embeddings"]
        docs, metas, uris = (_column(got, k, n) for k in ("documents", "metadatas", "uris"))
        for i in range(n):  # one line at a time: a batch is never held twice (as text and as bytes)
            out.write(dumps({"id": ids[i], "embedding": embs[i].tolist(), "document": docs[i],
                             "metadata": _sorted(metas[i]), "uri": uris[i]}).encode("utf-8") + b"\n")
        records += n
    return records


def _write_parquet(col: Any, out: IO[bytes], batch: int) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        pa.field("id", pa.string(), nullable=False), pa.field("embedding", pa.list_(pa.float32())),
        pa.field("document", pa.string()), pa.field("metadata", pa.string()), pa.field("uri", pa.string()),
    ]).with_metadata({"chroma:collection": json.dumps(_collection_info(col), default=str)})
    records = 0
    with pq.ParquetWriter(out, schema) as writer:
        for got in _pages(col, batch):
            ids = got["ids"]
            n = len(ids)
            embs = np.asarray(got["embeddings"], dtype=np.float32).reshape(n, -1)
            offsets = pa.array(np.arange(0, embs.size + 1, embs.shape[1], dtype=np.int32))
            docs, metas, uris = (_column(got, k, n) for k in ("documents", "metadatas", "uris"))
            meta_json = [None if m is None else json.dumps(m, ensure_ascii=False, sort_keys=True)
                         for m in metas]
            table = pa.Table.from_arrays([
                pa.array(ids, pa.string()), pa.ListArray.from_arrays(offsets, pa.array(embs.ravel())),
                pa.array(docs, pa.string()), pa.array(meta_json, pa.string()), pa.array(uris, pa.string()),
            ], schema=schema)
            writer.write_table(table)
            records += n
    return records


def _main(path: str, name: str, fmt: str, batch: int) -> int:
    out = open(sys.stdout.fileno(), "wb", buffering=BLOCK, closefd=False)  # noqa: SIM115 - flushed below
    try:
        import chromadb
        from chromadb.config import Settings

        client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
        col = client.get_collection(name, embedding_function=None)  # never embeds: records carry theirs
        expected = col.count()
        records = (_write_parquet if fmt == "parquet" else _write_jsonl)(col, out, batch)
        out.flush()
        if records != expected:
            raise RuntimeError(f"read {records} records, the collection counts {expected}")
    except BrokenPipeError:
        return 1  # the reader went away: it knows why
    except Exception as exc:  # noqa: BLE001 - every failure goes back as the report
        print(json.dumps({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}),
              file=sys.stderr)
        return 1
    print(json.dumps({"records": records}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
