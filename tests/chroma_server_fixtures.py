"""A real Chroma server (``chroma run``) on a free localhost port, started by the test, and a
token-checking proxy in front of one.

``chroma run`` of chromadb 1.5.9 (the Rust server) has no authentication: it ignores the
``chroma_server_authn_*`` settings and answers every request. The tests of credentials
therefore talk to :class:`AuthProxy`, which answers 401 as Chroma's authenticating servers do
(``{"error": "AuthorizationError", ...}``) unless the request carries the token as
``X-Chroma-Token`` or ``Authorization: Bearer``, and forwards everything else to the server.

Also the source the collection-copy tests share (``three_collections``: a persist dir with
``docs`` 3000 and ``notes`` 1000 records in l2 space and ``tasks`` 600 in cosine space with
collection metadata, HNSW settings, chromadb's default embedding function recorded, uris and
records without metadata) and the comparison of collections record by record.

Import the fixtures with ``from chroma_server_fixtures import chroma_server, three_collections``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chroma_helpers import build_db, run_chroma
from conftest import _built_once
from fault_proxy import Serving, _Handler, _Server, _Upstream

__all__ = ["WRITER", "AuthProxy", "ChromaServer", "assert_same_collection", "chroma_server", "collections_of",
           "free_port", "three_collections"]

TASKS = {"name": "tasks", "n": 600, "seed": 5, "metadata": {"owner": "ops", "tier": 2},
         "configuration": {"hnsw": {"space": "cosine", "ef_construction": 120, "max_neighbors": 12}}}


@pytest.fixture(scope="session")
def three_collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only by contract: copy it."""

    def build(path: Path) -> None:
        build_db(path, {"docs": 3000, "notes": 1000}, seed=3)
        run_chroma("make", path, **TASKS)

    return _built_once(tmp_path_factory, "three-collections", build)


def collections_of(location: Path | str, *names: str) -> dict[str, Any]:
    """name -> settings and records of every collection (or ``names``) of a persist dir or a
    server URL."""
    args = {"names": list(names)} if names else {}
    result: dict[str, Any] = run_chroma("all_records", location, **args)  # type: ignore[arg-type]
    return result


def assert_same_collection(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equal settings and records; embeddings bit for bit, except in cosine space, where
    chromadb gives a vector back up to 1 unit in the last place off (see copy_verify)."""
    def settings(c: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k != "records"}

    assert settings(got) == settings(want)
    assert got["records"].keys() == want["records"].keys()
    cosine = (want["hnsw"] or {}).get("space") == "cosine"
    for rid, (emb, *rest) in want["records"].items():
        other, *other_rest = got["records"][rid]
        assert other_rest == rest, rid
        if cosine:
            a = np.frombuffer(bytes.fromhex(emb), dtype=np.int32).astype(np.int64)
            b = np.frombuffer(bytes.fromhex(other), dtype=np.int32).astype(np.int64)
            assert np.max(np.abs(a - b)) <= 2, rid
        else:
            assert other == emb, rid

START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ChromaServer:
    """``chroma run --path PATH`` on a free port of 127.0.0.1; ``url`` once it answers."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path = path
        chroma = Path(sys.executable).parent / "chroma"
        for _attempt in range(3):  # another process may take the free port before the server does
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with open(log, "ab") as out:
                self.proc = subprocess.Popen(
                    [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1",
                     "--port", str(self.port)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"chroma run did not start; see {log}")

    def _wait_ready(self) -> bool:
        """Poll the heartbeat until the server answers (it starts in about a second)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/api/v2/heartbeat",
                                                                       timeout=2) as resp:
                if resp.status == 200:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[Callable[[Path], ChromaServer]]:
    """``chroma_server(path)`` starts a server on the persist dir ``path``; all stop at teardown."""
    started: list[ChromaServer] = []

    def start(path: Path) -> ChromaServer:
        server = ChromaServer(path, tmp_path / f"chroma-run-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class _AuthHandler(_Handler):
    server: _AuthServer

    def _proxy(self) -> None:
        body = self._read_body()
        token = self.server.proxy.token
        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
        given = self.headers.get("X-Chroma-Token") or bearer
        if given != token:
            self.server.proxy.refused += 1
            error = json.dumps({"error": "AuthorizationError", "message": "Unauthorized"}).encode()
            self._send(_Upstream(401, "Unauthorized", [("Content-Type", "application/json")], error))
            return
        self._send(self._forward(body))


class _AuthServer(_Server):
    proxy: AuthProxy  # type: ignore[assignment]


class AuthProxy(Serving):
    """Listens on 127.0.0.1 (``url``), forwards requests carrying ``token`` to ``upstream``."""

    def __init__(self, upstream: str, token: str) -> None:
        self.upstream = upstream
        self.token = token
        self.refused = 0
        self._server = _AuthServer(self)  # type: ignore[arg-type]
        self._server.RequestHandlerClass = _AuthHandler
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> AuthProxy:
        return self


#: A client of a running server that adds 20 records to "notes" for each line it reads on stdin
#: and answers with the line's number (a writer the tests drive step by step, never by time).
WRITER = """
import sys
import chromadb, numpy as np
from chromadb.config import Settings
host, port = sys.argv[1].removeprefix("http://").split(":")
client = chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
notes = client.get_collection("notes", embedding_function=None)
rng = np.random.default_rng(11)
print("ready", flush=True)
for i, line in enumerate(sys.stdin):  # one write per line the test sends, then its answer
    vectors = rng.standard_normal((20, 64)).astype("float32")
    notes.add(ids=[f"w{i}-{k}" for k in range(20)], embeddings=vectors)
    print(i, flush=True)
"""
