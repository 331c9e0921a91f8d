"""Commands on snapshots themselves: create, list, show, restore."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from snapshot.cli.options import (
    GlobalOptions,
    archive_options,
    archive_request,
    command,
    dry_run_option,
    filter_options,
    json_option,
    narrowed,
    object_lock_options,
    preloading,
    repo_options,
    seconds,
    wait_option,
)
from snapshot.cli.predicted import DryRun, priced, render_dry_run
from snapshot.cli.render import (
    CliReporter,
    emit,
    emit_json,
    human_bytes,
    render_collection_history,
    render_collection_restore,
    render_create,
    render_files,
    render_list,
    render_restore,
    render_restore_plan,
    render_show,
)
from snapshot.cli.signals import settle
from snapshot.errors import ChromaCheckError, NotFoundError, UsageError
from snapshot.format.codecs import CODECS
from snapshot.format.manifest import LockSetting, manifest_to_dict
from snapshot.repo.selection import SnapshotFilter
from snapshot.util import pausepoints

if TYPE_CHECKING:
    from snapshot.create.options import CreateOptions
    from snapshot.repo.repository import Repository, SnapshotSummary

F = TypeVar("F", bound=Callable[..., Any])

#: glibc's mallopt parameters, and ours: buffers this large are mapped and unmapped.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _LARGE = -1, -3, 4 << 20
#: Freed memory kept at the top of each heap for the next buffers (create and restore).
_KEEP_FREED = 16 << 20


def _mallopt(*settings: tuple[int, int]) -> None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return  # nothing on other C libraries
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        for param, value in settings:
            libc.mallopt(param, value)


def _tune_malloc() -> None:
    """For create and restore, which pass thousands of 1 MiB buffers (frames) and some of
    16 MiB (packs) between threads, on glibc:

    * packs (4 MiB and more) go back to the OS as soon as they are freed. glibc raises its
      mmap threshold after the first large free and then serves them from heaps it keeps;
      with several threads that held a create's peak RSS at 1.5-2x what it uses (200k
      records: 218 -> 120-130 MiB; 5 GiB: 277 -> 114 MiB);
    * freed memory up to _KEEP_FREED stays at the top of each heap for the next frames.
      Fixing the mmap threshold fixes the trim threshold at 128 KiB, and every frame's buffer
      went back to the OS and was faulted in again, page by page (200k records, 3-6 runs
      each: create system time 1.9-2.1 -> 1.3-1.7 s, wall 2.72-2.89 -> 2.29-2.59 s; restore
      system time 0.50-0.83 -> 0.38-0.51 s; peak RSS +10-15 MiB)."""
    _mallopt((_M_MMAP_THRESHOLD, _LARGE), (_M_TRIM_THRESHOLD, _KEEP_FREED))


def create_options(f: F) -> F:
    """Create's parameters that are :class:`CreateOptions` fields (declared on the command, in the
    order its help lists them), handed to it as one ``options`` argument."""

    @functools.wraps(f)
    def command(*args: Any, tags: tuple[str, ...], message: str, includes: tuple[str, ...],
                include_orphans: bool, parent: str | None, level: int | None, no_delta: bool,
                tmp_dir: str | None, cache_dir: str | None, no_cache: bool, allow_inconsistent: bool,
                wait: str | None, in_place: bool, **kwargs: Any) -> Any:
        from snapshot.create.options import CreateOptions  # each command imports what it runs

        options = CreateOptions(
            tags=tags, message=message, includes=includes, include_orphans=include_orphans, parent=parent,
            level=level, delta=not no_delta, tmp_dir=tmp_dir, use_cache=not no_cache, cache_dir=cache_dir,
            wait=seconds(wait), allow_inconsistent=allow_inconsistent, in_place=in_place,
        )
        return f(*args, options=options, **kwargs)

    return cast(F, command)


@command()
@click.argument("source", type=click.Path(path_type=str))
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the snapshot (repeatable).")
@click.option("-m", "--message", default="", help="A note stored with the snapshot.")
@click.option("--include", "includes", multiple=True, metavar="PATH",
              help="Extra file or folder to keep next to the DB (repeatable).")
@click.option("--include-orphans", is_flag=True,
              help="Also keep segment folders that no collection references.")
@click.option("--parent", metavar="ID", help="Snapshot to dedup and delta against [newest of this source].")
@click.option("--codec", type=click.Choice(CODECS),
              help="Frame codec of a new repository [zstd]; gzip frames are never deltas. Only when this "
              "create initialises the repository.")
@click.option("--level", type=int,
              help="Compression level of full frames [zstd 1, gzip 6]; zstd deltas use at least 3.")
@click.option("--no-delta", is_flag=True, help="Store changed chunks whole, not as deltas to the parent.")
@click.option("--chunk-size", type=int,
              help="Chunk size in bytes [1048576]; only when this create initialises the repository.")
@click.option("--tmp-dir", type=click.Path(file_okay=False, exists=True),
              help="Where the consistent copy is staged (an existing folder).")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Base cache: the last capture of each source, kept so the next create deltas against "
              "it without reading the repository [$CHROMA_SNAPSHOT_CACHE or ~/.cache/chroma-snapshot].")
@click.option("--no-cache", is_flag=True, help="Keep no base cache (saves a DB-sized copy on disk; the "
              "next create then reads delta bases back from the repository).")
@click.option("--in-place", is_flag=True,
              help="Copy only chroma.sqlite3 and read the segment files where they lie, checked unchanged "
              "once read (no DB-sized copy on disk; keeps no base cache; a writer that changes a segment "
              "file meanwhile makes the create read it again).")
@click.option("--encrypt", is_flag=True,
              help="Encrypt a new repository (AES-256-GCM; the password comes from --password-file, "
              "CHROMA_SNAPSHOT_PASSWORD_FILE, CHROMA_SNAPSHOT_PASSWORD, --password-command or a prompt). "
              "Only when this create initialises the repository.")
@click.option("--allow-inconsistent", is_flag=True,
              help="Snapshot a directory that fails the consistency checks anyway (recorded in the "
              "snapshot; restores of it warn).")
@dry_run_option
@object_lock_options
@wait_option
@repo_options
@json_option
@create_options
def create(source: str, codec: str | None, chunk_size: int | None, encrypt: bool, dry_run: bool,
           object_lock: LockSetting | None, options: CreateOptions, global_options: GlobalOptions,
           as_json: bool) -> None:
    """Snapshot the Chroma persist dir SOURCE (initialises an empty repository).

    --dry-run captures SOURCE into a temporary folder and predicts the requests, bytes and cost
    of the create, uploading nothing; --json of a create reports that prediction beside what it took.

    \b
    Example:
      chroma-snapshot --repo ./snapshots create data/vector_db --tag nightly -m "after chapter 5"
      chroma-snapshot --repo s3://bucket/db create data/vector_db --encrypt --password-file ~/.db-pass
      chroma-snapshot --repo s3://bucket/db create data/vector_db --dry-run --json
    """
    from snapshot.create.pipeline import check_arguments, create_snapshot  # each command imports what it runs

    check_arguments(Path(source), options, codec)
    _tune_malloc()
    if dry_run:
        from snapshot.create.predict import predict_create

        repo = global_options.open_repo()
        with repo.measure() as spent:
            predicted = predict_create(repo, Path(source), options)
        dry = DryRun(True, predicted, spent.requests, spent.bytes_down)
        return emit(priced(dry, repo), as_json, render_dry_run)
    repo = global_options.open_repo(create=True, encrypt=encrypt, chunk_size=chunk_size, codec=codec,
                                    object_lock=object_lock)
    result = create_snapshot(repo, Path(source), dataclasses.replace(options, predict=as_json),
                             reporter=CliReporter(not as_json))
    emit(priced(result, repo), as_json, render_create)


def collection_history(snaps: list[SnapshotSummary], name: str) -> list[dict[str, Any]]:
    """``name``'s record count in each snapshot, oldest first (``records`` None: the snapshot has
    no such collection; ``error``: its root could not be read). NotFoundError, naming the
    collections there are, when no snapshot has it."""
    if not any(name in s.collections for s in snaps):
        names = ", ".join(sorted({c for s in snaps for c in s.collections})) or "none"
        raise NotFoundError(f"no snapshot has a collection {name!r}; collections: {names}")
    return [{"id": s.id, "created_at": s.created_at, "records": s.collections.get(name), "error": s.error}
            for s in snaps]


@command("list")
@click.option("--stats", is_flag=True,
              help="Also report the requests and bytes the listing took (with --json: an object "
                   "{snapshots, requests, bytes_down} instead of the plain list).")
@click.option("--collection", metavar="NAME",
              help="One collection's record count in each snapshot (absent where a snapshot lacks it).")
@repo_options
@json_option
def list_(stats: bool, global_options: GlobalOptions, as_json: bool, collection: str | None = None) -> None:
    """List snapshots, oldest first (reads each snapshot's root only).

    \b
    Example:
      chroma-snapshot list --json | jq '.[-1].id'
      chroma-snapshot list --collection docs
    """
    repo = global_options.open_repo()
    with repo.measure() as moved:
        snaps = repo.list_snapshots()
    if collection is not None:
        return emit(collection_history(snaps, collection), as_json, render_collection_history)
    if not stats:
        emit(snaps, as_json, render_list)
    elif as_json:
        emit_json({"snapshots": snaps, "requests": moved.requests, "bytes_down": moved.bytes_down,
                   "bytes_down_per_snapshot": moved.bytes_down // max(1, len(snaps))})
    else:
        emit(snaps, False, render_list)
        click.echo(f"read {human_bytes(moved.bytes_down)} in {moved.requests.get('total', 0)} request(s) "
                   f"for {len(snaps)} snapshot(s)")


@command()
@click.argument("snapshot_ref", metavar="ID")
@click.option("--files", "with_files", is_flag=True,
              help="List every file with its chunks and frames (reads each file's chunk table).")
@filter_options
@repo_options
@json_option
def show(snapshot_ref: str, with_files: bool, filters: SnapshotFilter, global_options: GlobalOptions,
         as_json: bool) -> None:
    """Show one snapshot: ID is a full id, a unique prefix or `latest` (the newest, or the
    newest with --tag/--host/--path).

    `--json` prints the snapshot's root manifest as stored; `--files --json` prints its files
    with their chunk tables, one JSON object per line.

    \b
    Example:
      chroma-snapshot show latest --json
      chroma-snapshot show latest --files --json | head
      chroma-snapshot show latest --host gpu-box --tag nightly
    """
    repo = global_options.open_repo()
    m = repo.get(snapshot_ref, filters)
    if with_files:
        for line in render_files(repo, m, as_json):
            click.echo(line)
        return
    emit(manifest_to_dict(m) if as_json else m, as_json, render_show)


def collection_options(f: F) -> F:
    """restore's options for chosen collections, handed on as one ``collections`` argument
    (None: no --collection, a whole-snapshot restore)."""

    @functools.wraps(f)
    def command(*args: Any, names: tuple[str, ...], rename: str | None, replace: bool, tenant: str | None,
                database: str | None, headers: tuple[str, ...], batch_size: int | None, **kwargs: Any) -> Any:
        extra = [flag for flag, given in (("--as", rename is not None), ("--replace", replace),
                                          ("--tenant", tenant), ("--database", database),
                                          ("--header", headers), ("--batch-size", batch_size is not None))
                 if given]
        if not names:
            if extra:
                raise UsageError(f"{extra[0]} applies only with --collection")
            return f(*args, collections=None, **kwargs)
        for flag in ("force", "chroma_check", "dry_run"):
            if kwargs.get(flag):
                raise UsageError(f"--{flag.replace('_', '-')} does not apply to a restore of collections")
        parsed = {}
        for h in headers:
            key, sep, value = h.partition(":")
            if not sep or not key.strip():
                raise UsageError(f"--header takes 'Name: value', got {h.split(':')[0]!r}")
            parsed[key.strip()] = value.strip()
        request = {"names": names, "rename": rename, "replace": replace, "batch_size": batch_size,
                   "server": {"tenant": tenant, "database": database, "headers": parsed}}
        return f(*args, collections=request, **kwargs)

    return cast(F, command)


@command()
@click.argument("snapshot_ref", metavar="ID")
@click.argument("target", type=click.Path(path_type=str))
@click.option("--collection", "names", multiple=True, metavar="NAME",
              help="Restore only this collection (repeatable): TARGET is then a new or empty dir, an "
              "existing persist dir (the collection is added to it) or a server URL http(s)://HOST:PORT.")
@click.option("--as", "rename", metavar="NEW", help="Restore the one --collection under this name.")
@click.option("--replace", is_flag=True,
              help="With --collection: replace a collection of the same name in TARGET.")
@click.option("--tenant", help="With --collection into a server: its tenant [default_tenant].")
@click.option("--database", help="With --collection into a server: its database [default_database].")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="With --collection into a server: an HTTP header to send (repeatable; auth tokens are "
              "better left to chromadb's CHROMA_CLIENT_AUTH_* environment variables).")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="N",
              help="With --collection into a persist dir or a server: at most N records per request "
              "[the target's max_batch_size, about 64 MiB of records at most], e.g. behind a proxy that "
              "limits request bodies.")
@click.option("--force", is_flag=True,
              help="Replace a non-empty TARGET (atomically); only an empty dir or a Chroma persist dir.")
@click.option("--chroma-check", is_flag=True,
              help="Also open the result with chromadb (counts, sampled embeddings, queries) before "
              "swapping it in; collections are opened in batches, in child processes.")
@click.option("--skip-chroma-check", is_flag=True, hidden=True,
              help="Accepted for compatibility: chromadb does not open the result unless --chroma-check.")
@click.option("--strict", is_flag=True,
              help=f"Refuse (exit {ChromaCheckError.exit_code}) instead of warning when the installed "
              "chromadb cannot open the snapshot's database schema.")
@dry_run_option
@archive_options
@filter_options
@repo_options
@json_option
@collection_options
def restore(snapshot_ref: str, target: str, force: bool, chroma_check: bool, skip_chroma_check: bool,
            strict: bool, dry_run: bool, filters: SnapshotFilter, global_options: GlobalOptions,
            as_json: bool, collections: dict[str, Any] | None, request_restore: bool = False,
            restore_days: int = 7, restore_tier: str = "Standard") -> None:
    """Restore snapshot ID (id, prefix or `latest`; with --tag/--host/--path, among the
    snapshots that pass them) into TARGET, verified and atomic.

    Every chunk and file hash is checked, and the consistency checks the capture passed are run
    again on the result; only then is it swapped in. With --collection, only those collections
    (and chroma.sqlite3) are read from the repository.

    \b
    Example:
      chroma-snapshot restore latest /srv/app/vector_db --force
      chroma-snapshot restore latest /srv/app/vector_db --force --tag nightly
      chroma-snapshot restore latest /tmp/tenant42 --collection tenant-42 --as tenant-42-yesterday
    """
    with preloading("snapshot.restore.pipeline"):  # each command imports what it runs
        repo = global_options.open_repo()
        [snapshot_ref] = narrowed(repo, [snapshot_ref], filters)
    if collections is not None:
        return _restore_collections(repo, snapshot_ref, target, collections, as_json)
    from snapshot.restore.options import RestoreOptions
    from snapshot.restore.pipeline import prepare_restore, restore_snapshot

    options = RestoreOptions(force=force, chroma_check=chroma_check and not skip_chroma_check, strict=strict,
                             request_restore=archive_request(request_restore, restore_days, restore_tier),
                             predict=as_json)
    _tune_malloc()
    if dry_run:
        return emit(priced(prepare_restore(repo, snapshot_ref, target).summary, repo), as_json,
                    render_restore_plan)
    result = restore_snapshot(repo, snapshot_ref, target, options, reporter=CliReporter(not as_json),
                              on_commit=settle)
    emit(priced(result, repo), as_json, render_restore)
    pausepoints.point("restore.reported")


def _restore_collections(repo: Repository, ref: str, target: str, request: dict[str, Any],
                         as_json: bool) -> None:
    from snapshot.restore.collections import ServerOptions, restore_collection

    _tune_malloc()
    result = restore_collection(repo, ref, target, request["names"], rename=request["rename"],
                                replace=request["replace"], server=ServerOptions(**request["server"]),
                                batch_size=request["batch_size"], reporter=CliReporter(not as_json),
                                on_commit=settle)
    emit(result, as_json, render_collection_restore)
    pausepoints.point("restore.reported")
