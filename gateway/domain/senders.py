"""Who a message is from, as far as the school's policy cares: a colleague, a known family, or a stranger. No I/O here."""

from __future__ import annotations

from enum import Enum
from typing import Iterable


class SenderClass(str, Enum):
    """The class of a sender. The value is what the triage JSON and the database show."""

    # The school's own domains and its passthrough domains (the trust, the local authority, other schools).
    INTERNAL = "internal"
    # An address in the school's family directory.
    FAMILY = "family"
    # Anyone else outside the school.
    UNKNOWN = "unknown"


def domain_of(address: str) -> str:
    """The lower-cased domain of an address, without a trailing dot; "" when there is none."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    return domain.lower().rstrip(".") if at and local else ""


def in_domains(domain: str, domains: Iterable[str]) -> bool:
    """True when `domain` is one of `domains` or a subdomain of one (a staff portal, a list server)."""
    for own in domains:
        if own and (domain == own or domain.endswith("." + own)):
            return True
    return False


def classify_sender(*, envelope_sender: str, from_addr: str, internal_domains: Iterable[str],
                    in_directory: bool) -> SenderClass:
    """The sender's class from the envelope sender, the From address, the domains and the directory.

    Mail is internal only when every address it gives for its sender (the envelope sender and the
    From header, whichever are present) is in an internal domain: an outsider who merely puts a
    colleague's address in From is not waved through. Stopping forged envelope senders on mail from
    outside is the MTA's job (SPF/DMARC checks on port 25), as it is for any mail a school receives.
    """
    domains = tuple(internal_domains)
    given = [domain_of(a) for a in (envelope_sender, from_addr) if a and a.strip().strip("<>")]
    if given and all(d and in_domains(d, domains) for d in given):
        return SenderClass.INTERNAL
    if in_directory:
        return SenderClass.FAMILY
    return SenderClass.UNKNOWN
