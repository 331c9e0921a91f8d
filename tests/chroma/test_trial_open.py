"""What a failed chromadb open of a restored database says (snapshot/chroma/trial_open.py)."""

from __future__ import annotations

from snapshot.chroma.trial_open import cannot_open


def test_chroma_check_failure_on_a_known_schema_names_the_schema() -> None:
    known = {"sysdb": (10, "00010-collection-schema.sqlite.sql")}
    text = cannot_open("collection 'docs' does not open: '_type'", known)
    assert "exactly the snapshot's" in text and "sysdb 00010-collection-schema.sqlite.sql" in text
    assert "newer chromadb wrote it" not in text
    assert text.endswith("(chromadb said: collection 'docs' does not open: '_type')")
