"""At the school's opening every held message goes in one pass, in arrival order, chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.clock import FixedClock
from gateway.store.models import EventRow
from gateway.workers.release import release_all_due
from tests.conftest import utc
from tests.support import STAFF, InProcessGateway, message, school_calendar, write_config

FRIDAY_EVENING = utc(2026, 11, 27, 17, 30)
MONDAY_OPENING = utc(2026, 11, 30, 8, 0)


@pytest.fixture
async def school(tmp_path: Path, sink, database_url: str):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(), database=database_url,
                       extra="[acknowledge]\nenabled = false\n[limits]\nfamily_messages_per_half_term = 1000\n"
                             "thread_messages = 1000\n")
    gw = await InProcessGateway(cfg, FixedClock(FRIDAY_EVENING)).start()
    yield gw
    await gw.stop()


@pytest.mark.timeout(180)
async def test_the_opening_releases_everything_held_in_one_pass_in_arrival_order(school, sink):
    for i in range(23):
        code, _ = await school.send(message(subject=f"Note {i}", body=f"message {i}\n"))
        assert code == 250
    await school.triage.run_until_idle()
    assert {row.state for row in school.messages()} == {"held"}
    wakes: list[int] = []
    school.rt.wake_delivery = lambda: wakes.append(1)
    # Not yet open: nothing is due.
    school.clock.set(utc(2026, 11, 30, 7, 59))
    assert await release_all_due(school.rt, chunk=5) == 0
    school.clock.set(MONDAY_OPENING)
    assert await release_all_due(school.rt, chunk=5) == 23
    # Five chunks (5+5+5+5+3), each committed on its own, delivery woken after each.
    assert len(wakes) == 5
    assert {row.state for row in school.messages()} == {"queued"}
    # In arrival order: the releases (and the outbox rows delivery claims by) follow the message ids.
    released = school.rt.db.transact(lambda s: [e.message for e in s.scalars(
        select(EventRow).where(EventRow.to_state == "queued").order_by(EventRow.id))])
    assert released == sorted(released) and len(released) == 23
    await school.delivery.run_until_idle()
    bodies = sorted(r.message.get_content().strip() for r in sink.to(STAFF))
    assert bodies == sorted(f"message {i}" for i in range(23))
    assert {row.state for row in school.messages()} == {"delivered"}
