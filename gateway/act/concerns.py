"""Mail about a message's possible concerns: the DSL's digest, and the office's copy for an interpreter.

Values only in, RFC 5322 bytes out: no network, no database, no clock. Every value taken from a
parent's message is reduced to one bounded line first (`one_line`), so nothing a parent wrote can
add a header field or a line of its own to the text. The digest carries no message body: only who,
when, to whom, the evidence that flagged it and a link to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import MIMEPart
from pathlib import Path

from gateway.act.compose import (EVIDENCE_LIMIT, NAME_LIMIT, SUBJECT_LIMIT, ReasonLine, _headed_message, _policy_for,
                                 _render, _set_text, british_datetime, one_line, with_original_attached)

DIGEST_TEMPLATE = "dsl_digest.txt.j2"
INTERPRETER_TEMPLATE = "interpreter_note.txt.j2"

# Where a message went, in the words the office reads in the interpreter note.
WHERE = {
    "staff": "to the person it was sent to (in school hours)",
    "office": "to the office",
    "dsl": "to the Designated Safeguarding Lead",
    "head_of_school": "to the Head of School for review",
    "blocked": "nowhere: the sender is blocked",
}


@dataclass(frozen=True)
class DigestEntry:
    """One flagged message as the digest lists it (times aware, in the school's zone)."""

    ref: str
    received: datetime
    sender: str
    family: str | None
    children: tuple[str, ...]
    recipients: tuple[str, ...]
    reasons: tuple[tuple[str, str], ...]
    link: str


def compose_dsl_digest(*, entries: Sequence[DigestEntry], school_name: str, from_addr: str, to_addr: str,
                       now: datetime, message_id: str, templates_dir: Path, safeguarding_url: str | None) -> bytes:
    """The digest of possible safeguarding concerns for the DSL: one entry per message, no bodies."""
    values = {
        "school_name": one_line(school_name, NAME_LIMIT),
        "count": len(entries),
        "safeguarding_url": safeguarding_url,
        "entries": [{
            "ref": one_line(e.ref, NAME_LIMIT),
            "received": british_datetime(e.received),
            "sender": one_line(e.sender, NAME_LIMIT) or "(unknown sender)",
            "family": one_line(e.family, NAME_LIMIT) if e.family else None,
            "children": [one_line(c, NAME_LIMIT) for c in e.children if one_line(c)],
            "recipients": [one_line(r, NAME_LIMIT) for r in e.recipients],
            "reasons": [ReasonLine(one_line(r, NAME_LIMIT), one_line(v, EVIDENCE_LIMIT)) for r, v in e.reasons],
            "link": one_line(e.link, 500),
        } for e in entries],
    }
    body = _render(templates_dir, DIGEST_TEMPLATE, now, values)
    count = len(entries)
    msg = _headed_message(from_addr=from_addr, from_name=f"{one_line(school_name, NAME_LIMIT)} (parentgate)",
                          to_addr=to_addr, now=now, message_id=message_id,
                          subject=f"Possible safeguarding concerns: {count} message{'' if count == 1 else 's'}")
    # RFC 3834 §5: written by the gateway itself, so nothing should answer it automatically.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Parentgate"] = "dsl-digest"
    _set_text(msg, body)
    return msg.as_bytes(policy=_policy_for(msg))


def compose_interpreter_copy(*, original_raw: bytes, subject: str, sender: str, recipients: Sequence[str],
                             received: datetime, route: str, reasons: Sequence[tuple[str, str]], school_name: str,
                             from_addr: str, to_addr: str, message_ref: str, now: datetime, message_id: str,
                             templates_dir: Path) -> bytes:
    """The office's copy of a message nobody can judge in its language: a short note asking for an
    interpreter (policy 001), with the original attached as it was received."""
    values = {
        "school_name": one_line(school_name, NAME_LIMIT),
        "sender": one_line(sender, NAME_LIMIT) or "(unknown sender)",
        "recipients": [one_line(r, NAME_LIMIT) for r in recipients],
        "received": british_datetime(received),
        "subject": one_line(subject, SUBJECT_LIMIT) or "(no subject)",
        "where": WHERE.get(route, route),
        "reasons": [ReasonLine(one_line(r, NAME_LIMIT), one_line(v, EVIDENCE_LIMIT)) for r, v in reasons],
        "message_ref": one_line(message_ref, NAME_LIMIT),
    }
    note = _render(templates_dir, INTERPRETER_TEMPLATE, now, values)
    outer = _headed_message(from_addr=from_addr, from_name=f"{one_line(school_name, NAME_LIMIT)} (parentgate)",
                            to_addr=to_addr, now=now, message_id=message_id,
                            subject="Interpreter needed: " + str(values["subject"]))
    outer["Auto-Submitted"] = "auto-generated"
    outer["X-Auto-Response-Suppress"] = "All"
    outer["X-Parentgate"] = "interpreter-copy"
    text_part = MIMEPart(policy=_policy_for(outer))
    _set_text(text_part, note, disposition="inline")
    return with_original_attached(outer, text_part.as_bytes(policy=_policy_for(outer)), original_raw, message_id)
