"""Help output: each command lists its own options; the global ones are listed once, at the top."""

from __future__ import annotations

import re
from pathlib import Path

import click

from snapshot.cli import COMMANDS, cli
from snapshot.errors import ChromaCheckError, IntegrityError, UsageError, exit_codes

GLOBAL = ["--repo", "--profile", "--endpoint-url", "--region", "--storage-class", "--sse",
          "--sse-kms-key-id", "--s3-checksum", "--password-file", "--password-command"]


def _command_paths() -> list[tuple[str, ...]]:
    ctx = click.Context(cli)
    paths: list[tuple[str, ...]] = []
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            paths += [(name, sub) for sub in command.list_commands(ctx)]
        else:
            paths.append((name,))
    return paths


def test_a_command_help_lists_its_own_options_and_points_at_the_global_ones(cli) -> None:
    paths = _command_paths()
    assert ("key", "add") in paths and ("restore",) in paths
    for path in paths:
        res = cli(*path, "--help")
        assert res.code == 0, path
        assert "Example:" in res.stdout and "--json" in res.stdout, path
        options = [line.split()[0].rstrip(",") for line in res.stdout.splitlines() if line.startswith("  -")]
        assert not set(options) & set(GLOBAL), (path, options)
        assert res.stdout.rstrip().splitlines()[-1] == (
            "Global options (--repo, S3, passwords): see `chroma-snapshot --help`."), path


def test_the_top_level_help_lists_the_global_options_once(cli) -> None:
    res = cli("--help")
    assert res.code == 0
    listed = [line.split()[0] for line in res.stdout.splitlines() if line.startswith("  --")]
    assert [o for o in listed if o in GLOBAL] == GLOBAL
    assert "before or after" in res.stdout


def test_global_options_are_still_accepted_after_the_command(cli, tmp_path: Path) -> None:
    missing = tmp_path / "no-repo"
    for args in (["--repo", missing, "list"], ["list", "--repo", missing],
                 ["list", "--repo", missing, "--sse", "none", "--storage-class", "STANDARD"]):
        res = cli(*args)
        assert res.code == 3 and f"no repository at {missing}" in res.stderr, (args, res.stderr)
    res = cli("key", "list", "--repo", missing)
    assert res.code == 3 and str(missing) in res.stderr, res.stderr


def test_the_exit_codes_help_mentions_are_the_errors_codes(cli) -> None:
    def help_text(*path: str) -> str:
        return " ".join(cli(*path, "--help").stdout.split())

    assert f"Refuse (exit {ChromaCheckError.exit_code})" in help_text("restore")
    assert f"(exit {IntegrityError.exit_code} if not)" in help_text("check")
    assert f"(exit {UsageError.exit_code})" in help_text("prune")
    codes = {row.code for row in exit_codes()}
    for path in _command_paths():
        mentioned = {int(n) for n in re.findall(r"\bexit (\d+)", help_text(*path))}
        assert mentioned <= codes, (path, mentioned - codes)
