"""Quarantine: a message that really failed three times is set aside for a person, who is told."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.act.notices import compose_quarantine_notice
from gateway.decide.acknowledge import make_message_id
from gateway.domain.states import State
from gateway.store.models import MessageRow
from gateway.store.queue import MAX_CLAIMS, failed_attempt, transition
from gateway.workers.dispatch import outbox_row
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.quarantine")


def note_failure(session: Session, rt: Runtime, row: MessageRow, now: datetime, why: str) -> bool:
    """One real failed attempt at triaging `row` (never a mere claim); quarantines it at the third.

    Returns True when the message was quarantined."""
    if not failed_attempt(row):
        log.warning("message %s: triage attempt %d of %d failed (%s); it will be tried again", row.id,
                    row.claims, MAX_CLAIMS, why)
        return False
    quarantine(session, rt, row, now, f"{why}; failed {row.claims} times, kept for a human")
    return True


def quarantine(session: Session, rt: Runtime, row: MessageRow, now: datetime, reason: str) -> None:
    """received → quarantined, with a WARNING and a plain notice to the postmaster through the outbox."""
    transition(session, row, State.QUARANTINED, actor=rt.owner, now=now, reason=reason)
    log.warning("message %s quarantined: %s; the postmaster is told", row.id, reason)
    postmaster = rt.config.gateway.postmaster
    try:
        data = compose_quarantine_notice(message_ref=str(row.id), to_addr=postmaster, from_addr=postmaster,
                                         reason=reason, now=now,
                                         message_id=make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex))
    except ValueError:
        # A postmaster address that cannot head a message: the quarantine stands, the log says it.
        log.error("message %s: the quarantine notice could not be built for the postmaster", row.id)
        return
    # A null reverse-path (RFC 5321 §4.5.5), as for every notice: nothing answers it back.
    session.add(outbox_row(row, "notice", mail_from="", rcpts=[postmaster], now=now, payload=data))
