"""Repository commands: init, and the key group (list, add, remove, passwd) of an encrypted
repository."""

from __future__ import annotations

import click

from snapshot.cli import passwords
from snapshot.cli.options import GlobalOptions, Group, command, json_option, object_lock_options, repo_options
from snapshot.cli.render import emit, render_init, render_key_change, render_keys
from snapshot.format.codecs import CODECS
from snapshot.format.manifest import LockSetting
from snapshot.repo.repository import Repository

_NEW_PASSWORD_FILE = click.option(
    "--new-password-file", metavar="FILE", type=click.Path(dir_okay=False),
    help="The new key's password, from FILE [asked twice on a terminal].")


@command("init")
@click.option("--encrypt", is_flag=True,
              help="Encrypt the repository (every command then needs the password).")
@click.option("--codec", type=click.Choice(CODECS), help="Frame codec [zstd].")
@click.option("--chunk-size", type=int, help="Chunk size in bytes [1048576].")
@object_lock_options
@repo_options
@json_option
def init_cmd(encrypt: bool, codec: str | None, chunk_size: int | None, object_lock: LockSetting | None,
             global_options: GlobalOptions, as_json: bool) -> None:
    """Initialise a new, empty repository (a first `create` also does, with the same options).

    With --encrypt the password is read from --password-file, CHROMA_SNAPSHOT_PASSWORD_FILE,
    CHROMA_SNAPSHOT_PASSWORD or --password-command, else asked twice on a terminal.

    \b
    Example:
      chroma-snapshot --repo s3://bucket/db init --encrypt --password-file ~/.db-pass
      chroma-snapshot --repo s3://locked-bucket/db init --object-lock-days 30
    """
    repo = Repository.init(global_options.location(), global_options.store_options(), encrypt=encrypt,
                           key_source=global_options.key_source(), chunk_size=chunk_size, codec=codec,
                           object_lock=object_lock)
    lock = repo.config.object_lock
    emit({"repository": repo.url, "id": repo.config.id, "encrypted": repo.encrypted, "key": repo.key_id,
          "object_lock": None if lock is None else {"mode": lock.mode, "days": lock.days}},
         as_json, render_init)


@click.group("key", cls=Group)
def key_group() -> None:
    """Manage the passwords (keys) of an encrypted repository.

    Each key holds the repository's master key wrapped by one password; any key opens the
    repository. The password in use comes from the usual sources (--password-file, ...).

    \b
    Example:
      chroma-snapshot key list
      chroma-snapshot key add --new-password-file ~/.colleague-pass
    """


@key_group.command("list")
@repo_options
@json_option
def key_list(global_options: GlobalOptions, as_json: bool) -> None:
    """List the keys; `*` marks the one the password in use opens.

    \b
    Example:
      chroma-snapshot key list --json
    """
    emit(global_options.open_repo().list_keys(), as_json, render_keys)


@key_group.command("add")
@_NEW_PASSWORD_FILE
@repo_options
@json_option
def key_add(new_password_file: str | None, global_options: GlobalOptions, as_json: bool) -> None:
    """Add a key: another password that opens the repository.

    \b
    Example:
      chroma-snapshot key add --new-password-file ~/.colleague-pass
    """
    repo = global_options.open_repo()
    emit({"added": repo.add_key(passwords.new_password(new_password_file))}, as_json, render_key_change)


@key_group.command("remove")
@click.argument("key_ref", metavar="ID")
@repo_options
@json_option
def key_remove(key_ref: str, global_options: GlobalOptions, as_json: bool) -> None:
    """Remove key ID (a unique prefix will do). The last key is never removed, nor the one in
    use unless its password also opens another key.

    \b
    Example:
      chroma-snapshot key remove 3f2a9c
    """
    emit({"removed": global_options.open_repo().remove_key(key_ref)}, as_json, render_key_change)


@key_group.command("passwd")
@_NEW_PASSWORD_FILE
@repo_options
@json_option
def key_passwd(new_password_file: str | None, global_options: GlobalOptions, as_json: bool) -> None:
    """Change the password in use: add a key for the new one, then remove the old key.

    \b
    Example:
      chroma-snapshot key passwd --new-password-file ~/.new-pass
    """
    repo = global_options.open_repo()
    old, new = repo.change_password(passwords.new_password(new_password_file))
    emit({"added": new, "removed": old}, as_json, render_key_change)
