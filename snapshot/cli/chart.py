"""``stats --chart`` / ``--plot FILE.svg``: the repository's size and each snapshot's added bytes
over time, and each collection's records over time, drawn with rich (installed with chromadb):
on the terminal, or recorded and saved as SVG."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.bar import Bar
from rich.console import Console, Group
from rich.table import Table

from snapshot.cli.render import human_bytes
from snapshot.errors import UsageError
from snapshot.upkeep.stats import RepoStats, SnapshotStats

#: Rows of the size chart and points of a sparkline: more snapshots are grouped.
MAX_POINTS = 40
#: Collections drawn (the largest at the newest snapshot); the rest are counted.
MAX_COLLECTIONS = 15
_SPARKS = "▁▂▃▄▅▆▇█"


def _groups(snaps: Sequence[SnapshotStats]) -> list[list[SnapshotStats]]:
    """``snaps`` in at most :data:`MAX_POINTS` consecutive groups."""
    n = len(snaps)
    if n <= MAX_POINTS:
        return [[s] for s in snaps]
    return [list(snaps[i * n // MAX_POINTS:(i + 1) * n // MAX_POINTS]) for i in range(MAX_POINTS)]


def _spark(values: Sequence[int]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return _SPARKS[0] * len(values)
    steps = len(_SPARKS) - 1
    return "".join(_SPARKS[min(steps, v * steps // top)] if v else " " for v in values)


def renderables(stats: RepoStats, width: int) -> Group:
    snaps = stats.snapshots
    room = max(24, width - 16 - 2 * 10 - 8)  # the time, two sizes, the gaps
    bar, added_bar = room * 2 // 3, room - room * 2 // 3
    groups = _groups(snaps)
    size = Table(title=f"{stats.repository}: stored for the snapshots up to each one, and what each added",
                 title_justify="left", box=None, pad_edge=False)
    size.add_column("snapshot" if len(groups) == len(snaps) else "up to snapshot", no_wrap=True, min_width=16)
    size.add_column("stored to date", no_wrap=True)
    size.add_column("", justify="right", no_wrap=True, min_width=9)
    size.add_column("added", no_wrap=True)
    size.add_column("", justify="right", no_wrap=True, min_width=9)
    top = max((s.stored_to_date for s in snaps), default=0) or 1
    top_added = max((sum(s.added_bytes for s in g) for g in groups), default=0) or 1
    for g in groups:
        last, added = g[-1], sum(s.added_bytes for s in g)
        size.add_row(last.created_at[:16].replace("T", " "), Bar(top, 0, last.stored_to_date, width=bar),
                     human_bytes(last.stored_to_date), Bar(top_added, 0, added, width=added_bar),
                     human_bytes(added))
    parts: list[Table] = [size]
    names = sorted({name for s in snaps for name in s.records},
                   key=lambda name: (-(snaps[-1].records.get(name, 0) if snaps else 0), name))
    if names:
        recs = Table(title="records per collection over time (blank: absent)", title_justify="left", box=None,
                     pad_edge=False)
        recs.add_column("collection", no_wrap=True, max_width=40)
        recs.add_column("", no_wrap=True)
        recs.add_column("first", justify="right")
        recs.add_column("newest", justify="right")
        for name in names[:MAX_COLLECTIONS]:
            points = [g[-1].records.get(name, 0) for g in groups]
            recs.add_row(name, _spark(points), str(points[0]), str(points[-1]))
        if len(names) > MAX_COLLECTIONS:
            recs.add_row(f"... {len(names) - MAX_COLLECTIONS} more", "", "", "")
        parts.append(recs)
    return Group(*parts)


def show(stats: RepoStats) -> None:
    console = Console(highlight=False)
    console.print(renderables(stats, console.width))


def save_svg(stats: RepoStats, path: str) -> None:
    """Write the chart as SVG to ``path`` (whole or not at all)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise UsageError(f"--plot: the folder of {path} does not exist")
    console = Console(record=True, width=120, file=io.StringIO(), highlight=False)
    console.print(renderables(stats, console.width))
    svg = console.export_svg(title="chroma-snapshot stats")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(svg)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UsageError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
