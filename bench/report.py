"""Turning the measured rows into ratios, target verdicts and a text table. No measuring here."""

from __future__ import annotations

from typing import Any

from measure import MIB

__all__ = ["GZIP", "MIB", "OURS", "OURS_CHECK", "REF_NOTE", "RESTIC", "ZSTD", "ratios", "summary_text",
           "table_rows", "targets", "text_table"]

OURS, RESTIC, GZIP, ZSTD = "chroma-snapshot", "restic", "gzip -6 everything", "tar | zstd -1"
OURS_CHECK = OURS + " --chroma-check"
REF_NOTE = "reference: what opening ONE collection needs"
RSS_LIMIT = 256 * MIB
#: restore (default) wall time vs restic's, per scenario
RESTORE_LIMIT = {"records": 0.7, "collections": 1.0}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 4)


def _get(rows: dict[str, Any], tool: str, key: str) -> Any:
    row = rows.get(tool) or {}
    return None if "skipped" in row else row.get(key)


def rss(row: dict[str, Any]) -> int:
    """The memory of a whole run: the larger of ru_maxrss and the sampled tree sum."""
    return max(row.get("peak_rss") or 0, row.get("tree_rss") or 0)


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    full, restore = report["full"], report["restore"]
    restic_restore = _get(restore, RESTIC, "seconds")
    out: dict[str, Any] = {
        "full_create_time_vs_restic": _ratio(_get(full, OURS, "seconds"), _get(full, RESTIC, "seconds")),
        "full_create_time_vs_zstd_pipe": _ratio(_get(full, OURS, "seconds"), _get(full, ZSTD, "seconds")),
        "full_create_time_vs_gzip": _ratio(_get(full, OURS, "seconds"), _get(full, GZIP, "seconds")),
        "full_stored_vs_restic": _ratio(_get(full, OURS, "repo_bytes"), _get(full, RESTIC, "repo_bytes")),
        "full_stored_vs_gzip": _ratio(_get(full, OURS, "repo_bytes"), _get(full, GZIP, "repo_bytes")),
        "restore_time_vs_restic": _ratio(_get(restore, OURS, "seconds"), restic_restore),
        "restore_time_chroma_check_vs_restic": _ratio(_get(restore, OURS_CHECK, "seconds"), restic_restore),
        "incremental": {},
    }
    ours_full, ours_up = _get(full, OURS, "repo_bytes"), _get(full, OURS, "bytes_uploaded")
    for step in report["incremental"]:
        rows = step["rows"]
        added = _get(rows, OURS, "repo_bytes_added")
        out["incremental"][step["change"]] = {
            "added_vs_full": _ratio(added, ours_full),
            "uploaded_vs_full": _ratio(_get(rows, OURS, "bytes_uploaded"), ours_up),
            "added_vs_restic": _ratio(added, _get(rows, RESTIC, "repo_bytes_added")),
            "added_vs_gzip": _ratio(added, _get(rows, GZIP, "repo_bytes_added")),
        }
    creates = [("full create", full[OURS])]
    creates += [(f"create after {s['change']}", s["rows"][OURS]) for s in report["incremental"]]
    worst = max(creates, key=lambda kv: rss(kv[1]))
    out["peak_rss"] = {name: rss(row) for name, row in creates}
    out["peak_rss"]["restore"] = rss(restore[OURS])
    out["peak_rss"]["restore --chroma-check"] = rss(restore[OURS_CHECK])
    out["create_rss_worst"] = {"run": worst[0], "bytes": rss(worst[1])}
    ref = (report.get("reference") or {}).get("rows", {})
    if OURS_CHECK in ref:
        one = ref[OURS_CHECK]
        out["peak_rss"]["reference: restore --chroma-check of 1 collection"] = rss(one)
        alone = ref.get("chromadb alone", {})
        if "skipped" not in alone:
            out["peak_rss"]["reference: chromadb alone opening 1 collection"] = rss(alone)
        out["chroma_check_rss_vs_one_collection"] = (
            None if "failed" in one else _ratio(rss(restore[OURS_CHECK]), rss(one)))
    return out


def _target(name: str, value: float | None, limit: float, unit: str, note: str = "") -> dict[str, Any]:
    if value is None:
        return {"target": name, "value": None, "limit": limit, "met": None,
                "verdict": "n/a (baseline skipped)", "note": note}
    met = value <= limit
    if unit == "x":
        shown = f"{value:.2f}x (limit {limit:g}x)"
        miss = f"{value / limit:.2f}x the limit"
    elif unit == "%":
        shown = f"{value * 100:.2f}% (limit {limit * 100:g}%)"
        miss = f"over by {(value - limit) * 100:.2f} points"
    else:
        shown = f"{value / MIB:.0f} MiB (limit {limit / MIB:.0f} MiB)"
        miss = f"over by {(value - limit) / MIB:.0f} MiB"
    return {"target": name, "value": value, "limit": limit, "met": met, "shown": shown,
            "verdict": "MET" if met else f"MISSED: {miss}", "note": note}


def _failed(t: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    if "failed" in row:
        t.update(met=False, verdict="MISSED: the restore FAILED",
                 note=f"{row['failed']}; measured until the failure")
    return t


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance targets of the report's scenario, each MET or MISSED with the margin."""
    r, restore, scenario = report["ratios"], report["restore"], report["scenario"]
    limit = RESTORE_LIMIT[scenario]
    out = [
        _failed(_target(f"restore (default) <= {limit:g}x restic wall time", r["restore_time_vs_restic"],
                        limit, "x", "hashes + consistency checks before the swap; restic checks nothing"),
                restore[OURS]),
        _failed(_target("restore (default) peak RSS <= 256 MiB", r["peak_rss"]["restore"], RSS_LIMIT, "B",
                        "process tree"), restore[OURS]),
        _target("create peak RSS <= 256 MiB", r["create_rss_worst"]["bytes"], RSS_LIMIT, "B",
                f"worst: {r['create_rss_worst']['run']}"),
    ]
    if scenario == "records":
        first = next(iter(r["incremental"]), None)
        out.insert(0, _target("full create <= 0.5x restic wall time", r["full_create_time_vs_restic"],
                              0.5, "x"))
        out.append(_target(f"incremental after {first} <= 3% of a full snapshot",
                           r["incremental"].get(first, {}).get("added_vs_full"), 0.03, "%",
                           "repository bytes added / repository bytes after the full snapshot"))
    else:
        one = report["reference"]["rows"][OURS_CHECK]
        t = _target("restore --chroma-check peak RSS <= 2x opening ONE collection",
                    r.get("chroma_check_rss_vs_one_collection"), 2.0, "x",
                    f"process tree incl. the chromadb children: {rss(restore[OURS_CHECK]) / MIB:.0f} MiB vs "
                    f"{rss(one) / MIB:.0f} MiB for a --chroma-check restore of 1 collection")
        out.append(_failed(_failed(t, one), restore[OURS_CHECK]))
    return out


def _mib(n: Any) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def _fmt_row(op: str, tool: str, row: dict[str, Any], bytes_key: str) -> list[str]:
    if "skipped" in row:
        return [op, tool, "-", "-", "-", "-", "skipped: " + row["skipped"]]
    secs = "-" if row.get("seconds") is None else f"{row['seconds']:.2f}"
    return [op, tool, secs, _mib(row.get("peak_rss")), _mib(row.get("tree_rss")),
            _mib(row.get(bytes_key)), row.get("note", "")]


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [_fmt_row("full create", tool, row, "repo_bytes") for tool, row in report["full"].items()]
    for step in report["incremental"]:
        rows += [_fmt_row(f"after {step['change']} ({step['records']} rec)", tool, row, "repo_bytes_added")
                 for tool, row in step["rows"].items()]
    rows += [_fmt_row("restore latest", tool, row, "bytes_total") for tool, row in report["restore"].items()]
    if "reference" in report:
        rows += [_fmt_row("restore 1-collection DB", tool, row, "bytes_total")
                 for tool, row in report["reference"]["rows"].items()]
    opened = report.get("verification", {}).get("independent_open")
    if opened:
        rows.append(_fmt_row("count the restore", "chromadb (benchmark)", opened, "bytes_total"))
    return rows


HEADERS = ["operation", "tool", "wall s", "peak RSS MiB", "tree RSS MiB", "MiB stored/added/restored",
           "note"]


def text_table(rows: list[list[str]], headers: list[str] = HEADERS) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(r: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([fmt(headers), "-+-".join("-" * w for w in widths), *map(fmt, rows)])


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}x"


def summary_text(report: dict[str, Any]) -> str:
    r = report["ratios"]
    lines = [
        f"full create time vs restic:      {_x(r['full_create_time_vs_restic'])}",
        f"full create time vs zstd pipe:   {_x(r['full_create_time_vs_zstd_pipe'])}",
        f"full create time vs gzip:        {_x(r['full_create_time_vs_gzip'])}",
        f"full stored bytes vs restic:     {_x(r['full_stored_vs_restic'])}",
        f"full stored bytes vs gzip:       {_x(r['full_stored_vs_gzip'])}",
    ]
    for change, v in r["incremental"].items():
        pct = "n/a" if v["added_vs_full"] is None else f"{v['added_vs_full'] * 100:.2f}%"
        lines.append(f"after {change:<7} bytes added: {pct} of full, {_x(v['added_vs_restic'])} restic's, "
                     f"{_x(v['added_vs_gzip'])} gzip's")
    lines.append(f"restore time vs restic:          {_x(r['restore_time_vs_restic'])} "
                 f"(--chroma-check: {_x(r['restore_time_chroma_check_vs_restic'])})")
    if "chroma_check_rss_vs_one_collection" in r:
        lines.append(f"restore --chroma-check RSS vs a --chroma-check restore of 1 collection: "
                     f"{_x(r['chroma_check_rss_vs_one_collection'])}")
    lines += [
        "peak RSS (max of ru_maxrss, sampled tree sum): "
        + ", ".join(f"{k} {v / MIB:.0f} MiB" for k, v in r["peak_rss"].items()),
        "",
        "targets:",
    ]
    for t in report["targets"]:
        shown = t.get("shown", "")
        lines.append(f"  [{t['verdict']}] {t['target']}: {shown}" + (f"  ({t['note']})" if t["note"] else ""))
    return "\n".join(lines)
