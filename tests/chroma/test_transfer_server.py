"""Copying collections into a running ``chroma run`` server (snapshot/chroma/transfer.py): while
another client writes, after a kill -9 at three points (then a rerun that completes it exactly
and sends at most one batch twice), and the server refusals (unreachable, wrong token)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import delete_collection, update_metadata
from chroma_server_fixtures import (
    WRITER,
    AuthProxy,
    assert_same_collection,
    chroma_server,  # noqa: F401 - a fixture
    collections_of,
    free_port,
    three_collections,  # noqa: F401 - a fixture
)

from snapshot.chroma.transfer import ChromaTarget, copy_collections
from snapshot.chroma.transfer_journal import Entry
from snapshot.errors import SnapshotError, TargetAuthError, TargetUnreachableError
from snapshot.util import pausepoints
from snapshot.util.pausepoints import KILL_ENV

ROOT = Path(__file__).resolve().parents[2]
BATCH = 500
KEY = "snap-1"


@pytest.fixture
def source(three_collections: Path, tmp_path: Path) -> Path:  # noqa: F811
    path = tmp_path / "source"
    shutil.copytree(three_collections, path)
    return path


@pytest.fixture
def served(three_collections: Path, tmp_path: Path, chroma_server: Any) -> Any:  # noqa: F811
    """A server on a copy of the source whose ``docs`` has since been changed."""
    path = tmp_path / "served"
    shutil.copytree(three_collections, path)
    update_metadata(path, "docs", [f"docs-{i}" for i in range(0, 3000, 3)], 5)
    return chroma_server(path)


def copy(source: Path, url: str, tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("rename", None)
    kw.setdefault("replace", False)
    target = ChromaTarget(url, headers=kw.pop("headers", {}), settings=kw.pop("settings", {}))
    return copy_collections(source, kw.pop("names", ["docs"]), target, journal_dir=tmp_path / "journal",
                            journal_key=KEY, batch_size=BATCH, **kw)


@pytest.mark.slow  # a live writer and a server
def test_copy_into_a_server_while_another_client_writes(source: Path, served: Any, tmp_path: Path) -> None:
    before = collections_of(served.url)
    want = collections_of(source, "docs")["docs"]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, served.url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline().strip() == "ready"
    writes = []

    def write_now() -> None:  # between two batches of the copy, the other client writes
        writer.stdin.write("write\n")
        writer.stdin.flush()
        writes.append(int(writer.stdout.readline()))

    with pausepoints.on("transfer.progress", write_now):
        [done] = copy(source, served.url, tmp_path, replace=True)

    writer.stdin.close()
    writer.wait()
    assert len(writes) >= 6  # one per batch copied and checked at least
    after = collections_of(served.url)
    assert sorted(after) == ["docs", "notes", "tasks"]
    assert_same_collection(after["docs"], want)
    assert after["tasks"] == before["tasks"]
    notes_before, notes_after = before["notes"]["records"], after["notes"]["records"]
    assert {k: notes_after[k] for k in notes_before} == notes_before
    assert set(notes_after) - set(notes_before) == {f"w{i}-{k}" for i in writes for k in range(20)}
    assert done.replaced and done.records_sent == 3000


# kill -9 at three points, then a rerun: (pause point, kill the whole process or only the child,
# replace). "transfer.batch#3": after the 3rd batch's upsert, before the journal counts it;
# "transfer.progress#5": the caller, as the 5th progress report arrives (the child follows it);
# "transfer.dropped": after dropping the old collection, before renaming the copy.
KILLS = [("transfer.batch#3", "child", False), ("transfer.progress#5", "whole", False),
         ("transfer.dropped", "child", True)]

DRIVER = """
import sys
from pathlib import Path
from snapshot.chroma.transfer import ChromaTarget, copy_collections
copy_collections(Path(sys.argv[1]), ["docs"], ChromaTarget(sys.argv[2]), rename=None,
                 replace=sys.argv[4] == "1",
                 journal_dir=Path(sys.argv[3]), journal_key=sys.argv[5], batch_size=int(sys.argv[6]))
"""


@pytest.mark.slow  # kill -9 and a server
@pytest.mark.parametrize(("point", "who", "replace"), KILLS)
def test_a_copy_killed_resumes_exactly_and_sends_at_most_one_batch_again(
        source: Path, served: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        point: str, who: str, replace: bool) -> None:
    if not replace:
        delete_collection_through(served.url, "docs")
    before = collections_of(served.url)
    want = collections_of(source, "docs")["docs"]
    if who == "whole":
        env = dict(os.environ, PYTHONPATH=str(ROOT), **{KILL_ENV: point})
        args = [str(source), served.url, str(tmp_path / "journal"), "1" if replace else "0", KEY, str(BATCH)]
        driver = subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, capture_output=True,
                                text=True, timeout=300)
        assert driver.returncode == -signal.SIGKILL, driver.stderr
    else:
        monkeypatch.setenv(KILL_ENV, point)  # the child inherits it and kills itself there
        with pytest.raises(SnapshotError, match=r"ended without an answer .*run again to resume"):
            copy(source, served.url, tmp_path, replace=replace)
        monkeypatch.delenv(KILL_ENV)
    [entry] = [Entry(**json.loads(p.read_text())) for p in (tmp_path / "journal").iterdir()]
    held = collections_of(served.url)
    building = held.get(entry.temp_name, {"records": {}})["records"]
    if replace:
        assert "docs" not in held  # dropped, the verified copy not yet renamed
        assert len(building) == 3000
    else:
        assert "docs" not in held and entry.temp_name in held  # the partial copy, under its own name
        assert 0 < entry.sent < 3000

    [done] = copy(source, served.url, tmp_path, replace=replace)

    after = collections_of(served.url)
    assert sorted(after) == ["docs", "notes", "tasks"]
    assert_same_collection(after["docs"], want)
    assert {k: after[k] for k in ("notes", "tasks")} == {k: before[k] for k in ("notes", "tasks")}
    assert done.resumed_at == entry.sent and done.resumed_at + done.records_sent == 3000
    sent_twice = len(building) - entry.sent  # what the target held beyond what the journal counted
    assert 0 <= sent_twice <= BATCH
    assert not list((tmp_path / "journal").iterdir())


def delete_collection_through(url: str, name: str) -> None:
    delete_collection(url, name)  # type: ignore[arg-type]


def test_an_unreachable_server_is_refused(source: Path, tmp_path: Path) -> None:
    with pytest.raises(TargetUnreachableError, match="cannot reach the Chroma server") as err:
        copy(source, f"http://127.0.0.1:{free_port()}", tmp_path)
    assert err.value.exit_code == 7 and len(str(err.value).splitlines()) == 1


@pytest.mark.slow  # a server
def test_a_wrong_token_is_refused_and_never_shown(source: Path, served: Any, tmp_path: Path) -> None:
    with AuthProxy(served.url, "right-token") as proxy:
        with pytest.raises(TargetAuthError, match="refused the credentials") as err:
            copy(source, proxy.url, tmp_path, headers={"X-Chroma-Token": "wrong-token"}, replace=True)
        assert err.value.exit_code == 7 and "wrong-token" not in str(err.value) and proxy.refused
        settings = {"chroma_client_auth_provider": "chromadb.auth.token_authn.TokenAuthClientProvider",
                    "chroma_client_auth_credentials": "right-token"}
        [done] = copy(source, proxy.url, tmp_path, settings=settings, replace=True)
    assert done.replaced and done.records == 3000
