"""When the DSL's digest of possible safeguarding concerns is due, and which messages belong in it. No I/O here.

A message flagged `possible-safeguarding` is delivered as usual and listed in a digest for the
Designated Safeguarding Lead: at 08:00 and 13:00 on school days (school time), and at once on a day
the school is closed, when nobody would otherwise look until it reopens. A message routed to the DSL
already reached the DSL at once, so it is not listed again.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from gateway.domain.calendar import SchoolCalendar
from gateway.domain.findings import Flag, Route

DIGEST_TIMES = (time(8, 0), time(13, 0))


def digest_cutoff(calendar: SchoolCalendar, now: datetime, times: tuple[time, ...] = DIGEST_TIMES) -> datetime:
    """The latest digest moment at or before `now`: a flagged message received by then is due now.

    The moments are each of `times` on school days and every instant of other days. So on a school
    day a message received at 10:00 waits for 13:00 and one received at 14:00 for 08:00 the next
    school day (or for the first minute of a closed day in between); on a closed day it goes at once.
    """
    tz = calendar.tz
    today = now.astimezone(tz).date()
    if not calendar.is_school_day(today):
        return now
    passed = [moment for t in times if (moment := datetime.combine(today, t, tzinfo=tz).astimezone(UTC)) <= now]
    if passed:
        return max(passed)
    yesterday = today - timedelta(days=1)
    if not calendar.is_school_day(yesterday):
        # The closed day ended at midnight: everything up to then went at once.
        return datetime.combine(today, time(0), tzinfo=tz).astimezone(UTC)
    return datetime.combine(yesterday, max(times), tzinfo=tz).astimezone(UTC)


def wants_digest(route: str | None, flags: list[str] | tuple[str, ...] | None) -> bool:
    """A message goes in the DSL's digest when it is flagged and did not already go to the DSL."""
    return Flag.POSSIBLE_SAFEGUARDING.value in (flags or ()) and route != Route.DSL.value
