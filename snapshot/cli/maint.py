"""Maintenance commands: diff, prune, forget, check, unlock."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from snapshot.cli.options import (
    GlobalOptions,
    archive_options,
    archive_request,
    command,
    filter_options,
    json_option,
    narrowed,
    prune_options,
    repo_options,
)
from snapshot.cli.predicted import priced
from snapshot.cli.render import emit, render_check, render_diff, render_prune, render_unlock
from snapshot.diff import diff_snapshots
from snapshot.repo.selection import SnapshotFilter, parse_tag_options
from snapshot.upkeep.options import PruneOptions
from snapshot.upkeep.prune import forget, prune
from snapshot.upkeep.retention import GROUP_BY_CHOICES, RetentionPolicy, parse_duration
from snapshot.upkeep.verify import check_repository, parse_subset

_SHOWN_IDS = 10


@command("diff")
@click.argument("before", metavar="A")
@click.argument("after", metavar="B")
@click.option("--records", is_flag=True,
              help="Also list record ids added, removed and changed per collection (reads chroma.sqlite3).")
@click.option("--collection", metavar="NAME",
              help="Only this collection: its record count, its segment folders' files, (--records) its ids.")
@click.option("--tmp-dir", type=click.Path(file_okay=False, exists=True),
              help="Where temporary copies are made (an existing folder).")
@filter_options
@repo_options
@json_option
def diff_cmd(before: str, after: str, records: bool, collection: str | None, tmp_dir: str | None,
             filters: SnapshotFilter, global_options: GlobalOptions, as_json: bool) -> None:
    """Compare snapshot A with snapshot B, or with the live Chroma dir B (nothing is uploaded).

    A and B are ids, unique prefixes or `latest` (among the snapshots that pass
    --tag/--host/--path, if given); a B that is an existing directory is captured and
    compared as a create would see it now.

    \b
    Example:
      chroma-snapshot diff 20261127T015003-9f8e latest --records
      chroma-snapshot diff latest data/vector_db
      chroma-snapshot diff 20261127T015003-9f8e latest --collection docs --records
    """
    repo = global_options.open_repo()
    live = Path(after).expanduser().is_dir()
    before, *rest = narrowed(repo, [before] if live else [before, after], filters)
    result = diff_snapshots(repo, before, after if live else rest[0], records=records,
                            record_limit=None if as_json else _SHOWN_IDS, tmp_dir=tmp_dir,
                            collection=collection)
    emit(result, as_json, render_diff)


F = TypeVar("F", bound=Callable[..., Any])


def keep_options(f: F) -> F:
    """Prune's --keep-* options, handed to the command as one ``policy`` argument."""

    @functools.wraps(f)
    def command(*args: Any, keep_last: int, keep_hourly: int, keep_daily: int, keep_weekly: int,
                keep_monthly: int, keep_yearly: int, keep_within: str | None, keep_tags: tuple[str, ...],
                **kwargs: Any) -> Any:
        policy = RetentionPolicy(
            last=keep_last, hourly=keep_hourly, daily=keep_daily, weekly=keep_weekly, monthly=keep_monthly,
            yearly=keep_yearly, within=parse_duration(keep_within) if keep_within is not None else None,
            tags=parse_tag_options(keep_tags),
        )
        return f(*args, policy=policy, **kwargs)

    count = functools.partial(click.option, type=click.IntRange(min=0), default=0, metavar="N")
    decorators = [
        count("--keep-last", help="Keep the N newest."),
        count("--keep-hourly", help="Keep the newest of each of the last N hours (UTC) with snapshots."),
        count("--keep-daily", help="Keep the newest of each of the last N days with snapshots."),
        count("--keep-weekly", help="Keep the newest of each of the last N ISO weeks with snapshots."),
        count("--keep-monthly", help="Keep the newest of each of the last N months with snapshots."),
        count("--keep-yearly", help="Keep the newest of each of the last N years with snapshots."),
        click.option("--keep-within", metavar="DURATION",
                     help="Keep everything taken within DURATION of the newest snapshot (30d, 12h, 2w, "
                     "1y2m)."),
        click.option("--keep-tag", "keep_tags", multiple=True, metavar="TAG[,TAG]",
                     help="Keep snapshots with this tag (repeatable; a,b needs both)."),
    ]
    wrapped: Any = command
    for d in reversed(decorators):
        wrapped = d(wrapped)
    return cast(F, wrapped)


@command("prune")
@keep_options
@click.option("--group-by", default="host,path", show_default=True, type=click.Choice(GROUP_BY_CHOICES),
              help="Apply the policy to each group of snapshots of the same source on its own.")
@prune_options
@repo_options
@json_option
def prune_cmd(policy: RetentionPolicy, group_by: str, options: PruneOptions, global_options: GlobalOptions,
              as_json: bool) -> None:
    """Remove the snapshots a keep policy does not keep, then the data only they used.

    Then repack: chains whose first frames only removed snapshots used are re-based on a new
    full frame, and the live frames of mostly-unused packs are copied into new packs, until at
    most --max-unused of the repository is unused; the kept snapshots' roots are rewritten to
    point at the new places before any old pack is deleted. --dry-run says what would move, and
    predicts the requests, bytes and cost of the prune; --json of a prune reports that prediction
    beside what it took.

    Packs no snapshot needs are condemned, and deleted by a later prune once condemned for
    --delete-after (24h): a create that overlapped the prune keeps what it uses.

    Policies are OR-ed, as in restic, and apply to each source (host and path) on its own; the
    newest snapshot of each source is always kept. Without any --keep-* option nothing is
    removed (exit 2).

    \b
    Example:
      chroma-snapshot prune --keep-daily 7 --keep-weekly 4 --keep-tag release --dry-run
    """
    repo = global_options.open_repo()
    result = prune(repo, policy, dataclasses.replace(options, predict=as_json), group_by=group_by)
    emit(priced(result, repo), as_json, render_prune)


@command("forget")
@click.argument("refs", nargs=-1, required=True, metavar="ID...")
@prune_options
@filter_options
@repo_options
@json_option
def forget_cmd(refs: tuple[str, ...], options: PruneOptions, filters: SnapshotFilter,
               global_options: GlobalOptions, as_json: bool) -> None:
    """Remove the named snapshots (ids, unique prefixes, `latest`), then the data only they used
    (repacking as prune does).

    Every ID is resolved first: if one does not match, nothing is removed. --tag, --host and
    --path narrow what each ID names (`latest --tag test`: the newest snapshot tagged test);
    they never select snapshots without an ID (use prune for that).

    \b
    Example:
      chroma-snapshot forget 20261127T0150 20261128T0150-1a2b
      chroma-snapshot forget latest --tag test --dry-run
    """
    repo = global_options.open_repo()
    result = forget(repo, narrowed(repo, refs, filters), dataclasses.replace(options, predict=as_json))
    emit(priced(result, repo), as_json, render_prune)


@command("check")
@click.option("--read-data", is_flag=True,
              help="Also read, decompress and hash-verify every referenced frame and whole file.")
@click.option("--read-data-subset", metavar="P%|N/M",
              help="Read only a deterministic part of the objects: a share (10%) or the Nth of M "
              "parts (1/5).")
@archive_options
@repo_options
@json_option
def check_cmd(read_data: bool, read_data_subset: str | None, global_options: GlobalOptions, as_json: bool,
              request_restore: bool = False, restore_days: int = 7, restore_tier: str = "Standard") -> None:
    """Check that every snapshot's manifest and data are present and intact (exit 4 if not).

    \b
    Example:
      chroma-snapshot check --read-data-subset 1/7   # a different seventh each day
    """
    subset = parse_subset(read_data_subset) if read_data_subset is not None else None
    result = check_repository(global_options.open_repo(), read_data=read_data, subset=subset,
                              request_restore=archive_request(request_restore, restore_days, restore_tier))
    emit(result, as_json, render_check)
    result.raise_if_failed(reported=True)


@command("unlock")
@click.option("--remove-all", is_flag=True,
              help="Remove every lock, also those of processes that may still run (dangerous).")
@repo_options
@json_option
def unlock_cmd(remove_all: bool, global_options: GlobalOptions, as_json: bool) -> None:
    """Remove stale repository locks (left by a process that died or lost its host).

    \b
    Example:
      chroma-snapshot unlock
    """
    emit(global_options.open_repo().remove_stale_locks(all_locks=remove_all), as_json, render_unlock)
