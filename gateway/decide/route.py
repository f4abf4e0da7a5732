"""Route precedence from the school policy. No I/O here."""

from __future__ import annotations

from gateway.domain.findings import Findings, Flag, Route

# The policy's "staff will forward to the Head of School" list: negative or demanding, abusive,
# personal or social, complicated (long), an unmanageable trail, an excessive number of emails.
HEAD_OF_SCHOOL_FLAGS = frozenset({Flag.ABUSIVE, Flag.NEGATIVE, Flag.PERSONAL, Flag.FAMILY_LIMIT,
                                  Flag.THREAD_LIMIT, Flag.LONG_MESSAGE})


def route_for(findings: Findings) -> Route:
    """Safeguarding first (KCSIE: at once, to the DSL), then the Head of School, then the office."""
    flags = {r.flag for r in findings.reasons}
    if Flag.SAFEGUARDING in flags:
        return Route.DSL
    if flags & HEAD_OF_SCHOOL_FLAGS:
        return Route.HEAD_OF_SCHOOL
    if Flag.URGENT in flags:
        return Route.OFFICE
    return Route.STAFF
