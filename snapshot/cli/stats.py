"""The stats command: what the repository holds, what each snapshot takes, what it costs."""

from __future__ import annotations

import click

from snapshot.cli import chart as charts
from snapshot.cli.options import GlobalOptions, command, filter_options, json_option, repo_options
from snapshot.cli.render import emit, human_bytes, table
from snapshot.repo.selection import SnapshotFilter
from snapshot.upkeep.cost import CostEstimate, StatsReport, repository_report
from snapshot.upkeep.stats import RepoStats


@command("stats")
@click.argument("refs", nargs=-1, metavar="[ID]...")
@click.option("--cost", is_flag=True, help="Also estimate the monthly S3 bill and what restoring each "
              "snapshot costs (built-in list prices: see --prices).")
@click.option("--prices", "prices_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="A JSON price table to use instead of the built-in one (implies --cost).")
@click.option("--chart", is_flag=True, help="Also draw the repository's size, each snapshot's added bytes "
              "and each collection's records over time.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), metavar="FILE.svg",
              help="Save that chart as an SVG image.")
@filter_options
@repo_options
@json_option
def stats_cmd(refs: tuple[str, ...], cost: bool, prices_file: str | None, chart: bool, plot_file: str | None,
              filters: SnapshotFilter, global_options: GlobalOptions, as_json: bool) -> None:
    """What the repository stores and what each snapshot takes in it (all snapshots, or IDs).

    Per snapshot: restore size, stored bytes it needs, bytes only it needs (what forgetting it
    alone frees) and bytes its create added. For the repository: stored bytes by kind and
    storage class, unused and condemned bytes, compression and delta ratios.

    \b
    Example:
      chroma-snapshot stats latest --cost
      chroma-snapshot stats --chart --plot history.svg
    """
    report = repository_report(global_options.open_repo(), refs, filters,
                               cost=cost or prices_file is not None, prices_file=prices_file)
    if plot_file is not None:
        charts.save_svg(report.stats, plot_file)
    emit(report, as_json, render_stats)
    if chart and not as_json:
        charts.show(report.stats)


def _money(x: float) -> str:
    return f"{x:.2f}" if x >= 1 else f"{x:.4f}" if x >= 0.01 else f"{x:.6f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def render_stats(r: StatsReport) -> list[str]:
    out = _render_repo(r.stats)
    if r.stats.snapshots:
        rows = [[s.id, s.created_at[:19], human_bytes(s.logical_bytes), str(s.files),
                 human_bytes(s.referenced_bytes), human_bytes(s.unique_bytes), human_bytes(s.added_bytes),
                 ", ".join(f"{k}={v}" for k, v in sorted(s.records.items())) or "-"]
                for s in r.stats.snapshots]
        out += ["", table(rows, ["ID", "TIME", "RESTORE SIZE", "FILES", "STORED", "ONLY IT", "ADDED",
                                 "RECORDS"])]
    if r.cost is not None:
        out += ["", *_render_cost(r.cost)]
    return out


def _render_repo(s: RepoStats) -> list[str]:
    out = [
        f"repository {s.repository}{' (encrypted)' if s.encrypted else ''}: "
        f"{human_bytes(s.total_bytes)} in {s.objects} objects ({s.packs} packs), "
        f"{len(s.snapshots)} snapshots shown",
        f"  referenced {human_bytes(s.referenced_bytes)} in {s.frames} frames; "
        f"unused {human_bytes(s.unused_bytes)}; condemned {human_bytes(s.condemned_bytes)} "
        f"({s.condemned_packs} packs, deleted by a later prune)",
        f"  full frames {human_bytes(s.full_stored_bytes)} stored for {human_bytes(s.full_raw_bytes)} "
        f"({_ratio(s.compression_ratio)}); deltas {human_bytes(s.delta_stored_bytes)} for "
        f"{human_bytes(s.delta_raw_bytes)} ({_ratio(s.delta_ratio)}); chunk tables "
        f"{human_bytes(s.table_stored_bytes)}",
        f"  every snapshot restored: {human_bytes(s.logical_bytes)}, stored once in "
        f"{human_bytes(s.referenced_bytes)} ({_ratio(s.dedup_ratio)})",
    ]
    out.append("  by kind: " + ", ".join(f"{k} {v.objects} / {human_bytes(v.bytes)}"
                                         for k, v in s.by_kind.items()))
    out.append("  by storage class: " + (", ".join(f"{k} {v.objects} / {human_bytes(v.bytes)}"
                                                   for k, v in s.by_storage_class.items()) or "-"))
    if s.versioning == "denied":
        out.append("  versions: not counted (the credentials may not ask: s3:GetBucketVersioning, "
                   "s3:ListBucketVersions)")
    elif s.versioning is not None:
        out.append(f"  versions ({s.versioning.lower()}): {s.noncurrent_versions} noncurrent, "
                   f"{human_bytes(s.noncurrent_bytes or 0)}, and {s.delete_markers} delete markers: billed "
                   "until a lifecycle rule expires them")
    if s.unreadable:
        out.append(f"  unreadable roots (not counted): {', '.join(s.unreadable)}")
    return out


def _render_cost(c: CostEstimate) -> list[str]:
    p = c.prices
    head = f"estimated monthly bill ({p.source}, {p.region}, {p.date}, {p.currency})"
    if c.assumed:
        head += f": a local repository, priced as if in S3 (packs in {c.assumed_pack_class})"
    rows = [[k.storage_class, str(k.objects), human_bytes(k.stored_bytes), human_bytes(k.billed_bytes),
             _money(k.monthly), f"{k.min_days} d" if k.min_days else "-"] for k in c.classes]
    out = [head, table(rows, ["CLASS", "OBJECTS", "STORED", "BILLED", "PER MONTH", "MIN DURATION"]),
           f"total per month: {_money(c.monthly)} {p.currency}"]
    if c.restores:
        rows = [[x.snapshot, str(x.get_requests), human_bytes(x.bytes), _money(x.requests_cost),
                 _money(x.retrieval_cost), _money(x.egress_cost), _money(x.total)] for x in c.restores]
        out += ["", "a full restore of each snapshot out of AWS (egress included; at least these GETs):",
                table(rows, ["ID", "GETS", "BYTES", "REQUESTS", "RETRIEVAL", "EGRESS", "TOTAL"])]
    return out
