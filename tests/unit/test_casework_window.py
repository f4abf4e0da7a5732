"""A communication plan's reading window: pure calendar arithmetic (weekly, fortnightly, closed days, DST)."""

from __future__ import annotations

from datetime import date, time

import pytest

from gateway.decide.casework import blocked_plan
from gateway.domain.calendar import SchoolCalendar
from gateway.domain.casework import Window, next_window, parse_window
from gateway.domain.findings import Route
from gateway.domain.states import State
from tests.unit.test_calendar import HALF_TERMS_2026_27, INSET, LONDON, WEEKDAYS, utc


@pytest.fixture(scope="module")
def school() -> SchoolCalendar:
    return SchoolCalendar.for_nation(tz=LONDON, open_at=time(8), close_at=time(17), days=WEEKDAYS,
                                     half_terms=HALF_TERMS_2026_27, inset_days=INSET, nation="ENG")


@pytest.mark.parametrize("text, day, start, end", [
    ("tue 09:00-10:00", 1, time(9), time(10)), ("Tuesday 9:30 - 10:15", 1, time(9, 30), time(10, 15)),
    ("SUN 23:00-23:59", 6, time(23), time(23, 59))])
def test_windows_parse(text: str, day: int, start: time, end: time) -> None:
    assert parse_window(text) == Window(day, start, end)


@pytest.mark.parametrize("text", ["", "tue", "tue 10:00-09:00", "xyz 09:00-10:00", "tue 25:00-26:00", "tue 9-10"])
def test_bad_windows_say_what_a_window_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match="tue 09:00-10:00|unknown day|end after|time of day"):
        parse_window(text)


def test_thursday_mail_waits_for_next_tuesday_in_school_time(school: SchoolCalendar) -> None:
    start, end = next_window(parse_window("tue 09:00-10:00"), school, utc("2026-12-10T10:00:00+00:00"))
    assert (start, end) == (utc("2026-12-15T09:00:00+00:00"), utc("2026-12-15T10:00:00+00:00"))


def test_mail_during_the_window_gets_that_window(school: SchoolCalendar) -> None:
    start, _ = next_window(parse_window("tue 09:00-10:00"), school, utc("2026-12-15T09:30:00+00:00"))
    assert start == utc("2026-12-15T09:00:00+00:00")
    start, _ = next_window(parse_window("tue 09:00-10:00"), school, utc("2026-12-15T10:00:00+00:00"))
    assert start == utc("2027-01-05T09:00:00+00:00")  # after the Christmas holiday: Spring 1's first day


def test_summer_time_windows_are_school_time(school: SchoolCalendar) -> None:
    start, _ = next_window(parse_window("tue 09:00-10:00"), school, utc("2027-04-12T12:00:00+00:00"))
    assert start == utc("2027-04-13T08:00:00+00:00")


def test_fortnightly_windows_skip_the_weeks_between(school: SchoolCalendar) -> None:
    window = Window(1, time(9), time(10), fortnightly=True, anchor=date(2027, 1, 11))
    assert next_window(window, school, utc("2027-01-13T10:00:00+00:00"))[0] == utc("2027-01-26T09:00:00+00:00")
    assert next_window(window, school, utc("2027-01-26T11:00:00+00:00"))[0] == utc("2027-02-09T09:00:00+00:00")


def test_a_window_on_a_closed_day_moves_to_the_next_open_day(school: SchoolCalendar) -> None:
    # Monday 2 November 2026 is an INSET day; Monday 31 May 2027 a bank holiday (in half-term, too).
    assert next_window(parse_window("mon 09:00-10:00"), school, utc("2026-10-28T12:00:00+00:00"))[0] == \
        utc("2026-11-03T09:00:00+00:00")
    assert next_window(parse_window("sat 09:00-10:00"), school, utc("2026-12-02T12:00:00+00:00"))[0] == \
        utc("2026-12-07T09:00:00+00:00")


def test_a_blocked_disclosure_still_goes_to_the_dsl_and_nothing_else_does() -> None:
    kept = blocked_plan(Route.STAFF, closure="open", dsl="dsl@x")
    assert (kept.route, kept.state, kept.deliveries) == (Route.BLOCKED, State.BLOCKED, ())
    dsl = blocked_plan(Route.DSL, closure="open", dsl="dsl@x")
    assert dsl.route is Route.DSL and dsl.state is State.BLOCKED
    assert [(d.kind, d.rcpts) for d in dsl.deliveries] == [("copy", ("dsl@x",))]


def test_last_weeks_window_moved_into_this_week_is_still_the_next_one(school: SchoolCalendar) -> None:
    # Saturday 5 December's window opens on Monday 7th: mail on Monday at 09:30 gets it.
    assert next_window(parse_window("sat 09:00-10:00"), school, utc("2026-12-07T09:30:00+00:00"))[0] == \
        utc("2026-12-07T09:00:00+00:00")
