"""Triage claims the next batch with the previous batch's results; a stop gives that batch back untried."""

from __future__ import annotations

from sqlalchemy import select

from gateway.clock import FixedClock
from gateway.store.models import EventRow
from gateway.workers import triage as triage_mod
from tests.conftest import utc
from tests.support import InProcessGateway, message, write_config


async def one_message_batches(tmp_path, sink, monkeypatch, n: int) -> InProcessGateway:
    """A gateway whose triage batches hold one message each, with `n` messages received."""
    monkeypatch.setattr(triage_mod, "BATCH", 1)
    cfg = write_config(tmp_path, sink_port=sink.port, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 24, 10, 0))).start()
    for i in range(n):
        assert (await gw.send(message(subject=f"Reading book {i}")))[0] == 250
    return gw


async def test_the_batch_claimed_ahead_is_triaged_next_or_given_back_on_stop(tmp_path, sink, monkeypatch):
    gw = await one_message_batches(tmp_path, sink, monkeypatch, 3)
    try:
        assert await gw.triage.run_once() == 1
        first, second, third = sorted(gw.messages(), key=lambda r: r.id)
        assert first.state != "received"
        # Leased to this gateway, and the claim not counted against the message.
        assert (second.state, second.lease_owner, second.claims) == ("received", gw.rt.owner, 0)
        assert third.lease_owner is None
        assert await gw.triage.unclaim() == 1
        second = next(r for r in gw.messages() if r.id == second.id)
        assert (second.state, second.lease_owner, second.lease_until, second.claims) == ("received", None, None, 0)
        assert await gw.triage.run_until_idle() == 2
        assert all(r.state != "received" and r.lease_owner is None for r in gw.messages())
    finally:
        await gw.stop()


async def test_two_batches_in_hand_are_written_in_arrival_order_and_both_given_back_on_stop(tmp_path, sink,
                                                                                            monkeypatch):
    """The daemon's depth 2: the next batch is being judged while this one is written."""
    gw = await one_message_batches(tmp_path, sink, monkeypatch, 4)
    try:
        assert await gw.triage.run_once(depth=2) == 1
        first, second, third, fourth = sorted(gw.messages(), key=lambda r: r.id)
        # The first is written; the second is being judged, the third was claimed with the first's results.
        assert first.state != "received"
        assert [(r.state, r.lease_owner, r.claims) for r in (second, third)] == [("received", gw.rt.owner, 0)] * 2
        assert fourth.lease_owner is None
        assert await gw.triage.run_once(depth=2) == 1
        by_id = {r.id: r for r in gw.messages()}
        assert by_id[second.id].state != "received" and by_id[third.id].state == "received"
        assert await gw.triage.unclaim() == 2
        left = [by_id_r for by_id_r in gw.messages() if by_id_r.state == "received"]
        assert sorted(r.id for r in left) == [third.id, fourth.id]
        assert all((r.lease_owner, r.lease_until, r.claims) == (None, None, 0) for r in left)
        await gw.settle()
        events = gw.rt.db.transact(lambda s: [
            (e.message, e.id) for e in s.scalars(select(EventRow).where(EventRow.to_state == "triaged"))])
        # Triaged in arrival order: event ids rise with message ids.
        assert [m for m, _ in sorted(events, key=lambda x: x[1])] == sorted(r.id for r in gw.messages())
    finally:
        await gw.stop()

