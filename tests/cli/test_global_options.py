"""The global options (--repo, S3, passwords) reach each command as one GlobalOptions argument:
built by the group from what precedes the command, completed by what follows it (which wins)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Format1Repo, run_cli

from snapshot.cli.maint import check_cmd
from snapshot.cli.options import GlobalOptions
from snapshot.cli.snapshots import list_
from snapshot.errors import StorageError
from snapshot.repo.repository import Repository
from snapshot.storage import StoreOptions


def test_options_after_the_command_take_precedence_one_by_one() -> None:
    before = GlobalOptions(repo="a", sse="none", region="eu-west-1", password_file="p")
    merged = before.overridden_by(GlobalOptions(region="us-east-2", storage_class="STANDARD"))
    assert merged == GlobalOptions(repo="a", sse="none", region="us-east-2", storage_class="STANDARD",
                                   password_file="p")


def test_the_store_options_have_the_stores_defaults_where_none_is_given() -> None:
    assert GlobalOptions().store_options() == StoreOptions()
    given = GlobalOptions(profile="p", endpoint_url="http://e", region="r", storage_class="GLACIER_IR",
                          sse="aws:kms", sse_kms_key_id="k", s3_checksum="when_required").store_options()
    assert given == StoreOptions(profile="p", endpoint_url="http://e", region="r", storage_class="GLACIER_IR",
                                 sse="aws:kms", sse_kms_key_id="k", checksum="when_required")


@pytest.mark.parametrize("args", [
    ("list",), ("show", "latest"), ("check",), ("unlock",), ("key", "list"),
    ("restore", "latest", "t"), ("diff", "a", "b"), ("prune", "--keep-last", "1"), ("forget", "x"),
])
def test_every_command_opens_the_store_the_options_before_and_after_it_name(
    monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    opened: list[tuple[Any, ...]] = []

    def fake_open(location: str, options: StoreOptions, **kw: Any) -> Repository:
        opened.append((location, options))
        raise StorageError("stop here")

    monkeypatch.setattr(Repository, "open", staticmethod(fake_open))
    res = run_cli("--repo", "s3://before/p", "--sse", "none", "--region", "eu-west-1",
                  *args, "--region", "us-east-2", "--storage-class", "STANDARD")
    assert res.code == StorageError.exit_code and "stop here" in res.stderr, res.stderr
    expected = StoreOptions(region="us-east-2", sse="none", storage_class="STANDARD")
    assert opened == [("s3://before/p", expected)]


def test_no_repository_is_a_usage_error_naming_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHROMA_SNAPSHOT_REPO", raising=False)
    res = run_cli("list")
    assert res.code == 2 and "--repo" in res.stderr


def test_a_command_runs_on_the_global_options_it_is_given(
    format1_repo: Format1Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    """No click context to read them from: the command's function takes them as an argument."""
    options = GlobalOptions(repo=str(format1_repo.path))
    list_.callback.__wrapped__(stats=False, global_options=options, as_json=True)  # type: ignore[union-attr]
    assert [s["id"] for s in json.loads(capsys.readouterr().out)] == format1_repo.ids
    check_cmd.callback.__wrapped__(read_data=True, read_data_subset=None,  # type: ignore[union-attr]
                                   global_options=options, as_json=True)
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_global_options_do_not_leak_from_one_run_into_the_next(
    format1_repo: Format1Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHROMA_SNAPSHOT_REPO", raising=False)
    assert run_cli("--repo", format1_repo.path, "list").code == 0
    assert run_cli("list").code == 2
