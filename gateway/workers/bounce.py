"""Whether a failed delivery is reported to its sender, and queuing that report (an RFC 3464 DSN).

RFC 5321 §6.1: a server that has accepted a message with 250 and cannot deliver it must tell the
originator. Only the senders' own mail bounces: a `deliver` row carries a message as its sender wrote
it; everything parentgate writes itself (acknowledgements, summaries, notices, copies, DSNs) is never
bounced, and nothing ever goes to the null reverse-path (RFC 5321 §4.5.5), so bounces cannot loop.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.act.dsn import FailedRecipient, compose_dsn
from gateway.act.transport import Outcome
from gateway.decide.acknowledge import make_message_id
from gateway.store.models import MessageRow, OutboxRow
from gateway.store.reports import add_dsn_once
from gateway.triage.facts import parse_message
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.bounce")
BOUNCING_KINDS = ("deliver",)


def failed_recipients(rcpts: list[str], outcome: Outcome) -> list[FailedRecipient]:
    """Each of `rcpts` with the server's reply about it: its own RCPT reply when the server gave one,
    else the reply that failed the whole transaction."""
    own = dict(outcome.replies)
    return [FailedRecipient(rcpt, own.get(rcpt, outcome.detail)) for rcpt in rcpts]


def report_failure(session: Session, rt: Runtime, row: OutboxRow, message: MessageRow | None,
                   rcpts: list[str], outcome: Outcome, now: datetime) -> bool:
    """Queue one DSN to the message's envelope sender for `rcpts`, which failed for good (a permanent
    reply, a refusal at RCPT, or the lifetime over: then `outcome` is temporary). True if one was
    queued; False when the row does not bounce, the sender is null, or the message already has one."""
    if message is None or row.kind not in BOUNCING_KINDS or not rcpts:
        return False
    sender = (row.mail_from or "").strip().strip("<>")
    if not sender or "@" not in sender:
        return False
    config = rt.config
    arrival = message.received_at.astimezone(config.tz)
    school = next((s for s in config.schools if s.id == message.school), None)
    try:
        data = compose_dsn(
            original_raw=message.raw, original=parse_message(message.raw), to_addr=sender,
            from_addr=config.gateway.postmaster, school_name=school.name if school else "",
            office_phone=school.office_phone if school else "", reporting_mta=config.smtp.hostname,
            arrival=arrival, failures=failed_recipients(rcpts, outcome), expired=outcome.temporary, now=now,
            message_id=make_message_id(config.smtp.hostname, uuid.uuid4().hex))
    except Exception as exc:  # noqa: BLE001 - a DSN that cannot be built must not undo the outcomes recorded with it
        # E.g. an envelope sender that cannot be written as a To: address: the postmaster has the notice.
        log.warning("message %s: no DSN, it could not be built (%s)", message.id, exc.__class__.__name__)
        return False
    added = add_dsn_once(session, message=message.id, rcpt=sender, payload=data, now=now)
    if added:
        log.info("message %s: DSN queued to its sender for %d recipient(s)", message.id, len(rcpts))
    return added
