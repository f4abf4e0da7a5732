"""Retention per category ([retention]: delivered mail, dismissed, blocked, incidents), enforced by the
purge job's service: mail through the SMTP listener, a fixed clock moved past each period."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.casework import block
from gateway.clock import FixedClock
from gateway.config import ConfigError, load
from gateway.services import purge_expired, review_dismiss
from gateway.store.models import EventRow, OutboxRow
from gateway.store.records import IncidentRow
from tests.conftest import utc
from tests.support import InProcessGateway, Sink, message, school_calendar, write_config

RETENTION = '[retention]\ndelivered = "30d"\ndismissed = "60d"\nblocked = "90d"\nincidents = "365d"\n'


def counts(gw: InProcessGateway) -> tuple[dict[str, int], int, int, int]:
    def run(s):
        states: dict[str, int] = {}
        for m in gw.messages():
            states[m.state] = states.get(m.state, 0) + 1
        return (states, s.scalar(select(func.count()).select_from(IncidentRow)),
                s.scalar(select(func.count()).select_from(EventRow)), s.scalar(select(func.count()).select_from(OutboxRow)))
    return gw.rt.db.transact(run)


async def test_each_kind_of_record_is_deleted_after_its_own_period(tmp_path: Path, sink: Sink):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(), extra=RETENTION)
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 12, 8, 10, 0))).start()
    try:
        for subject, body in (("Book", "Could Maya have a new reading book?"),
                              ("Worried", "Maya told me her uncle hurts her when he babysits and she is scared of him."),
                              ("Useless", "You are a useless, pathetic excuse for a teacher.")):
            assert (await gw.send(message(subject=subject, body=body + "\n")))[0] == 250
            await gw.settle()
        hostile = gw.messages()[-1]
        assert hostile.state == "in_review"
        review_dismiss(gw.rt, hostile.id, "head", "Spoke to the parent")
        block(gw.rt, "angry@example.org", note="Abusive emails to staff", actor="head")
        assert (await gw.send(message(sender="angry@example.org", subject="Again"),
                              mail_from="angry@example.org"))[0] == 250
        await gw.settle()
        start = gw.clock.now()
        assert counts(gw)[:2] == ({"delivered": 2, "dismissed": 1, "blocked": 1}, 2)

        gw.clock.set(start + timedelta(days=29))
        assert purge_expired(gw.rt) == 0
        gw.clock.set(start + timedelta(days=31))
        assert purge_expired(gw.rt) == 2
        states, incidents, events, outbox = counts(gw)
        assert states == {"dismissed": 1, "blocked": 1} and incidents == 2
        blocked = gw.messages()[-1]
        # The deleted messages' events and outbox rows went with them; the others keep their own.
        assert events == len(gw.events(hostile.id)) + len(gw.events(blocked.id))
        gw.clock.set(start + timedelta(days=61))
        assert purge_expired(gw.rt) == 1
        assert counts(gw)[:2] == ({"blocked": 1}, 2)
        gw.clock.set(start + timedelta(days=89))
        assert purge_expired(gw.rt) == 0
        gw.clock.set(start + timedelta(days=91))
        assert purge_expired(gw.rt) == 1
        assert counts(gw)[:2] == ({}, 2)
        gw.clock.set(start + timedelta(days=364))
        assert purge_expired(gw.rt) == 0
        gw.clock.set(start + timedelta(days=366))
        assert purge_expired(gw.rt) == 2
        assert counts(gw) == ({}, 0, 0, 0)
    finally:
        await gw.stop()


def test_retention_defaults_to_the_gateway_retention_and_rejects_nonsense(tmp_path: Path):
    config = load(write_config(tmp_path / "a", gateway_extra='retention = "100d"\n'))
    assert config.retention.delivered == config.retention.dismissed == config.retention.blocked == timedelta(days=100)
    assert config.retention.incidents == timedelta(days=2557)
    config = load(write_config(tmp_path / "b", extra='[retention]\nblocked = "10d"\n'))
    assert config.retention.blocked == timedelta(days=10) and config.retention.delivered == timedelta(days=400)
    for bad in ('[retention]\nincidents = "7 years"\n', '[retention]\nspam = "1d"\n'):
        with pytest.raises(ConfigError) as problem:
            load(write_config(tmp_path / "c", extra=bad))
        assert "retention" in str(problem.value)
