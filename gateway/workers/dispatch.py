"""Outbox rows for a message's deliveries, and the message's completion when its rows are done.

SMTP-received mail is delivered onward; IMAP mail already sits in the teacher's mailbox, so for it
"deliver" means "leave it, or move it back, in the watched folder" and copies go out over SMTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import Config
from gateway.decide.plan import Delivery
from gateway.domain.findings import Route
from gateway.domain.states import OutboxState, State
from gateway.store.models import MessageRow, OutboxRow
from gateway.store.queue import transition
from gateway.store.raws import forget_large_raw

DELIVERY_KINDS = ("deliver", "copy", "imap_move")
# How long a claimed outbox row stays ours: a claim, or a row handed from triage straight to delivery.
# Short, so that a surviving gateway takes over a dead one's rows within seconds; the delivery worker
# renews it every RENEW_EVERY while the row is handed over, in flight or awaiting its record.
OUTBOX_LEASE = timedelta(seconds=15)
RENEW_EVERY = timedelta(seconds=5)


@dataclass(frozen=True)
class Job:
    """One leased outbox row, with everything needed to attempt it (no database access)."""

    outbox_id: int
    message_id: int
    kind: str
    mail_from: str
    rcpts: list[str]
    data: bytes
    params: dict[str, object]
    message_header_id: str | None
    sha256: str
    folder: str | None
    lease_until: datetime | None = None


def jobs_for(rows: list[OutboxRow], messages: dict[int, MessageRow], hostname: str) -> list[Job]:
    """Jobs for leased outbox rows; `messages` holds their messages by id."""
    jobs: list[Job] = []
    for row in rows:
        message = messages.get(row.message) if row.message is not None else None
        if message is None:
            if row.message is None and row.payload is not None:
                # Mail the gateway wrote for a family (a letter, a reminder): its payload is all of it.
                jobs.append(Job(outbox_id=row.id, message_id=0, kind=row.kind, mail_from=row.mail_from,
                                rcpts=list(row.rcpts), data=row.payload, params=dict(row.params or {}),
                                message_header_id=None, sha256="", folder=None, lease_until=row.lease_until))
            continue
        if row.kind == "imap_move":
            data = b""
        elif row.payload is not None:
            data = row.payload
        else:
            data = trace_header(message, hostname) + message.raw
            # A large message's bytes are now in the job: not kept a second time with its row.
            forget_large_raw(message)
        jobs.append(Job(outbox_id=row.id, message_id=message.id, kind=row.kind, mail_from=row.mail_from,
                        rcpts=list(row.rcpts), data=data,
                        params=dict(row.params or {}), message_header_id=message.message_id, sha256=message.sha256,
                        folder=message.folder, lease_until=row.lease_until))
    return jobs


def outbox_row(message: MessageRow, kind: str, *, mail_from: str, rcpts: list[str], now: datetime,
               payload: bytes | None = None, params: dict[str, object] | None = None,
               ack_sender: str | None = None, ack_kind: str | None = None) -> OutboxRow:
    return OutboxRow(message=message.id, kind=kind, mail_from=mail_from, rcpts=rcpts, payload=payload,
                     params=params, state=OutboxState.PENDING.value, not_before=now, created_at=now,
                     attempts=0, ack_sender=ack_sender, ack_kind=ack_kind)


def standalone_row(kind: str, *, mail_from: str, rcpts: list[str], now: datetime, payload: bytes) -> OutboxRow:
    """An outbox row of its own, for mail the gateway writes for a family rather than for a message
    (a letter, a plan's review reminder): its payload is the whole message."""
    return OutboxRow(message=None, kind=kind, mail_from=mail_from, rcpts=rcpts, payload=payload,
                     state=OutboxState.PENDING.value, not_before=now, created_at=now, attempts=0)


def imap_move(message: MessageRow, config: Config, to_key: str, now: datetime, *, unseen: bool = False) -> OutboxRow:
    mailbox = next(m for m in config.mailboxes if m.name == message.mailbox)
    folder = {"held": mailbox.held_folder, "review": mailbox.review_folder, "home": mailbox.folder}[to_key]
    return outbox_row(message, "imap_move", mail_from="", rcpts=[], now=now,
                      params={"mailbox": mailbox.name, "to": folder, "unseen": unseen})


def enqueue(session: Session, message: MessageRow, deliveries: tuple[Delivery, ...], config: Config,
            now: datetime) -> list[OutboxRow]:
    """Rows for the plan's immediate deliveries. Returns the rows added."""
    rows: list[OutboxRow] = []
    for delivery in deliveries:
        if delivery.kind == "deliver":
            rows.extend(staff_rows(message, config, now))
        else:
            # Copies to the office and DSL bounce to the postmaster, never back to the parent.
            rows.append(outbox_row(message, "copy", mail_from=config.gateway.postmaster,
                                   rcpts=list(delivery.rcpts), now=now, payload=dsl_copy(message, delivery, config, now)))
    session.add_all(rows)
    return rows


def dsl_copy(message: MessageRow, delivery: Delivery, config: Config, now: datetime) -> bytes | None:
    """With the console, the DSL's copy says why it was sent and links to the Safeguarding page;
    otherwise (and for the office's copy) the original goes as it came (None: the message's bytes)."""
    if config.console is None:
        return None
    school = config.school(message.school)
    if list(delivery.rcpts) != [school.dsl]:
        return None
    import uuid

    from gateway.act.reply import compose_dsl_copy
    reasons = [(r.get("rule", ""), r.get("evidence", "")) for r in message.reasons or ()]
    return compose_dsl_copy(original_raw=message.raw, from_addr=config.gateway.postmaster, to_addr=school.dsl,
                            reasons=reasons, safeguarding_url=f"{config.console.base_url}/safeguarding", now=now,
                            message_id=f"<{uuid.uuid4().hex}@{config.smtp.hostname}>")


def session_add_staff_rows(session: Session, message: MessageRow, config: Config, now: datetime) -> None:
    session.add_all(staff_rows(message, config, now))


def staff_rows(message: MessageRow, config: Config, now: datetime) -> list[OutboxRow]:
    if message.source == "imap":
        home = next((m.folder for m in config.mailboxes if m.name == message.mailbox), None)
        if message.folder == home:
            return []
        return [imap_move(message, config, "home", now, unseen=True)]
    return [outbox_row(message, "deliver", mail_from=message.mail_from, rcpts=list(message.rcpt_tos), now=now)]


def complete_if_done(session: Session, message: MessageRow, now: datetime, actor: str) -> None:
    """A queued message whose delivery rows are all sent is delivered (forwarded when only copies went)."""
    if message.state != State.QUEUED.value:
        return
    rows = list(session.scalars(select(OutboxRow).where(OutboxRow.message == message.id,
                                                        OutboxRow.kind.in_(DELIVERY_KINDS))))
    complete_from_rows(session, message, rows, now, actor)


def complete_from_rows(session: Session, message: MessageRow, rows: list[OutboxRow], now: datetime,
                       actor: str) -> None:
    """`complete_if_done` for a caller that already holds every delivery row of the message."""
    if message.state != State.QUEUED.value:
        return
    if any(r.state in (OutboxState.PENDING.value, OutboxState.DEFERRED.value) for r in rows):
        return
    if any(r.state == OutboxState.FAILED.value for r in rows):
        transition(session, message, State.FAILED, actor=actor, now=now, reason="a delivery failed")
        return
    done = State.FORWARDED if message.route == Route.OFFICE.value else State.DELIVERED
    transition(session, message, done, actor=actor, now=now)


def trace_header(message: MessageRow, hostname: str) -> bytes:
    """The Received: line we add on delivery (RFC 5321 §4.4), so the hop is visible downstream."""
    helo = _clean(message.helo or "unknown")
    peer = _clean(message.peer or "unknown")
    source = "ESMTP" if message.source == "smtp" else "IMAP"
    rcpt = f"\r\n\tfor <{_clean(message.rcpt_tos[0])}>" if len(message.rcpt_tos) == 1 else ""
    when = format_datetime(message.received_at.astimezone(timezone.utc))
    text = (f"Received: from {helo} ({peer})\r\n\tby {_clean(hostname)} (parentgate) with {source} "
            f"id pg{message.id}{rcpt}; {when}\r\n")
    return text.encode("ascii", "replace")


def _clean(value: str) -> str:
    return "".join(c for c in value if 32 < ord(c) < 127 and c not in "()<>;")[:200] or "unknown"
