"""Where the CLI finds the password of an encrypted repository, in this order: --password-file,
CHROMA_SNAPSHOT_PASSWORD_FILE, CHROMA_SNAPSHOT_PASSWORD, --password-command, and only on a
terminal a prompt. Nothing here prints, logs or stores a password; it is read once per command
(only if the repository turns out to be encrypted) and handed to the library.

A password command, or a password file that is not a regular file (a FIFO, /dev/stdin), gets
CHROMA_SNAPSHOT_PASSWORD_TIMEOUT seconds (60 by default) to give its password and end."""

from __future__ import annotations

import math
import os
import select
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Callable

import click

from snapshot.errors import UsageError
from snapshot.repo.keys import KeySource

PASSWORD_FILE_ENV = "CHROMA_SNAPSHOT_PASSWORD_FILE"
PASSWORD_ENV = "CHROMA_SNAPSHOT_PASSWORD"
NO_PASSWORD = (
    "the repository is encrypted and no password was given: use --password-file, "
    f"{PASSWORD_FILE_ENV}, {PASSWORD_ENV} or --password-command"
)

#: The same for the source of a copy (restic's --from-password-file and RESTIC_FROM_PASSWORD_FILE).
FROM_PASSWORD_FILE_ENV = "CHROMA_SNAPSHOT_FROM_PASSWORD_FILE"
FROM_PASSWORD_ENV = "CHROMA_SNAPSHOT_FROM_PASSWORD"
NO_SOURCE_PASSWORD = (
    "the source repository is encrypted and no password was given: use --from-password-file, "
    f"{FROM_PASSWORD_FILE_ENV}, {FROM_PASSWORD_ENV} or --from-password-command"
)

TIMEOUT_ENV = "CHROMA_SNAPSHOT_PASSWORD_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
#: At most this much is read from a password file that is not a regular file (/dev/zero...).
_MAX_STREAM = 1 << 20


def timeout() -> float:
    """Seconds a password command or a FIFO gets (TIMEOUT_ENV, else DEFAULT_TIMEOUT)."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds above 0, not {text!r}")
    return value


def _file(path: str, what: str) -> bytes:
    try:
        # Non-blocking: opening a FIFO that no one writes to would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) or not hasattr(select, "poll"):
                os.set_blocking(fd, True)
                with os.fdopen(fd, "rb", closefd=False) as fh:
                    data = fh.read()
            else:
                data = _stream(fd, path, what)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(f"cannot read the password file of {what} ({path}): {exc.strerror or exc}") from None
    return data.rstrip(b"\r\n")


def _stream(fd: int, path: str, what: str) -> bytes:
    """A FIFO's or a terminal's content up to its end, within timeout()."""
    limit = timeout()
    deadline = time.monotonic() + limit
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(max(1, math.ceil(left * 1000))):
            raise UsageError(
                f"the password file of {what} ({path}) is not a regular file and did not reach its end "
                f"within {limit:g} s (a FIFO nobody writes to?); {TIMEOUT_ENV} sets the wait"
            )
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > _MAX_STREAM:
            raise UsageError(f"the password file of {what} ({path}) holds more than {_MAX_STREAM} bytes")


def _command(cmd: str, option: str = "--password-command") -> bytes:
    """Run ``cmd`` (no shell): its standard output, less the trailing newline, is the password.
    Its stderr and stdin stay the terminal's, so it may ask for a passphrase itself; it is
    killed if it has not ended after timeout() seconds."""
    limit = timeout()
    try:
        proc = subprocess.run(shlex.split(cmd), stdout=subprocess.PIPE, check=False, timeout=limit)
    except subprocess.TimeoutExpired:
        raise UsageError(
            f"{option} did not end within {limit:g} s (stopped it); {TIMEOUT_ENV} sets the wait"
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{option} could not run: {exc}") from None
    if proc.returncode != 0:
        raise UsageError(f"{option} failed (exit {proc.returncode})")
    return proc.stdout.rstrip(b"\r\n")


def _prompt(new: bool, *, source: bool = False) -> bytes:
    if not sys.stdin.isatty():
        raise UsageError(NO_SOURCE_PASSWORD if source else NO_PASSWORD)
    text = "Password for the new key" if new else "Repository password"
    text = "Source repository password" if source else text
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


def source_key_source(password_file: str | None, password_command: str | None) -> KeySource:
    """The password of a copy's source: --from-password-file, CHROMA_SNAPSHOT_FROM_PASSWORD_FILE,
    CHROMA_SNAPSHOT_FROM_PASSWORD, --from-password-command, a prompt (the destination's options
    and variables never apply to it)."""
    if password_file:
        return KeySource(_once(lambda new: _file(password_file, "--from-password-file")))
    env_file = os.environ.get(FROM_PASSWORD_FILE_ENV)
    if env_file:
        return KeySource(_once(lambda new: _file(env_file, FROM_PASSWORD_FILE_ENV)))
    if os.environ.get(FROM_PASSWORD_ENV):
        return KeySource(lambda new: os.environ.get(FROM_PASSWORD_ENV, "").encode("utf-8"))
    if password_command:
        return KeySource(_once(lambda new: _command(password_command, "--from-password-command")))
    return KeySource(_once(lambda new: _prompt(new, source=True)), explicit=False)


def new_password(path: str | None) -> bytes:
    """The password of a key to add: from ``--new-password-file``, else asked twice on a terminal."""
    if path:
        return _file(path, "--new-password-file")
    if not sys.stdin.isatty():
        raise UsageError("no new password given: use --new-password-file (or run on a terminal)")
    return _prompt(True)
