"""Copying collections from a local persist dir into a user's existing persist dir or a running
Chroma server, through chromadb's public client API only (never SQL into a user's database).

The work runs in a child process (:mod:`snapshot.chroma.transfer_child`), so chromadb's
process-wide state and any crash in its native code stay out of the caller. Each collection is
built under a temporary name (``NAME-restoring-XXXXXXXX``) in batches no larger than the
target's ``max_batch_size`` (and about 64 MiB), each an upsert by id; a small journal in
``journal_dir`` counts the batches the target confirmed, so a rerun after a kill or a lost
network continues where the target stands and sends at most one batch again. The copy is then
verified (count, every id, a sample field by field with embeddings bit for bit as float32, each
sampled embedding finding its own record, metadata and index settings) and only then takes its
name: with ``replace`` the old collection is dropped just before the rename.

What a reader of the target sees meanwhile: the old collection (or none) under the name, whole,
until the verified copy is renamed; the copy in progress only under its temporary name; with
``replace``, for the moment between the drop and the rename, no collection of that name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from snapshot.chroma.child import child_env
from snapshot.chroma.holders import holders
from snapshot.errors import (
    CopyCheckError,
    NotFoundError,
    SnapshotError,
    TargetAuthError,
    TargetError,
    TargetUnreachableError,
    UsageError,
)
from snapshot.util import pausepoints
from snapshot.util.progress import NullReporter, Reporter

#: chromadb's rule for collection names.
NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{1,510})[a-zA-Z0-9]$")
#: What a copy's verification compares (see copy_verify), as a restore's report names it: the
#: record count, every id, a sample of records field by field (embeddings bit for bit), each
#: sampled embedding finding its own record, the collection's metadata and index settings.
CHECKS = ("count", "ids", "sampled-fields", "self-query", "settings")
_ERRORS: dict[str, type[SnapshotError]] = {
    "target": TargetError, "unreachable": TargetUnreachableError, "auth": TargetAuthError,
    "integrity": CopyCheckError, "not-found": NotFoundError, "usage": UsageError,
}


@dataclass(frozen=True)
class ChromaTarget:
    """Where collections go: a persist dir path or a server URL (``http://HOST:PORT``,
    ``https://...``), with the tenant, database, HTTP headers and chromadb client ``Settings``
    fields (e.g. ``chroma_client_auth_provider``, ``chroma_client_auth_credentials``) to use.
    Headers and settings may hold secrets: they reach the child process on its stdin only and
    appear in no message."""

    location: str
    tenant: str | None = None
    database: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_server(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def describe(self) -> str:
        """The target for messages and journal keys (a URL without any user:password part)."""
        where = re.sub(r"//[^/@]*@", "//", self.location)
        parts = [where] + [f"{k}={v}" for k, v in (("tenant", self.tenant), ("database", self.database)) if v]
        return " ".join(parts)


@dataclass(frozen=True)
class CollectionCopy:
    """One collection copied and verified. ``records_sent``: records this run sent (a resumed
    run skips the ``resumed_at`` records the target had confirmed before); ``sampled``: records
    compared field by field; ``neighbour_misses``: sampled embeddings whose own record the copy's
    index does not return first, ``source_neighbour_misses``: the same in the source's own index
    (HNSW is approximate: the copy fails when it misses clearly more, snapshot/chroma/copy_verify.py);
    ``replaced``: an older collection of that name was dropped."""

    source: str
    name: str
    records: int
    records_sent: int
    resumed_at: int
    batch_size: int
    sampled: int
    neighbour_misses: int
    replaced: bool
    source_neighbour_misses: int = 0


def check_target(target: ChromaTarget) -> None:
    """Refuse a persist dir that is not one, or that another process has open."""
    if target.is_server:
        return
    path = Path(target.location)
    if not (path / "chroma.sqlite3").is_file():
        raise TargetError(f"{path} is not a Chroma persist dir (no chroma.sqlite3)")
    held = holders(path)
    if held:
        who = ", ".join(f"pid {h.pid} ({h.command})" for h in held[:3])
        raise TargetError(
            f"{path}/chroma.sqlite3 is open in another process ({who}): writing beside a running Chroma "
            "would corrupt it; copy through that Chroma's server URL (http://HOST:PORT) instead")


def check_names(names: Sequence[str], rename: str | None) -> None:
    if not names:
        raise UsageError("no collection named to copy")
    if len(set(names)) != len(names):
        raise UsageError("a collection is named twice")
    if rename is not None:
        if len(names) != 1:
            raise UsageError(f"a new name is for one collection; {len(names)} were named")
        if not NAME.match(rename):
            raise UsageError(f"invalid collection name {rename!r}: 3-512 characters from a-z A-Z 0-9 . _ -, "
                             "starting and ending with a letter or digit")


def copy_collections(source_dir: Path, names: Sequence[str], target: ChromaTarget, *, rename: str | None,
                     replace: bool, journal_dir: Path, journal_key: str, reporter: Reporter | None = None,
                     batch_size: int | None = None, sample: int = 1000) -> list[CollectionCopy]:
    """Copy ``names`` from the persist dir ``source_dir`` (private to the caller: chromadb opens
    it) into ``target``, ``rename``\\ d when given (one collection only). A name the target
    already has is refused (TargetError, exit 7) unless ``replace``. ``journal_key`` identifies
    the copy (snapshot id, collection, target: see :func:`journal_key`); a rerun with the same
    key resumes. ``batch_size`` lowers the batch below the target's limit."""
    with start_copy(names, target, rename=rename, replace=replace, journal_dir=journal_dir,
                    journal_key=journal_key, reporter=reporter, batch_size=batch_size,
                    sample=sample) as pending:
        return pending.run(source_dir)


def start_copy(names: Sequence[str], target: ChromaTarget, *, rename: str | None, replace: bool,
               journal_dir: Path, journal_key: str, reporter: Reporter | None = None,
               batch_size: int | None = None, sample: int = 1000,
               dimensions: Mapping[str, int | None] | None = None) -> PendingCopy:
    """A copy whose target was reached and checked, before its source exists: the child has
    connected (an unreachable server or refused credentials raise here) and found no name clash
    (``dimensions``: each collection's, as the snapshot records it, for the message). The caller
    then builds the source and calls :meth:`PendingCopy.run`, or leaves the ``with`` block."""
    check_names(names, rename)
    check_target(target)
    request = {
        "names": list(names), "rename": rename, "replace": replace,
        "target": {"location": target.location, "tenant": target.tenant, "database": target.database,
                   "headers": dict(target.headers), "settings": dict(target.settings)},
        "journal_dir": os.fspath(journal_dir), "journal_key": journal_key, "batch_size": batch_size,
        "sample": sample, "parent": os.getpid(), "dimensions": dict(dimensions or {}),
    }
    return PendingCopy(request, reporter or NullReporter())


class PendingCopy:
    """The child of a copy, connected to the target and waiting for the source (see
    :func:`start_copy`). Leaving the ``with`` block without :meth:`run` ends it."""

    def __init__(self, request: dict[str, Any], reporter: Reporter) -> None:
        self._reporter = reporter
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _end
        self._proc = _spawn(self._err)
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            answer = self._answer()
            if answer["event"] != "ready":
                raise _ERRORS.get(answer["kind"], SnapshotError)(answer["message"])
        except BaseException:
            self._end()
            raise

    def run(self, source_dir: Path) -> list[CollectionCopy]:
        """Copy from ``source_dir`` (a persist dir private to the caller: chromadb opens it)."""
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"source": os.fspath(source_dir)}) + "\n")
            self._proc.stdin.close()
            answer = self._answer()
            self._proc.wait()
        finally:
            self._end()
        if answer["event"] == "error":
            raise _ERRORS.get(answer["kind"], SnapshotError)(answer["message"])
        return [CollectionCopy(**c) for c in answer["copies"]]

    def _answer(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        try:
            answer = _follow(self._proc.stdout, self._reporter)
        except BaseException:
            self._proc.kill()  # Ctrl-C or a failing reporter: the journal lets a rerun resume
            raise
        if answer is None:
            self._proc.wait()
            self._err.seek(0)
            tail = (self._err.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise SnapshotError(f"the copy process ended without an answer (exit {self._proc.returncode}): "
                                f"{tail[:300]}; run again to resume")
        return answer

    def _end(self) -> None:
        """Close the child's input (a child still waiting for its source ends) and reap it."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._err.close()
        self._reporter.done()

    def __enter__(self) -> PendingCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._err.closed:
            self._end()


def journal_key(snapshot_id: str, names: Sequence[str], target: ChromaTarget,
                rename: str | None = None) -> str:
    return json.dumps([snapshot_id, sorted(names), rename, target.describe()])


def _spawn(stderr: IO[bytes]) -> subprocess.Popen[str]:
    env = child_env()
    return subprocess.Popen([sys.executable, "-m", "snapshot.chroma.transfer_child"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)


def _follow(stdout: IO[str], reporter: Reporter) -> dict[str, Any] | None:
    for line in stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = event.get("event")
        if kind == "phase":
            reporter.phase(event["name"], int(event["total"]))
        elif kind == "advance":
            reporter.advance(int(event["n"]))
            pausepoints.point("transfer.progress")
        elif kind == "warn":
            reporter.warn(event["message"])
        elif kind in ("ready", "done", "error"):
            return dict(event)
    return None
