"""restore SNAP TARGET --collection NAME through the CLI into an existing persist dir and into a
running ``chroma run`` server: over a modified collection with --replace, under --as, into a
server while another client writes, killed -9 at three points and run again, and bad input
(one line, a documented exit code, nothing written). Each time every other collection keeps
the records it had and the restored one equals the snapshot's, record by record."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import delete_collection, run_chroma, steps, tree_digest
from chroma_server_fixtures import (
    WRITER,
    AuthProxy,
    assert_same_collection,
    chroma_server,  # noqa: F401 - a fixture
    collections_of,
    free_port,
    three_collections,  # noqa: F401 - a fixture
)
from conftest import create_snapshot, one_line_error, run_cli

from snapshot.chroma import transfer
from snapshot.chroma.transfer import CHECKS
from snapshot.errors import SnapshotError
from snapshot.util import pausepoints
from snapshot.util.pausepoints import KILL_ENV

ROOT = Path(__file__).resolve().parents[2]
BATCH = 500
OTHERS = ("notes", "tasks")


@dataclass(frozen=True)
class Snap:
    repo: Path
    sid: str
    source: Path
    #: name -> settings and records of each collection as the snapshot holds it
    want: dict[str, Any]
    #: name -> its segment folder
    segments: dict[str, list[str]]


@pytest.fixture(scope="module")
def snap(three_collections: Path, tmp_path_factory: pytest.TempPathFactory) -> Snap:  # noqa: F811
    base = tmp_path_factory.mktemp("into")
    source = base / "vector_db"
    shutil.copytree(three_collections, source)
    sid = create_snapshot(base / "repo", source)
    shown = run_cli("--repo", base / "repo", "show", sid, "--json").json()
    shutil.copytree(source, base / "read")  # chromadb writes to what it opens
    return Snap(base / "repo", sid, source, collections_of(base / "read"),
                {c["name"]: c["segments"] for c in shown["collections"]})


@pytest.fixture
def app(snap: Snap, tmp_path: Path) -> Path:
    """The application's persist dir today: the snapshot's source, then changed."""
    path = tmp_path / "app"
    shutil.copytree(snap.source, path)
    return path


def journals(tmp_path: Path) -> list[str]:
    folder = tmp_path / "base-cache" / "transfers"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def restore(snap: Snap, target: Path | str, *args: str) -> dict[str, Any]:
    res = run_cli("--repo", snap.repo, "restore", snap.sid, target, *args, "--json")
    assert res.code == 0, res.stderr
    out: dict[str, Any] = res.json()
    return out


def segment_digests(snap: Snap, target: Path, names: tuple[str, ...]) -> dict[str, Any]:
    return {s: tree_digest(target / s) for n in names for s in snap.segments[n]}


def change_docs(target: Path) -> None:
    """Today's docs: 100 records changed, 200 deleted, 50 added; notes grown by 20."""
    changed = [f"docs-{i}" for i in range(0, 3000, 10)]
    steps(target, ("update_metadata", {"name": "docs", "ids": changed[:100], "value": 7}),
          ("delete", {"name": "docs", "ids": changed[100:]}),
          ("add", {"name": "docs", "ids": [f"docs-today-{i}" for i in range(50)], "seed": 9}),
          ("add", {"name": "notes", "ids": [f"notes-today-{i}" for i in range(20)], "seed": 3}))


@pytest.mark.slow  # chromadb opens
def test_replace_a_modified_collection_in_a_persist_dir(snap: Snap, app: Path, tmp_path: Path) -> None:
    change_docs(app)
    before = collections_of(app, *OTHERS)
    assert len(before["notes"]["records"]) == 1020 and before != {n: snap.want[n] for n in OTHERS}
    segments = segment_digests(snap, app, OTHERS)

    out = restore(snap, app, "--collection", "docs", "--replace")

    assert segment_digests(snap, app, OTHERS) == segments  # byte for byte
    after = collections_of(app)
    assert sorted(after) == ["docs", "notes", "tasks"]  # no temporary collection left
    assert_same_collection(after["docs"], snap.want["docs"])
    assert {n: after[n] for n in OTHERS} == before
    assert (out["mode"], out["collections"], out["records_written"]) == ("persist-dir", {"docs": 3000}, 3000)
    assert out["checks"] == ["hashes", *CHECKS]
    [copy] = out["copies"]
    assert copy["replaced"] and (copy["records_sent"], copy["resumed_at"], copy["sampled"]) == (3000, 0, 1000)
    assert journals(tmp_path) == []


@pytest.mark.slow  # chromadb opens
def test_as_restores_beside_todays_collection(snap: Snap, app: Path) -> None:
    steps(app, ("update_metadata", {"name": "tasks", "ids": [f"tasks-{i}" for i in range(50)], "value": 4}))
    before = collections_of(app)

    out = restore(snap, app, "--collection", "tasks", "--as", "tasks-yesterday")

    after = collections_of(app)
    assert sorted(after) == ["docs", "notes", "tasks", "tasks-yesterday"]
    assert_same_collection(after["tasks-yesterday"], snap.want["tasks"])  # cosine, metadata, HNSW settings
    assert after["tasks-yesterday"]["hnsw"]["space"] == "cosine"
    assert {n: after[n] for n in before} == before
    assert out["renamed"] == {"tasks": "tasks-yesterday"} and out["collections"] == {"tasks-yesterday": 600}
    assert out["copies"][0]["name"] == "tasks-yesterday"


@pytest.mark.slow  # a server and a live writer
def test_into_a_running_server_while_another_client_writes(snap: Snap, app: Path, chroma_server: Any) -> None:  # noqa: F811
    change_docs(app)
    server = chroma_server(app)
    before = collections_of(server.url, *OTHERS)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, server.url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdin is not None and writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    writes: list[int] = []

    def write_now() -> None:  # while the restore copies and checks, the other client writes
        writer.stdin.write("write\n")  # type: ignore[union-attr]
        writer.stdin.flush()  # type: ignore[union-attr]
        writes.append(int(writer.stdout.readline()))  # type: ignore[union-attr]

    with pausepoints.on("transfer.progress", write_now):
        out = restore(snap, server.url, "--collection", "docs", "--replace", "--batch-size", str(BATCH))
    writer.stdin.close()
    writer.wait()

    assert len(writes) >= 12  # one per batch sent and per batch checked
    after = collections_of(server.url)
    assert sorted(after) == ["docs", "notes", "tasks"]
    assert_same_collection(after["docs"], snap.want["docs"])
    assert after["tasks"] == before["tasks"]
    notes_before, notes_after = before["notes"]["records"], after["notes"]["records"]
    assert {k: notes_after[k] for k in notes_before} == notes_before
    assert set(notes_after) - set(notes_before) == {f"w{i}-{k}" for i in writes for k in range(20)}
    assert out["mode"] == "server" and out["target"] == server.url
    assert out["copies"][0]["batch_size"] == BATCH and out["copies"][0]["replaced"]


# kill -9 of the CLI process at three points of a restore into a server, then the same command
# again: (pause point in the CLI process, --replace).
# "restore.file-written#2": reading the snapshot's files, before anything reached the server;
# "transfer.progress#3": as the 2nd batch's progress arrives (the copying child dies with it);
# "transfer.progress#9": the 6 batches sent, verifying (with --replace: the old docs still whole).
KILLS = [("restore.file-written#2", False), ("transfer.progress#3", False), ("transfer.progress#9", True)]


@pytest.mark.slow  # kill -9 and a server
@pytest.mark.parametrize(("point", "replace"), KILLS)
def test_a_restore_into_a_server_killed_runs_again_exactly_sending_at_most_one_batch_twice(
        snap: Snap, app: Path, tmp_path: Path, chroma_server: Any, point: str, replace: bool) -> None:  # noqa: F811
    if replace:
        change_docs(app)
    else:
        delete_collection(app, "docs")
    server = chroma_server(app)
    before = collections_of(server.url)
    args = ["--collection", "docs", "--batch-size", str(BATCH), *(["--replace"] if replace else [])]
    argv = [sys.executable, "-m", "snapshot", "--repo", str(snap.repo), "restore", snap.sid, server.url,
            *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    killed = subprocess.run(argv, env={**env, KILL_ENV: point}, capture_output=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    held = collections_of(server.url)
    folder = tmp_path / "base-cache" / "transfers"
    entries = [json.loads((folder / j).read_text()) for j in journals(tmp_path)]
    if point.startswith("restore."):
        assert held == before and entries == []  # nothing reached the server
        sent, building = 0, {}
    else:
        [entry] = entries
        sent, building = entry["sent"], held[entry["temp_name"]]["records"]
        assert sorted(held) == sorted([*before, entry["temp_name"]])  # the copy only under its own name
        assert {n: held[n] for n in before} == before  # with --replace, the old docs whole and unchanged
        assert 0 < sent <= 3000 and (sent == 3000) == replace

    out = restore(snap, server.url, *args)

    after = collections_of(server.url)
    assert sorted(after) == ["docs", "notes", "tasks"]
    assert_same_collection(after["docs"], snap.want["docs"])
    assert {n: after[n] for n in OTHERS} == {n: before[n] for n in OTHERS}
    [copy] = out["copies"]
    assert copy["resumed_at"] == sent and copy["resumed_at"] + copy["records_sent"] == 3000
    assert 0 <= len(building) - sent <= BATCH  # sent twice: what the server held beyond the journal
    assert out["records_written"] == copy["records_sent"] and journals(tmp_path) == []


# -- bad input: one line, a documented exit code, nothing written ------------------------------


@pytest.mark.parametrize("kind", ["persist-dir", "server"])
@pytest.mark.parametrize(("args", "code", "words"), [
    (("--collection", "nope"), 3, "has no collection 'nope' (its collections: docs, notes, tasks)"),
    (("--collection", "docs", "--collection", "notes", "--as", "both"), 2, "--as renames one collection"),
    (("--collection", "docs", "--as", "-bad"), 2, "invalid collection name '-bad'"),
    (("--collection", "docs", "--batch-size", "0"), 2, "--batch-size"),
])
def test_bad_input_is_refused_before_anything_is_read(snap: Snap, app: Path, tmp_path: Path, kind: str,
                                                      args: tuple[str, ...], code: int, words: str) -> None:
    target = str(app) if kind == "persist-dir" else f"http://127.0.0.1:{free_port()}"
    before = tree_digest(app)
    line = one_line_error(run_cli("--repo", snap.repo, "restore", snap.sid, target, *args), code)
    assert words in line
    assert tree_digest(app) == before and journals(tmp_path) == []


def test_the_copys_warnings_are_in_the_report(snap: Snap, app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    said = "collection 'docs' was created with the embedding function 'acme', which this chromadb lacks"

    class Pending:
        def __init__(self, reporter: Any) -> None:
            self.reporter = reporter

        def __enter__(self) -> Pending:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def run(self, source: Path) -> list[Any]:
            self.reporter.warn(said)
            return [transfer.CollectionCopy("docs", "docs", 3000, 3000, 0, BATCH, 1000, 0, False)]

    monkeypatch.setattr(transfer, "start_copy", lambda names, target, *, reporter, **_kw: Pending(reporter))
    out = restore(snap, app, "--collection", "docs")
    assert out["warnings"] == [said] and out["records_written"] == 3000


def test_an_unreachable_server_is_exit_7(snap: Snap, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    res = run_cli("--repo", snap.repo, "restore", snap.sid, url, "--collection", "docs", "--json")
    assert "cannot reach the Chroma server" in one_line_error(res, 7)
    assert json.loads(res.stdout)["error"]["code"] == 7 and journals(tmp_path) == []


@pytest.mark.slow  # chromadb opens
def test_a_name_clash_without_replace_is_exit_7(snap: Snap, app: Path, tmp_path: Path) -> None:
    change_docs(app)
    before = collections_of(app)
    res = run_cli("--repo", snap.repo, "restore", snap.sid, app, "--collection", "tasks",
                  "--collection", "docs")
    line = one_line_error(res, 7)
    assert "already has a collection named 'tasks'" in line and "--replace" in line
    assert collections_of(app) == before and journals(tmp_path) == []


@pytest.mark.slow  # chromadb opens
def test_a_dimension_clash_is_exit_7(snap: Snap, app: Path, tmp_path: Path) -> None:
    delete_collection(app, "docs")
    run_chroma("make", app, name="docs", n=5, dim=32)
    before = collections_of(app)
    res = run_cli("--repo", snap.repo, "restore", snap.sid, app, "--collection", "docs")
    assert "dimension 32, the copy's 64" in one_line_error(res, 7)
    assert collections_of(app) == before and journals(tmp_path) == []


@pytest.mark.slow  # a server
def test_a_wrong_token_is_exit_7_and_never_shown(snap: Snap, app: Path, tmp_path: Path,
                                                 chroma_server: Any) -> None:  # noqa: F811
    server = chroma_server(app)
    before = collections_of(server.url)
    with AuthProxy(server.url, "right-token") as proxy:
        res = run_cli("--repo", snap.repo, "restore", snap.sid, proxy.url, "--collection", "docs", "--as",
                      "docs-back", "--header", "X-Chroma-Token: wrong-token", "--json")
        line = one_line_error(res, 7)
        assert "refused the credentials" in line and proxy.refused
        assert "wrong-token" not in res.stderr + res.stdout
        out = restore(snap, proxy.url, "--collection", "docs", "--as", "docs-back",
                      "--header", "X-Chroma-Token: right-token")
    assert "right-token" not in json.dumps(out)
    after = collections_of(server.url)
    assert_same_collection(after["docs-back"], snap.want["docs"])
    assert {n: after[n] for n in before} == before


def _never_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The snapshot's files must not be read: materialising them fails the test."""
    from snapshot.restore import collections as restore_collections

    read: list[str] = []

    def materialise(*args: Any, **kw: Any) -> Any:
        read.append("materialised")
        raise AssertionError("the snapshot's files were read before the refusal")

    monkeypatch.setattr(restore_collections, "materialise_collections", materialise)
    return read


def _restore_refused(snap: Snap, target: str, names: list[str], monkeypatch: pytest.MonkeyPatch,
                     **kw: Any) -> SnapshotError:
    import snapshot

    read = _never_read(monkeypatch)
    with pytest.raises(SnapshotError) as caught:
        snapshot.restore_collection(snapshot.Repository.open(str(snap.repo)), snap.sid, target, names, **kw)
    assert read == [] and caught.value.exit_code == 7
    return caught.value


def test_an_unreachable_server_is_refused_before_the_snapshot_is_read(
        snap: Snap, monkeypatch: pytest.MonkeyPatch) -> None:
    error = _restore_refused(snap, f"http://127.0.0.1:{free_port()}", ["docs"], monkeypatch)
    assert "cannot reach the Chroma server" in str(error)


@pytest.mark.slow  # chromadb opens
def test_a_name_or_dimension_clash_is_refused_before_the_snapshot_is_read(
        snap: Snap, app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error = _restore_refused(snap, str(app), ["tasks"], monkeypatch)
    assert "already has a collection named 'tasks'" in str(error)
    delete_collection(app, "docs")
    run_chroma("make", app, name="docs", n=5, dim=32)
    before = collections_of(app)
    error = _restore_refused(snap, str(app), ["docs"], monkeypatch)
    assert "dimension 32, the copy's 64" in str(error)
    assert collections_of(app) == before and journals(tmp_path) == []


@pytest.mark.slow  # chromadb opens
def test_a_wrong_token_is_refused_before_the_snapshot_is_read(
        snap: Snap, app: Path, chroma_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from snapshot.restore.collections import ServerOptions

    server = chroma_server(app)
    with AuthProxy(server.url, "right-token") as proxy:
        error = _restore_refused(snap, proxy.url, ["docs"], monkeypatch, rename="docs-back",
                                 server=ServerOptions(headers={"X-Chroma-Token": "wrong-token"}))
        assert proxy.refused
    assert "refused the credentials" in str(error) and "wrong-token" not in str(error)
