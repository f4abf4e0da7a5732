"""The school calendar: which days and hours the school is open, and when held mail is released. No I/O here.

Every answer is a pure function of the configured term dates and the instant
passed in; nothing here reads the clock. Instants are timezone-aware and may be
in any zone; the school's local time is computed from `tz`, and the instants
returned are in UTC.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import holidays

NATIONS = frozenset({"ENG", "WLS", "SCT", "NIR"})

# Long enough to cross a summer holiday and a missing year of term dates, and
# short enough that a calendar with no school days at all fails fast.
SEARCH_LIMIT_DAYS = 800

# Before the first or after the last configured half-term we only name the
# break when it is plausibly the adjacent summer holiday, not years away.
OPEN_ENDED_BREAK_DAYS = 70

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# The break named for the month at the middle of a gap (index 0 is January).
_BREAK_BY_MONTH = (
    "Christmas holiday",
    "February half-term",
    "Easter holiday",
    "Easter holiday",
    "May half-term",
    "May half-term",
    "summer holiday",
    "summer holiday",
    "summer holiday",
    "October half-term",
    "October half-term",
    "Christmas holiday",
)

# The `closure` code for each closed `DayInfo.reason`; these codes pick the acknowledgement template.
_CLOSURE_BY_REASON = {"weekend": "weekend", "holiday": "holiday", "bank holiday": "bank_holiday", "INSET": "inset"}


@dataclass(frozen=True)
class HalfTerm:
    """One teaching period, both ends inclusive."""

    name: str
    start: date
    end: date


@dataclass(frozen=True)
class DayInfo:
    """Whether the school is open on a day and, if not, why (`reason`) in words for people (`detail`)."""

    day: date
    open: bool
    reason: str
    detail: str


def bank_holidays_for(nation: str, years: range) -> dict[date, str]:
    """The bank holidays of one UK nation (ENG, WLS, SCT, NIR) in `years`; "none" gives no bank holidays."""
    code = nation.strip().upper()
    if code == "NONE":
        return {}
    if code not in NATIONS:
        raise ValueError(f"unknown nation {nation!r}: expected one of ENG, WLS, SCT, NIR or none")
    found = holidays.country_holidays("GB", subdiv=code, years=list(years))
    return {day: str(name) for day, name in found.items()}


def _synthetic_period(d: date) -> HalfTerm:
    # Two-month periods keep per-period counting meaningful when no term dates cover `d`.
    first = d.month - (d.month - 1) % 2
    start = date(d.year, first, 1)
    end = (date(d.year + 1, 1, 1) if first == 11 else date(d.year, first + 2, 1)) - timedelta(days=1)
    return HalfTerm(f"{_MONTHS[first - 1]}-{_MONTHS[first]} {d.year}", start, end)


class SchoolCalendar:
    """Opening hours, school days and closures for one school."""

    def __init__(
        self,
        *,
        tz: ZoneInfo,
        open_at: time,
        close_at: time | None,
        days: frozenset[int],
        half_terms: tuple[HalfTerm, ...],
        inset_days: frozenset[date],
        bank_holidays: Mapping[date, str],
    ) -> None:
        if close_at is not None and close_at <= open_at:
            raise ValueError("close_at must be after open_at (use None for 24:00)")
        if not days <= frozenset(range(7)):
            raise ValueError("days must be weekday numbers 0 (Monday) to 6 (Sunday)")
        ordered = tuple(sorted(half_terms, key=lambda h: h.start))
        for term in ordered:
            if term.end < term.start:
                raise ValueError(f"half-term {term.name!r} ends before it starts")
        for earlier, later in pairwise(ordered):
            if later.start <= earlier.end:
                raise ValueError(f"half-terms {earlier.name!r} and {later.name!r} overlap")
        self.tz = tz
        self.open_at = open_at
        self.close_at = close_at
        self.weekdays = days
        self.half_terms = ordered
        self.inset_days = inset_days
        self.bank_holidays: Mapping[date, str] = dict(bank_holidays)
        self._starts = [term.start for term in ordered]

    @classmethod
    def for_nation(
        cls,
        *,
        tz: ZoneInfo,
        open_at: time,
        close_at: time | None,
        days: frozenset[int],
        half_terms: tuple[HalfTerm, ...],
        inset_days: frozenset[date],
        nation: str,
    ) -> SchoolCalendar:
        """Build a calendar with the bank holidays of `nation`, looked up once for every year it can need."""
        if half_terms:
            years = range(min(h.start.year for h in half_terms) - 1, max(h.end.year for h in half_terms) + 2)
        else:
            years = range(2015, 2046)
        return cls(
            tz=tz,
            open_at=open_at,
            close_at=close_at,
            days=days,
            half_terms=half_terms,
            inset_days=inset_days,
            bank_holidays=bank_holidays_for(nation, years),
        )

    def _local(self, t: datetime) -> datetime:
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError("calendar instants must be timezone-aware")
        return t.astimezone(self.tz)

    def _gap(self, d: date) -> tuple[HalfTerm | None, HalfTerm | None] | None:
        """The half-terms either side of `d` when `d` falls between them (None for an open end), or None in term."""
        i = bisect_right(self._starts, d) - 1
        if i >= 0 and d <= self.half_terms[i].end:
            return None
        before = self.half_terms[i] if i >= 0 else None
        after = self.half_terms[i + 1] if i + 1 < len(self.half_terms) else None
        return before, after

    def break_name(self, d: date) -> str | None:
        """The name of the break `d` falls in, such as "Christmas holiday"; None in term or without term dates."""
        if not self.half_terms:
            return None
        gap = self._gap(d)
        if gap is None:
            return None
        before, after = gap
        if before is None or after is None:
            edge = after.start if after is not None else before.end if before is not None else d
            if abs((edge - d).days) > OPEN_ENDED_BREAK_DAYS:
                return None
            return _BREAK_BY_MONTH[d.month - 1]
        first = before.end + timedelta(days=1)
        last = after.start - timedelta(days=1)
        if any(first <= date(year, 12, 25) <= last for year in range(first.year, last.year + 1)):
            return "Christmas holiday"
        # The middle of the gap names it robustly: an Easter break may start in
        # March or April, and a Scottish summer holiday starts in June.
        middle = first + timedelta(days=(last - first).days // 2)
        return _BREAK_BY_MONTH[middle.month - 1]

    def day_info(self, d: date) -> DayInfo:
        """Why `d` is open or closed.

        Precedence: weekend, then holiday, then bank holiday, then INSET, so a
        bank holiday that falls on a weekend (or in a holiday) reports the
        weekend (or the holiday), which is what the school's own notices say.
        """
        if d.weekday() not in self.weekdays:
            return DayInfo(d, False, "weekend", _WEEKDAYS[d.weekday()])
        if self.half_terms and self._gap(d) is not None:
            return DayInfo(d, False, "holiday", self.break_name(d) or "holiday")
        if d in self.bank_holidays:
            return DayInfo(d, False, "bank holiday", self.bank_holidays[d])
        if d in self.inset_days:
            return DayInfo(d, False, "INSET", "INSET day")
        return DayInfo(d, True, "open", "")

    def is_school_day(self, d: date) -> bool:
        return self.day_info(d).open

    def days(self, start: date, n: int) -> list[DayInfo]:
        """`n` consecutive days from `start`, for the `calendar` command."""
        return [self.day_info(start + timedelta(days=i)) for i in range(n)]

    def _in_hours(self, local: datetime) -> bool:
        clock = local.time()
        return self.open_at <= clock and (self.close_at is None or clock < self.close_at)

    def is_open(self, t: datetime) -> bool:
        local = self._local(t)
        return self._in_hours(local) and self.is_school_day(local.date())

    def closure(self, t: datetime) -> str:
        """One of open, out_of_hours, weekend, holiday, bank_holiday, inset: picks the acknowledgement template."""
        local = self._local(t)
        info = self.day_info(local.date())
        if info.open:
            return "open" if self._in_hours(local) else "out_of_hours"
        return _CLOSURE_BY_REASON[info.reason]

    def next_opening(self, t: datetime) -> datetime:
        """The earliest opening instant at or after `t`, in UTC."""
        d = self._local(t).date()
        for _ in range(SEARCH_LIMIT_DAYS):
            d = self._term_day_from(d)
            if not self.is_school_day(d):
                d += timedelta(days=1)
                continue
            # Combining in the school's zone and converting gives 07:00Z in BST and 08:00Z in GMT for 08:00.
            opening = datetime.combine(d, self.open_at, tzinfo=self.tz).astimezone(UTC)
            if opening >= t:
                return opening
            d += timedelta(days=1)
        raise ValueError(f"no school day within {SEARCH_LIMIT_DAYS} days of {t.isoformat()}")

    def _term_day_from(self, d: date) -> date:
        """`d`, or the first day of the next half-term when `d` falls in a break before it.

        A school that publishes its next term far ahead (or a long closure) must still hold mail
        until that term starts, without walking the calendar one day at a time.
        """
        if not self.half_terms:
            return d
        i = bisect_right(self._starts, d) - 1
        if i >= 0 and d <= self.half_terms[i].end:
            return d
        return self.half_terms[i + 1].start if i + 1 < len(self.half_terms) else d

    def release_time(self, t: datetime) -> datetime | None:
        """When mail received at `t` may be delivered: None if the school is open, else its next opening."""
        return None if self.is_open(t) else self.next_opening(t)

    def add_school_days(self, d: date, n: int) -> date:
        """The `n`-th school day strictly after `d`; `d` itself when `n` is 0."""
        if n < 0:
            raise ValueError("n must not be negative")
        day, counted, idle = d, 0, 0
        while counted < n:
            day += timedelta(days=1)
            if self.is_school_day(day):
                counted, idle = counted + 1, 0
            else:
                idle += 1
                if idle > SEARCH_LIMIT_DAYS:
                    raise ValueError(f"no school day within {SEARCH_LIMIT_DAYS} days of {day.isoformat()}")
        return day

    def reply_by(self, t: datetime, n: int) -> date:
        """The date a reply can be expected: `n` school days after the day the school next reads the message."""
        read_on = self._local(t).date() if self.is_open(t) else self.next_opening(t).astimezone(self.tz).date()
        return self.add_school_days(read_on, n)

    def half_term(self, t: datetime) -> HalfTerm:
        """The period that counts mail received at `t`.

        Mail received in a holiday counts towards the next half-term (DESIGN.md,
        "School calendar"); without term dates that cover `t` a two-month period
        stands in, so that per-period counting still works.
        """
        d = self._local(t).date()
        i = bisect_right(self._starts, d) - 1
        if i >= 0 and d <= self.half_terms[i].end:
            return self.half_terms[i]
        if i + 1 < len(self.half_terms):
            return self.half_terms[i + 1]
        return _synthetic_period(d)
