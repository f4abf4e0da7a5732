"""How a family's casework changes a message's plan: a block keeps it, a communication plan holds it
for the reading window. No I/O here."""

from __future__ import annotations

from datetime import datetime

from gateway.decide.plan import Delivery, Plan
from gateway.domain.calendar import SchoolCalendar
from gateway.domain.casework import Window, next_window
from gateway.domain.findings import Route
from gateway.domain.states import State

# Routes a communication plan takes over: everything for staff or the Head. Urgent operational mail
# still goes to the office at once, and the DSL still gets a disclosure at once (policy 003).
PLAN_ROUTES = frozenset({Route.STAFF, Route.HEAD_OF_SCHOOL, Route.DSL})


def blocked_route(route: Route) -> Route:
    """A block never silences a safeguarding concern: the DSL route stays; anything else is blocked."""
    return Route.DSL if route is Route.DSL else Route.BLOCKED


def blocked_plan(route: Route, *, closure: str, dsl: str) -> Plan:
    """Kept in `blocked`, delivered to nobody, except a disclosure's copy to the DSL at once."""
    copies = (Delivery("copy", (dsl,)),) if route is Route.DSL else ()
    return Plan(blocked_route(route), State.BLOCKED, None, copies, False, closure, "blocked sender")


def window_plan(route: Route, *, window: Window, calendar: SchoolCalendar, now: datetime,
                dsl: str) -> tuple[Plan, tuple[datetime, datetime]]:
    """Held until the next reading window (at once if it is open now); a disclosure's DSL copy goes now.

    Returns the plan and the window (start, end). ValueError when no window can be found."""
    start, end = next_window(window, calendar, now)
    copies = (Delivery("copy", (dsl,)),) if route is Route.DSL else ()
    release_at = max(start, now)
    note = f"communication plan: held for the reading window ({window.describe()})"
    return Plan(route, State.HELD, release_at, copies, False, calendar.closure(now), note), (start, end)
