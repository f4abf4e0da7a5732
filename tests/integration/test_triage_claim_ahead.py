"""Triage claims the next batch with the previous batch's results; a stop gives that batch back untried."""

from __future__ import annotations

from gateway.clock import FixedClock
from gateway.workers import triage as triage_mod
from tests.conftest import utc
from tests.support import InProcessGateway, message, write_config


async def test_the_batch_claimed_ahead_is_triaged_next_or_given_back_on_stop(tmp_path, sink, monkeypatch):
    monkeypatch.setattr(triage_mod, "BATCH", 1)
    cfg = write_config(tmp_path, sink_port=sink.port, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 24, 10, 0))).start()
    try:
        for i in range(3):
            assert (await gw.send(message(subject=f"Reading book {i}")))[0] == 250
        assert await gw.triage.run_once() == 1
        first, second, third = sorted(gw.messages(), key=lambda r: r.id)
        assert first.state != "received"
        assert (second.state, second.lease_owner, second.claims) == ("received", gw.rt.owner, 1)
        assert third.lease_owner is None
        assert await gw.triage.unclaim() == 1
        second = next(r for r in gw.messages() if r.id == second.id)
        assert (second.state, second.lease_owner, second.lease_until, second.claims) == ("received", None, None, 0)
        assert await gw.triage.run_until_idle() == 2
        assert all(r.state != "received" and r.lease_owner is None for r in gw.messages())
    finally:
        await gw.stop()
