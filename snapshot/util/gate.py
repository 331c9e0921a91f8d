"""An executor that runs tasks in the order they were submitted, at most ``limit()`` at once,
where the limit may change while it runs (a link gauge's width: snapshot/storage/link.py).

Its threads are those of one ThreadPoolExecutor of the most it may ever run; tasks wait in a
queue of its own and are handed over, oldest first, whenever one finishes or is submitted and
fewer than the limit run: planned reads keep their planned order, whatever the width.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class GatedExecutor(Executor):
    def __init__(self, limit: Callable[[], int], most: int, thread_name_prefix: str = "") -> None:
        self._limit = limit
        self._most = most
        self._pool = ThreadPoolExecutor(max_workers=most, thread_name_prefix=thread_name_prefix)
        self._queue: deque[tuple[Future[Any], Callable[[], Any]]] = deque()
        self._running = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closing = False
        #: The most tasks that ran at once (for tests and reports).
        self.max_running = 0

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("cannot submit to an executor that was shut down")
            self._queue.append((fut, lambda: fn(*args, **kwargs)))
        self._dispatch()
        return fut

    def _dispatch(self) -> None:
        with self._lock:
            while self._queue and self._running < max(1, min(self._most, self._limit())):
                fut, call = self._queue.popleft()
                if not fut.set_running_or_notify_cancel():
                    continue
                self._running += 1
                self.max_running = max(self.max_running, self._running)
                self._pool.submit(self._run, fut, call)

    def _run(self, fut: Future[Any], call: Callable[[], Any]) -> None:
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001  (handed to whoever waits for the future)
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        finally:
            with self._lock:
                self._running -= 1
                self._idle.notify_all()
            self._dispatch()
            if self._closing and self._drained():
                self._pool.shutdown(wait=False)

    def _drained(self) -> bool:
        with self._lock:
            return not self._queue and self._running == 0

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ThreadPoolExecutor's; without ``wait`` the tasks queued still run (unless
        cancelled), and the threads end after the last."""
        with self._lock:
            self._closing = True
            queued = list(self._queue) if cancel_futures else []
            if cancel_futures:
                self._queue.clear()
        for fut, _call in queued:
            fut.cancel()
        if wait:
            with self._lock:
                self._idle.wait_for(lambda: not self._queue and self._running == 0)
            self._pool.shutdown(wait=True)
        elif self._drained():
            self._pool.shutdown(wait=False)
