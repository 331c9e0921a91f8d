"""README's examples of formats and JSON fields say what the code does."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from snapshot.errors import EXIT_CODES
from snapshot.format.crypto import DEFAULT_LOG_N
from snapshot.repo.repository import SnapshotSummary

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_the_key_object_example_has_the_scrypt_cost_keys_are_made_with() -> None:
    example = re.search(r'"kdf": (\{[^}]*\})', README)
    assert example is not None
    assert json.loads(example.group(1).replace('"<base64, 32 bytes>"', '""'))["log_n"] == DEFAULT_LOG_N


def test_list_json_fields_are_all_documented() -> None:
    row = next(line for line in README.splitlines() if line.startswith("| `list"))
    documented = set(re.findall(r"\w+", row.split("an array of `{", 1)[1].split("}`", 1)[0]))
    assert {f.name for f in dataclasses.fields(SnapshotSummary)} <= documented


def test_readme_documents_every_exit_code() -> None:
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].isdigit():
            rows[int(cells[0])] = cells[1].replace("`", "")
    assert rows == {code: meaning for code, meaning in EXIT_CODES}
