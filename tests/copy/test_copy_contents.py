"""The chunk contents a copy keeps as bases (snapshot/copy/contents.py): only those wanted,
within a bound."""

from __future__ import annotations

from snapshot.copy.contents import Contents


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
