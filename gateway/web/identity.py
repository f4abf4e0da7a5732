"""Who may sign in to the console and what they may see, from the configuration alone. No I/O here.

This is the one place where authorisation is decided: every page asks the signed-in person's
`Viewer` for the schools it may read or act on, and every query is scoped by that answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config import Config

HEAD, DSL, OFFICE, TRUST = "head", "dsl", "office", "trust"


@dataclass(frozen=True)
class Viewer:
    """A signed-in person: their address and, per school id, their roles there."""

    email: str
    roles: dict[str, frozenset[str]] = field(default_factory=dict)

    def schools(self, *roles: str) -> frozenset[str]:
        """The schools where this person holds any of `roles` (any role at all when none is named)."""
        wanted = set(roles)
        return frozenset(s for s, have in self.roles.items() if not wanted or have & wanted)

    def can(self, school: str, *roles: str) -> bool:
        return bool(self.roles.get(school, frozenset()) & set(roles))

    def may_read(self, school: str, route: str | None, flags: tuple[str, ...] = ()) -> bool:
        """A message's page: heads and the trust read their schools' messages; the DSL reads those
        routed to the DSL and those flagged for the DSL's digest (its links lead here)."""
        return self.can(school, HEAD, TRUST) or (for_dsl(route, flags) and self.can(school, DSL))

    @property
    def readers(self) -> frozenset[str]:
        """Schools whose review queue and messages this person may read (heads and the trust)."""
        return self.schools(HEAD, TRUST)


def for_dsl(route: str | None, flags: tuple[str, ...] = ()) -> bool:
    """A message the DSL reads and marks seen: sent to the DSL, or listed in the DSL's digest."""
    return route == "dsl" or "possible-safeguarding" in flags


def viewer_for(config: Config, email: str) -> Viewer | None:
    """The person behind an address, or None when it may not sign in."""
    email = email.strip().lower()
    roles: dict[str, set[str]] = {}
    for school in config.schools:
        for role, address in ((HEAD, school.head_of_school), (DSL, school.dsl), (OFFICE, school.office)):
            if address.lower() == email:
                roles.setdefault(school.id, set()).add(role)
    if config.console is not None:
        for user in config.console.users:
            if user.email == email:
                for school_id in user.schools:
                    roles.setdefault(school_id, set()).add(user.role)
    if not roles:
        return None
    return Viewer(email=email, roles={s: frozenset(r) for s, r in roles.items()})
