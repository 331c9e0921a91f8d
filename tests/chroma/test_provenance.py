"""Each collection's provenance in the manifest: its metadata and configuration (distance space,
HNSW parameters, embedding function name) recorded at capture from whatever chromadb version
wrote them, shown by ``show``; optional (older manifests load without it) and untrusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chroma_helpers import run_chroma
from conftest import Format1Repo, create_snapshot, edit_manifest, one_line_error, run_cli

from snapshot.chroma.collection_config import configuration
from snapshot.format.provenance import CollectionConfig

# What chromadb 1.5 stores in collections.schema_str (abridged to what is read).
SCHEMA_15 = json.dumps({"keys": {"#embedding": {"float_list": {"vector_index": {"enabled": True, "config": {
    "space": "cosine", "embedding_function": {"type": "known", "name": "openai", "config": {}},
    "hnsw": {"ef_construction": 150, "max_neighbors": 32, "num_threads": 2, "batch_size": 100}}}}}}})
CONFIG_10 = json.dumps({"hnsw": {"space": "ip", "ef_construction": 100, "ef_search": 20}, "spann": None,
                        "embedding_function": {"type": "known", "name": "default", "config": {}}})
CONFIG_05 = json.dumps({"hnsw_configuration": {"space": "l2", "ef_construction": 100, "M": 16,
                                               "_type": "HNSWConfigurationInternal"},
                        "_type": "CollectionConfigurationInternal"})


@pytest.mark.parametrize(("config_json", "schema_json", "metadata", "expected"), [
    ("{}", SCHEMA_15, {},
     CollectionConfig("cosine", {"ef_construction": 150, "max_neighbors": 32}, "openai")),
    (CONFIG_10, None, {}, CollectionConfig("ip", {"ef_construction": 100, "ef_search": 20}, "default")),
    (CONFIG_05, None, {}, CollectionConfig("l2", {"ef_construction": 100, "max_neighbors": 16}, None)),
    (None, None, {"hnsw:space": "cosine", "hnsw:M": 8},
     CollectionConfig("cosine", {"max_neighbors": 8}, None)),
    ("not json", "[1]", {}, CollectionConfig(None, {}, None)),
])
def test_the_configuration_is_read_from_what_each_chromadb_stored(
        config_json: str | None, schema_json: str | None, metadata: dict[str, object],
        expected: CollectionConfig) -> None:
    assert configuration(config_json, schema_json, metadata) == expected  # type: ignore[arg-type]


def test_capture_records_metadata_and_configuration_and_show_prints_them(tmp_path: Path) -> None:
    source = tmp_path / "db"
    run_chroma("create", source, name="cosine-docs", records=20, metadata={"owner": "team-x", "shards": 3},
               configuration={"hnsw": {"space": "cosine", "ef_construction": 150}})
    repo = tmp_path / "repo"
    sid = create_snapshot(repo, source)
    [col] = run_cli("--repo", repo, "show", sid, "--json").json()["collections"]
    assert col["metadata"] == {"owner": "team-x", "shards": 3}
    assert col["configuration"]["space"] == "cosine"
    assert col["configuration"]["hnsw"]["ef_construction"] == 150
    text = run_cli("--repo", repo, "show", sid).stdout
    assert "cosine-docs: space cosine, ef_construction 150" in text
    assert '"owner": "team-x"' in text


def test_manifests_without_provenance_still_load(format1_repo: Format1Repo) -> None:
    shown = run_cli("--repo", format1_repo.path, "show", format1_repo.ids[0], "--json")
    assert shown.code == 0, shown.stderr
    assert all("metadata" not in c and "configuration" not in c for c in shown.json()["collections"])


@pytest.mark.parametrize("bad", [
    {"metadata": ["a", "list"]},
    {"metadata": {"k": {"nested": 1}}},
    {"configuration": {"hnsw": {"ef_construction": "lots"}}},
    {"configuration": {"space": 7}},
])
def test_hostile_provenance_is_an_integrity_error(tmp_path: Path, bad: dict[str, object]) -> None:
    source = tmp_path / "db"
    run_chroma("create", source, name="plain-docs", records=5)
    repo = tmp_path / "repo"
    sid = create_snapshot(repo, source)
    edit_manifest(repo, sid, lambda d: d["collections"][0].update(bad))
    assert "collections[0]." in one_line_error(run_cli("--repo", repo, "show", sid), 4)
