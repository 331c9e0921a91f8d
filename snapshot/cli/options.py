"""Options shared by several commands, each defined once as a decorator; the global options
(:class:`GlobalOptions`), which open the repository."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from snapshot.cli import passwords
from snapshot.errors import UsageError
from snapshot.repo.keys import KeySource
from snapshot.repo.repository import Repository
from snapshot.repo.selection import SnapshotFilter
from snapshot.storage import StoreOptions
from snapshot.storage.s3.options import CHECKSUM_MODES, SSE_CHOICES

if TYPE_CHECKING:
    from snapshot.repo.archive import RestoreRequest
    from snapshot.upkeep.repack import RepackOptions

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class GlobalOptions:
    """--repo, the S3 options and the password options: which repository, and how to reach and
    unlock it. The group builds them from what comes before the command; a command's own (after
    its name) take precedence (:func:`repo_options`), and the command gets the result as its
    ``global_options`` argument."""

    repo: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    s3_checksum: str | None = None
    password_file: str | None = None
    password_command: str | None = None

    def overridden_by(self, later: GlobalOptions) -> GlobalOptions:
        """These, with every option ``later`` gives taking precedence."""
        given = {f.name: getattr(later, f.name) for f in fields(later) if getattr(later, f.name) is not None}
        return replace(self, **given)

    def store_options(self) -> StoreOptions:
        return StoreOptions(
            profile=self.profile,
            endpoint_url=self.endpoint_url,
            region=self.region,
            storage_class=self.storage_class or StoreOptions.storage_class,
            sse=self.sse or StoreOptions.sse,
            sse_kms_key_id=self.sse_kms_key_id,
            checksum=self.s3_checksum,
        )

    def location(self) -> str:
        if not self.repo:
            raise UsageError("no repository given: pass --repo PATH or set CHROMA_SNAPSHOT_REPO")
        return self.repo

    def key_source(self) -> KeySource:
        return passwords.key_source(self.password_file, self.password_command)

    def open_repo(self, create: bool = False, **settings: Any) -> Repository:
        """The repository (``create``: initialise an empty location with ``settings``); an
        encrypted one is unlocked with the password options."""
        return Repository.open(self.location(), self.store_options(), create=create,
                               key_source=self.key_source(), **settings)


_GLOBAL_NAMES = tuple(f.name for f in fields(GlobalOptions))


def _given(kwargs: dict[str, Any]) -> GlobalOptions:
    """The global options among a command's (or the group's) parsed parameters, taken out."""
    return GlobalOptions(**{name: kwargs.pop(name) for name in _GLOBAL_NAMES})


def _store_options(envvar: bool) -> list[Callable[[F], F]]:
    # After the command they are accepted but not listed: a command's help shows its own
    # options, and the group's help lists these once (as restic and the aws CLI do).
    def opt(*decls: str, **kw: Any) -> Callable[[F], F]:
        return click.option(*decls, hidden=not envvar, **kw)

    return [
        opt("--repo", metavar="PATH|s3://BUCKET/PREFIX", envvar="CHROMA_SNAPSHOT_REPO" if envvar else None,
            help="Repository: a folder (default), file:///path or s3://bucket/prefix. "
            "Env: CHROMA_SNAPSHOT_REPO."),
        opt("--profile", metavar="NAME", help="AWS profile (boto3's standard chain otherwise)."),
        opt("--endpoint-url", metavar="URL",
            help="S3-compatible endpoint (MinIO, R2, B2...). Also AWS_ENDPOINT_URL(_S3)."),
        opt("--region", metavar="REGION", help="Bucket region (boto3's chain otherwise)."),
        opt("--storage-class", metavar="CLASS",
            help=f"Storage class for data objects [{StoreOptions.storage_class}]."),
        opt("--sse", type=click.Choice(SSE_CHOICES),
            help=f"Server-side encryption for every object [{StoreOptions.sse}]; 'none' for stores that "
            "refuse it."),
        opt("--sse-kms-key-id", metavar="KEY", help="KMS key for --sse aws:kms."),
        opt("--s3-checksum", type=click.Choice(CHECKSUM_MODES),
            help="botocore checksum mode; when_required for MinIO/R2/B2 that reject flexible checksums."),
        opt("--password-file", metavar="FILE",
            help="Password of an encrypted repository, from FILE. Also CHROMA_SNAPSHOT_PASSWORD_FILE, "
            "CHROMA_SNAPSHOT_PASSWORD.", type=click.Path(dir_okay=False)),
        opt("--password-command", metavar="CMD",
            help="Password of an encrypted repository: the output of CMD (run without a shell)."),
    ]


GLOBAL_OPTIONS_HINT = "Global options (--repo, S3, passwords): see `chroma-snapshot --help`."


class Command(click.Command):
    """A command whose help ends by pointing at the global options it accepts but does not list."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        formatter.write_text(GLOBAL_OPTIONS_HINT)


class Group(click.Group):
    """A group of commands (``key``) whose commands are :class:`Command`."""

    command_class = Command


def command(name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Command]:
    """``click.command`` making a :class:`Command`."""
    return click.command(name, cls=Command, **kwargs)


def group_store_options(f: F) -> F:
    """--repo (also from CHROMA_SNAPSHOT_REPO), the S3 and the password options, before the
    command: the group keeps them as its context's object, a :class:`GlobalOptions`."""

    @functools.wraps(f)
    def group(*args: Any, **kwargs: Any) -> Any:
        click.get_current_context().obj = _given(kwargs)
        return f(*args, **kwargs)

    wrapped: Any = group
    for deco in reversed(_store_options(envvar=True)):
        wrapped = deco(wrapped)
    return cast(F, wrapped)


def repo_options(f: F) -> F:
    """The global options, accepted after the command as well as before it; the command gets
    them as one ``global_options`` argument (a :class:`GlobalOptions`)."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        before = click.get_current_context().find_object(GlobalOptions) or GlobalOptions()
        return f(*args, global_options=before.overridden_by(_given(kwargs)), **kwargs)

    wrapped: Any = command
    for deco in reversed(_store_options(envvar=False)):
        wrapped = deco(wrapped)
    return cast(F, wrapped)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")(f)


def dry_run_option(f: F) -> F:
    return click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")(f)


def archive_options(f: F) -> F:
    """--request-restore [--days N] [--tier T] (packs in S3 GLACIER or DEEP_ARCHIVE are asked
    back first); the command turns them into one request with :func:`archive_request`."""
    decorators = [
        click.option("--request-restore", is_flag=True,
                     help="Packs in S3 GLACIER or DEEP_ARCHIVE: ask S3 to restore them, then run again once "
                     "they are (without it such packs stop the command before it reads anything, exit 17)."),
        click.option("--days", "restore_days", type=int, default=7, show_default=True,
                     help="With --request-restore: how long S3 keeps the restored copies."),
        click.option("--tier", "restore_tier", type=click.Choice(["Standard", "Bulk", "Expedited"]),
                     default="Standard", show_default=True,
                     help="With --request-restore: S3's restore speed (and price)."),
    ]
    wrapped: Any = f
    for d in reversed(decorators):
        wrapped = d(wrapped)
    return cast(F, wrapped)


def archive_request(request_restore: bool, days: int, tier: str) -> RestoreRequest | None:
    """The request :func:`archive_options` give (None without --request-restore)."""
    from snapshot.repo.archive import RestoreRequest

    return RestoreRequest(days, tier) if request_restore else None


def object_lock_options(f: F) -> F:
    """--object-lock-days N [--object-lock-mode M]: a new repository on a bucket with S3 Object
    Lock; the command gets them as one ``object_lock`` argument (None when not given)."""

    @functools.wraps(f)
    def command(*args: Any, object_lock_days: int | None, object_lock_mode: str | None, **kwargs: Any) -> Any:
        from snapshot.repo.config import lock_setting

        return f(*args, object_lock=lock_setting(object_lock_days, object_lock_mode), **kwargs)

    decorators = [
        click.option("--object-lock-days", type=int, metavar="N",
                     help="Retain every pack, snapshot root and the config N days under S3 Object Lock (the "
                     "bucket must have Object Lock enabled). Only when this initialises the repository."),
        click.option("--object-lock-mode", type=click.Choice(["governance", "compliance"]),
                     help="With --object-lock-days: S3's retention mode [governance]."),
    ]
    wrapped: Any = command
    for d in reversed(decorators):
        wrapped = d(wrapped)
    return cast(F, wrapped)


def filter_options(f: F) -> F:
    """--tag, --host, --path (restic's): an ID (``latest``, a prefix) names a snapshot among
    those that pass them. The command gets them as one ``filters`` argument."""

    @functools.wraps(f)
    def command(*args: Any, filter_tags: tuple[str, ...], filter_hosts: tuple[str, ...],
                filter_paths: tuple[str, ...], **kwargs: Any) -> Any:
        paths = [os.path.abspath(os.path.expanduser(p)) if p.strip() else p for p in filter_paths]
        return f(*args, filters=SnapshotFilter.parse(filter_tags, filter_hosts, paths), **kwargs)

    decorators = [
        click.option("--tag", "filter_tags", multiple=True, metavar="TAG[,TAG]",
                     help="Only snapshots with this tag (repeatable: any of them; a,b: both)."),
        click.option("--host", "filter_hosts", multiple=True, metavar="HOST",
                     help="Only snapshots taken on HOST (repeatable)."),
        click.option("--path", "filter_paths", multiple=True, metavar="PATH",
                     help="Only snapshots of the source dir PATH (repeatable; relative to the current dir)."),
    ]
    wrapped: Any = command
    for d in reversed(decorators):
        wrapped = d(wrapped)
    return cast(F, wrapped)


def narrowed(repo: Repository, refs: Sequence[str], filters: SnapshotFilter) -> list[str]:
    """``refs`` as exact ids when ``filters`` narrow what they name; else as given (the
    operation resolves them)."""
    if not filters:
        return list(refs)
    ids = repo.snapshot_ids()
    return [repo.resolve(ref, ids, filters) for ref in refs]


GRACE_HELP = ("Unreferenced objects younger than this are kept (a create may still be writing them) "
              "[1h]. Units: y m(onths) w d h min s.")


def grace_option(f: F) -> F:
    return click.option("--grace", metavar="DURATION", help=GRACE_HELP)(f)


DELETE_AFTER_HELP = ("Delete a pack only once it has been condemned (found unreferenced by an earlier "
                     "prune) for this long [24h]; 0 deletes in the same run: only when no create can "
                     "be running. Env: CHROMA_SNAPSHOT_DELETE_AFTER.")


def delete_after_option(f: F) -> F:
    return click.option("--delete-after", metavar="DURATION", envvar="CHROMA_SNAPSHOT_DELETE_AFTER",
                        help=DELETE_AFTER_HELP)(f)


def wait_option(f: F) -> F:
    return click.option("--wait", metavar="DURATION",
                        help="If the repository is locked, wait up to DURATION for the lock [0s].")(f)


def seconds(text: str | None) -> float | None:
    """A duration option's value in seconds (None when not given)."""
    if text is None:
        return None
    if text.strip() == "0":
        return 0.0
    from snapshot.upkeep.retention import parse_duration  # only the commands that take a duration

    return parse_duration(text).total_seconds(datetime.now(timezone.utc))


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
               "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


def byte_size(text: str | None, option: str) -> int | None:
    """``--max-repack-size`` style sizes: 500M, 2GiB, 1048576 (None when not given)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise UsageError(f"{option}: not a size: {text!r} (e.g. 500M, 2G, 1048576)")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def fraction(text: str, option: str) -> float:
    """``--max-unused`` style shares: 5%, 0.05, unlimited."""
    t = text.strip().lower()
    if t == "unlimited":
        return float("inf")
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise UsageError(f"{option}: not a share: {text!r} (e.g. 5%, 0.1, unlimited)") from None
    if not 0 <= value <= 1:
        raise UsageError(f"{option}: {text!r} is not between 0% and 100%")
    return value


def repack_settings(max_unused: str, repack_small: bool, max_repack_size: str | None,
                    no_repack: bool) -> RepackOptions:
    from snapshot.upkeep.repack import RepackOptions  # only prune and forget

    return RepackOptions(
        enabled=not no_repack,
        max_unused=fraction(max_unused, "--max-unused"),
        repack_small=repack_small,
        max_repack_size=byte_size(max_repack_size, "--max-repack-size"),
    )


def prune_options(f: F) -> F:
    """Prune's and forget's settings (repacking, --dry-run, --grace, --delete-after, --wait),
    handed to the command as one ``options`` argument (a PruneOptions)."""

    @functools.wraps(f)
    def command(*args: Any, max_unused: str, repack_small: bool, max_repack_size: str | None,
                no_repack: bool, dry_run: bool, grace: str | None, delete_after: str | None,
                wait: str | None, **kwargs: Any) -> Any:
        from snapshot.upkeep.options import PruneOptions  # only prune and forget

        options = PruneOptions(
            dry_run=dry_run, grace=seconds(grace), delete_after=seconds(delete_after), wait=seconds(wait),
            repack=repack_settings(max_unused, repack_small, max_repack_size, no_repack),
        )
        return f(*args, options=options, **kwargs)

    decorators = [
        click.option("--max-unused", default="5%", show_default=True, metavar="SHARE",
                     help="Repack packs (emptiest first) until unused data is at most this share of "
                          "the repository: 5%, 0.1, or unlimited (repack nothing)."),
        click.option("--repack-small", is_flag=True,
                     help="Also merge packs smaller than a quarter of the pack size."),
        click.option("--max-repack-size", metavar="SIZE",
                     help="Copy at most SIZE of live data in this run (500M, 2G)."),
        click.option("--no-repack", is_flag=True,
                     help="Only delete unreferenced packs: no re-basing of chains, no repacking."),
        dry_run_option, grace_option, delete_after_option, wait_option,
    ]
    wrapped: Any = command
    for d in reversed(decorators):
        wrapped = d(wrapped)
    return cast(F, wrapped)


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the command's own import of it reports the error
            return


@contextlib.contextmanager
def preloading(*modules: str) -> Iterator[None]:
    """Import ``modules`` in a thread while the body runs: opening an encrypted repository
    spends about 0.1 s deriving its key (scrypt releases the GIL), time in which a command's
    own modules can load (a restore's: ~45 ms). The two never import the same module."""
    thread = threading.Thread(target=_import_all, args=(modules,), daemon=True, name="preload")
    thread.start()
    yield
    thread.join()
