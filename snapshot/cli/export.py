"""``export``: one collection of a snapshot as JSON lines or Parquet, to a file or stdout."""

from __future__ import annotations

import json
import sys

import click

from snapshot.chroma.export import FORMATS
from snapshot.cli.options import GlobalOptions, command, filter_options, json_option, narrowed, repo_options
from snapshot.cli.render import CliReporter, emit_json, human_bytes, to_jsonable
from snapshot.repo.selection import SnapshotFilter


@command("export")
@click.argument("snapshot_ref", metavar="ID")
@click.argument("out", metavar="OUT|-")
@click.option("--collection", "name", required=True, metavar="NAME", help="The collection to export.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True,
              help="JSON lines (id, embedding, document, metadata, uri per line), or Parquet (needs pyarrow: "
              "pip install 'chroma-snapshot[parquet]').")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (atomically).")
@click.option("--tmp-dir", type=click.Path(file_okay=False, exists=True),
              help="Where the collection's files are materialised (an existing folder).")
@filter_options
@repo_options
@json_option
def export_cmd(snapshot_ref: str, out: str, name: str, fmt: str, force: bool, tmp_dir: str | None,
               filters: SnapshotFilter, global_options: GlobalOptions, as_json: bool) -> None:
    """Export collection NAME of snapshot ID as records to the file OUT, or to stdout with `-`.

    The collection is read from the repository (verified), then with chromadb in batches:
    memory stays bounded. OUT is written whole or not at all; an existing OUT is refused
    unless --force. With `-` the records stream to stdout and the summary goes to stderr.

    \b
    Example:
      chroma-snapshot export latest --collection docs docs.jsonl
      chroma-snapshot export latest --collection docs - | head -1 | jq .id
      chroma-snapshot export latest --collection docs --format parquet docs.parquet
    """
    from snapshot.restore.export import export_collection  # each command imports what it runs

    repo = global_options.open_repo()
    [snapshot_ref] = narrowed(repo, [snapshot_ref], filters)
    to_stdout = out == "-"
    result = export_collection(repo, snapshot_ref, name, sys.stdout.buffer if to_stdout else out, format=fmt,
                               force=force, tmp_dir=tmp_dir, reporter=CliReporter(not as_json))
    if to_stdout:
        sys.stdout.flush()
    if as_json and to_stdout:  # stdout holds the records: the report goes to stderr
        click.echo(json.dumps(to_jsonable(result), sort_keys=True), err=True)
    elif as_json:
        emit_json(result)
    else:
        click.echo(f"exported {result.records} records of {result.collection!r} from {result.snapshot} to "
                   f"{result.output} ({result.format}, {human_bytes(result.bytes_written)}; "
                   f"{human_bytes(result.bytes_downloaded)} read from the repository)", err=to_stdout)
