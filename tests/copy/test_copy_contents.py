"""The chunk contents a copy keeps as bases (snapshot/copy/contents.py): only those wanted,
within a bound in memory and a budget on disk beyond it."""

from __future__ import annotations

from pathlib import Path

from snapshot.copy.contents import Contents
from snapshot.format.hashing import digest


def test_only_wanted_contents_are_kept() -> None:
    kept = Contents(100)
    kept.put("a", b"x" * 10)
    assert "a" not in kept  # nothing is wanted yet
    kept.want(frozenset({"a", "b"}))
    kept.put("a", b"x" * 10)
    kept.put("c", b"z" * 10)
    assert kept.get("a") == b"x" * 10 and "c" not in kept


def test_what_was_wanted_stays_until_the_next_want() -> None:
    """Contents wanted for the snapshot being copied stay while the contents the next one
    builds on are put; a later want drops what neither names."""
    kept = Contents(100)
    kept.want(frozenset({"a"}))
    kept.put("a", b"x" * 10)
    kept.want(frozenset({"b"}))
    assert "a" in kept
    kept.put("b", b"y" * 10)
    kept.want(frozenset({"c"}))
    assert "a" not in kept and "b" in kept
    kept.want(frozenset())
    assert "b" not in kept


def test_the_least_recently_used_go_beyond_the_bound() -> None:
    kept = Contents(25)
    kept.want(frozenset("abc"))
    kept.put("a", b"1" * 10)
    kept.put("b", b"2" * 10)
    assert kept.get("a") is not None  # a is now the most recently used
    kept.put("c", b"3" * 10)
    assert "b" not in kept and "a" in kept and "c" in kept
    kept.put("a", b"1" * 30)  # more than the bound: not kept
    assert kept.get("a") == b"1" * 10


def _spilled(parent: Path) -> list[Path]:
    return sorted(p for d in parent.glob(".copy-spill-*") for p in d.iterdir() if not p.name.startswith("."))


def test_beyond_the_memory_bound_contents_are_spilled_to_disk_and_read_back_checked(tmp_path: Path) -> None:
    a, b, c = (digest(bytes([i]) * 10) for i in range(3))
    kept = Contents(15, 25, tmp_path)
    kept.want(frozenset({a, b, c}))
    kept.put(a, bytes([0]) * 10)
    kept.put(b, bytes([1]) * 10)  # a goes to disk
    assert [p.name for p in _spilled(tmp_path)] == [a]
    assert kept.get(a) == bytes([0]) * 10 and kept.unspilled == 10
    kept.put(c, bytes([2]) * 10)  # b goes to disk too: 20 bytes of 25
    assert {p.name for p in _spilled(tmp_path)} == {a, b}
    path = next(p for p in _spilled(tmp_path) if p.name == b)
    path.write_bytes(bytes([9]) * 10)  # damaged: a miss, never wrong bytes
    assert kept.get(b) is None and b not in kept
    kept.close()
    assert not list(tmp_path.glob(".copy-spill-*"))


def test_the_spill_keeps_its_budget_and_what_is_wanted(tmp_path: Path) -> None:
    hashes = [digest(bytes([i]) * 10) for i in range(4)]
    kept = Contents(0, 25, tmp_path)  # nothing in memory
    kept.want(frozenset(hashes))
    for i, h in enumerate(hashes[:3]):
        kept.put(h, bytes([i]) * 10)
    assert hashes[0] not in kept and hashes[1] in kept and hashes[2] in kept  # 20 bytes of 25
    assert len(_spilled(tmp_path)) == 2
    kept.want(frozenset(hashes[3:]))  # the contents wanted before stay until the next want
    kept.want(frozenset())
    assert _spilled(tmp_path) == [] and hashes[2] not in kept
    assert Contents(0, 0, tmp_path).ledger.disk == 0 == Contents(0, 25).ledger.disk  # no spill
