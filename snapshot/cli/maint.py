"""The maintenance commands: diff, prune, forget, check (parse, call one library function,
render). Registered on the group of snapshot/cli.py when that module imports this one."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import click

from snapshot.check import CheckResult, check_repository, parse_subset
from snapshot.cli import cli, json_option, open_repo, repo_options
from snapshot.diff import RecordDiff, SnapshotDiff, diff_snapshots
from snapshot.errors import IntegrityError
from snapshot.prune import PruneResult, forget, prune
from snapshot.render import emit_json, human_bytes, table
from snapshot.retention import RetentionPolicy, parse_duration, parse_tag_options

_SHOWN_IDS = 10


def _signed(n: int) -> str:
    return ("+" if n >= 0 else "-") + human_bytes(abs(n))


def _grace_seconds(text: str) -> float:
    return parse_duration(text).total_seconds(datetime.now(timezone.utc))


# ------------------------------------------------------------------ diff


def _records_text(name: str, rd: RecordDiff) -> list[str]:
    lines = [f"  {name}: {rd.added_count} added, {rd.removed_count} removed, {rd.changed_count} changed"]
    for kind, ids, total in (("added", rd.added, rd.added_count), ("removed", rd.removed, rd.removed_count),
                             ("changed", rd.changed, rd.changed_count)):
        if ids:
            more = f" ... and {total - len(ids)} more" if total > len(ids) else ""
            lines.append(f"    {kind}: {', '.join(ids)}{more}")
    return lines


def _diff_text(d: SnapshotDiff) -> list[str]:
    out = [f"diff {d.before} -> {d.after}{' (live dir, nothing uploaded)' if d.after_is_path else ''}"]
    rows = []
    for name, c in d.collections.items():
        delta = "-" if c.before is None or c.after is None else f"{c.after - c.before:+d}"
        before = "-" if c.before is None else str(c.before)
        rows.append([name, before, "-" if c.after is None else str(c.after), delta])
    out += ["", table(rows, ["COLLECTION", "BEFORE", "AFTER", "DELTA"]), ""]
    f = d.files
    out.append(f"files: {len(f.added)} added, {len(f.removed)} removed, {len(f.changed)} changed, "
               f"{f.unchanged} unchanged; {human_bytes(d.bytes_before)} -> {human_bytes(d.bytes_after)} "
               f"({_signed(d.bytes_after - d.bytes_before)})")
    out += [f"  + {a.path} ({human_bytes(a.size)})" for a in f.added]
    out += [f"  - {r.path} ({human_bytes(r.size)})" for r in f.removed]
    out += [f"  ~ {c.path} ({human_bytes(c.size_before)} -> {human_bytes(c.size_after)}, "
            f"{c.chunks_changed} chunks differ)" for c in f.changed]
    if d.changed_segments:
        out.append("segments: " + ", ".join(f"{s.segment} ({s.collection or 'no collection'}) {s.change}"
                                            for s in d.changed_segments))
    what = "a create would store now" if d.after_is_path else f"{d.after} holds that {d.before} does not"
    out.append(f"new chunks ({what}): {d.chunks_new}, {human_bytes(d.bytes_new)} before compression")
    if d.records is not None:
        out.append("records:")
        for name, rd in d.records.items():
            out += _records_text(name, rd)
    return out


@cli.command("diff")
@click.argument("before", metavar="A")
@click.argument("after", metavar="B")
@click.option("--records", is_flag=True,
              help="Also list record ids added, removed and changed per collection (reads chroma.sqlite3).")
@click.option("--tmp-dir", type=click.Path(file_okay=False, exists=True),
              help="Where temporary copies are made (an existing folder).")
@repo_options
@json_option
def diff_cmd(before: str, after: str, records: bool, tmp_dir: str | None, as_json: bool) -> None:
    """Compare snapshot A with snapshot B, or with the live Chroma dir B (nothing is uploaded).

    A and B are ids, unique prefixes or `latest`; a B that is an existing directory is
    captured and compared as a create would see it now.

    \b
    Example:
      chroma-snapshot diff 20261127 latest --records
      chroma-snapshot diff latest data/vector_db
    """
    result = diff_snapshots(open_repo(), before, after, records=records,
                            record_limit=None if as_json else _SHOWN_IDS, tmp_dir=tmp_dir)
    if as_json:
        return emit_json(result)
    click.echo("\n".join(_diff_text(result)))


# ------------------------------------------------------------------ prune / forget


def _id_time(sid: str) -> str:
    """The creation time a snapshot id starts with (to the second)."""
    return f"{sid[0:4]}-{sid[4:6]}-{sid[6:8]} {sid[9:11]}:{sid[11:13]}:{sid[13:15]}"


def _prune_text(r: PruneResult) -> list[str]:
    rows = [["keep", d.id, d.created_at[:19].replace("T", " "), ", ".join(d.reasons)] for d in r.kept]
    rows += [["remove", sid, _id_time(sid), ""] for sid in r.removed]
    out = [table(rows, ["ACTION", "ID", "CREATED (UTC)", "WHY"])] if rows else ["no snapshots"]
    verb = "would remove" if r.dry_run else "removed"
    out.append(f"{verb} {len(r.removed)} snapshot(s) and {len(r.objects_removed)} object(s), "
               f"{human_bytes(r.bytes_freed)} {'to free' if r.dry_run else 'freed'}; "
               f"{r.objects_kept} object(s) still in use")
    if r.objects_in_grace:
        out.append(f"{r.objects_in_grace} unreferenced object(s) ({human_bytes(r.bytes_in_grace)}) are "
                   f"younger than the grace period ({r.grace_seconds:.0f}s) and were kept "
                   "(a create may be running)")
    if r.dry_run:
        out.append("dry run: nothing was changed")
    return out


_GRACE_HELP = ("Unreferenced objects younger than this are kept (a create may still be writing them) "
               "[1h]. Units: y m(onths) w d h min s.")


@cli.command("prune")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, metavar="N", help="Keep the N newest.")
@click.option("--keep-hourly", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the newest of each of the last N hours (UTC) with snapshots.")
@click.option("--keep-daily", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the newest of each of the last N days with snapshots.")
@click.option("--keep-weekly", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the newest of each of the last N ISO weeks with snapshots.")
@click.option("--keep-monthly", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the newest of each of the last N months with snapshots.")
@click.option("--keep-yearly", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the newest of each of the last N years with snapshots.")
@click.option("--keep-within", metavar="DURATION",
              help="Keep everything taken within DURATION of the newest snapshot (30d, 12h, 2w, 1y2m).")
@click.option("--keep-tag", "keep_tags", multiple=True, metavar="TAG[,TAG]",
              help="Keep snapshots with this tag (repeatable; a,b needs both).")
@click.option("--dry-run", is_flag=True, help="Show what would be kept and removed; change nothing.")
@click.option("--grace", default="1h", show_default=True, metavar="DURATION", help=_GRACE_HELP)
@repo_options
@json_option
def prune_cmd(keep_last: int, keep_hourly: int, keep_daily: int, keep_weekly: int, keep_monthly: int,
              keep_yearly: int, keep_within: str | None, keep_tags: tuple[str, ...], dry_run: bool,
              grace: str, as_json: bool) -> None:
    """Remove the snapshots a keep policy does not keep, then the data only they used.

    Policies are OR-ed, as in restic; the newest snapshot is always kept. Without any --keep-*
    option nothing is removed (exit 2).

    \b
    Example:
      chroma-snapshot prune --keep-daily 7 --keep-weekly 4 --keep-tag release --dry-run
    """
    policy = RetentionPolicy(
        last=keep_last, hourly=keep_hourly, daily=keep_daily, weekly=keep_weekly, monthly=keep_monthly,
        yearly=keep_yearly, within=parse_duration(keep_within) if keep_within is not None else None,
        tags=parse_tag_options(keep_tags),
    )
    grace_s = _grace_seconds(grace)
    result = prune(open_repo(), policy, dry_run=dry_run, grace=grace_s, now=time.time())
    if as_json:
        return emit_json(result)
    click.echo("\n".join(_prune_text(result)))


@cli.command("forget")
@click.argument("refs", nargs=-1, required=True, metavar="ID...")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@click.option("--grace", default="1h", show_default=True, metavar="DURATION", help=_GRACE_HELP)
@repo_options
@json_option
def forget_cmd(refs: tuple[str, ...], dry_run: bool, grace: str, as_json: bool) -> None:
    """Remove the named snapshots (ids, unique prefixes, `latest`), then the data only they used.

    Every ID is resolved first: if one does not match, nothing is removed.

    \b
    Example:
      chroma-snapshot forget 20261127T0150 20261128T0150-1a2b
    """
    result = forget(open_repo(), refs, dry_run=dry_run, grace=_grace_seconds(grace), now=time.time())
    if as_json:
        return emit_json(result)
    click.echo("\n".join(_prune_text(result)))


# ------------------------------------------------------------------ check


def _check_text(r: CheckResult) -> list[str]:
    out = [f"checked {r.snapshots} snapshot(s), {r.objects} object(s) ({r.objects_referenced} referenced)"]
    if r.read_data:
        part = f" (subset {r.subset}: {r.objects_selected} object(s))" if r.subset else ""
        out.append(f"read and verified {r.frames_verified} frame(s), {human_bytes(r.bytes_read)}{part}")
    if r.unreferenced:
        out.append(f"{len(r.unreferenced)} unreferenced object(s), {human_bytes(r.unreferenced_bytes)} "
                   "(not an error; prune removes them)")
    out += [f"note: {n}" for n in r.notes]
    if r.problems:
        out.append(f"{len(r.problems)} problem(s):")
        out += [f"  [{p.kind}] {p.message}" for p in r.problems]
    else:
        out.append("no problems found")
    return out


@cli.command("check")
@click.option("--read-data", is_flag=True,
              help="Also read, decompress and hash-verify every referenced frame.")
@click.option("--read-data-subset", metavar="P%|N/M",
              help="Read only a deterministic part of the objects: a share (10%) or the Nth of M "
              "parts (1/5).")
@repo_options
@json_option
def check_cmd(read_data: bool, read_data_subset: str | None, as_json: bool) -> None:
    """Check that every snapshot's manifest and data are present and intact (exit 4 if not).

    \b
    Example:
      chroma-snapshot check --read-data-subset 1/7   # a different seventh each day
    """
    subset = parse_subset(read_data_subset) if read_data_subset is not None else None
    result = check_repository(open_repo(), read_data=read_data, subset=subset)
    if as_json:
        emit_json(result)
        if not result.ok:  # the report is on stdout; exit like an integrity error, without a 2nd document
            click.get_current_context().exit(IntegrityError.exit_code)
        return
    click.echo("\n".join(_check_text(result)))
    result.raise_if_failed()
