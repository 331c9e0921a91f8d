"""The tools under test, each run as its own measured process: chroma-snapshot (this checkout's
CLI), restic, gzip-everything and the ``tar | zstd`` pipe. Every method returns a plain dict row.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from measure import Proc, dir_bytes, run

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESTIC_INSTALL = "restic is not installed: `apt-get install restic` (Debian/Ubuntu) or see restic.net"


class ChromaSnapshot:
    """``python -m snapshot`` from this checkout (PYTHONPATH and cwd at the checkout root), run
    as a user would: default options, its local base cache (``CHROMA_SNAPSHOT_CACHE``) kept
    inside the work dir rather than in ~/.cache."""

    name = "chroma-snapshot"
    CREATE_FIELDS = ("bytes_total", "bytes_uploaded", "bytes_new", "chunks_total", "chunks_new",
                     "chunks_delta", "objects_uploaded", "bases_cached", "bases_read")

    def __init__(self, repo: Path, cache: Path, password_file: Path | None = None,
                 create_args: tuple[str, ...] = ()) -> None:
        """``password_file``: the repository is (created) encrypted, with that password;
        ``create_args``: added to every create (e.g. ``--in-place``)."""
        self.repo, self.cache, self.encrypted = repo, cache, password_file is not None
        self.create_args = create_args
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), ANONYMIZED_TELEMETRY="False",
                        CHROMA_SNAPSHOT_CACHE=str(cache))
        for name in ("CHROMA_SNAPSHOT_PASSWORD", "CHROMA_SNAPSHOT_PASSWORD_FILE",
                     "CHROMA_SNAPSHOT_SCRYPT_LOG_N",  # the key derivation runs at its real cost
                     "CHROMA_SNAPSHOT_DELETE_AFTER", "CHROMA_SNAPSHOT_CLOCK_SHIFT"):  # the default bound
            self.env.pop(name, None)
        if password_file is not None:
            self.env["CHROMA_SNAPSHOT_PASSWORD_FILE"] = str(password_file)

    def _cli(self, *args: str) -> Proc:
        argv = [sys.executable, "-m", "snapshot", "--repo", str(self.repo), *args]
        return run(argv, env=self.env, cwd=ROOT)

    def create(self, src: Path) -> dict[str, Any]:
        before = dir_bytes(self.repo) if self.repo.exists() else 0
        encrypt = ["--encrypt"] if self.encrypted and not self.repo.exists() else []
        p = self._cli("create", str(src), "--json", *encrypt, *self.create_args)
        p.check("chroma-snapshot create")
        out = json.loads(p.stdout)
        return {**p.row(), "repo_bytes_added": dir_bytes(self.repo) - before,
                "repo_bytes": dir_bytes(self.repo), "id": out["id"], "parent": out["parent"],
                **{k: out[k] for k in self.CREATE_FIELDS if k in out},
                "local_cache_bytes": dir_bytes(self.cache) if self.cache.exists() else 0,
                "tool_seconds": out["seconds"]} | self._cache_note()

    def _cache_note(self) -> dict[str, str]:
        size = dir_bytes(self.cache) if self.cache.exists() else 0
        return {"note": f"+ local base cache {size / (1 << 20):,.0f} MiB"} if size else {}

    def restore(self, target: Path, chroma_check: bool = False) -> dict[str, Any]:
        """``restore latest TARGET``: by default hashes + the consistency checks; with
        ``chroma_check`` chromadb also opens the result (child processes, batches of collections)."""
        args = ["restore", "latest", str(target), "--force", "--json"]
        if chroma_check:
            args.insert(-1, "--chroma-check")
        p = self._cli(*args)
        if p.returncode != 0:  # a finding to report, not a reason to stop the benchmark
            try:
                message = json.loads(p.stdout)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = (p.stderr.strip().splitlines() or ["no output"])[-1]
            return {**p.row(), "target": str(target), "failed": f"exit {p.returncode}: {message}",
                    "chroma_checked": {}, "checks": [], "chroma_batches": 0,
                    "note": f"FAILED (exit {p.returncode})"}
        out = json.loads(p.stdout)
        return {**p.row(), "id": out["id"], "target": str(target), "bytes_total": out["bytes_total"],
                "bytes_reused": out["bytes_reused"], "bytes_downloaded": out["bytes_downloaded"],
                "checks": out.get("checks", []), "chroma_checked": out["chroma_checked"],
                "chroma_batches": out.get("chroma_batches", 0),
                "chunks_repaired": out.get("chunks_repaired", 0), "warnings": out.get("warnings", []),
                "tool_seconds": out["seconds"]}


class Restic:
    """restic with a local repository and its cache inside the work dir."""

    name = "restic"

    def __init__(self, repo: Path, cache: Path) -> None:
        self.binary = shutil.which("restic")
        self.repo, self.cache = repo, cache
        self.env = dict(os.environ, RESTIC_PASSWORD="chroma-snapshot-bench",
                        RESTIC_REPOSITORY=str(repo), RESTIC_CACHE_DIR=str(cache))
        self.version = ""
        if self.binary:
            v = subprocess.run([self.binary, "version"], capture_output=True, text=True)
            self.version = v.stdout.strip()

    def _run(self, *args: str) -> Proc:
        assert self.binary
        return run([self.binary, "--cache-dir", str(self.cache), *args], env=self.env)

    def init(self) -> dict[str, Any]:
        p = self._run("init").check("restic init")
        cfg = self._run("cat", "config").check("restic cat config")
        return {**p.row(), "repository_version": json.loads(cfg.stdout).get("version")}

    def backup(self, src: Path, parent: str | None = None) -> dict[str, Any]:
        before = dir_bytes(self.repo)
        args = ["backup", "--json", "--host", "bench", str(src)]
        if parent:
            args[1:1] = ["--parent", parent]
        p = self._run(*args).check("restic backup")
        summary: dict[str, Any] = {}
        for line in p.stdout.splitlines():
            if '"summary"' in line:
                summary = json.loads(line)
        return {**p.row(), "repo_bytes_added": dir_bytes(self.repo) - before,
                "repo_bytes": dir_bytes(self.repo), "id": summary.get("snapshot_id"),
                "data_added": summary.get("data_added"),
                "bytes_total": summary.get("total_bytes_processed")}

    def restore(self, target: Path, src: Path) -> dict[str, Any]:
        p = self._run("restore", "latest", "--target", str(target)).check("restic restore")
        return {**p.row(), "restored_path": str(target / src.relative_to(src.anchor))}


def gzip_everything(src: Path, out: Path) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    p = run([sys.executable, str(BENCH / "baselines.py"), "gzip", str(src), str(out)]).check("gzip")
    res = json.loads(p.stdout)
    return {**p.row(), "repo_bytes_added": res["bytes_out"], "repo_bytes": res["bytes_out"],
            "bytes_total": res["bytes_in"]}


def zstd_method() -> str:
    if shutil.which("zstd") and shutil.which("tar"):
        return "binaries: tar | zstd -1 -T<cores> (Debian zstd)"
    return "python: tarfile | zstandard level 1, threads=<cores> (zstd binary not found)"


def zstd_pipe(src: Path, out: Path, threads: int) -> dict[str, Any]:
    if shutil.which("zstd") and shutil.which("tar"):
        cmd = f"tar -C {shlex.quote(str(src))} -cf - . | zstd -1 -T{threads} -q -c > {shlex.quote(str(out))}"
        p = run([cmd], shell=True).check("tar | zstd")
        p = Proc(("sh", "-c", cmd), p.returncode, p.seconds, p.peak_rss, p.tree_rss, p.stdout, p.stderr,
                 p.user_seconds, p.system_seconds)
    else:
        argv = [sys.executable, str(BENCH / "baselines.py"), "zstd-pipe", str(src), str(out),
                "--threads", str(threads)]
        p = run(argv).check("zstd pipe")
    size = out.stat().st_size
    return {**p.row(), "repo_bytes_added": size, "repo_bytes": size, "bytes_total": dir_bytes(src)}
