"""Whether and how to acknowledge a parent's message (RFC 3834). No I/O here.

An acknowledgement is an automatic response, so RFC 3834 governs it: it goes to
the envelope sender only, never to automated, list or bounce mail, never to our
own addresses, and never in answer to something we sent ourselves. The once per
sender per interval limit needs the database and is applied by the caller.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import Enum

from gateway.domain.addresses import reply_address
from gateway.domain.calendar import SchoolCalendar
from gateway.domain.facts import Facts
from gateway.domain.findings import Route

OUR_MESSAGE_ID_PREFIX = "pg."

# RFC 3834 §3.1.7 names "owner-*", "*-request" and MAILER-DAEMON; the rest are
# the conventional role and robot mailboxes that nobody reads (or that answer
# back with another automatic message, which is how mail loops start).
_SYSTEM_LOCAL_PARTS = frozenset(
    {
        "mailer-daemon",
        "mailerdaemon",
        "postmaster",
        "hostmaster",
        "listserv",
        "majordomo",
        "mailman",
        "bounce",
        "bounces",
        "noreply",
        "no-reply",
        "no_reply",
        "no.reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
        "do.not.reply",
        "dontreply",
        "dont-reply",
        "nobody",
    }
)
_SYSTEM_LOCAL_PATTERNS = (
    re.compile(r"^owner-"),
    re.compile(r"-owner$"),
    re.compile(r"-request$"),
    re.compile(r"-bounces?(?:$|[-+=.])"),
    re.compile(r"^bounces?[-=_]"),
    re.compile(r"^(?:no|do-?not|dont)[-_.]?repl(?:y|ies)[-_.]"),
)

# Content types that are reports about other messages: DSNs (RFC 3464), MDNs
# (RFC 8098) and the multipart/report wrapper (RFC 6522) that carries both.
_REPORT_TYPES = frozenset({"multipart/report", "message/delivery-status", "message/disposition-notification"})

# Precedence is not standardised, but RFC 3834 §2 asks responders to honour these values.
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})

# Microsoft's X-Auto-Response-Suppress: "All" and "OOF" are named by the policy;
# "AutoReply" asks for no auto-replies other than out-of-office, which includes ours.
_SUPPRESS_TOKENS = frozenset({"all", "oof", "autoreply"})


class AckKind(str, Enum):
    """Which acknowledgement to send: the usual one, or the one that points to the office phone."""

    STANDARD = "standard"
    URGENT = "urgent"
    # The family is on a communication plan: the reply names the reading window.
    PLAN = "plan"
    # The sender is blocked: a plain notice naming the channel to use instead, at most once per 7 days.
    BLOCKED = "blocked"


def suppression(facts: Facts, envelope_sender: str, own_domains: frozenset[str]) -> str | None:
    """None when an acknowledgement may be sent to `envelope_sender`, else the kebab-case reason why not.

    Reasons, checked in this order: null-sender, unusable-sender, auto-submitted, list-mail,
    bulk-precedence, auto-response-suppressed, system-sender, own-domain, own-message,
    delivery-report.
    """
    sender = envelope_sender.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1].strip()
    # RFC 3834 §2: never respond when the destination would be the null reverse-path.
    if not sender:
        return "null-sender"
    # An acknowledgement needs an address it can be written to, in a To field and in RCPT.
    usable = reply_address(sender)
    if usable is None:
        return "unusable-sender"
    local, domain = _split(usable)

    # RFC 3834 §2: any Auto-Submitted value other than "no" (parameters after ";" aside).
    for value in facts.headers.get("auto-submitted", ()):
        if value.split(";", 1)[0].strip().lower() != "no":
            return "auto-submitted"
    # RFC 2369 / RFC 2919 list header fields mean the message came through a list.
    if any(name.startswith("list-") for name in facts.headers):
        return "list-mail"
    for value in facts.headers.get("precedence", ()):
        if value.strip().lower() in _BULK_PRECEDENCE:
            return "bulk-precedence"
    for value in facts.headers.get("x-auto-response-suppress", ()):
        tokens = {token.strip().lower() for token in value.split(",")}
        if tokens & _SUPPRESS_TOKENS:
            return "auto-response-suppressed"
    # The envelope sender is where the reply would go; a robot From is checked too,
    # because replying to a "no-reply" sender under another bounce address helps nobody.
    if _is_system_local(local) or _is_system_local(_split(facts.from_addr)[0]):
        return "system-sender"
    if _is_own_domain(domain, own_domains):
        return "own-domain"
    if is_our_message_id(facts.message_id):
        return "own-message"
    for value in facts.headers.get("content-type", ()):
        if value.split(";", 1)[0].strip().lower() in _REPORT_TYPES:
            return "delivery-report"
    return None


def ack_kind(route: Route) -> AckKind | None:
    """The office route points the parent to the phone; blocked mail gets nothing.

    The DSL and Head-of-School routes get the standard acknowledgement, so that
    nothing in the reply hints at how the message was judged.
    """
    if route is Route.OFFICE:
        return AckKind.URGENT
    if route in (Route.STAFF, Route.DSL, Route.HEAD_OF_SCHOOL):
        return AckKind.STANDARD
    return None


_STANDARD_TEMPLATES = {
    "open": "ack_in_hours.txt.j2",
    "out_of_hours": "ack_out_of_hours.txt.j2",
    "weekend": "ack_weekend.txt.j2",
    "holiday": "ack_holiday.txt.j2",
    # A bank holiday or INSET day is a one-day closure inside term: the
    # out-of-hours wording ("the school is closed; we reopen on ...") fits, while
    # the holiday template names a break, which these days are not.
    "bank_holiday": "ack_out_of_hours.txt.j2",
    "inset": "ack_out_of_hours.txt.j2",
}


def template_for(kind: AckKind, closure: str) -> str:
    """The template file name for an acknowledgement of `kind` sent while the school is in `closure`."""
    if closure not in _STANDARD_TEMPLATES:
        raise ValueError(f"unknown closure {closure!r}")
    if kind is AckKind.URGENT:
        return "ack_urgent.txt.j2"
    if kind is AckKind.PLAN:
        return "ack_plan.txt.j2"
    if kind is AckKind.BLOCKED:
        return "blocked_notice.txt.j2"
    return _STANDARD_TEMPLATES[closure]


def make_message_id(hostname: str, unique: str) -> str:
    """A Message-ID that `is_our_message_id` recognises, so that we never answer our own mail."""
    if not hostname or not unique or any(c in hostname + unique for c in "<>@ \t\r\n"):
        raise ValueError("hostname and unique must be non-empty and free of <, >, @ and whitespace")
    return f"<{OUR_MESSAGE_ID_PREFIX}{unique}@{hostname}>"


def is_our_message_id(mid: str | None) -> bool:
    """True for a Message-ID made by `make_message_id` (angle brackets optional)."""
    if not mid:
        return False
    return mid.strip().lstrip("<").startswith(OUR_MESSAGE_ID_PREFIX)


def _split(address: str) -> tuple[str, str]:
    """Lower-cased local part without its +tag (RFC 5233 subaddress), and lower-cased domain."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at:
        local, domain = domain, ""
    return local.lower().split("+", 1)[0], domain.lower().rstrip(".")


def _is_system_local(local: str) -> bool:
    if not local:
        return False
    return local in _SYSTEM_LOCAL_PARTS or any(p.search(local) for p in _SYSTEM_LOCAL_PATTERNS)


def _is_own_domain(domain: str, own_domains: frozenset[str]) -> bool:
    # A subdomain of a school domain (a list server, a staff portal) is ours too.
    for own in own_domains:
        own = own.strip().lower().rstrip(".")
        if own and (domain == own or domain.endswith("." + own)):
            return True
    return False


def closure_for_reply(calendar: SchoolCalendar, at: datetime) -> tuple[str, str | None]:
    """The closure an acknowledgement should describe, and the break's name when there is one.

    Mail sent after school on the last day of term is "out of hours" by the clock, but what the
    parent needs to hear is that the school is breaking up: when a holiday lies between `at` and
    the next opening, the holiday wording (and that break's name) is used.
    """
    closure = calendar.closure(at)
    local_day = at.astimezone(calendar.tz).date()
    if closure == "holiday":
        return closure, calendar.break_name(local_day)
    if closure == "open":
        return closure, None
    try:
        reopen = calendar.next_opening(at).astimezone(calendar.tz).date()
    except ValueError:
        return closure, None
    day = local_day + timedelta(days=1)
    while day < reopen:
        if calendar.day_info(day).reason == "holiday":
            return "holiday", calendar.break_name(day)
        day += timedelta(days=1)
    return closure, None
