"""Operator actions used by the CLI (and any future console): release, review, requeue, listings, families.

Each action is one transaction through the state machine's door, so every action is an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gateway.domain.states import OutboxState, State
from gateway.store import memory
from gateway.store.models import EventRow, FamilyRow, MessageRow, OutboxRow
from gateway.store.queue import transition
from gateway.store.records import follow_up
from gateway.workers.delivery import requeue as requeue_message
from gateway.workers.dispatch import complete_if_done, session_add_staff_rows
from gateway.workers.release import release_now
from gateway.workers.runtime import Runtime

TERMINAL = (State.DELIVERED.value, State.FORWARDED.value, State.DISMISSED.value, State.BLOCKED.value)


class ServiceError(Exception):
    """An operator asked for something that cannot be done; the message says why."""


@dataclass(frozen=True)
class MessageSummary:
    id: int
    school: str
    state: str
    route: str | None
    mail_from: str
    rcpts: tuple[str, ...]
    received_at: datetime
    release_at: datetime | None
    flags: tuple[str, ...]
    reasons: tuple[tuple[str, str], ...]
    family: str | None
    note: str | None
    sender_class: str | None = None


def _summary(row: MessageRow) -> MessageSummary:
    return MessageSummary(
        id=row.id, school=row.school, state=row.state, route=row.route, mail_from=row.mail_from,
        rcpts=tuple(row.rcpt_tos), received_at=row.received_at, release_at=row.release_at,
        flags=tuple(row.flags or ()), reasons=tuple((r.get("rule", ""), r.get("evidence", "")) for r in row.reasons or ()),
        family=row.family, note=row.note, sender_class=row.sender_class)


def list_messages(rt: Runtime, state: str | None = None, limit: int = 500) -> list[MessageSummary]:
    def run(session: Session) -> list[MessageSummary]:
        query = select(MessageRow)
        if state:
            query = query.where(MessageRow.state == state)
        query = query.order_by(MessageRow.id.desc() if not state else MessageRow.id).limit(limit)
        return [_summary(r) for r in session.scalars(query)]
    return rt.db.transact(run)


def get_message(rt: Runtime, message_id: int) -> MessageSummary | None:
    return rt.db.transact(lambda s: (lambda row: _summary(row) if row is not None else None)(
        s.get(MessageRow, message_id)))


@dataclass(frozen=True)
class OutboxSummary:
    """One outbound action of a message as the operator sees it: tries so far, the server's last reply,
    and when the next try is due."""

    id: int
    message: int
    kind: str
    state: str
    rcpts: tuple[str, ...]
    attempts: int
    last_error: str | None
    not_before: datetime | None
    finished_at: datetime | None


def outbox_of(rt: Runtime, message_ids: list[int]) -> dict[int, list[OutboxSummary]]:
    """The outbox rows of these messages, by message id, oldest first (one query, payloads left out)."""
    if not message_ids:
        return {}

    def run(session: Session) -> dict[int, list[OutboxSummary]]:
        found: dict[int, list[OutboxSummary]] = {}
        query = select(OutboxRow.id, OutboxRow.message, OutboxRow.kind, OutboxRow.state, OutboxRow.rcpts,
                       OutboxRow.attempts, OutboxRow.last_error, OutboxRow.not_before, OutboxRow.finished_at).where(
            OutboxRow.message.in_(message_ids)).order_by(OutboxRow.id)
        for r in session.execute(query):
            found.setdefault(r.message, []).append(OutboxSummary(
                id=r.id, message=r.message, kind=r.kind, state=r.state, rcpts=tuple(r.rcpts or ()),
                attempts=r.attempts or 0, last_error=r.last_error, not_before=r.not_before,
                finished_at=r.finished_at))
        return found
    return rt.db.transact(run)


def state_counts(rt: Runtime) -> dict[str, int]:
    return rt.db.transact(lambda s: {k: int(v) for k, v in s.execute(
        select(MessageRow.state, func.count()).group_by(MessageRow.state))})


def release(rt: Runtime, ids: list[int] | None, actor: str | None = None) -> list[int]:
    def run(session: Session) -> list[int]:
        if ids is not None:
            for message_id in ids:
                row = session.get(MessageRow, message_id)
                if row is None:
                    raise ServiceError(f"no message {message_id}")
                if row.state != State.HELD.value:
                    raise ServiceError(f"message {message_id} is {row.state}, not held")
        return release_now(session, rt, ids, actor=actor)
    return rt.db.transact(run)


def _in_review(session: Session, message_id: int) -> MessageRow:
    row = session.get(MessageRow, message_id)
    if row is None:
        raise ServiceError(f"no message {message_id}")
    if row.state != State.IN_REVIEW.value:
        raise ServiceError(f"message {message_id} is {row.state}, not in review")
    return row


def review_release(rt: Runtime, message_id: int, actor: str, note: str = "") -> str:
    """The Head of School lets it through: to the addressed staff, held if the school is closed."""
    def run(session: Session) -> str:
        row = _in_review(session, message_id)
        now = rt.clock.now()
        calendar = rt.config.school(row.school).calendar
        try:
            release_at = calendar.release_time(now)
        except ValueError:
            release_at = None
        reason = f"released by {actor}" + (f": {note}" if note else "")
        follow_up(session, row.id, "released to the addressee" + (f": {note}" if note else ""), actor)
        if release_at is not None:
            transition(session, row, State.HELD, actor=actor, now=now, reason=reason, release_at=release_at,
                       note=note or row.note)
            return f"held until {release_at.isoformat()}"
        transition(session, row, State.QUEUED, actor=actor, now=now, reason=reason, note=note or row.note)
        session_add_staff_rows(session, row, rt.config, now)
        complete_if_done(session, row, now, actor)
        return "queued for delivery"
    return rt.db.transact(run)


def review_dismiss(rt: Runtime, message_id: int, actor: str, note: str) -> None:
    """The Head of School keeps it: not delivered, kept with the note."""
    if not note.strip():
        raise ServiceError("a dismissal needs a --note saying why")

    def run(session: Session) -> None:
        row = _in_review(session, message_id)
        transition(session, row, State.DISMISSED, actor=actor, now=rt.clock.now(),
                   reason=f"dismissed by {actor}: {note}", note=note)
        follow_up(session, row.id, f"dismissed (kept, not delivered): {note}", actor)
    rt.db.transact(run)


def requeue(rt: Runtime, message_id: int, actor: str) -> int:
    def run(session: Session) -> int:
        row = session.get(MessageRow, message_id)
        if row is None:
            raise ServiceError(f"no message {message_id}")
        now = rt.clock.now()
        if row.state == State.QUARANTINED.value:
            transition(session, row, State.RECEIVED, actor=actor, now=now, reason="requeued from quarantine")
            return 1
        if row.state != State.FAILED.value:
            raise ServiceError(f"message {message_id} is {row.state}; only failed or quarantined mail is requeued")
        return requeue_message(session, row, actor=actor, now=now)
    return rt.db.transact(run)


def events(rt: Runtime, message_id: int) -> list[tuple[datetime, str | None, str, str, str]]:
    return rt.db.transact(lambda s: [(e.at, e.from_state, e.to_state, e.actor, e.reason) for e in s.scalars(
        select(EventRow).where(EventRow.message == message_id).order_by(EventRow.id))])


def school_aliases(rt: Runtime) -> dict[str, str]:
    """CSV `school` values we accept: the id, any domain, or a domain's first label."""
    aliases: dict[str, str] = {}
    for school in rt.config.schools:
        for domain in school.domains:
            aliases[domain] = school.id
            aliases[domain.split(".")[0]] = school.id
        aliases[school.id] = school.id
    return aliases


def import_families(rt: Runtime, text: str) -> dict[str, int]:
    aliases = school_aliases(rt)
    try:
        return rt.db.transact(lambda s: memory.import_families(s, text, {s_.id for s_ in rt.config.schools}, aliases))
    except memory.ImportProblem as exc:
        raise ServiceError(str(exc)) from None


def show_family(rt: Runtime, key: str) -> list[FamilyRow]:
    return rt.db.transact(lambda s: memory.family_members(s, key))


def purge_expired(rt: Runtime) -> int:
    """Retention ([retention]): delivered or forwarded mail, dismissed mail and blocked senders' mail each
    after its own period (with their events and outbox rows), the gateway's own letters once sent, and
    incident records after theirs. Returns how many messages and incidents were deleted."""
    from gateway.store.records import purge_incidents
    now = rt.clock.now()
    keep = rt.config.retention
    periods = (((State.DELIVERED.value, State.FORWARDED.value), keep.delivered),
               ((State.DISMISSED.value,), keep.dismissed), ((State.BLOCKED.value,), keep.blocked))

    def run(session: Session) -> int:
        total = 0
        for states, period in periods:
            ids = list(session.scalars(select(MessageRow.id).where(
                MessageRow.state.in_(states), MessageRow.updated_at < now - period).limit(5000)))
            if ids:
                session.execute(delete(EventRow).where(EventRow.message.in_(ids)))
                session.execute(delete(OutboxRow).where(OutboxRow.message.in_(ids)))
                session.execute(delete(MessageRow).where(MessageRow.id.in_(ids)))
            total += len(ids)
        # Letters and reminders stand alone in the outbox (no message): kept as long as delivered mail.
        session.execute(delete(OutboxRow).where(
            OutboxRow.message.is_(None), OutboxRow.state.in_((OutboxState.SENT.value, OutboxState.FAILED.value)),
            OutboxRow.finished_at < now - keep.delivered))
        return total + purge_incidents(session, now - keep.incidents)
    return rt.db.transact(run)


def console_signing_key(rt: Runtime) -> str:
    """The key that signs the console's session cookies (made once, kept in the database)."""
    from gateway.store.console import signing_key
    return rt.db.transact(signing_key)


def console_add_link(rt: Runtime, token_hash: str, email: str, minutes: int) -> None:
    """Record a sign-in link by its hash only, valid for `minutes`."""
    from datetime import timedelta

    from gateway.store.console import add_link
    now = rt.clock.now()
    rt.db.transact(lambda s: add_link(s, token_hash, email, now, now + timedelta(minutes=minutes)))


def console_use_link(rt: Runtime, token_hash: str) -> str | None:
    """Spend a sign-in link: its address once, then never again (None when unknown, used or expired)."""
    from gateway.store.console import use_link
    return rt.db.transact(lambda s: use_link(s, token_hash, rt.clock.now()))


def reply_as_head(rt: Runtime, message_id: int, actor: str, name: str, text: str) -> str:
    """The Head's reply to the parent, from the Head's own address: queued for delivery and recorded
    on the message. Returns the address it goes to."""
    import uuid

    from gateway.act.reply import compose_reply, parent_address
    from gateway.decide.acknowledge import make_message_id
    from gateway.store.queue import record
    from gateway.workers.dispatch import outbox_row
    if not text.strip():
        raise ServiceError("a reply needs some text")

    def run(session: Session) -> str:
        row = session.get(MessageRow, message_id)
        if row is None:
            raise ServiceError(f"no message {message_id}")
        now = rt.clock.now()
        to = parent_address(row.raw, row.mail_from)
        if not to:
            raise ServiceError(f"message {message_id} has no address to reply to")
        data = compose_reply(original_raw=row.raw, from_addr=actor, from_name=name, to_addr=to, body=text,
                             now=now, message_id=make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex))
        session.add(outbox_row(row, "reply", mail_from=actor, rcpts=[to], now=now, payload=data))
        record(session, row, actor=actor, now=now, reason=f"replied to {to} by {actor}")
        return to
    return rt.db.transact(run)


def mark_seen(rt: Runtime, message_id: int, actor: str) -> None:
    """The DSL has seen a safeguarding message: recorded on it (who and when); nothing else changes."""
    from gateway.store.console import SEEN
    from gateway.store.queue import record

    def run(session: Session) -> None:
        row = session.get(MessageRow, message_id)
        if row is None:
            raise ServiceError(f"no message {message_id}")
        record(session, row, actor=actor, now=rt.clock.now(), reason=SEEN + actor)
    rt.db.transact(run)


def forward_to_dsl(rt: Runtime, message_id: int, actor: str, note: str) -> str:
    """The Head sends a message on to the school's DSL with a note: the original attached as it came."""
    import uuid

    from gateway.act.reply import compose_forward
    from gateway.decide.acknowledge import make_message_id
    from gateway.store.queue import record
    from gateway.workers.dispatch import outbox_row

    def run(session: Session) -> str:
        row = session.get(MessageRow, message_id)
        if row is None:
            raise ServiceError(f"no message {message_id}")
        now = rt.clock.now()
        dsl = rt.config.school(row.school).dsl
        reasons = [(r.get("rule", ""), r.get("evidence", "")) for r in row.reasons or ()]
        data = compose_forward(original_raw=row.raw, from_addr=actor, to_addr=dsl, note=note, reasons=reasons,
                               now=now, message_id=make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex))
        session.add(outbox_row(row, "forward", mail_from=rt.config.gateway.postmaster, rcpts=[dsl], now=now,
                               payload=data))
        record(session, row, actor=actor, now=now, reason=f"forwarded to the DSL {dsl} by {actor}: {note}")
        follow_up(session, row.id, f"forwarded to the DSL ({dsl})", actor)
        return dsl
    return rt.db.transact(run)
