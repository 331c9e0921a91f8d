"""Turning library results into text for people and JSON for scripts. No logic lives here."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from snapshot.errors import SnapshotError


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

    def phase(self, name: str, total: int) -> None:
        self.done()
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total or None, desc=name, unit="B", unit_scale=True, leave=False)

    def advance(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.update(amount)

    def warn(self, message: str) -> None:
        if self._bar is not None:
            self._bar.clear()
        click.echo(f"chroma-snapshot: warning: {message}", err=True)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
