"""Whether a message passes through untouched: mail that is not from parents. No I/O here.

The home–school policy is about parents' and carers' mail. A colleague's email, the trust's or the
local authority's, and mail to a passthrough recipient (finance@) are none of its business: such
mail is delivered at once, whatever the calendar, with no acknowledgement and no counting. Nor is it
screened for safeguarding: a staff member's concern goes through the school's own procedures.
"""

from __future__ import annotations

from datetime import datetime

from gateway.decide.plan import Delivery, Plan
from gateway.domain.calendar import SchoolCalendar
from gateway.domain.findings import Flag, Reason, Route
from gateway.domain.senders import SenderClass, domain_of, in_domains
from gateway.domain.states import State


def passthrough_reason(sender_class: SenderClass, *, sender: str, rcpts: tuple[str, ...], own_domains: tuple[str, ...],
                       passthrough_recipients: frozenset[str], unknown_senders: str) -> Reason | None:
    """The reason the message passes through untouched, or None when the policy applies to it."""
    if sender_class is SenderClass.INTERNAL:
        domain = domain_of(sender)
        whose = "the school's own domain" if in_domains(domain, own_domains) else "a passthrough domain"
        return Reason("internal-sender", Flag.PASSTHROUGH, f"{domain or 'the sender'} is {whose}")
    if rcpts and all(r.lower() in passthrough_recipients for r in rcpts):
        return Reason("passthrough-recipient", Flag.PASSTHROUGH, ", ".join(sorted({r.lower() for r in rcpts})))
    if sender_class is SenderClass.UNKNOWN and unknown_senders == "pass":
        return Reason("unknown-sender", Flag.PASSTHROUGH, "not in the family directory; unknown_senders = \"pass\"")
    return None


def passthrough_plan(*, calendar: SchoolCalendar, now: datetime, staff: tuple[str, ...]) -> Plan:
    """Deliver to the addressed recipients now: no hold, no review, no copies."""
    return Plan(Route.STAFF, State.QUEUED, None, (Delivery("deliver", staff),), False, calendar.closure(now),
                "passed through untouched")
