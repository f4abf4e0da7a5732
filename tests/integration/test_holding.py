"""Holding mail while the school is closed, by the school's calendar, with a fixed clock."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from tests.conftest import utc
from tests.support import STAFF, InProcessGateway, message, school_calendar, wire, write_config


@pytest.fixture
async def school(tmp_path: Path, sink):
    cfg = write_config(tmp_path, sink_port=sink.port, calendar=school_calendar(),
                       extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(utc(2026, 11, 27, 17, 30))).start()
    yield gw
    await gw.stop()


async def test_friday_evening_mail_waits_for_monday_8am(school, sink):
    assert (await school.send(message(subject="PE kit")))[0] == 250
    await school.settle()
    [row] = school.messages()
    assert row.state == "held"
    assert row.release_at == utc(2026, 11, 30, 8, 0)
    school.clock.set(utc(2026, 11, 30, 7, 59))
    await school.settle()
    assert sink.to(STAFF) == []
    school.clock.set(utc(2026, 11, 30, 8, 0))
    await school.settle()
    assert len(sink.to(STAFF)) == 1
    assert school.events(row.id)[-3:] == [("triaged", "held"), ("held", "queued"), ("queued", "delivered")]


async def test_held_mail_is_released_in_arrival_order(school, sink):
    for i in range(5):
        school.clock.advance(timedelta(minutes=7))
        assert (await school.send(message(subject=f"note {i}")))[0] == 250
        await school.settle()
    school.clock.set(utc(2026, 11, 30, 8, 0))
    await school.settle()
    subjects = [r.message["Subject"] for r in sink.to(STAFF)]
    assert subjects == [f"note {i}" for i in range(5)]


async def test_operator_can_release_early(school, sink):
    from gateway.services import release
    assert (await school.send(message()))[0] == 250
    await school.settle()
    [row] = school.messages()
    assert release(school.rt, None) == [row.id]
    await school.settle()
    assert len(sink.to(STAFF)) == 1
    assert school.state_of(row.id) == "delivered"


CASES = [  # received (UTC) -> deliver_at (UTC) or None
    ("2026-11-24T10:00:00+00:00", None),
    ("2026-11-27T17:30:00+00:00", "2026-11-30T08:00:00+00:00"),
    ("2026-11-28T11:00:00+00:00", "2026-11-30T08:00:00+00:00"),
    ("2026-10-23T16:30:00+00:00", "2026-11-03T08:00:00+00:00"),
    ("2026-12-18T17:30:00+00:00", "2027-01-05T08:00:00+00:00"),
    ("2027-02-12T18:00:00+00:00", "2027-02-22T08:00:00+00:00"),
    ("2027-03-25T17:30:00+00:00", "2027-04-12T07:00:00+00:00"),
    ("2027-04-30T18:00:00+01:00", "2027-05-04T07:00:00+00:00"),
    ("2027-05-04T07:30:00+00:00", None),
]


def test_triage_dry_run_reports_deliver_at_by_the_calendar(tmp_path):
    from datetime import datetime
    cfg = write_config(tmp_path, calendar=school_calendar())
    eml = tmp_path / "routine.eml"
    eml.write_bytes(wire(message(subject="PE kit", body="Does he need PE kit tomorrow?\n")))
    for at, want in CASES:
        out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "triage", "--at", at, "--json",
                              str(eml)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        row = json.loads(out.stdout.splitlines()[0])
        got = datetime.fromisoformat(row["deliver_at"]) if row["deliver_at"] else None
        assert got == (datetime.fromisoformat(want) if want else None), (at, row)
        assert row["route"] == "staff"
        assert set(row) >= {"file", "route", "deliver_at", "tone", "flags", "reasons", "acknowledge", "family"}
