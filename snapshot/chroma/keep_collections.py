"""Making a private copy of a persist dir hold only some of its collections: the others are
dropped and one may be renamed, through chromadb's public client API in a child process; then
chroma.sqlite3 is compacted so that its free pages no longer hold the dropped collections'
documents and metadata (SQLite leaves deleted rows in free pages until a VACUUM: a directory
restored for one tenant would otherwise carry the others' text).

Only ever run on a directory nobody else has open (a restore's temporary directory): the
VACUUM rewrites the whole file. The kept collections' segment folders are not touched:
chromadb drops a collection without loading the others, and renaming changes a row only.

Run as ``python -m snapshot.chroma.keep_collections DIR`` with ``{"drop": [...], "rename":
[old, new] or null}`` on stdin; prints one JSON object (``problem``: what failed, or null).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snapshot.chroma.child import child_env
from snapshot.chroma.schema import DB_NAME, open_readonly, schema_levels
from snapshot.chroma.trial_open import cannot_open
from snapshot.errors import ChromaCheckError

TIMEOUT = 900


def _env() -> dict[str, str]:
    return child_env()


def keep_only(root: Path, drop: Sequence[str], rename: tuple[str, str] | None,
              schema: dict[str, tuple[int, str]] | None = None) -> None:
    """Drop the collections ``drop`` from the private persist dir ``root`` and rename
    ``rename[0]`` to ``rename[1]``, then compact chroma.sqlite3. Raises ChromaCheckError
    naming what chromadb said if it fails (``schema``: the DB's recorded schema levels, to say
    what a failure to open it means; read from the file if not given)."""
    request = json.dumps({"drop": list(drop), "rename": list(rename) if rename else None})
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapshot.chroma.keep_collections", os.fsdecode(root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        out, err = proc.communicate(request, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise ChromaCheckError(f"chromadb did not drop the other collections in {TIMEOUT}s") from exc
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    try:
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (err.strip().splitlines() or ["no output"])[-1]
        raise ChromaCheckError(f"chromadb crashed dropping the other collections (exit {proc.returncode}): "
                               f"{tail}") from None
    if report.get("problem"):
        said = str(report["problem"])
        if report.get("unopened"):  # what it means is worded from the DB's schema
            said = cannot_open(said, schema or _schema(root / DB_NAME))
        raise ChromaCheckError(f"chromadb could not keep only the restored collections: {said}")
    compact(root / DB_NAME)


def _schema(db: Path) -> dict[str, tuple[int, str]]:
    try:
        conn = open_readonly(db, immutable=True)
        try:
            return schema_levels(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def compact(db: Path) -> None:
    """VACUUM the private copy ``db``: deleted rows leave its file."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("VACUUM")
    finally:
        conn.close()


def _apply(client: Any, drop: list[str], rename: list[str] | None) -> None:
    for name in drop:
        client.delete_collection(name)
    if rename:
        old, new = rename
        # no embedding function: nothing is embedded, and none is built from the configuration
        client.get_collection(old, embedding_function=None).modify(name=new)


def _main(path: str) -> int:
    request = json.loads(sys.stdin.read())
    opened = False
    try:
        import chromadb
        from chromadb.config import Settings

        client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
        opened = True
        _apply(client, list(request["drop"]), request.get("rename"))
    except Exception as exc:  # noqa: BLE001 - any chromadb failure is reported, in one line
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(json.dumps({"problem": said, "unopened": not opened}))
        return 0
    print(json.dumps({"problem": None}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
