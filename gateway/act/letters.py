"""Letters and reminders the gateway writes for a family's casework: rendered from rules/templates,
built as plain-text messages. Building only; the outbox sends them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

# The composing helpers are shared within act/ so that every message the gateway writes is built alike.
from gateway.act.compose import NAME_LIMIT, _headed_message, _policy_for, _render, _set_text, one_line


def render_letter(templates_dir: Path, template: str, now: datetime, values: Mapping[str, object]) -> str:
    """A letter's draft text. Values are cut to one line each, except the list of incidents."""
    clean = {k: (one_line(v, NAME_LIMIT) if isinstance(v, str) else v) for k, v in values.items()}
    if "note" in values and isinstance(values["note"], str):
        # The Head's note may run to a paragraph; control characters still go.
        clean["note"] = "\n".join(one_line(line, 2000) for line in values["note"].splitlines())
    return _render(templates_dir, template, now, clean)


def compose_letter(*, from_addr: str, from_name: str, to_addr: str, subject: str, body: str, now: datetime,
                   message_id: str) -> bytes:
    """A letter from the Head of School to a parent, as drafted (and edited) in plain text."""
    msg = _headed_message(from_addr=from_addr, from_name=from_name, to_addr=to_addr, subject=subject, now=now,
                          message_id=message_id)
    msg["X-Parentgate"] = "letter"
    _set_text(msg, body.replace("\r\n", "\n"))
    return msg.as_bytes(policy=_policy_for(msg))


def compose_reminder(*, from_addr: str, to_addr: str, school_name: str, subject: str, body: str, now: datetime,
                     message_id: str) -> bytes:
    """A reminder to staff that a communication plan is due for review."""
    msg = _headed_message(from_addr=from_addr, from_name=f"{one_line(school_name, NAME_LIMIT)} (parentgate)",
                          to_addr=to_addr, subject=subject, now=now, message_id=message_id)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Parentgate"] = "plan-review"
    _set_text(msg, body)
    return msg.as_bytes(policy=_policy_for(msg))
