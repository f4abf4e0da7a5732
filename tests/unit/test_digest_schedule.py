"""When the DSL's digest of possible safeguarding concerns is due, on the school's calendar (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from gateway.decide.digest import digest_cutoff, wants_digest
from gateway.domain.calendar import HalfTerm, SchoolCalendar

LONDON = ZoneInfo("Europe/London")
CALENDAR = SchoolCalendar.for_nation(
    tz=LONDON, open_at=time(8), close_at=time(17), days=frozenset(range(5)),
    half_terms=(HalfTerm("Autumn 2", date(2026, 11, 2), date(2026, 12, 18)),
                HalfTerm("Summer 1", date(2027, 4, 12), date(2027, 5, 28))),
    inset_days=frozenset({date(2026, 11, 2)}), nation="ENG")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(("now", "cutoff"), [
    pytest.param("2026-11-23T07:59Z", "2026-11-23T00:00Z", id="monday-before-8-after-a-weekend-digests-up-to-midnight"),
    pytest.param("2026-11-23T08:00Z", "2026-11-23T08:00Z", id="monday-at-8"),
    pytest.param("2026-11-23T10:00Z", "2026-11-23T08:00Z", id="monday-at-10-waits-for-13"),
    pytest.param("2026-11-23T13:00Z", "2026-11-23T13:00Z", id="monday-at-13"),
    pytest.param("2026-11-23T22:00Z", "2026-11-23T13:00Z", id="monday-evening-waits-for-tuesday-8"),
    pytest.param("2026-11-24T07:59Z", "2026-11-23T13:00Z", id="tuesday-before-8-after-a-school-day"),
    pytest.param("2026-11-28T11:00Z", "2026-11-28T11:00Z", id="saturday-at-once"),
    pytest.param("2026-12-23T03:00Z", "2026-12-23T03:00Z", id="christmas-holiday-at-once"),
    pytest.param("2026-11-02T09:00Z", "2026-11-02T09:00Z", id="inset-day-at-once"),
    pytest.param("2027-05-03T09:00Z", "2027-05-03T09:00Z", id="bank-holiday-at-once"),
    pytest.param("2027-05-05T12:30Z", "2027-05-05T12:00Z", id="summer-time-13-is-12-utc"),
    pytest.param("2027-05-04T06:30Z", "2027-05-03T23:00Z", id="after-a-bank-holiday-midnight-in-summer-time"),
])
def test_digest_cutoff_follows_the_school_day(now: str, cutoff: str) -> None:
    assert digest_cutoff(CALENDAR, utc(now)) == utc(cutoff)


def test_a_message_at_10_is_in_the_13_digest_and_not_before() -> None:
    received = utc("2026-11-23T10:00Z")
    assert not received <= digest_cutoff(CALENDAR, utc("2026-11-23T12:59Z"))
    assert received <= digest_cutoff(CALENDAR, utc("2026-11-23T13:00Z"))


def test_only_flagged_messages_that_did_not_go_to_the_dsl_are_digested() -> None:
    assert wants_digest("staff", ["possible-safeguarding"])
    assert wants_digest("head_of_school", ["negative", "possible-safeguarding"])
    assert not wants_digest("dsl", ["safeguarding", "possible-safeguarding"])
    assert not wants_digest("staff", ["worried"])
    assert not wants_digest("staff", None)
