"""A message that crashes triage is retried, then quarantined for a person: never dropped, never a crash loop."""

from __future__ import annotations

from datetime import timedelta

from gateway.clock import FixedClock
from gateway.services import requeue
from gateway.workers.triage import TriageWorker
from tests.conftest import utc
from tests.support import STAFF, InProcessGateway, message, write_config


async def test_a_message_that_crashes_triage_three_times_is_quarantined_and_can_be_requeued(tmp_path, sink):
    cfg = write_config(tmp_path, sink_port=sink.port, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 24, 10, 0))).start()
    try:
        def explode(raw: bytes):
            raise RuntimeError("a rule engine bug")

        broken = TriageWorker(gw.rt, judge_fn=explode)
        assert (await gw.send(message()))[0] == 250
        for _ in range(3):
            assert await broken.run_once() == 1
            gw.clock.advance(timedelta(minutes=3))
        assert await broken.run_once() == 0
        [row] = gw.messages()
        assert row.state == "quarantined" and row.raw
        assert gw.events(row.id)[-1] == ("received", "quarantined")
        # A person fixes the cause and requeues it: it then flows normally.
        assert requeue(gw.rt, row.id, "it-manager") == 1
        await gw.settle()
        assert gw.state_of(row.id) == "delivered"
        assert len(sink.to(STAFF)) == 1
    finally:
        await gw.stop()
