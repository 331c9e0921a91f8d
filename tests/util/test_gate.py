"""GatedExecutor (snapshot/util/gate.py): tasks start in the order submitted, at most the limit
at once, and the limit is read again as tasks finish (a link gauge's width changes)."""

from __future__ import annotations

import threading

import pytest

from snapshot.util.gate import GatedExecutor


class Tasks:
    """Tasks that note their start and wait until released one by one."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.cond = threading.Condition()
        self.released: set[int] = set()

    def task(self, n: int) -> int:
        with self.cond:
            self.started.append(n)
            self.cond.notify_all()
            self.cond.wait_for(lambda: n in self.released)
        return n * 10

    def wait_started(self, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.started) >= count, timeout=10)

    def release(self, n: int) -> None:
        with self.cond:
            self.released.add(n)
            self.cond.notify_all()


def test_tasks_start_in_order_no_more_than_the_limit_which_may_change() -> None:
    limit = [2]
    tasks = Tasks()
    gate = GatedExecutor(lambda: limit[0], most=8)
    futures = [gate.submit(tasks.task, n) for n in range(10)]
    tasks.wait_started(2)
    assert tasks.started == [0, 1]
    limit[0] = 5  # read again when a task finishes
    tasks.release(0)
    tasks.wait_started(6)
    assert tasks.started == [0, 1, 2, 3, 4, 5]
    limit[0] = 2
    for n in (1, 2, 3):
        tasks.release(n)
    assert futures[3].result(timeout=10) == 30
    with tasks.cond:  # 4 and 5 still run: no more start while two do
        assert tasks.started == [0, 1, 2, 3, 4, 5]
    for n in range(4, 10):
        tasks.release(n)
    assert [f.result(timeout=10) for f in futures] == [n * 10 for n in range(10)]
    assert tasks.started == list(range(10))
    assert gate.max_running == 5
    gate.shutdown()


def test_errors_reach_the_future_and_cancelled_tasks_never_run() -> None:
    tasks = Tasks()
    gate = GatedExecutor(lambda: 1, most=4)

    def fail() -> None:
        raise ValueError("boom")

    failing = gate.submit(fail)
    first = gate.submit(tasks.task, 1)
    queued = gate.submit(tasks.task, 2)
    with pytest.raises(ValueError, match="boom"):
        failing.result(timeout=10)
    tasks.wait_started(1)  # 1 runs; 2 waits for it
    gate.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    tasks.release(1)
    assert first.result(timeout=10) == 10
    assert tasks.started == [1]
    with pytest.raises(RuntimeError):
        gate.submit(tasks.task, 3)
