"""The Object Lock a repository's config records: an additive field (a config without it, as
every older one, loads with none and is written exactly as before), validated when read; and
the deletion plan never deletes a condemned pack S3 still retains (it stays condemned)."""

from __future__ import annotations

import json

import pytest

from snapshot.errors import IntegrityError
from snapshot.format.condemned import Condemned, plan_deletion
from snapshot.format.manifest import LockSetting, RepoConfig, dumps, parse_config

OLD = {"format_version": 1, "id": "ab" * 16, "chunk_size": 1 << 20, "codec": "zstd", "level": 1,
       "max_chain": 16, "created_at": "2026-01-01T00:00:00Z"}


def test_an_old_config_loads_without_object_lock_and_is_written_as_before() -> None:
    raw = json.dumps(OLD, sort_keys=True, separators=(",", ":")).encode()
    config = parse_config(raw)
    assert config.object_lock is None
    assert dumps(config) == raw


def test_object_lock_round_trips_and_bad_values_are_refused() -> None:
    config = RepoConfig(**{k: v for k, v in OLD.items() if k != "format_version"},
                        object_lock=LockSetting("COMPLIANCE", 30))
    assert json.loads(dumps(config))["object_lock"] == {"mode": "COMPLIANCE", "days": 30}
    assert parse_config(dumps(config)).object_lock == LockSetting("COMPLIANCE", 30)
    for bad in ({"mode": "LEGAL", "days": 3}, {"mode": "GOVERNANCE", "days": 0}, {"mode": "GOVERNANCE"},
                {"mode": "GOVERNANCE", "days": 10**6}, "GOVERNANCE"):
        with pytest.raises(IntegrityError, match="object_lock"):
            parse_config(json.dumps({**OLD, "object_lock": bad}).encode())


def test_a_held_pack_stays_condemned_and_goes_once_free() -> None:
    condemned = Condemned({"a" * 32: 0.0, "b" * 32: 0.0})
    present = {"a" * 32, "b" * 32}
    plan = plan_deletion(condemned, set(), present, now=100.0, delete_after=10.0, held={"a" * 32: 500.0})
    assert plan.delete == {"b" * 32} and plan.held == {"a" * 32: 500.0} and plan.remaining == {"a" * 32: 0.0}
    later = plan_deletion(condemned, set(), present, now=600.0, delete_after=10.0)
    assert later.delete == present and later.held == {}
