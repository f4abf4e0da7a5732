"""Unit tests for the pure school calendar, on fixed 2026-27 term dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from gateway.domain.calendar import HalfTerm, SchoolCalendar, bank_holidays_for

LONDON = ZoneInfo("Europe/London")
WEEKDAYS = frozenset(range(5))
HALF_TERMS_2026_27 = (
    HalfTerm("Autumn 1", date(2026, 9, 3), date(2026, 10, 23)),
    HalfTerm("Autumn 2", date(2026, 11, 2), date(2026, 12, 18)),
    HalfTerm("Spring 1", date(2027, 1, 5), date(2027, 2, 12)),
    HalfTerm("Spring 2", date(2027, 2, 22), date(2027, 3, 25)),
    HalfTerm("Summer 1", date(2027, 4, 12), date(2027, 5, 28)),
    HalfTerm("Summer 2", date(2027, 6, 7), date(2027, 7, 21)),
)
INSET = frozenset({date(2026, 9, 1), date(2026, 9, 2), date(2026, 11, 2)})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture(scope="module")
def school() -> SchoolCalendar:
    return SchoolCalendar.for_nation(
        tz=LONDON,
        open_at=time(8),
        close_at=time(17),
        days=WEEKDAYS,
        half_terms=HALF_TERMS_2026_27,
        inset_days=INSET,
        nation="ENG",
    )


def term_all_year(**overrides: object) -> SchoolCalendar:
    settings: dict[str, object] = {
        "tz": LONDON,
        "open_at": time(8),
        "close_at": time(17),
        "days": WEEKDAYS,
        "half_terms": (),
        "inset_days": frozenset(),
        "bank_holidays": {},
    }
    settings.update(overrides)
    return SchoolCalendar(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("received", "released"),
    [
        pytest.param("2026-11-24T10:00Z", None, id="tuesday-morning-in-term-is-open"),
        pytest.param("2026-11-27T17:30Z", "2026-11-30T08:00Z", id="friday-evening-waits-for-monday"),
        pytest.param("2026-11-28T11:00Z", "2026-11-30T08:00Z", id="saturday-waits-for-monday"),
        pytest.param("2026-10-23T16:30Z", "2026-11-03T08:00Z", id="october-half-term-clocks-back-then-inset"),
        pytest.param("2026-12-18T17:30Z", "2027-01-05T08:00Z", id="christmas-holiday"),
        pytest.param("2027-02-12T18:00Z", "2027-02-22T08:00Z", id="february-half-term"),
        pytest.param("2027-03-25T17:30Z", "2027-04-12T07:00Z", id="easter-holiday-clocks-forward"),
        pytest.param("2027-04-30T18:00+01:00", "2027-05-04T07:00Z", id="early-may-bank-holiday"),
        pytest.param("2027-05-04T07:30Z", None, id="0830-bst-is-open"),
    ],
)
def test_release_time_holds_mail_until_the_school_next_opens(
    school: SchoolCalendar, received: str, released: str | None
) -> None:
    expected = None if released is None else utc(released)
    assert school.release_time(datetime.fromisoformat(received)) == expected


def test_release_time_is_returned_in_utc(school: SchoolCalendar) -> None:
    released = school.release_time(utc("2026-11-28T11:00Z"))
    assert released is not None and released.utcoffset() == timedelta(0)


def test_next_opening_at_an_opening_instant_is_that_instant(school: SchoolCalendar) -> None:
    opening = utc("2026-11-30T08:00Z")
    assert school.next_opening(opening) == opening


def test_next_opening_while_open_is_the_next_school_morning(school: SchoolCalendar) -> None:
    assert school.next_opening(utc("2026-11-24T10:00Z")) == utc("2026-11-25T08:00Z")


def test_instants_in_other_zones_are_judged_in_school_time(school: SchoolCalendar) -> None:
    new_york = ZoneInfo("America/New_York")
    # 04:00 in New York on 24 Nov 2026 is 09:00 in London.
    assert school.is_open(datetime(2026, 11, 24, 4, 0, tzinfo=new_york))
    assert not school.is_open(datetime(2026, 11, 24, 12, 30, tzinfo=new_york))


def test_naive_datetimes_are_rejected(school: SchoolCalendar) -> None:
    with pytest.raises(ValueError):
        school.is_open(datetime(2026, 11, 24, 10, 0))


def test_0730_utc_is_open_in_bst_and_closed_in_gmt(school: SchoolCalendar) -> None:
    assert school.is_open(utc("2026-09-15T07:30Z"))
    assert not school.is_open(utc("2026-11-17T07:30Z"))


def test_closing_time_is_exclusive(school: SchoolCalendar) -> None:
    assert school.is_open(utc("2026-11-24T16:59Z"))
    assert not school.is_open(utc("2026-11-24T17:00Z"))


def test_close_at_none_with_every_day_is_open_through_midnight() -> None:
    always = term_all_year(open_at=time(0), close_at=None, days=frozenset(range(7)))
    assert always.is_open(utc("2026-11-28T23:59Z"))
    assert always.is_open(utc("2026-11-29T00:00Z"))
    assert always.release_time(utc("2026-12-25T12:00Z")) is None


def test_close_at_none_still_opens_at_open_at() -> None:
    evenings = term_all_year(open_at=time(18), close_at=None)
    assert not evenings.is_open(utc("2026-11-24T17:59Z"))
    assert evenings.is_open(utc("2026-11-24T23:59Z"))


def test_empty_half_terms_mean_in_term_all_year() -> None:
    calendar = term_all_year(bank_holidays={date(2026, 8, 31): "Summer Bank Holiday"})
    assert calendar.is_school_day(date(2026, 8, 10))
    assert calendar.is_school_day(date(2026, 12, 29))
    assert not calendar.is_school_day(date(2026, 8, 31))
    assert not calendar.is_school_day(date(2026, 8, 8))
    assert calendar.break_name(date(2026, 8, 10)) is None


def test_half_term_is_the_period_containing_the_day(school: SchoolCalendar) -> None:
    assert school.half_term(utc("2026-11-24T10:00Z")).name == "Autumn 2"


def test_half_term_in_a_holiday_is_the_next_period(school: SchoolCalendar) -> None:
    assert school.half_term(utc("2026-12-25T10:00Z")).name == "Spring 1"
    assert school.half_term(utc("2026-10-28T10:00Z")).name == "Autumn 2"
    assert school.half_term(utc("2026-08-20T10:00Z")).name == "Autumn 1"


def test_half_term_uses_the_local_date(school: SchoolCalendar) -> None:
    # 23:30Z on 23 Oct is 00:30 BST on 24 Oct: the half-term holiday.
    assert school.half_term(utc("2026-10-23T23:30Z")).name == "Autumn 2"


def test_half_term_after_the_last_period_is_a_synthetic_two_month_period(school: SchoolCalendar) -> None:
    period = school.half_term(utc("2027-09-15T10:00Z"))
    assert period == HalfTerm("Sep-Oct 2027", date(2027, 9, 1), date(2027, 10, 31))


@pytest.mark.parametrize(
    ("day", "name", "start", "end"),
    [
        (date(2026, 1, 31), "Jan-Feb 2026", date(2026, 1, 1), date(2026, 2, 28)),
        (date(2028, 2, 29), "Jan-Feb 2028", date(2028, 1, 1), date(2028, 2, 29)),
        (date(2026, 4, 1), "Mar-Apr 2026", date(2026, 3, 1), date(2026, 4, 30)),
        (date(2026, 6, 30), "May-Jun 2026", date(2026, 5, 1), date(2026, 6, 30)),
        (date(2026, 7, 1), "Jul-Aug 2026", date(2026, 7, 1), date(2026, 8, 31)),
        (date(2026, 12, 31), "Nov-Dec 2026", date(2026, 11, 1), date(2026, 12, 31)),
    ],
)
def test_half_term_without_term_dates_is_a_synthetic_two_month_period(
    day: date, name: str, start: date, end: date
) -> None:
    instant = datetime.combine(day, time(12), tzinfo=LONDON)
    assert term_all_year().half_term(instant) == HalfTerm(name, start, end)


@pytest.mark.parametrize(
    ("day", "name"),
    [
        (date(2026, 10, 28), "October half-term"),
        (date(2026, 12, 25), "Christmas holiday"),
        (date(2027, 1, 4), "Christmas holiday"),
        (date(2027, 2, 15), "February half-term"),
        (date(2027, 4, 1), "Easter holiday"),
        (date(2027, 6, 1), "May half-term"),
        (date(2027, 8, 10), "summer holiday"),
        (date(2026, 9, 2), "summer holiday"),
    ],
)
def test_break_name_names_each_break(school: SchoolCalendar, day: date, name: str) -> None:
    assert school.break_name(day) == name


def test_break_name_is_none_in_term_and_far_from_term_dates(school: SchoolCalendar) -> None:
    assert school.break_name(date(2026, 11, 24)) is None
    assert school.break_name(date(2030, 3, 1)) is None


def test_day_info_reports_a_weekend_by_day_name(school: SchoolCalendar) -> None:
    info = school.day_info(date(2026, 11, 28))
    assert (info.open, info.reason, info.detail) == (False, "weekend", "Saturday")


def test_day_info_reports_a_holiday_by_break_name(school: SchoolCalendar) -> None:
    info = school.day_info(date(2026, 12, 21))
    assert (info.open, info.reason, info.detail) == (False, "holiday", "Christmas holiday")


def test_day_info_reports_inset(school: SchoolCalendar) -> None:
    info = school.day_info(date(2026, 11, 2))
    assert (info.open, info.reason, info.detail) == (False, "INSET", "INSET day")


def test_day_info_reports_a_bank_holiday_by_name(school: SchoolCalendar) -> None:
    info = school.day_info(date(2027, 5, 3))
    assert (info.open, info.reason) == (False, "bank holiday")
    assert "May" in info.detail


def test_day_info_open_day_has_empty_detail(school: SchoolCalendar) -> None:
    info = school.day_info(date(2026, 11, 24))
    assert (info.open, info.reason, info.detail) == (True, "open", "")


def test_a_bank_holiday_on_a_weekend_reports_weekend() -> None:
    calendar = term_all_year(bank_holidays=bank_holidays_for("ENG", range(2027, 2028)))
    # Christmas Day 2027 is a Saturday.
    assert calendar.day_info(date(2027, 12, 25)).reason == "weekend"
    assert calendar.day_info(date(2027, 12, 27)).reason == "bank holiday"


def test_a_bank_holiday_in_a_holiday_reports_holiday(school: SchoolCalendar) -> None:
    assert school.day_info(date(2026, 12, 25)).reason == "holiday"


@pytest.mark.parametrize(
    ("received", "closure"),
    [
        ("2026-11-24T10:00Z", "open"),
        ("2026-11-24T18:00Z", "out_of_hours"),
        ("2026-11-24T06:00Z", "out_of_hours"),
        ("2026-11-28T11:00Z", "weekend"),
        ("2026-12-21T11:00Z", "holiday"),
        ("2027-05-03T11:00Z", "bank_holiday"),
        ("2026-11-02T11:00Z", "inset"),
    ],
)
def test_closure_picks_the_acknowledgement_kind(school: SchoolCalendar, received: str, closure: str) -> None:
    assert school.closure(utc(received)) == closure


def test_add_school_days_skips_closed_days(school: SchoolCalendar) -> None:
    assert school.add_school_days(date(2026, 11, 27), 1) == date(2026, 11, 30)
    assert school.add_school_days(date(2026, 10, 22), 2) == date(2026, 11, 3)
    assert school.add_school_days(date(2026, 11, 27), 0) == date(2026, 11, 27)


def test_reply_by_friday_evening_is_wednesday(school: SchoolCalendar) -> None:
    assert school.reply_by(utc("2026-11-27T17:30Z"), 2) == date(2026, 12, 2)


def test_reply_by_while_open_counts_from_today(school: SchoolCalendar) -> None:
    assert school.reply_by(utc("2026-11-24T10:00Z"), 2) == date(2026, 11, 26)


def test_reply_by_across_christmas_counts_from_the_first_day_of_term(school: SchoolCalendar) -> None:
    assert school.reply_by(utc("2026-12-18T17:30Z"), 2) == date(2027, 1, 7)


def test_days_lists_consecutive_days_for_the_calendar_command(school: SchoolCalendar) -> None:
    listed = school.days(date(2026, 10, 22), 4)
    assert [info.day for info in listed] == [date(2026, 10, 22) + timedelta(days=i) for i in range(4)]
    assert [info.reason for info in listed] == ["open", "open", "weekend", "weekend"]


def test_nations_have_different_bank_holidays() -> None:
    years = range(2027, 2028)
    england, wales = bank_holidays_for("ENG", years), bank_holidays_for("WLS", years)
    scotland, northern_ireland = bank_holidays_for("SCT", years), bank_holidays_for("NIR", years)
    assert date(2027, 1, 2) in scotland and date(2027, 1, 2) not in england
    assert date(2027, 3, 17) in northern_ireland and date(2027, 3, 17) not in england
    assert date(2027, 8, 2) in scotland and date(2027, 8, 30) not in scotland
    assert date(2027, 3, 29) in wales and date(2027, 3, 29) not in scotland


def test_nation_none_has_no_bank_holidays() -> None:
    assert bank_holidays_for("none", range(2026, 2028)) == {}


def test_unknown_nation_is_rejected() -> None:
    with pytest.raises(ValueError):
        bank_holidays_for("FRA", range(2026, 2028))


def test_for_nation_without_term_dates_covers_2015_to_2045() -> None:
    calendar = SchoolCalendar.for_nation(
        tz=LONDON,
        open_at=time(8),
        close_at=time(17),
        days=WEEKDAYS,
        half_terms=(),
        inset_days=frozenset(),
        nation="SCT",
    )
    assert calendar.day_info(date(2015, 11, 30)).reason == "bank holiday"
    assert calendar.day_info(date(2045, 1, 2)).reason == "bank holiday"


def test_a_calendar_with_no_school_days_fails_the_bounded_search() -> None:
    never = term_all_year(days=frozenset())
    with pytest.raises(ValueError):
        never.next_opening(utc("2026-11-24T10:00Z"))
    with pytest.raises(ValueError):
        never.add_school_days(date(2026, 11, 24), 1)


def test_after_the_last_half_term_the_school_is_closed(school: SchoolCalendar) -> None:
    assert school.day_info(date(2027, 9, 6)).reason == "holiday"


@pytest.mark.parametrize(
    "settings",
    [
        {"open_at": time(17), "close_at": time(8)},
        {"days": frozenset({7})},
        {"half_terms": (HalfTerm("Backwards", date(2026, 10, 23), date(2026, 9, 3)),)},
        {"half_terms": HALF_TERMS_2026_27[:2] + (HalfTerm("Overlap", date(2026, 12, 1), date(2026, 12, 20)),)},
    ],
)
def test_inconsistent_configuration_is_rejected(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        term_all_year(**settings)


def test_fixed_offset_and_utc_inputs_agree(school: SchoolCalendar) -> None:
    bst = timezone(timedelta(hours=1))
    assert school.release_time(datetime(2027, 4, 30, 18, tzinfo=bst)) == school.release_time(utc("2027-04-30T17:00Z"))


def test_mail_in_a_long_closure_waits_for_the_first_day_of_the_next_published_term() -> None:
    from datetime import time as _time
    from zoneinfo import ZoneInfo as _Zone
    cal = SchoolCalendar(tz=_Zone("Europe/London"), open_at=_time(8), close_at=_time(17), days=frozenset(range(5)),
                         half_terms=(HalfTerm("Far future", date(2031, 1, 6), date(2031, 2, 14)),),
                         inset_days=frozenset(), bank_holidays={})
    t = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
    assert cal.release_time(t) == datetime(2031, 1, 6, 8, 0, tzinfo=timezone.utc)
