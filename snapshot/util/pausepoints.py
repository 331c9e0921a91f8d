"""Named pause points in long operations, so tests can act at an exact moment (a prune while a
create is about to commit, a kill between two steps) instead of guessing with sleeps.

``point(name)`` does nothing unless a test registered a callback for ``name`` with
:func:`on`, or the environment variable ``CHROMA_SNAPSHOT_KILL_AT`` names it (then the process
kills itself with SIGKILL there: the kill -9 matrix runs the real CLI in a child process).
``name#N`` kills at the Nth time the point is reached.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

KILL_ENV = "CHROMA_SNAPSHOT_KILL_AT"
_callbacks: dict[str, list[Callable[[], None]]] = {}
_reached: dict[str, int] = {}
_count_lock = threading.Lock()


def point(name: str) -> None:
    kill_at = os.environ.get(KILL_ENV)
    if kill_at:
        wanted, _, nth = kill_at.partition("#")
        if wanted == name:
            with _count_lock:
                _reached[name] = _reached.get(name, 0) + 1
                hit = _reached[name] == (int(nth) if nth.isdigit() else 1)
            if hit:
                os.kill(os.getpid(), signal.SIGKILL)
    for cb in list(_callbacks.get(name, ())):
        cb()


@contextmanager
def on(name: str, callback: Callable[[], None]) -> Iterator[None]:
    """Run ``callback`` each time ``point(name)`` is reached inside the block."""
    _callbacks.setdefault(name, []).append(callback)
    try:
        yield
    finally:
        _callbacks[name].remove(callback)
