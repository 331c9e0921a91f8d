"""The undelete command: a repository on a versioned S3 bucket brought back to a past moment."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import click

from snapshot.cli.options import GlobalOptions, command, dry_run_option, json_option, repo_options, seconds
from snapshot.cli.render import emit, human_bytes
from snapshot.errors import UsageError
from snapshot.repo.versions import UndeleteResult, undelete


def moment(text: str) -> float:
    """``--before``: an ISO 8601 time (UTC unless it names a zone) or a duration ago (2h, 3d)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            ago = seconds(text)
        except UsageError:
            ago = None
        if ago is None:
            raise UsageError(f"--before must be a time (2026-11-28T01:50:00Z) or a duration ago (2h, 3d), "
                             f"not {text!r}") from None
        return time.time() - ago
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


@command("undelete")
@click.option("--before", "before", required=True, metavar="TIME|DURATION",
              help="The moment to go back to: a UTC time (2026-11-28T01:50:00Z) or a duration ago (2h).")
@dry_run_option
@click.option("--wait", metavar="DURATION", help="If the repository is locked, wait up to DURATION [0s].")
@repo_options
@json_option
def undelete_cmd(before: str, dry_run: bool, wait: str | None, global_options: GlobalOptions,
                 as_json: bool) -> None:
    """Bring back what was deleted or overwritten since a moment (a versioned S3 bucket only).

    Every snapshot root, pack, key and the config that existed at --before and was deleted or
    replaced since is made current again (a server-side copy of the version it had then);
    snapshots taken after it are kept. What a prune deleted since comes back too: the next
    prune collects it again. Needs s3:ListBucketVersions, s3:GetObjectVersion, s3:PutObject.

    \b
    Example:
      chroma-snapshot undelete --before 2026-11-28T01:50:00Z --dry-run
      chroma-snapshot undelete --before 3h
    """
    result = undelete(global_options.location(), global_options.store_options(), moment(before),
                      key_source=global_options.key_source(), dry_run=dry_run, wait=seconds(wait) or 0.0)
    emit(result, as_json, render_undelete)


def render_undelete(r: UndeleteResult) -> list[str]:
    verb = "would bring back" if r.dry_run else "brought back"
    config = f"the config ({r.config}), " if r.config else ""
    out = [f"{verb} {config}{len(r.snapshots)} snapshot(s), {r.packs} pack(s) and {r.keys} key(s) as they "
           f"were at {r.before}: {human_bytes(r.bytes)} ({r.replaced} of them overwritten since, the rest "
           "deleted)"]
    out += [f"  snapshot {sid}" for sid in r.snapshots]
    if r.dry_run:
        out.append("dry run: nothing was changed")
    return out
