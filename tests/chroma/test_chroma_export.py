"""snapshot.chroma.export: a collection of a persist dir read by chromadb in a child process,
page by page, into JSON lines."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from snapshot.chroma.export import check_format, export_dir
from snapshot.errors import ChromaCheckError, UsageError


@pytest.fixture(scope="module")
def private_copy(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chroma-export") / "db"
    shutil.copytree(chroma_template, path)
    return path


@pytest.mark.slow  # opens chromadb twice
def test_pages_of_any_size_give_every_record_once_in_the_same_order(private_copy: Path) -> None:
    whole, paged = io.BytesIO(), io.BytesIO()
    seen: list[int] = []
    a = export_dir(private_copy, "notes", whole, batch=1000)
    b = export_dir(private_copy, "notes", paged, batch=7, on_bytes=seen.append)
    assert a.records == b.records == 1000
    assert whole.getvalue() == paged.getvalue()
    assert sum(seen) == b.bytes == len(paged.getvalue())
    ids = [json.loads(line)["id"] for line in paged.getvalue().splitlines()]
    assert len(set(ids)) == 1000 and set(ids) == {f"notes-{i}" for i in range(1000)}


def test_a_collection_chromadb_cannot_find_is_an_error_not_an_empty_file(private_copy: Path) -> None:
    sink = io.BytesIO()
    with pytest.raises(ChromaCheckError, match="cannot export collection 'absent'"):
        export_dir(private_copy, "absent", sink)
    assert sink.getvalue() == b""


def test_formats_are_checked_before_any_work() -> None:
    with pytest.raises(UsageError, match="unknown export format 'csv'"):
        check_format("csv")
    check_format("jsonl")
