"""SIGTERM and Ctrl-C: before a command's commit point they fail it (exit as Terminated and
Interrupted say, its temporary files removed); after it, the command has succeeded and is let
finish (exit 0).

A command passes :func:`settle` to the library as its ``on_commit`` (a restore's swap standing
at the target); from then on the handlers installed by :func:`handled` do nothing, so a signal
cannot report a restore that is in place as failed, nor cut short the line that says so.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from snapshot.errors import Interrupted, Terminated

_settled = False


def settle() -> None:
    """The running command has passed its commit point."""
    global _settled
    _settled = True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if not _settled:
        raise Terminated()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if not _settled:
        raise Interrupted()


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Handle SIGTERM (and Ctrl-C, unless it is ignored or someone else handles it) in the
    block; outside the main thread (embedded use) signals are left alone."""
    global _settled
    _settled = False
    handlers: list[tuple[int, Callable[[int, FrameType | None], None]]] = [(signal.SIGTERM, _on_sigterm)]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handlers.append((signal.SIGINT, _on_sigint))
    previous: list[tuple[int, Any]] = []
    with contextlib.suppress(ValueError):  # not the main thread
        for signum, handler in handlers:
            previous.append((signum, signal.signal(signum, handler)))
    try:
        yield
    finally:
        for signum, old in previous:
            signal.signal(signum, old)
