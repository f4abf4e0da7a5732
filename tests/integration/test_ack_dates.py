"""Acknowledgement text from the school calendar, end to end: which template, the break's name, the
day school reopens and the reply-by date, across Christmas, Easter, half-term and both clock changes."""

from __future__ import annotations

import pytest

from gateway.clock import FixedClock
from tests.conftest import utc
from tests.support import InProcessGateway, message, school_calendar, write_config

CASES = [
    # received (UTC), phrases the acknowledgement must contain
    (utc(2026, 11, 24, 10, 0), ["Thursday 26 November"]),
    (utc(2026, 11, 27, 17, 30), ["Monday 30 November", "Wednesday 2 December"]),
    (utc(2026, 11, 28, 11, 0), ["Monday 30 November", "Wednesday 2 December"]),
    # Christmas: the break is named, school reopens on Tuesday 5 January, a reply by Thursday 7th.
    (utc(2026, 12, 18, 17, 30), ["Christmas holiday", "Tuesday 5 January", "Thursday 7 January"]),
    # Easter, across the clocks going forward on 28 March 2027.
    (utc(2027, 3, 25, 17, 30), ["Easter holiday", "Monday 12 April", "Wednesday 14 April"]),
    # Friday 23 October 2026, 17:30 BST: October half-term, clocks go back on the 25th, and
    # Monday 2 November is an INSET day, so school reopens on Tuesday 3 November.
    (utc(2026, 10, 23, 16, 30), ["October half-term", "Tuesday 3 November", "Thursday 5 November"]),
]


@pytest.mark.parametrize("received,phrases", CASES, ids=[c[0].isoformat() for c in CASES])
async def test_acknowledgement_names_the_break_the_reopening_day_and_the_reply_by_date(tmp_path, sink, received,
                                                                                      phrases):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar())
    gw = await InProcessGateway(cfg, FixedClock(received)).start()
    try:
        assert (await gw.send(message()))[0] == 250
        await gw.settle()
        [ack] = sink.to("mum.patel@example.com")
        body = ack.message.get_body(("plain",)).get_content()
        for phrase in phrases:
            assert phrase in body, (phrase, body)
    finally:
        await gw.stop()


async def test_urgent_mail_gets_the_office_phone_and_goes_to_the_office_at_once(tmp_path, sink):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar())
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 28, 7, 30))).start()
    try:
        m = message(subject="Maya", body="Maya has been sick in the night and won't be in school today.\n")
        assert (await gw.send(m))[0] == 250
        await gw.settle()
        assert len(sink.to("office@oakfield-primary.sch.example")) == 1
        assert sink.to("j.smith@oakfield-primary.sch.example") == []
        [ack] = sink.to("mum.patel@example.com")
        assert "0113 496 0000" in ack.message.get_body(("plain",)).get_content()
        assert gw.messages()[0].state == "forwarded"
    finally:
        await gw.stop()


async def test_safeguarding_goes_to_the_dsl_at_once_and_to_the_teacher_in_hours(tmp_path, sink):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar())
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 28, 22, 0))).start()
    try:
        m = message(subject="Worried",
                    body="I'm not sure I should say this, but Maya told me her uncle hits her and she is scared to go "
                         "home at the weekend.\n")
        assert (await gw.send(m))[0] == 250
        await gw.settle()
        assert len(sink.to("dsl@oakfield-primary.sch.example")) == 1
        assert sink.to("j.smith@oakfield-primary.sch.example") == []
        [ack] = sink.to("mum.patel@example.com")
        assert "safeguard" not in ack.message.get_body(("plain",)).get_content().lower()
        [row] = gw.messages()
        assert row.state == "held" and row.route == "dsl"
        gw.clock.set(utc(2026, 11, 30, 8, 0))
        await gw.settle()
        assert len(sink.to("j.smith@oakfield-primary.sch.example")) == 1
    finally:
        await gw.stop()
