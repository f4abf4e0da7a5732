"""Casework facts about a family (policies 000, 002, 003): plan windows, blocks, escalation stages.

Pure: the reading window of a communication plan is calendar arithmetic on `now`. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import Enum

from gateway.domain.calendar import SchoolCalendar

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# How far ahead a window is looked for: a year of weeks covers any school's longest closure.
_SEARCH_WEEKS = 60
_WINDOW = re.compile(r"^\s*([a-z]{3})[a-z]*\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$", re.IGNORECASE)


class Stage(str, Enum):
    """The escalation ladder of policies 000 and 002, in order."""

    NONE = "none"
    MEETING = "meeting"
    WARNING = "warning"
    LEGAL_ADVICE = "legal-advice"
    BAN = "ban"


STAGE_LABELS = {Stage.NONE: "none", Stage.MEETING: "meeting requested", Stage.WARNING: "warned",
                Stage.LEGAL_ADVICE: "legal advice", Stage.BAN: "banned"}
# The letter each stage sends to the family (legal advice is the school's own step: no letter).
LETTERS = {Stage.MEETING: "letter_meeting.txt.j2", Stage.WARNING: "letter_warning.txt.j2",
           Stage.BAN: "letter_ban.txt.j2"}


@dataclass(frozen=True)
class Window:
    """A weekly (or fortnightly) reading window in the school's timezone: `day` 0 is Monday."""

    day: int
    start: time
    end: time
    fortnightly: bool = False
    # The Monday of a week in which a fortnightly window opens.
    anchor: date | None = None

    def describe(self) -> str:
        every = "every other" if self.fortnightly else "every"
        return f"{every} {DAY_NAMES[self.day]}, {self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def text(self) -> str:
        return f"{DAYS[self.day]} {self.start:%H:%M}-{self.end:%H:%M}"


def parse_window(text: str) -> Window:
    """`tue 09:00-10:00` (any day name or its first three letters). ValueError says what is wrong."""
    m = _WINDOW.match(text or "")
    if not m:
        raise ValueError(f"window {text!r} is not like \"tue 09:00-10:00\"")
    day = m.group(1).lower()
    if day not in DAYS:
        raise ValueError(f"window {text!r}: unknown day {m.group(1)!r}")
    try:
        start, end = time(int(m.group(2)), int(m.group(3))), time(int(m.group(4)), int(m.group(5)))
    except ValueError:
        raise ValueError(f"window {text!r}: not a time of day") from None
    if end <= start:
        raise ValueError(f"window {text!r}: it must end after it starts, on the same day")
    return Window(DAYS.index(day), start, end)


def monday_of(d: date) -> date:
    return d - timedelta(days=d.weekday())


def next_window(window: Window, calendar: SchoolCalendar, now: datetime) -> tuple[datetime, datetime]:
    """The next reading window still open or to come at `now`: (start, end), aware, in the school's zone.

    A window whose day is closed (weekend, holiday, bank holiday, INSET) moves to the next open day at
    the same time; a fortnightly window opens only in the weeks an even number of weeks from its anchor.
    A window that is open at `now` is the one returned (the reader reads mail that comes during it)."""
    tz = calendar.tz
    local = now.astimezone(tz)
    anchor = window.anchor or monday_of(local.date())
    # From last week: its window may have moved (a closed day) into this week and still be to come.
    week = monday_of(local.date()) - timedelta(days=14)
    for _ in range(_SEARCH_WEEKS):
        week += timedelta(days=7)
        if window.fortnightly and ((week - anchor).days // 7) % 2:
            continue
        day = week + timedelta(days=window.day)
        for _shift in range(400):
            if calendar.is_school_day(day):
                break
            day += timedelta(days=1)
        else:
            break
        start = datetime.combine(day, window.start, tzinfo=tz)
        end = datetime.combine(day, window.end, tzinfo=tz)
        if end > local:
            return start, end
    raise ValueError("no open day for the reading window in the next year")


@dataclass(frozen=True)
class PlanFacts:
    """An active communication plan as triage needs it."""

    id: int
    reader: str
    window: Window


@dataclass(frozen=True)
class BlockFacts:
    """An active block on a sender (its address or its whole family)."""

    id: int
    until: datetime | None
    family_wide: bool


@dataclass(frozen=True)
class Casework:
    """What the family's casework changes about a message: a plan, a block, or neither."""

    plan: PlanFacts | None = None
    block: BlockFacts | None = None


NO_CASEWORK = Casework()
