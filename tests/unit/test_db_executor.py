"""The database thread takes the intake's commits before other waiting work, and finishes queued work on shutdown."""

from __future__ import annotations

import threading

from gateway.store.database import NORMAL, URGENT, PriorityExecutor


def test_urgent_work_runs_before_normal_work_already_waiting():
    executor = PriorityExecutor(1, "test-db")
    gate = threading.Event()
    order: list[str] = []
    executor.submit(gate.wait)
    futures = [executor.submit(lambda: order.append("triage"), NORMAL),
               executor.submit(lambda: order.append("delivery"), NORMAL),
               executor.submit(lambda: order.append("intake"), URGENT)]
    gate.set()
    for future in futures:
        future.result(timeout=5)
    assert order == ["intake", "triage", "delivery"]
    executor.shutdown()


def test_shutdown_finishes_queued_work_and_errors_reach_the_caller():
    executor = PriorityExecutor(1, "test-db")
    gate = threading.Event()
    executor.submit(gate.wait)
    done = executor.submit(lambda: "stored", NORMAL)

    def fail() -> None:
        raise ValueError("disk full")

    failed = executor.submit(fail, URGENT)
    gate.set()
    executor.shutdown(wait=True)
    assert done.result(timeout=0) == "stored"
    assert isinstance(failed.exception(timeout=0), ValueError)
