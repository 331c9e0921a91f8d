"""Shared fixtures: real Chroma persist dirs, repositories, an in-process CLI runner, and the
moto S3 server (s3_fixtures)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import DEFAULT_SPEC, build_db, grow
from s3_fixtures import *  # noqa: F403

from snapshot.cli import main


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def one_line_error(result: CliResult, code: int) -> str:
    """Assert that a command failed with ``code`` and one line on stderr, no traceback; the line."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chroma-snapshot: error: "), result.stderr
    return lines[0]


def pack_files(repo: Path) -> list[Path]:
    """The data objects of a local repository."""
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


def edit_manifest(repo: Path, sid: str, change: Callable[[Any], object]) -> None:
    """Change a local repository's manifest of ``sid`` in place, as a damaged or hostile
    repository would hold it."""
    from snapshot.format import layout

    p = repo / layout.snapshot_key(sid)
    data = json.loads(p.read_text())
    change(data)
    p.write_text(json.dumps(data))


def create_snapshot(repo: Path, source: Path, *extra: str) -> str:
    """Run ``create`` and return the new snapshot id (the test fails if create fails)."""
    res = run_cli("--repo", str(repo), "create", str(source), "--json", *extra)
    assert res.code == 0, res.stderr
    sid: str = res.json()["id"]
    return sid


def exchange_supported(where: Path) -> bool:
    """Whether this filesystem swaps two directories atomically (renameat2 RENAME_EXCHANGE)."""
    from snapshot.restore import swap

    a, b = where / "probe-a", where / "probe-b"
    a.mkdir()
    b.mkdir()
    try:
        return swap.exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


def show_files(repo: Path | str, ref: str = "latest") -> list[dict[str, Any]]:
    """``show REF --files --json``: every file of a snapshot with its chunks (one JSON per line)."""
    res = run_cli("--repo", str(repo), "show", ref, "--files", "--json")
    assert res.code == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


@pytest.fixture(scope="session", autouse=True)
def _session_base_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module- and session-scoped fixtures that create snapshots use a cache of this worker's
    too, never ~/.cache/chroma-snapshot (the per-test one below is set after they run)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHROMA_SNAPSHOT_CACHE", str(tmp_path_factory.mktemp("base-cache")))
        yield


@pytest.fixture(autouse=True)
def _private_base_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own base cache instead of ~/.cache/chroma-snapshot."""
    monkeypatch.setenv("CHROMA_SNAPSHOT_CACHE", str(tmp_path / "base-cache"))


@pytest.fixture(autouse=True)
def _same_run_deletion(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most tests check what a prune frees, so their prunes delete in the run that condemns
    (``--delete-after 0``, as for a repository no create runs against). The tests of the
    deletion protocol itself (test_deletion_protocol.py) remove this and use the default."""
    monkeypatch.setenv("CHROMA_SNAPSHOT_DELETE_AFTER", "0")


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    return run_cli


def _built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(path)`` once per test run, shared by all the run's xdist workers (the first to get
    here builds, under a file lock; the others wait and reuse it). Such a dir is read-only by
    contract: tests copy it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each worker's own
    folder = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder / "vector_db")
            (folder / "built").touch()
    return folder / "vector_db"


@pytest.fixture(scope="session")
def chroma_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Chroma persist dir with two collections (docs 3000, notes 1000), built once per run."""

    def build(path: Path) -> None:
        build_db(path, DEFAULT_SPEC, seed=0)

    return _built_once(tmp_path_factory, "template", build)


@pytest.fixture(scope="session")
def chroma_grown(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template after ``grow(path, "docs", 40, seed=1)`` (docs 3040, notes 1000), built
    once: a test that needs its Chroma dir to grow between two snapshots copies this over it
    (``chroma_helpers.become``) instead of starting chromadb. Built once per run."""

    def build(path: Path) -> None:
        shutil.copytree(chroma_template, path)
        grow(path, "docs", 40, seed=1)

    return _built_once(tmp_path_factory, "grown", build)


@pytest.fixture
def chroma_dir(chroma_template: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh copy of the template for one test to change at will."""
    path = tmp_path / "data" / "vector_db"
    shutil.copytree(chroma_template, path)
    yield path


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


FORMAT1 = Path(__file__).parent / "fixtures" / "format1"


@dataclass(frozen=True)
class Format1Repo:
    """A copy of tests/fixtures/format1/repo (three format-1 snapshots, see its README)."""

    path: Path
    #: Oldest first: {"id", "counts": {collection: records}, "files": {path: sha256}}.
    snapshots: list[dict[str, Any]]

    @property
    def ids(self) -> list[str]:
        return [s["id"] for s in self.snapshots]


@pytest.fixture
def format1_repo(repo_path: Path) -> Format1Repo:
    """The checked-in format-1 repository, copied to ``repo_path`` for one test to change."""
    shutil.copytree(FORMAT1 / "repo", repo_path)
    expected = json.loads((FORMAT1 / "expected.json").read_text())
    return Format1Repo(repo_path, expected["snapshots"])


@dataclass(frozen=True)
class Seeded:
    """A local repository holding one snapshot (``sid``) of the template Chroma dir."""

    repo: Path
    sid: str


@pytest.fixture(scope="session")
def _seeded_template(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    from snapshot.create.pipeline import create_snapshot as create
    from snapshot.repo.repository import Repository

    repo = tmp_path_factory.mktemp("seeded") / "snapshots"
    sid = create(Repository.open(repo, create=True), chroma_template, use_cache=False).id
    return Seeded(repo, sid)


@pytest.fixture
def seeded(_seeded_template: Seeded, repo_path: Path) -> Seeded:
    """A fresh copy (at ``repo_path``) of a repository with one snapshot of the template, for
    tests that start from a snapshot and then damage or extend it: built once per worker."""
    shutil.copytree(_seeded_template.repo, repo_path)
    return Seeded(repo_path, _seeded_template.sid)
