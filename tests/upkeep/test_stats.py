"""stats: every figure against an independent count over the repository's files and frames, on a
history with shared chains, re-based chains and condemned packs; the cost estimate against a
hand computation; S3 storage classes from the listing; bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chroma_helpers import steps
from conftest import one_line_error, run_cli

from snapshot.repo.repository import Repository

CHUNK = 64 << 10


def _ok(*args: Any) -> Any:
    res = run_cli(*map(str, args), "--json")
    assert res.code == 0, res.stdout + res.stderr
    return res.json()


def _night(src: Path, n: int) -> None:
    steps(
        src,
        ("add", {"name": "docs", "ids": [f"docs-s{n}-{i}" for i in range(40)], "seed": 300 + n}),
        ("update_metadata", {"name": "docs", "ids": [f"docs-{i}" for i in range(n * 15, n * 15 + 15)],
                             "value": n}),
    )


@pytest.fixture(scope="module")
def history(chroma_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five snapshots of one DB (64 KiB chunks), a prune that re-bases and condemns (kept
    24 h), so the repository holds shared chains, re-based ones and condemned packs."""
    import shutil

    base = tmp_path_factory.mktemp("stats")
    src, repo = base / "vector_db", base / "repo"
    shutil.copytree(chroma_template, src)
    _ok("--repo", repo, "create", src, "--chunk-size", CHUNK, "--no-cache")
    for n in range(1, 5):
        _night(src, n)
        _ok("--repo", repo, "create", src, "--no-cache")
    pruned = _ok("--repo", repo, "prune", "--keep-last", "3", "--grace", "0s", "--delete-after", "24h",
                 "--max-unused", "0%")
    assert pruned["repack"]["chunks_rebased"] > 0, pruned
    _night(src, 5)
    _ok("--repo", repo, "create", src, "--no-cache")
    return repo


def _frames(repo: Repository) -> dict[str, dict[tuple[str, int], tuple[int, bool]]]:
    """Per snapshot: (pack, offset) -> (stored length, delta?) of every frame it needs,
    chunk tables included (as not delta)."""
    out = {}
    for sid in repo.snapshot_ids():
        m = repo.manifest(sid)
        frames: dict[tuple[str, int], tuple[int, bool]] = {}
        for f in m.files:
            if f.table is not None:
                t = f.table.frame()
                frames[(t.object, t.offset)] = (t.length, False)
            for c in repo.chunks(m, f):
                for i, fr in enumerate(c.frames):
                    frames[(fr.object, fr.offset)] = (fr.length, i > 0)
        out[sid] = frames
    return out


def _files(root: Path, sub: str) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (root / sub).rglob("*") if p.is_file()}


def test_every_figure_equals_an_independent_count(history: Path) -> None:
    repo = Repository.open(str(history))
    per = _frames(repo)
    roots = {name.removesuffix(".json"): size for name, size in _files(history, "snapshots").items()}
    packs = _files(history, "data")
    out = _ok("--repo", history, "stats")
    got = {s["id"]: s for s in out["stats"]["snapshots"]}
    assert set(got) == set(per) == set(roots)
    owners: dict[tuple[str, int], set[str]] = {}
    for sid, frames in per.items():
        for key in frames:
            owners.setdefault(key, set()).add(sid)
    lengths = {k: v[0] for frames in per.values() for k, v in frames.items()}
    shared = [k for k, o in owners.items() if len(o) > 1]
    assert shared and len(shared) < len(owners)  # the history shares some frames, not all
    for sid, frames in per.items():
        m = repo.manifest(sid)
        s = got[sid]
        assert s["referenced_bytes"] == sum(v[0] for v in frames.values()) + roots[sid]
        assert s["unique_bytes"] == sum(lengths[k] for k in frames if owners[k] == {sid}) + roots[sid]
        assert s["added_bytes"] == m.totals.bytes_new
        assert s["logical_bytes"] == sum(f.size for f in m.files) and s["files"] == len(m.files)
        assert s["records"] == {c.name: c.records for c in m.collections}
        assert s["packs"] == len({k[0] for k in frames})
    seen: set[tuple[str, int]] = set()
    to_date = 0
    for sid in sorted(per):  # ids sort by creation time
        fresh = set(per[sid]) - seen
        seen |= fresh
        to_date += sum(lengths[k] for k in fresh) + roots[sid]
        assert got[sid]["stored_to_date"] == to_date
    r = out["stats"]
    every = [p for p in history.rglob("*") if p.is_file()]
    assert r["objects"] == len(every) and r["total_bytes"] == sum(p.stat().st_size for p in every)
    assert r["packs"] == len(packs)
    assert r["by_kind"]["data"] == {"objects": len(packs), "bytes": sum(packs.values())}
    assert r["by_kind"]["snapshots"] == {"objects": len(roots), "bytes": sum(roots.values())}
    assert r["frames"] == len(owners)
    assert r["referenced_bytes"] == sum(lengths.values()) + sum(roots.values())
    used: dict[str, int] = {}
    for (obj, _), length in lengths.items():
        used[obj] = used.get(obj, 0) + length
    condemned = {oid for rec in (history / "condemned").glob("*.json")
                 for oid in json.loads(rec.read_text())["objects"]}
    held = {oid for oid in packs if oid in condemned and oid not in used}
    assert held, "the prune condemned packs, kept for 24 h"
    assert r["condemned_packs"] == len(held)
    assert r["condemned_bytes"] == sum(packs[oid] for oid in held)
    assert r["unused_bytes"] == sum(size - used.get(oid, 0) for oid, size in packs.items() if oid not in held)
    full = {k: v for frames in per.values() for k, v in frames.items()}
    delta_stored = sum(length for length, is_delta in full.values() if is_delta)
    assert r["delta_stored_bytes"] == delta_stored > 0
    table_keys = {(f.table.object, f.table.offset) for sid in per for f in repo.manifest(sid).files
                  if f.table is not None}
    assert r["table_stored_bytes"] == sum(lengths[k] for k in table_keys)
    assert r["full_stored_bytes"] == sum(lengths.values()) - delta_stored - r["table_stored_bytes"]
    assert r["logical_bytes"] == sum(s["logical_bytes"] for s in got.values())


def test_forgetting_a_snapshot_frees_what_stats_said_only_it_needs(history: Path, tmp_path: Path) -> None:
    """The newest snapshot's unique bytes are what forgetting it (then pruning everything
    unreferenced at once) removes from the repository, roots included."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(history, repo)
    _ok("--repo", repo, "prune", "--keep-last", "100", "--grace", "0s", "--delete-after", "0",
        "--max-unused", "0%")  # the condemned packs go first: the figure is about the rest
    before = _ok("--repo", repo, "stats")["stats"]
    newest = before["snapshots"][-1]
    assert newest["unique_bytes"] > newest["root_bytes"]
    referenced = before["referenced_bytes"]
    _ok("--repo", repo, "forget", newest["id"], "--delete-after", "0", "--max-unused", "0%", "--no-repack")
    after = _ok("--repo", repo, "stats")["stats"]
    assert after["referenced_bytes"] == referenced - newest["unique_bytes"]


def test_selected_snapshots_are_counted_against_all_of_them(history: Path) -> None:
    everything = {s["id"]: s for s in _ok("--repo", history, "stats")["stats"]["snapshots"]}
    one = _ok("--repo", history, "stats", "latest")["stats"]["snapshots"]
    assert len(one) == 1 and one[0] == everything[max(everything)]


def test_cost_matches_a_hand_computation(history: Path, tmp_path: Path) -> None:
    prices = {
        "source": "test", "date": "2026-01", "region": "test-1", "currency": "USD", "egress_per_gb": 0.5,
        "classes": {
            "STANDARD": {"storage_gb_month": 1.0, "put_per_1000": 0.1, "get_per_1000": 0.2,
                         "retrieval_per_gb": 0.0, "min_object_bytes": 0, "min_days": 0},
            "STANDARD_IA": {"storage_gb_month": 2.0, "put_per_1000": 0.1, "get_per_1000": 3.0,
                            "retrieval_per_gb": 0.25, "min_object_bytes": 1 << 20, "min_days": 30},
        },
    }
    table = tmp_path / "prices.json"
    table.write_text(json.dumps(prices))
    out = _ok("--repo", history, "stats", "--prices", table)
    gb = float(1 << 30)
    # A local repository is priced where a create writes to S3: packs of >= 128 KiB in
    # STANDARD_IA (each billed as at least 1 MiB by this table), the rest in STANDARD.
    packs = _files(history, "data")
    ia = [s for s in packs.values() if s >= 128 << 10]
    rest = [s for s in packs.values() if s < 128 << 10] + list(_files(history, "snapshots").values()) + [
        (history / "config.json").stat().st_size] + list(_files(history, "condemned").values())
    expect = {"STANDARD_IA": sum(max(s, 1 << 20) for s in ia) / gb * 2.0, "STANDARD": sum(rest) / gb * 1.0}
    cost = out["cost"]
    assert cost["assumed"] is True
    got = {c["storage_class"]: c["monthly"] for c in cost["classes"]}
    assert got == pytest.approx(expect, rel=1e-12)
    for restore, s in zip(cost["restores"], out["stats"]["snapshots"], strict=True):
        assert restore["get_requests"] == s["packs"] + 2
        assert restore["requests_cost"] == pytest.approx((s["packs"] + 2) / 1000 * 3.0)
        assert restore["retrieval_cost"] == pytest.approx(s["referenced_bytes"] / gb * 0.25)
        assert restore["egress_cost"] == pytest.approx(s["referenced_bytes"] / gb * 0.5)


def test_the_built_in_table_is_dated_and_named(history: Path) -> None:
    res = run_cli("--repo", str(history), "stats", "--cost")
    assert res.code == 0, res.stderr
    assert "us-east-1" in res.stdout and "2025" in res.stdout and "per month" in res.stdout


def test_on_s3_packs_and_roots_are_counted_by_their_storage_class(
    s3_repo_url: str, chroma_dir: Path
) -> None:
    _ok("--repo", s3_repo_url, "create", chroma_dir, "--no-cache")
    out = _ok("--repo", s3_repo_url, "stats", "--cost")
    classes = out["stats"]["by_storage_class"]
    assert "STANDARD_IA" in classes and "STANDARD" in classes and "local" not in classes
    assert out["cost"]["assumed"] is False
    assert {c["storage_class"] for c in out["cost"]["classes"]} >= {"STANDARD", "STANDARD_IA"}


@pytest.mark.parametrize(("args", "words"), [
    (["nope"], "nope"),
    (["--prices", "/nonexistent/prices.json"], "price table"),
    (["--prices", "{bad"], "price table"),
])
def test_bad_input_is_one_line(history: Path, tmp_path: Path, args: list[str], words: str) -> None:
    if args[-1] == "{bad":
        bad = tmp_path / "bad.json"
        bad.write_text("{bad")
        args = ["--prices", str(bad)]
    res = run_cli("--repo", str(history), "stats", *args)
    assert words in one_line_error(res, 2 if args[0] == "--prices" else 3)


def test_chart_on_the_terminal_and_as_svg(history: Path, tmp_path: Path) -> None:
    svg = tmp_path / "history.svg"
    res = run_cli("--repo", str(history), "stats", "--chart", "--plot", str(svg))
    assert res.code == 0, res.stderr
    assert "stored to date" in res.stdout and "records per collection" in res.stdout
    text = svg.read_text()
    assert text.startswith("<svg") and "stored&#160;to&#160;date" in text
    snaps = _ok("--repo", history, "stats")["stats"]["snapshots"]
    assert all(s["created_at"][:10] in text for s in snaps)
    assert [p.name for p in tmp_path.iterdir()] == ["history.svg"]  # nothing else left behind


def test_plot_into_a_missing_folder_is_refused(history: Path, tmp_path: Path) -> None:
    res = run_cli("--repo", str(history), "stats", "--plot", str(tmp_path / "no" / "h.svg"))
    assert "does not exist" in one_line_error(res, 2)
