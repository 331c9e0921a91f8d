"""Where the CLI finds the password of an encrypted repository, in this order: --password-file,
CHROMA_SNAPSHOT_PASSWORD_FILE, CHROMA_SNAPSHOT_PASSWORD, --password-command, and only on a
terminal a prompt. Nothing here prints, logs or stores a password; it is read once per command
(only if the repository turns out to be encrypted) and handed to the library."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable

import click

from snapshot.errors import UsageError
from snapshot.keys import KeySource

PASSWORD_FILE_ENV = "CHROMA_SNAPSHOT_PASSWORD_FILE"
PASSWORD_ENV = "CHROMA_SNAPSHOT_PASSWORD"
NO_PASSWORD = (
    "the repository is encrypted and no password was given: use --password-file, "
    f"{PASSWORD_FILE_ENV}, {PASSWORD_ENV} or --password-command"
)


def _file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read the password file of {what} ({path}): {exc.strerror or exc}") from None
    return data.rstrip(b"\r\n")


def _command(cmd: str) -> bytes:
    """Run ``cmd`` (no shell): its standard output, less the trailing newline, is the password.
    Its stderr and stdin stay the terminal's, so it may ask for a passphrase itself."""
    try:
        proc = subprocess.run(shlex.split(cmd), stdout=subprocess.PIPE, check=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--password-command could not run: {exc}") from None
    if proc.returncode != 0:
        raise UsageError(f"--password-command failed (exit {proc.returncode})")
    return proc.stdout.rstrip(b"\r\n")


def _prompt(new: bool) -> bytes:
    if not sys.stdin.isatty():
        raise UsageError(NO_PASSWORD)
    text = "Password for the new key" if new else "Repository password"
    value: str = click.prompt(text, hide_input=True, confirmation_prompt=new, err=True)
    return value.encode("utf-8")


def _once(read: Callable[[bool], bytes]) -> Callable[[bool], bytes]:
    """Ask once per command (a prompt, a command), however often the library needs it."""
    seen: dict[bool, bytes] = {}

    def get(new: bool) -> bytes:
        if new not in seen:
            seen[new] = read(new)
        return seen[new]

    return get


def key_source(password_file: str | None, password_command: str | None) -> KeySource:
    if password_file:
        return KeySource(_once(lambda new: _file(password_file, "--password-file")))
    env_file = os.environ.get(PASSWORD_FILE_ENV)
    if env_file:
        return KeySource(_once(lambda new: _file(env_file, PASSWORD_FILE_ENV)))
    if os.environ.get(PASSWORD_ENV):
        return KeySource(lambda new: os.environ.get(PASSWORD_ENV, "").encode("utf-8"))
    if password_command:
        return KeySource(_once(lambda new: _command(password_command)))
    return KeySource(_once(_prompt), explicit=False)


def new_password(path: str | None) -> bytes:
    """The password of a key to add: from ``--new-password-file``, else asked twice on a terminal."""
    if path:
        return _file(path, "--new-password-file")
    if not sys.stdin.isatty():
        raise UsageError("no new password given: use --new-password-file (or run on a terminal)")
    return _prompt(True)
