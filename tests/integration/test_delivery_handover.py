"""Triage hands the rows it writes to the delivery worker; retries due in the database still get their turn."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from gateway.clock import FixedClock
from gateway.store.models import MessageRow, OutboxRow
from gateway.workers.dispatch import OUTBOX_LEASE, jobs_for
from tests.conftest import utc
from tests.support import STAFF, InProcessGateway, message, write_config

NOW = utc(2026, 11, 24, 10, 0)


def outbox(gw: InProcessGateway) -> list[OutboxRow]:
    return gw.rt.db.transact(lambda s: list(s.scalars(select(OutboxRow).where(OutboxRow.kind == "deliver")
                                                      .order_by(OutboxRow.id))))


async def test_rows_written_by_triage_are_leased_and_handed_over_without_a_claim(tmp_path, sink):
    cfg = write_config(tmp_path, sink_port=sink.port, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(NOW)).start()
    try:
        for i in range(3):
            assert (await gw.send(message(subject=f"Swimming kit {i}")))[0] == 250
        assert await gw.triage.run_until_idle() == 3
        rows = outbox(gw)
        assert [(r.state, r.lease_owner) for r in rows] == [("pending", gw.rt.owner)] * 3
        assert all(r.lease_until == NOW + OUTBOX_LEASE for r in rows)
        # Nothing is left for a claim: the rows are leased to this gateway's delivery worker.
        assert await gw.rt.db.run(lambda s: s.scalar(select(OutboxRow.id).where(OutboxRow.lease_owner.is_(None)))) \
            is None
        jobs = await gw.delivery.fill(10)
        assert sorted(j.outbox_id for j in jobs) == [r.id for r in rows]
        assert all(j.data.startswith(b"Received: from ") for j in jobs)
    finally:
        await gw.stop()


async def test_a_due_retry_shares_the_room_with_handed_mail_and_everything_arrives_once(tmp_path, sink):
    cfg = write_config(tmp_path, sink_port=sink.port, retry_first="5m",
                       extra="[acknowledge]\nenabled = false\n[limits]\nfamily_messages_per_half_term = 100\n")
    clock = FixedClock(NOW)
    gw = await InProcessGateway(cfg, clock).start()
    try:
        sink.defer = True
        assert (await gw.send(message(subject="First try deferred")))[0] == 250
        await gw.settle()
        [deferred] = outbox(gw)
        assert (deferred.state, deferred.lease_owner) == ("deferred", None)
        sink.defer = False
        clock.advance(timedelta(minutes=10))
        for i in range(6):
            assert (await gw.send(message(subject=f"Fresh {i}")))[0] == 250
        assert await gw.triage.run_until_idle() == 6
        # Six fresh rows wait in memory and one retry in the database: a claim is due (start-up), and
        # it gets half the room, the handed rows the rest.
        jobs = await gw.delivery.fill(4)
        ids = [j.outbox_id for j in jobs]
        assert ids[0] == deferred.id and len(ids) == 4
        # With no claim due, the room goes to the handed rows.
        more = await gw.delivery.fill(4)
        assert len(more) == 3 and deferred.id not in [j.outbox_id for j in more]
        outcomes = [await gw.delivery._attempt(j) for j in jobs + more]
        await gw.rt.db.run(lambda s: gw.delivery._record(s, list(zip(jobs + more, outcomes))))
        assert await gw.delivery.run_until_idle() == 0
        subjects = [r.message["Subject"] for r in sink.to(STAFF)]
        assert sorted(subjects) == sorted(["First try deferred"] + [f"Fresh {i}" for i in range(6)])
        assert {r.state for r in outbox(gw)} == {"sent"}
    finally:
        await gw.stop()


async def test_a_lost_lease_is_neither_renewed_nor_recorded_as_sent(tmp_path, sink):
    """Another gateway took a row over after our lease ran out: our renewal leaves it alone, a handed
    row is dropped from memory, and a late 250 of ours is not recorded (the row is the other's)."""
    from sqlalchemy import update

    cfg = write_config(tmp_path, sink_port=sink.port, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(NOW)).start()
    try:
        for i in range(2):
            assert (await gw.send(message(subject=f"Lease {i}")))[0] == 250
        assert await gw.triage.run_until_idle() == 2
        kept, lost = outbox(gw)
        await gw.rt.db.run(lambda s: s.execute(update(OutboxRow).where(OutboxRow.id == lost.id).values(
            lease_owner="other-gateway")))
        gw.clock.advance(timedelta(seconds=5))
        assert await gw.delivery.renew_leases() == 1
        [job] = await gw.delivery.fill(10)
        assert job.outbox_id == kept.id and job.lease_until == NOW + timedelta(seconds=5) + OUTBOX_LEASE
        # Our attempt at the lost row (made before the takeover) gets its 250 late.
        [late] = await gw.rt.db.run(lambda s: jobs_for([s.get(OutboxRow, lost.id)],
                                                       {lost.message: s.get(MessageRow, lost.message)}, "gw"))
        outcomes = [await gw.delivery._attempt(j) for j in (job, late)]
        await gw.rt.db.run(lambda s: gw.delivery._record(s, list(zip([job, late], outcomes))))
        rows = {r.id: (r.state, r.lease_owner) for r in outbox(gw)}
        assert rows == {kept.id: ("sent", None), lost.id: ("pending", "other-gateway")}
    finally:
        await gw.stop()
