"""The chroma-snapshot command line: the group, its commands, and the one exit path.

Every command parses, calls one library function and renders; :func:`main` is the only place
that turns an outcome into an exit code (the ``exit_code`` of the exception raised: the table
is ``snapshot.errors.exit_codes()``; click's usage errors exit as UsageError does, Ctrl-C and
SIGTERM as Interrupted and Terminated, unless they come after the command's commit point: see
snapshot/cli/signals.py).
"""

from __future__ import annotations

import importlib
import sys

import click

from snapshot.cli import signals
from snapshot.cli.options import group_store_options
from snapshot.cli.render import emit_error
from snapshot.errors import SUCCESS, Interrupted, SnapshotError, Terminated, disk_full
from snapshot.version import __version__

#: Command name -> (module, attribute). A command's module is imported when it runs (or for
#: --help): a restore does not pay at start-up for importing prune, diff and create.
COMMANDS = {
    "init": ("snapshot.cli.keys", "init_cmd"),
    "create": ("snapshot.cli.snapshots", "create"),
    "list": ("snapshot.cli.snapshots", "list_"),
    "show": ("snapshot.cli.snapshots", "show"),
    "restore": ("snapshot.cli.snapshots", "restore"),
    "export": ("snapshot.cli.export", "export_cmd"),
    "copy": ("snapshot.cli.copy", "copy_cmd"),
    "diff": ("snapshot.cli.maint", "diff_cmd"),
    "prune": ("snapshot.cli.maint", "prune_cmd"),
    "forget": ("snapshot.cli.maint", "forget_cmd"),
    "check": ("snapshot.cli.maint", "check_cmd"),
    "unlock": ("snapshot.cli.maint", "unlock_cmd"),
    "undelete": ("snapshot.cli.undelete", "undelete_cmd"),
    "stats": ("snapshot.cli.stats", "stats_cmd"),
    "key": ("snapshot.cli.keys", "key_group"),
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=_Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="chroma-snapshot")
@group_store_options
def cli() -> None:
    """Versioned, verified, incremental snapshots of ChromaDB persist directories.

    The options below are global: every command accepts them before or after its name.

    \b
    Example:
      export CHROMA_SNAPSHOT_REPO=./snapshots
      chroma-snapshot create data/vector_db --tag nightly
      chroma-snapshot restore latest /srv/app/vector_db --force
    """


def _run(args: list[str], as_json: bool) -> int:
    try:
        cli.main(args=args, prog_name="chroma-snapshot", standalone_mode=False)
    except SnapshotError as exc:
        if not getattr(exc, "reported", False) or not as_json:
            emit_error(exc, exc.exit_code, exc.kind, as_json and not getattr(exc, "reported", False))
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click turns a KeyboardInterrupt (and so our Terminated) into Abort, chained
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):
            emit_error("terminated; temporary files were removed", Terminated.exit_code, Terminated.kind,
                       as_json)
            return Terminated.exit_code
        emit_error("interrupted", Interrupted.exit_code, Interrupted.kind, as_json)
        return Interrupted.exit_code
    except click.ClickException as exc:  # one line too (click's own form is a usage block)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None and not as_json else ""
        emit_error(exc.format_message() + hint, exc.exit_code, "usage", as_json)
        return exc.exit_code
    except MemoryError:  # no input may cause it (every size is bounded); still one line, no traceback
        emit_error("out of memory", SnapshotError.exit_code, "out-of-memory", as_json)
        return SnapshotError.exit_code
    except OSError as exc:
        full = disk_full(exc)
        if full is not None:
            emit_error(full, full.exit_code, full.kind, as_json)
            return full.exit_code
        emit_error(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "), SnapshotError.exit_code,
                   "os-error", as_json)
        return SnapshotError.exit_code
    return SUCCESS.code


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the CLI and maps every outcome to its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    with signals.handled():
        code = _run(args, "--json" in args)
    sys.exit(code)


__all__ = ["cli", "main"]
