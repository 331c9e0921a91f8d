"""The copy command: snapshots from another repository (--from-repo) into this one."""

from __future__ import annotations

import click

from snapshot.cli.options import (
    GlobalOptions,
    command,
    dry_run_option,
    filter_options,
    json_option,
    repo_options,
    seconds,
    wait_option,
)
from snapshot.cli.passwords import source_key_source
from snapshot.cli.predicted import priced_copy
from snapshot.cli.render import CliReporter, emit, render_copy
from snapshot.copy.pipeline import CopyOptions, copy_snapshots
from snapshot.repo.repository import Repository
from snapshot.repo.selection import SnapshotFilter
from snapshot.storage import StoreOptions
from snapshot.storage.s3.options import CHECKSUM_MODES


@command("copy")
@click.argument("refs", nargs=-1, metavar="[ID]...")
@click.option("--from-repo", required=True, metavar="PATH|s3://BUCKET/PREFIX",
              envvar="CHROMA_SNAPSHOT_FROM_REPO",
              help="Repository to copy from. Env: CHROMA_SNAPSHOT_FROM_REPO.")
@click.option("--from-password-file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Password of an encrypted source, from FILE. Also CHROMA_SNAPSHOT_FROM_PASSWORD_FILE, "
              "CHROMA_SNAPSHOT_FROM_PASSWORD.")
@click.option("--from-password-command", metavar="CMD",
              help="Password of an encrypted source: the output of CMD (run without a shell).")
@click.option("--from-profile", metavar="NAME", help="AWS profile for the source.")
@click.option("--from-endpoint-url", metavar="URL", help="S3-compatible endpoint of the source.")
@click.option("--from-region", metavar="REGION", help="Region of the source's bucket.")
@click.option("--from-s3-checksum", type=click.Choice(CHECKSUM_MODES),
              help="botocore checksum mode for the source (when_required for MinIO/R2/B2).")
@click.option("--no-cache", is_flag=True,
              help="Keep no image of each source's last snapshot copied (saves a DB-sized copy on disk per "
              "source; the next copy then reads delta bases back from this repository).")
@dry_run_option
@wait_option
@filter_options
@repo_options
@json_option
def copy_cmd(refs: tuple[str, ...], from_repo: str, from_password_file: str | None,
             from_password_command: str | None, from_profile: str | None, from_endpoint_url: str | None,
             from_region: str | None, from_s3_checksum: str | None, no_cache: bool, dry_run: bool,
             wait: str | None,
             filters: SnapshotFilter, global_options: GlobalOptions, as_json: bool) -> None:
    """Copy snapshots from the repository --from-repo into this one (--repo), verified.

    ID: ids, unique prefixes or `latest` of the source (with --tag/--host/--path, among the
    snapshots that pass them); no ID: every snapshot that passes the filters. A snapshot the
    destination holds is skipped; a frame whose content it holds is not copied again. The
    repositories may differ in encryption, password, codec, pack size and storage class, not
    in chunk size (exit 2). Every frame is hash-checked before it is written, and each root is
    written last. A copy killed and run again does not upload again what it had uploaded.
    The bases of the deltas come from local disk where they can (an image of each source's
    last snapshot copied, in the base cache; --no-cache keeps none), not from this repository.
    --dry-run also predicts the requests, bytes and cost on each side; --json of a copy reports
    that prediction beside what it took.

    \b
    Example:
      chroma-snapshot --repo s3://team-bucket/db copy --from-repo ./snapshots --tag nightly
      chroma-snapshot --repo ./enc copy --from-repo ./plain --password-file ~/.enc-pass --dry-run
    """
    source_store = StoreOptions(profile=from_profile, endpoint_url=from_endpoint_url, region=from_region,
                                checksum=from_s3_checksum)
    source = Repository.open(from_repo, source_store,
                             key_source=source_key_source(from_password_file, from_password_command))
    dest = global_options.open_repo()
    options = CopyOptions(dry_run=dry_run, wait=seconds(wait), predict=as_json, use_cache=not no_cache)
    result = copy_snapshots(dest, source, refs, filters, options, reporter=CliReporter(not as_json))
    emit(priced_copy(result, source, dest), as_json, render_copy)
