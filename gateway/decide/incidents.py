"""What kind of incident a triaged message is, and the short summary of why. No I/O here.

Policy 000 asks the school to record every email of concern; these are the categories a school's
recording system (CPOMS and the like) files them under.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.domain.findings import Flag, Route

SAFEGUARDING = "safeguarding"
ABUSIVE = "abusive"
NEGATIVE = "negative"
EXCESSIVE_CONTACT = "excessive-contact"
PERSONAL = "personal"
PLAN_BREACH = "plan-breach"
CATEGORIES = (SAFEGUARDING, ABUSIVE, NEGATIVE, EXCESSIVE_CONTACT, PERSONAL, PLAN_BREACH)

# Most serious first: a message that is both abusive and too long is filed as abusive.
_BY_FLAG = ((Flag.SAFEGUARDING, SAFEGUARDING), (Flag.ABUSIVE, ABUSIVE), (Flag.NEGATIVE, NEGATIVE),
            (Flag.PERSONAL, PERSONAL), (Flag.FAMILY_LIMIT, EXCESSIVE_CONTACT),
            (Flag.THREAD_LIMIT, EXCESSIVE_CONTACT), (Flag.LONG_MESSAGE, EXCESSIVE_CONTACT))
# Evidence is a phrase the parent wrote: only its first words go in the summary.
EVIDENCE_CHARS = 60


def category_name(text: str) -> str | None:
    """A category as typed by a person ("excessive contact", "Plan-Breach") in its stored form, or None."""
    key = "-".join(text.strip().lower().replace("_", " ").replace("-", " ").split())
    return key if key in CATEGORIES else None


def label(category: str) -> str:
    """The category as the school reads it: "excessive contact", "plan breach"."""
    return category.replace("-", " ")


def incident_category(route: Route, flags: Iterable[Flag]) -> str | None:
    """The category of a message routed to the DSL or the Head of School; None for any other route."""
    if route is Route.DSL:
        return SAFEGUARDING
    if route is not Route.HEAD_OF_SCHOOL:
        return None
    present = set(flags)
    for flag, category in _BY_FLAG:
        if flag in present:
            return category
    return NEGATIVE


def summary(reasons: Iterable[tuple[str, str]]) -> str:
    """The rules' names with their short evidence: "abusive-language: “useless”; family-half-term-limit: 6"."""
    parts = []
    for rule, evidence in reasons:
        evidence = " ".join(evidence.split())
        if len(evidence) > EVIDENCE_CHARS:
            evidence = evidence[:EVIDENCE_CHARS - 1].rstrip() + "…"
        parts.append(f"{rule}: {evidence}" if evidence else rule)
    return "; ".join(parts)
