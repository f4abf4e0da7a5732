"""From a route, the school's calendar and `now` to a plan: who gets what, and when. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.domain.calendar import SchoolCalendar
from gateway.domain.findings import Route
from gateway.domain.states import State


@dataclass(frozen=True)
class Delivery:
    """An immediate delivery: `kind` is "deliver" (the addressed staff) or "copy" (office, DSL)."""

    kind: str
    rcpts: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    route: Route
    state: State
    release_at: datetime | None
    deliveries: tuple[Delivery, ...]
    review_summary: bool
    closure: str
    note: str = ""

    @property
    def deliver_at(self) -> datetime | None:
        """When the addressed staff member gets it: None means now (the `triage` contract)."""
        return self.release_at if self.state is State.HELD else None


def release_time(calendar: SchoolCalendar, now: datetime) -> tuple[datetime | None, str]:
    """When mail for staff may be delivered, or (None, note) to deliver now.

    A school whose calendar has no next opening in sight (term dates not yet loaded) must not sit
    on mail for ever: it is delivered now and the note says why.
    """
    try:
        return calendar.release_time(now), ""
    except ValueError:
        return None, "no school opening found in the calendar; delivered now"


def plan(route: Route, *, calendar: SchoolCalendar, now: datetime, staff: tuple[str, ...], office: str,
         dsl: str) -> Plan:
    closure = calendar.closure(now)
    if route is Route.HEAD_OF_SCHOOL:
        return Plan(route, State.IN_REVIEW, None, (), True, closure)
    if route is Route.OFFICE:
        # "Telephone the school for anything urgent": the office gets it at once, never held.
        return Plan(route, State.QUEUED, None, (Delivery("copy", (office,)),), False, closure)
    if route is Route.BLOCKED:
        # Kept, delivered to nobody (decide.casework: a blocked sender's disclosure still reaches the DSL).
        return Plan(route, State.BLOCKED, None, (), False, closure, "blocked sender")
    release_at, note = release_time(calendar, now)
    immediate: list[Delivery] = []
    if route is Route.DSL:
        # KCSIE: the Designated Safeguarding Lead gets it at once, whatever the hour.
        immediate.append(Delivery("copy", (dsl,)))
    if release_at is not None:
        return Plan(route, State.HELD, release_at, tuple(immediate), False, closure, note)
    immediate.append(Delivery("deliver", staff))
    return Plan(route, State.QUEUED, None, tuple(immediate), False, closure, note)
