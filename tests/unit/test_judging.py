"""The judging process pool: same judgements as in-process, per-message failures, reload, dead workers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import pytest

from gateway.triage.rules import default_rules_dir, load_rules
from gateway.workers.evaluate import judge
from gateway.workers.judging import JudgePool
from tests.support import message, wire


@pytest.fixture(scope="module")
def rules():
    return load_rules(default_rules_dir())


def _raws() -> list[bytes]:
    return [wire(message(subject=f"Reading book {i}", body=f"Could you check Maya's reading book? ({i})",
                         msgid=f"<book-{i}@parent.example>")) for i in range(5)]


def test_pool_judges_like_the_daemon_in_order(rules) -> None:
    raws = _raws() + [b"\xff\xfe not a message at all"]
    pool = JudgePool(default_rules_dir(), workers=2)
    try:
        results = asyncio.run(pool.judge_all(raws, rules))
    finally:
        pool.close()
    assert results == [judge(raw, rules) for raw in raws]


def test_reload_starts_new_workers_and_keeps_judging(rules) -> None:
    pool = JudgePool(default_rules_dir(), workers=1)
    try:
        first = asyncio.run(pool.judge_all(_raws()[:1], rules))
        pool.reload(default_rules_dir())
        second = asyncio.run(pool.judge_all(_raws()[:1], rules))
    finally:
        pool.close()
    assert first == second


def test_other_rules_on_disk_are_not_used(rules) -> None:
    # The daemon's rules differ from what the workers loaded (a reload raced a batch): the workers'
    # answers are not used; the daemon judges the batch itself with its own rules.
    pool = JudgePool(default_rules_dir(), workers=1)
    daemons = dataclasses.replace(rules, digest="not-the-workers-digest")
    try:
        results = asyncio.run(pool.judge_all(_raws()[:2], daemons))
    finally:
        pool.close()
    assert results == [judge(raw, rules) for raw in _raws()[:2]]


def test_a_dead_worker_fails_the_batch_and_is_replaced(rules) -> None:
    pool = JudgePool(default_rules_dir(), workers=1)

    async def scenario() -> None:
        await pool.judge_all(_raws()[:1], rules)
        for pid in list(pool._pool._processes):  # noqa: SLF001 - simulating the OOM killer
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(Exception):
            await pool.judge_all(_raws()[:1], rules)
        assert len(await pool.judge_all(_raws()[:1], rules)) == 1

    try:
        asyncio.run(scenario())
    finally:
        pool.close()


def test_a_worker_obeys_sigterm(rules) -> None:
    """systemd's stop (SIGTERM to the whole group) ends the workers; the daemon gives their batch back."""
    import time
    pool = JudgePool(default_rules_dir(), workers=1)
    try:
        asyncio.run(pool.judge_all(_raws()[:1], rules))
        [process] = list(pool._pool._processes.values())  # noqa: SLF001 - the worker itself
        os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while process.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.exitcode == -signal.SIGTERM
    finally:
        pool.close()
