"""Commands on snapshots themselves: create, list, show, restore."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from snapshot.cli.options import (
    GlobalOptions,
    command,
    dry_run_option,
    filter_options,
    json_option,
    narrowed,
    preloading,
    repo_options,
    seconds,
    wait_option,
)
from snapshot.cli.render import (
    CliReporter,
    emit,
    emit_json,
    human_bytes,
    render_create,
    render_files,
    render_list,
    render_restore,
    render_restore_plan,
    render_show,
)
from snapshot.cli.signals import settle
from snapshot.errors import ChromaCheckError
from snapshot.format.codecs import CODECS
from snapshot.format.manifest import manifest_to_dict
from snapshot.repo.selection import SnapshotFilter
from snapshot.util import pausepoints

if TYPE_CHECKING:
    from snapshot.create.options import CreateOptions

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
@wait_option
@repo_options
@json_option
@create_options
def create(source: str, codec: str | None, chunk_size: int | None, encrypt: bool, options: CreateOptions,
           global_options: GlobalOptions, as_json: bool) -> None:
    """Snapshot the Chroma persist dir SOURCE (initialises an empty repository).

    \b
    Example:
      chroma-snapshot --repo ./snapshots create data/vector_db --tag nightly -m "after chapter 5"
      chroma-snapshot --repo s3://bucket/db create data/vector_db --encrypt --password-file ~/.db-pass
    """
    from snapshot.create.pipeline import check_arguments, create_snapshot  # each command imports what it runs

    check_arguments(Path(source), options, codec)
    _tune_malloc()
    repo = global_options.open_repo(create=True, encrypt=encrypt, chunk_size=chunk_size, codec=codec)
    result = create_snapshot(repo, Path(source), options, reporter=CliReporter(not as_json))
    emit(result, as_json, render_create)


@command("list")
@click.option("--stats", is_flag=True,
              help="Also report the requests and bytes the listing took (with --json: an object "
                   "{snapshots, requests, bytes_down} instead of the plain list).")
@repo_options
@json_option
def list_(stats: bool, global_options: GlobalOptions, as_json: bool) -> None:
    """List snapshots, oldest first (reads each snapshot's root only).

    \b
    Example:
      chroma-snapshot list --json | jq '.[-1].id'
    """
    repo = global_options.open_repo()
    with repo.measure() as moved:
        snaps = repo.list_snapshots()
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


@command()
@click.argument("snapshot_ref", metavar="ID")
@click.argument("target", type=click.Path(path_type=str))
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
@filter_options
@repo_options
@json_option
def restore(snapshot_ref: str, target: str, force: bool, chroma_check: bool, skip_chroma_check: bool,
            strict: bool, dry_run: bool, filters: SnapshotFilter, global_options: GlobalOptions,
            as_json: bool) -> None:
    """Restore snapshot ID (id, prefix or `latest`; with --tag/--host/--path, among the
    snapshots that pass them) into TARGET, verified and atomic.

    Every chunk and file hash is checked, and the consistency checks the capture passed are run
    again on the result; only then is it swapped in.

    \b
    Example:
      chroma-snapshot restore latest /srv/app/vector_db --force
      chroma-snapshot restore latest /srv/app/vector_db --force --tag nightly
    """
    with preloading("snapshot.restore.pipeline"):  # each command imports what it runs
        repo = global_options.open_repo()
        [snapshot_ref] = narrowed(repo, [snapshot_ref], filters)
    from snapshot.restore.options import RestoreOptions
    from snapshot.restore.pipeline import prepare_restore, restore_snapshot

    options = RestoreOptions(force=force, chroma_check=chroma_check and not skip_chroma_check, strict=strict)
    _tune_malloc()
    if dry_run:
        return emit(prepare_restore(repo, snapshot_ref, target).summary, as_json, render_restore_plan)
    result = restore_snapshot(repo, snapshot_ref, target, options, reporter=CliReporter(not as_json),
                              on_commit=settle)
    emit(result, as_json, render_restore)
    pausepoints.point("restore.reported")
