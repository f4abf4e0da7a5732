"""A message that crashes triage is retried, then quarantined for a person: never dropped, never a crash loop.

Only real failures count (the message's judging raised, or killed a worker process); the postmaster is
told of each quarantine by a plain notice that names the message and the reason, never its content.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy

from gateway.clock import FixedClock
from gateway.services import requeue
from gateway.triage.rules import default_rules_dir
from gateway.workers.judging import JudgePool, _judge_in_worker
from gateway.workers.triage import TriageWorker
from tests.conftest import utc
from tests.support import DOMAIN, STAFF, InProcessGateway, message, write_config

POSTMASTER = f"postmaster@{DOMAIN}"
POISON = b"POISON-PILL-FOR-THE-JUDGE"


def crash_on_poison(raws: list[bytes]):
    """A worker task that dies as an out-of-memory kill would, on one message only."""
    if any(POISON in raw for raw in raws):
        os._exit(137)
    return _judge_in_worker(raws)


def notices(sink) -> list:
    return [message_from_bytes(r.data, policy=default_policy) for r in sink.to(POSTMASTER)]


async def test_a_message_that_crashes_triage_three_times_is_quarantined_and_can_be_requeued(tmp_path, sink, caplog):
    cfg = write_config(tmp_path, sink_port=sink.port, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 24, 10, 0))).start()
    try:
        def explode(raw: bytes):
            raise RuntimeError("a rule engine bug")

        broken = TriageWorker(gw.rt, judge_fn=explode)
        assert (await gw.send(message(subject="Private matter", body="Secret body text\n")))[0] == 250
        [row] = gw.messages()
        with caplog.at_level(logging.WARNING, logger="parentgate.quarantine"):
            for attempt in range(1, 4):
                assert await broken.run_once() == 1
                assert gw.state_of(row.id) == ("received" if attempt < 3 else "quarantined")
        assert await broken.run_once() == 0
        [row] = gw.messages()
        assert row.state == "quarantined" and row.raw
        assert gw.events(row.id)[-1] == ("received", "quarantined")
        assert any(r.levelno == logging.WARNING and f"message {row.id} quarantined" in r.getMessage()
                   for r in caplog.records)
        # The postmaster hears of it: the message's reference and the reason, nothing of its content.
        await gw.delivery.run_until_idle()
        [notice] = notices(sink)
        text = notice.get_body().get_content()
        assert f"Quarantined message {row.id}" == notice["Subject"]
        assert f"Message ref:  {row.id}" in text and "RuntimeError" in text
        assert "Secret" not in notice.as_string() and "Private matter" not in notice.as_string()
        # A person fixes the cause and requeues it: it then flows normally.
        assert requeue(gw.rt, row.id, "it-manager") == 1
        await gw.settle()
        assert gw.state_of(row.id) == "delivered"
        assert len(sink.to(STAFF)) == 1
    finally:
        await gw.stop()


async def test_a_message_that_kills_a_judge_process_is_quarantined_and_its_batch_is_not(tmp_path, sink):
    cfg = write_config(tmp_path, sink_port=sink.port, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 24, 10, 0))).start()
    pool = JudgePool(default_rules_dir(), workers=1, task=crash_on_poison)
    try:
        for i in range(3):
            body = f"Reading book {i}\n" + (POISON.decode() + "\n" if i == 1 else "")
            assert (await gw.send(message(subject=f"Note {i}", body=body)))[0] == 250
        triage = TriageWorker(gw.rt, pool=pool)
        poison = sorted(r.id for r in gw.messages())[1]
        # Each round: the batch kills a worker, then each message is judged alone to find the cause;
        # only the poison one is counted, and the others are triaged in the first round.
        for attempt in range(1, 4):
            await triage.run_once()
            assert gw.state_of(poison) == ("received" if attempt < 3 else "quarantined")
            assert [r.claims for r in gw.messages() if r.id == poison] == [attempt]
        await gw.settle()
        states = {r.id: r.state for r in gw.messages()}
        assert states.pop(poison) == "quarantined"
        assert set(states.values()) == {"delivered"}
        assert len(sink.to(STAFF)) == 2
        [notice] = notices(sink)
        assert "a triage worker process died judging it" in notice.get_body().get_content()
    finally:
        pool.close()
        await gw.stop()
