"""The chroma-snapshot command line: parse, call one library function, render.

Exit codes are the ``exit_code`` of the exception raised (see snapshot/errors.py and the table
in README.md); click's own usage errors exit 2, Ctrl-C exits 130.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from snapshot import __version__
from snapshot.create import check_arguments
from snapshot.errors import EXIT_INTERRUPTED, SnapshotError, UsageError
from snapshot.manifest import manifest_to_dict
from snapshot.render import (
    CliReporter,
    collections_text,
    emit_error,
    emit_json,
    human_bytes,
    table,
)
from snapshot.repository import Repository
from snapshot.storage import StoreOptions

F = TypeVar("F", bound=Callable[..., Any])


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name:
        ctx.ensure_object(dict)[param.name] = value
    return value


def _store_options(envvar: bool) -> list[Callable[[F], F]]:
    def opt(*decls: str, **kw: Any) -> Callable[[F], F]:
        return click.option(*decls, expose_value=False, callback=_remember, **kw)

    return [
        opt("--repo", metavar="PATH|s3://BUCKET/PREFIX", envvar="CHROMA_SNAPSHOT_REPO" if envvar else None,
            help="Repository: a folder (default), file:///path or s3://bucket/prefix. "
            "Env: CHROMA_SNAPSHOT_REPO."),
        opt("--profile", metavar="NAME", help="AWS profile (boto3's standard chain otherwise)."),
        opt("--endpoint-url", metavar="URL",
            help="S3-compatible endpoint (MinIO, R2, B2...). Also AWS_ENDPOINT_URL(_S3)."),
        opt("--region", metavar="REGION", help="Bucket region (boto3's chain otherwise)."),
        opt("--storage-class", metavar="CLASS", help="Storage class for data objects [STANDARD_IA]."),
        opt("--sse", type=click.Choice(["AES256", "aws:kms", "none"]),
            help="Server-side encryption for every object [AES256]; 'none' for stores that refuse it."),
        opt("--sse-kms-key-id", metavar="KEY", help="KMS key for --sse aws:kms."),
        opt("--s3-checksum", type=click.Choice(["when_supported", "when_required"]),
            help="botocore checksum mode; when_required for MinIO/R2/B2 that reject flexible checksums."),
    ]


def repo_options(f: F) -> F:
    """--repo and the S3 options, accepted after the command as well as before it."""
    for deco in reversed(_store_options(envvar=False)):
        f = deco(f)
    return f


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")(f)


def open_repo(create: bool = False, **kwargs: Any) -> Repository:
    obj = click.get_current_context().find_root().ensure_object(dict)
    options = StoreOptions(
        profile=obj.get("profile"),
        endpoint_url=obj.get("endpoint_url"),
        region=obj.get("region"),
        storage_class=obj.get("storage_class") or "STANDARD_IA",
        sse=obj.get("sse") or "AES256",
        sse_kms_key_id=obj.get("sse_kms_key_id"),
        checksum=obj.get("s3_checksum"),
    )
    repo = obj.get("repo")
    if not repo:
        raise UsageError("no repository given: pass --repo PATH or set CHROMA_SNAPSHOT_REPO")
    return Repository.open(repo, options, create=create, **kwargs)


def _with_store_options(f: F) -> F:
    for deco in reversed(_store_options(envvar=True)):
        f = deco(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="chroma-snapshot")
@_with_store_options
def cli() -> None:
    """Versioned, verified, incremental snapshots of ChromaDB persist directories.

    \b
    Example:
      export CHROMA_SNAPSHOT_REPO=./snapshots
      chroma-snapshot create data/vector_db --tag nightly
      chroma-snapshot restore latest /srv/app/vector_db --force
    """


@cli.command()
@click.argument("source", type=click.Path(path_type=str))
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the snapshot (repeatable).")
@click.option("-m", "--message", default="", help="A note stored with the snapshot.")
@click.option("--include", "includes", multiple=True, metavar="PATH",
              help="Extra file or folder to keep next to the DB (repeatable).")
@click.option("--include-orphans", is_flag=True,
              help="Also keep segment folders that no collection references.")
@click.option("--parent", metavar="ID", help="Snapshot to dedup and delta against [newest of this source].")
@click.option("--codec", type=click.Choice(["zstd", "gzip"]), help="Frame codec [repository's, zstd].")
@click.option("--level", type=int,
              help="Compression level of full frames [zstd 1, gzip 6]; zstd deltas use at least 3.")
@click.option("--no-delta", is_flag=True, help="Store changed chunks whole, not as deltas to the parent.")
@click.option("--chunk-size", type=int, default=1 << 20, show_default=True,
              help="Chunk size in bytes; only when this create initialises the repository.")
@click.option("--tmp-dir", type=click.Path(file_okay=False, exists=True),
              help="Where the consistent copy is staged (an existing folder).")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Base cache: the last capture of each source, kept so the next create deltas against "
              "it without reading the repository [$CHROMA_SNAPSHOT_CACHE or ~/.cache/chroma-snapshot].")
@click.option("--no-cache", is_flag=True, help="Keep no base cache (saves a DB-sized copy on disk; the "
              "next create then reads delta bases back from the repository).")
@repo_options
@json_option
def create(source: str, tags: tuple[str, ...], message: str, includes: tuple[str, ...],
           include_orphans: bool, parent: str | None, codec: str | None, level: int | None,
           no_delta: bool, chunk_size: int, tmp_dir: str | None, cache_dir: str | None, no_cache: bool,
           as_json: bool) -> None:
    """Snapshot the Chroma persist dir SOURCE (initialises an empty repository).

    \b
    Example:
      chroma-snapshot --repo ./snapshots create data/vector_db --tag nightly -m "after chapter 5"
    """
    check_arguments(Path(source), tags=tags, codec=codec, level=level)  # before any repository write
    repo = open_repo(create=True, chunk_size=chunk_size)
    if chunk_size != repo.config.chunk_size and chunk_size != 1 << 20:
        raise UsageError(f"this repository's chunk size is {repo.config.chunk_size}; --chunk-size "
                         "applies only when a create initialises a repository")
    result = repo.create(source, tags=tags, message=message, includes=includes,
                         include_orphans=include_orphans, parent=parent, codec=codec, level=level,
                         delta=not no_delta, tmp_dir=tmp_dir, use_cache=not no_cache, cache_dir=cache_dir,
                         reporter=CliReporter(not as_json))
    if as_json:
        return emit_json(result)
    click.echo(f"snapshot {result.id} saved (parent {result.parent or '-'})")
    click.echo(f"  {result.files} files, {human_bytes(result.bytes_total)}; stored "
               f"{human_bytes(result.bytes_new)} new in {result.chunks_new} of {result.chunks_total} "
               f"chunks ({result.chunks_delta} as deltas), {result.objects_uploaded} objects, "
               f"{human_bytes(result.bytes_uploaded)} uploaded, {result.seconds:.1f}s")
    click.echo(f"  collections: {collections_text(result.collections)}")
    if result.skipped:
        click.echo(f"  not captured (not Chroma's; see --include): {', '.join(result.skipped)}")


@cli.command("list")
@repo_options
@json_option
def list_(as_json: bool) -> None:
    """List snapshots, oldest first.

    \b
    Example:
      chroma-snapshot list --json | jq '.[-1].id'
    """
    snaps = open_repo().list()
    if as_json:
        return emit_json(snaps)
    if not snaps:
        click.echo("no snapshots")
        return
    rows = [[s.id, s.created_at[:19].replace("T", " "), human_bytes(s.bytes_total),
             human_bytes(s.bytes_new), ",".join(s.tags) or "-", collections_text(s.collections),
             s.message] for s in snaps]
    click.echo(table(rows, ["ID", "CREATED (UTC)", "SIZE", "STORED", "TAGS", "COLLECTIONS", "MESSAGE"]))


@cli.command()
@click.argument("snapshot_ref", metavar="ID")
@repo_options
@json_option
def show(snapshot_ref: str, as_json: bool) -> None:
    """Show one snapshot: ID is a full id, a unique prefix or `latest`.

    \b
    Example:
      chroma-snapshot show latest --json
    """
    m = open_repo().get(snapshot_ref)
    if as_json:
        return emit_json(manifest_to_dict(m))
    click.echo(f"snapshot   {m.id}\nparent     {m.parent or '-'}\ncreated    {m.created_at}")
    click.echo(f"source     {m.source_host}:{m.source_path}\ntags       {', '.join(m.tags) or '-'}")
    click.echo(f"message    {m.message or '-'}\ntool       chroma-snapshot {m.tool_version}, "
               f"chromadb {m.chromadb_version or '?'}")
    click.echo(f"size       {human_bytes(m.totals.bytes)} in {m.totals.files} files; "
               f"{human_bytes(m.totals.bytes_new)} stored new")
    click.echo("\n" + table([[c.name, str(c.records), str(c.dimension or "-"), ",".join(c.segments) or "-"]
                             for c in m.collections], ["COLLECTION", "RECORDS", "DIM", "SEGMENTS"]))
    click.echo("\n" + table([[f.path, human_bytes(f.size), f.role, str(len(f.chunks)), f.hash]
                             for f in m.files], ["FILE", "SIZE", "ROLE", "CHUNKS", "XXH3-128"]))


@cli.command()
@click.argument("snapshot_ref", metavar="ID")
@click.argument("target", type=click.Path(path_type=str))
@click.option("--force", is_flag=True, help="Replace a non-empty TARGET (atomically).")
@click.option("--skip-chroma-check", is_flag=True,
              help="Do not open the result with chromadb before swapping it in (hashes are still checked).")
@click.option("--dry-run", is_flag=True, help="Show what would be reused and downloaded; change nothing.")
@repo_options
@json_option
def restore(snapshot_ref: str, target: str, force: bool, skip_chroma_check: bool, dry_run: bool,
            as_json: bool) -> None:
    """Restore snapshot ID (id, prefix or `latest`) into TARGET, verified and atomic.

    \b
    Example:
      chroma-snapshot restore latest /srv/app/vector_db --force
    """
    repo = open_repo()
    if dry_run:
        plan = repo.plan_restore(snapshot_ref, target)
        if as_json:
            return emit_json(plan)
        click.echo(f"restore {plan.snapshot} into {target}: {plan.files} files, "
                   f"{human_bytes(plan.bytes_total)}; {human_bytes(plan.bytes_local)} reused from the "
                   f"target, {human_bytes(plan.bytes_remote)} rebuilt from "
                   f"{human_bytes(plan.bytes_to_download)} read from the repository (dry run)")
        return
    result = repo.restore(snapshot_ref, target, force=force, verify_chroma=not skip_chroma_check,
                          reporter=CliReporter(not as_json))
    if as_json:
        return emit_json(result)
    click.echo(f"restored {result.id} into {result.target}: {result.files} files, "
               f"{human_bytes(result.bytes_total)} verified; {human_bytes(result.bytes_reused)} reused "
               f"from the target, {human_bytes(result.bytes_downloaded)} read, {result.seconds:.1f}s")
    if result.chroma_checked:
        click.echo(f"  chroma opened it: {collections_text(result.chroma_checked)}")


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the CLI and maps every failure to its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    try:
        rv = cli.main(args=args, prog_name="chroma-snapshot", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except SnapshotError as exc:
        emit_error(exc, exc.exit_code, exc.kind, as_json)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        emit_error("interrupted", EXIT_INTERRUPTED, "interrupted", as_json)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        if as_json:
            emit_error(exc.format_message(), exc.exit_code, "usage", True)
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        emit_error("interrupted", EXIT_INTERRUPTED, "interrupted", as_json)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:
        emit_error(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "), 1, "os-error", as_json)
        sys.exit(1)
    sys.exit(0)


__all__ = ["cli", "main"]

# The maintenance commands (diff, prune, forget, check) register themselves on `cli`.
from snapshot import cli_maint  # noqa: E402, F401
