"""Turning library results into text for people and JSON for scripts (every command renders
here; no decisions are made here)."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from snapshot.errors import SnapshotError
from snapshot.format.ids import id_time

if TYPE_CHECKING:  # a command imports only what it runs (start-up is part of every command)
    from snapshot.copy.plan import CopyResult
    from snapshot.create.pipeline import CreateResult
    from snapshot.diff import RecordDiff, SnapshotDiff
    from snapshot.format.manifest import Manifest
    from snapshot.repo.keys import KeyInfo
    from snapshot.repo.prediction import Prediction
    from snapshot.repo.repository import Repository, SnapshotSummary
    from snapshot.restore.collections import CollectionRestoreResult
    from snapshot.restore.pipeline import RestoreResult, RestoreSummary
    from snapshot.upkeep.prune import PruneResult
    from snapshot.upkeep.verify import CheckResult


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(to_jsonable(obj), indent=2, sort_keys=True, ensure_ascii=False))


def emit_error(exc: SnapshotError | str, code: int, kind: str, as_json: bool) -> None:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "kind": kind, "message": message}}))
    click.echo(f"chroma-snapshot: error: {message}", err=True)


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def collections_text(cols: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(cols.items())) or "-"


class CliReporter:
    """Progress bar on a terminal (tqdm, which chromadb already installs); warnings always."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._lock = threading.Lock()  # restore writes small files from several threads

    def phase(self, name: str, total: int) -> None:
        self.done()
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total or None, desc=name, unit="B", unit_scale=True, leave=False)

    def advance(self, amount: int) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(amount)

    def warn(self, message: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.clear()
            click.echo(f"chroma-snapshot: warning: {message}", err=True)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def emit(obj: Any, as_json: bool, render: Callable[[Any], list[str]]) -> None:
    """Print ``obj`` as JSON or through its renderer."""
    if as_json:
        emit_json(obj)
    else:
        click.echo("\n".join(render(obj)))


def _signed(n: int) -> str:
    return ("+" if n >= 0 else "-") + human_bytes(abs(n))


# ------------------------------------------------------------------ snapshots


def render_create(r: CreateResult) -> list[str]:
    out = [
        f"snapshot {r.id} saved (parent {r.parent or '-'})",
        f"  {r.files} files, {human_bytes(r.bytes_total)}; stored {human_bytes(r.bytes_new)} new in "
        f"{r.chunks_new} of {r.chunks_total} chunks ({r.chunks_delta} as deltas), {r.objects_uploaded} "
        f"objects, {human_bytes(r.bytes_uploaded)} uploaded, {r.seconds:.1f}s",
        f"  collections: {collections_text(r.collections)}",
    ]
    if r.chunks_resumed:
        out.append(f"  resumed: {r.chunks_resumed} chunks ({human_bytes(r.bytes_resumed)}) taken from "
                   "packs an interrupted create had uploaded")
    if r.skipped:
        out.append(f"  not captured (not Chroma's; see --include): {', '.join(r.skipped)}")
    return out


def render_copy(r: CopyResult) -> list[str]:
    would = "would be " if r.dry_run else ""
    out = [f"{s.id}  {s.status}" + (f"  {s.chunks_stored} of {s.chunks} chunks, {human_bytes(s.bytes_stored)}"
                                     if s.chunks else "") for s in r.snapshots]
    moved = "" if r.dry_run else (f", {human_bytes(r.bytes_read)} read, {human_bytes(r.bytes_written)} "
                                  f"written, {r.seconds:.1f}s")
    out.append(f"{r.copied} snapshot(s) {would}copied, {r.skipped} skipped; {human_bytes(r.bytes_stored)} of "
               f"frames {would}stored{moved}")
    if r.packs_resumed:
        out.append(f"  took frames from {r.packs_resumed} pack(s) an interrupted copy had uploaded")
    if r.dry_run and r.predicted is not None:
        for side, p in (("source", r.predicted.source), ("destination", r.predicted.destination)):
            out += [line.replace("predicted:", f"predicted ({side}):", 1) for line in prediction_lines(p)]
        out += [f"    {note}" for note in r.predicted.notes]
    return out


def render_list(snaps: list[SnapshotSummary]) -> list[str]:
    if not snaps:
        return ["no snapshots"]
    rows = [[s.id, s.created_at[:19].replace("T", " "), human_bytes(s.bytes_total),
             human_bytes(s.bytes_new), ",".join(s.tags) or "-", collections_text(s.collections),
             s.message] if s.error is None else [s.id, "?", "?", "?", "-", "-", f"UNREADABLE: {s.error}"]
            for s in snaps]
    out = [table(rows, ["ID", "CREATED (UTC)", "SIZE", "STORED", "TAGS", "COLLECTIONS", "MESSAGE"])]
    bad = sum(1 for s in snaps if s.error is not None)
    if bad:
        out.append(f"{bad} manifest(s) could not be read: run `chroma-snapshot check`; "
                   "`chroma-snapshot forget ID` removes a broken one")
    return out


def render_collection_history(rows: list[dict[str, Any]]) -> list[str]:
    def records(r: dict[str, Any]) -> str:
        return "UNREADABLE" if r["error"] else "absent" if r["records"] is None else str(r["records"])

    return [table([[r["id"], r["created_at"][:19].replace("T", " ") or "?", records(r)] for r in rows],
                  ["ID", "CREATED (UTC)", "RECORDS"])]


def _schema_text(m: Manifest) -> str:
    """The migrations the DB had applied (what it says of the chromadb that wrote it)."""
    if m.verified is None or not m.verified.schema:
        return "not recorded"
    return ", ".join(f"{d} {s.filename}" for d, s in sorted(m.verified.schema.items()))


def render_show(m: Manifest) -> list[str]:
    return [
        f"snapshot   {m.id}", f"parent     {m.parent or '-'}", f"created    {m.created_at}",
        f"source     {m.source_host}:{m.source_path}", f"tags       {', '.join(m.tags) or '-'}",
        f"message    {m.message or '-'}",
        f"tool       chroma-snapshot {m.tool_version} "
        f"(chromadb {m.tool_chromadb_version or '-'} installed beside it)",
        f"db schema  {_schema_text(m)}",
        f"size       {human_bytes(m.totals.bytes)} in {m.totals.files} files; "
        f"{human_bytes(m.totals.bytes_new)} stored new",
        "",
        table([[c.name, str(c.records), str(c.dimension or "-"), ",".join(c.segments) or "-"]
               for c in m.collections], ["COLLECTION", "RECORDS", "DIM", "SEGMENTS"]),
        *_provenance_lines(m),
        "",
        table([[f.path, human_bytes(f.size), f.role, str(f.chunk_count), f.hash] for f in m.files],
              ["FILE", "SIZE", "ROLE", "CHUNKS", "XXH3-128"]),
    ]


def _provenance_lines(m: Manifest) -> list[str]:
    """Each collection's configuration and metadata, as the capture recorded them."""
    out = []
    for c in m.collections:
        if c.configuration is None and c.metadata is None:
            continue
        config = c.configuration.describe() if c.configuration is not None else "not recorded"
        meta = json.dumps(c.metadata, sort_keys=True, ensure_ascii=False) if c.metadata else "-"
        out += [f"  {c.name}: {config}", f"  {' ' * len(c.name)}  metadata {meta}"]
    return ["", *out] if out else []


def render_files(repo: Repository, m: Manifest, as_json: bool) -> Iterator[str]:
    """Every file of ``m`` with its chunks, one file's chunk table read at a time: JSON lines
    (the file entry with ``chunks`` filled in), or a line per file and per chunk."""
    for f in m.files:
        chunks = repo.chunks(m, f)
        if as_json:
            entry = to_jsonable(dataclasses.replace(f, chunks=chunks))
            yield json.dumps(entry, sort_keys=True, ensure_ascii=False)
            continue
        yield f"{f.path}  {human_bytes(f.size)}  {f.role}  {f.hash}  {len(chunks)} chunk(s)"
        for i, c in enumerate(chunks):
            kind = "full" if len(c.frames) == 1 else f"delta chain of {len(c.frames)}"
            stored = sum(fr.length for fr in c.frames)
            yield f"  [{i}] {c.hash}  {human_bytes(c.size)} in {kind}, {human_bytes(stored)} stored"


def _resumed(n: int) -> str:
    return f"{human_bytes(n)} kept from an interrupted restore, " if n else ""


def prediction_lines(p: Prediction | None) -> list[str]:
    if p is None:
        return []
    kinds = ", ".join(f"{n} {k}" for k, n in p.requests.items() if k != "total")
    line = (f"  predicted: {p.requests.get('total', 0)} request(s) ({kinds or 'none'}), "
            f"{human_bytes(p.bytes_up)} up, {human_bytes(p.bytes_down)} down")
    if p.cost is not None:
        line += f", {p.cost.total:.6f} {p.cost.currency} ({p.cost.pack_class} packs)"
    return [line, *(f"    {note}" for note in p.notes)]


def render_restore_plan(p: RestoreSummary) -> list[str]:
    return [f"restore {p.snapshot}: {p.files} files, {human_bytes(p.bytes_total)}; "
            f"{human_bytes(p.bytes_local)} reused from the target, {_resumed(p.bytes_resumed)}"
            f"{human_bytes(p.bytes_remote)} rebuilt "
            f"from {human_bytes(p.bytes_to_download)} read from the repository (dry run)",
            *prediction_lines(p.predicted)]


def render_restore(r: RestoreResult) -> list[str]:
    out = [f"restored {r.id} into {r.target}: {r.files} files, {human_bytes(r.bytes_total)} verified; "
           f"{human_bytes(r.bytes_reused)} reused from the target, {_resumed(r.bytes_resumed)}"
           f"{human_bytes(r.bytes_downloaded)} read, {r.seconds:.1f}s"]
    out.append(f"  checked: {', '.join(r.checks)}")
    if r.chroma_checked:
        opened = collections_text(r.chroma_checked)
        out.append(f"  chromadb opened it ({r.chroma_batches} batch(es)): {opened}")
    return out


def render_collection_restore(r: CollectionRestoreResult) -> list[str]:
    restored = ", ".join(f"{name} ({n} records)" for name, n in r.collections.items())
    renamed = "".join(f"; {old} restored as {new}" for old, new in r.renamed.items())
    out = [f"restored {restored} of {r.id} into {r.target}{renamed}",
           f"  read {human_bytes(r.bytes_downloaded)} of the snapshot's {human_bytes(r.bytes_snapshot)} "
           f"({r.files} files), {r.seconds:.1f}s"]
    for c in r.copies:
        resumed = f", after the {c.resumed_at} an interrupted run had sent" if c.resumed_at else ""
        replaced = f"; the old {c.name} replaced" if c.replaced else ""
        out.append(f"  {c.name}: sent {c.records_sent} records in batches of {c.batch_size}{resumed}; "
                   f"{c.sampled} compared field by field{replaced}")
    return [*out, f"  checked: {', '.join(r.checks)}"]


# ------------------------------------------------------------------ diff


def _records_text(name: str, rd: RecordDiff) -> list[str]:
    lines = [f"  {name}: {rd.added_count} added, {rd.removed_count} removed, {rd.changed_count} changed"]
    for kind, ids, total in (("added", rd.added, rd.added_count), ("removed", rd.removed, rd.removed_count),
                             ("changed", rd.changed, rd.changed_count)):
        if ids:
            more = f" ... and {total - len(ids)} more" if total > len(ids) else ""
            lines.append(f"    {kind}: {', '.join(ids)}{more}")
    return lines


def render_diff(d: SnapshotDiff) -> list[str]:
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


# ------------------------------------------------------------------ prune, check, unlock


def format_seconds(seconds: float) -> str:
    """24h, 90min, 0s: a whole number of the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def render_prune(r: PruneResult) -> list[str]:
    rows = [["keep", d.id, d.created_at[:19].replace("T", " "), d.group, ", ".join(d.reasons)]
            for d in r.kept]
    rows += [["remove", sid, id_time(sid).strftime("%Y-%m-%d %H:%M:%S"), "", ""] for sid in r.removed]
    out = [table(rows, ["ACTION", "ID", "CREATED (UTC)", "GROUP", "WHY"])] if rows else ["no snapshots"]
    verb = "would remove" if r.dry_run else "removed"
    out.append(f"{verb} {len(r.removed)} snapshot(s); {'would delete' if r.dry_run else 'deleted'} "
               f"{len(r.objects_removed)} condemned object(s), "
               f"{human_bytes(r.bytes_freed)} {'to free' if r.dry_run else 'freed'}; "
               f"{r.objects_kept} object(s) still in use")
    if r.objects_condemned or r.condemned_waiting:
        out.append(f"{'would condemn' if r.dry_run else 'condemned'} {len(r.objects_condemned)} unreferenced "
                   f"object(s) ({human_bytes(r.bytes_condemned)}); {r.condemned_waiting} condemned object(s) "
                   f"({human_bytes(r.bytes_condemned_waiting)}) are kept until condemned for "
                   f"{format_seconds(r.delete_after)} (a later prune deletes them)")
    if r.snapshots_held:
        out.append(f"{len(r.snapshots_held)} snapshot(s) the policy would remove are retained by S3 Object "
                   f"Lock and were kept (the first until {min(r.snapshots_held.values())})")
    if r.objects_held:
        out.append(f"{len(r.objects_held)} condemned object(s) are retained by S3 Object Lock (the first "
                   f"until {min(r.objects_held.values())}): they stay condemned, and a prune after that "
                   "deletes them")
    if r.versioned and (r.removed or r.objects_removed):
        out.append("note: the bucket keeps versions: what was deleted stays as noncurrent versions, billed "
                   "until a lifecycle rule expires them (README: Securing the bucket)")
    if r.objects_rescued:
        out.append(f"{r.objects_rescued} condemned object(s) are used by a snapshot again: "
                   "no longer condemned")
    if r.objects_in_grace:
        out.append(f"{r.objects_in_grace} unreferenced object(s) ({human_bytes(r.bytes_in_grace)}) are "
                   f"younger than the grace period ({r.grace_seconds:.0f}s) and were kept "
                   "(a create may be running)")
    rp = r.repack
    if rp is not None:
        verb = "would re-base" if r.dry_run else "re-based"
        copy = "would copy" if r.dry_run else "copied"
        out.append(f"repack: {verb} {rp.chunks_rebased} chunk chain(s), "
                   f"{copy} {human_bytes(rp.bytes_copied)} of live data out "
                   f"of {rp.packs_repacked} pack(s); unused {human_bytes(rp.unused_before)} -> "
                   f"{human_bytes(rp.unused_after)} of {human_bytes(rp.repository_bytes)}")
        if not r.dry_run:
            out.append(f"repack: read {human_bytes(rp.bytes_read)}, wrote {human_bytes(rp.bytes_written)}, "
                       f"rewrote {rp.roots_rewritten} snapshot root(s)")
    if r.bytes_deleted_early:
        out.append(f"{human_bytes(r.bytes_deleted_early)} of it was stored less than 30 days "
                   "(infrequent-access classes bill 30 days anyway)")
    if r.dry_run:
        out += prediction_lines(r.predicted)
        out.append("dry run: nothing was changed")
    return out


def render_check(r: CheckResult) -> list[str]:
    out = [f"checked {r.snapshots} snapshot(s), {r.objects} object(s) ({r.objects_referenced} referenced)"]
    if r.read_data:
        part = f" (subset {r.subset}: {r.objects_selected} object(s))" if r.subset else ""
        files = f", {r.files_verified} whole file(s)" if r.files_verified else ""
        size = human_bytes(r.bytes_read)
        out.append(f"read and verified {r.frames_verified} frame(s){files}, {size}{part}")
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


def render_init(r: dict[str, Any]) -> list[str]:
    kind = "encrypted repository" if r["encrypted"] else "repository"
    key = f"; key {r['key']} (keep the password safe: without it nothing can be restored)" if r["key"] else ""
    lock = r.get("object_lock")
    held = (f"; packs, snapshot roots and the config are retained {lock['days']} days under S3 Object Lock "
            f"({lock['mode'].lower()} mode)") if lock else ""
    return [f"initialised {kind} {r['id']} at {r['repository']}{key}{held}"]


def render_keys(keys: list[KeyInfo]) -> list[str]:
    def kdf(k: KeyInfo) -> str:
        if k.orphaned:
            return f"{k.kdf}; ORPHANED: {k.error}"
        return k.kdf or f"UNREADABLE: {k.error}"

    rows = [["*" if k.current else "", k.id, k.created[:19].replace("T", " ") or "?", k.host or "?", kdf(k)]
            for k in keys]
    return [table(rows, ["", "ID", "CREATED (UTC)", "HOST", "KDF"])]


def render_key_change(r: dict[str, str]) -> list[str]:
    out = []
    if "added" in r:
        out.append(f"added key {r['added']}")
    if "removed" in r:
        out.append(f"removed key {r['removed']}")
    return out


def render_unlock(removed: list[str]) -> list[str]:
    return [f"removed {len(removed)} stale lock(s)"] + [f"  {r}" for r in removed]
