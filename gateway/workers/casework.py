"""Mail the gateway writes for a family's casework: a plan's mail to its reader at the reading window,
and the review reminders of plans. Composed in act/, stored as outbox rows like any other mail."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.act.compose import compose_review_summary
from gateway.decide.acknowledge import make_message_id
from gateway.store import casework as store, memory
from gateway.store.models import MessageRow, OutboxRow
from gateway.triage.facts import parse_message
from gateway.workers.dispatch import outbox_row
from gateway.workers.runtime import Runtime


def reader_row(session: Session, rt: Runtime, row: MessageRow, now: datetime) -> OutboxRow:
    """The message, with why it came, to the reader of the family's plan (the Head if the plan is gone).

    A copy row: when it is sent the message is delivered, and the addressed staff member never gets it."""
    school = rt.config.school(row.school)
    plan = store.latest_plan(session, row.school, row.family or "")
    reader = plan.reader if plan is not None else school.head_of_school
    window = store.window_of(plan).describe() if plan is not None else "the reading window"
    reasons = [(r.get("rule", ""), r.get("evidence", "")) for r in row.reasons or ()]
    family = row.family or None
    data = compose_review_summary(
        original_raw=row.raw, original=parse_message(row.raw), to_addr=reader,
        from_addr=rt.config.gateway.postmaster, school_name=school.name, reasons=reasons, family=family,
        family_count=memory.count_family(session, row.school, family, row.half_term or "") if family else 0,
        half_term=(row.half_term or "").partition(" ")[2] or None, thread_count=0,
        received_at=row.received_at.astimezone(school.calendar.tz), recipients=list(row.rcpt_tos),
        message_ref=str(row.id), now=now, message_id=make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex),
        templates_dir=rt.templates_dir, reply_to=school.head_of_school, template="plan_reading.txt.j2",
        subject_prefix="Communication plan: ", kind="plan-reading", extra={"window": window})
    return outbox_row(row, "copy", mail_from=rt.config.gateway.postmaster, rcpts=[reader], now=now, payload=data)
