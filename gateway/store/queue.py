"""The message queue: the one door for state changes (`transition`) and leased claims on rows.

Every state change goes through `transition()`, which checks the table in `domain.states`, updates the
row and appends an event in the same transaction. A claim is a lease (owner, until), never a state: a
worker that dies leaves a lease that expires, and the row is claimed again. A claim alone never counts
against a message (a gateway killed in a crash loop claims batches it never works on); `claims` counts
attempts that really failed because of the message (its judging raised, or killed a worker process, or
writing its triage raised), and after three the worker quarantines it for a human instead of crashing
workers forever (Mailman's shunt queue).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased, defer

from gateway.domain.states import OutboxState, State, allowed
from gateway.ops.logs import kv
from gateway.store.models import EventRow, MessageRow, OutboxRow

log = logging.getLogger("parentgate.queue")
MAX_CLAIMS = 3


class TransitionError(Exception):
    """A state change the table does not allow: a bug or a race, never silently applied."""


def transition(session: Session, row: MessageRow, to: State, *, actor: str, now: datetime, reason: str = "",
               **changes: Any) -> None:
    src = State(row.state)
    if not allowed(src, to):
        raise TransitionError(f"message {row.id}: {src.value} -> {to.value} is not allowed")
    for key, value in changes.items():
        setattr(row, key, value)
    row.state = to.value
    row.updated_at = now
    row.lease_owner = None
    row.lease_until = None
    if to is not State.QUARANTINED:
        row.claims = 0
    _add_event(session, message=row.id, from_state=src.value, to_state=to.value, at=now, actor=actor,
               reason=reason[:2000])
    # One log line per transition, starting with the message id, then key=value fields; never the content.
    rules = ",".join(r.get("rule", "") for r in changes["reasons"]) if changes.get("reasons") else None
    log.info("message %s %s -> %s %s", row.id, src.value, to.value,
             kv(id=row.id, state=to.value, route=row.route, rules=rules, actor=actor, reason=reason[:200] or None))


def record(session: Session, row: MessageRow, *, actor: str, now: datetime, reason: str) -> None:
    """An action on a message that does not change its state (a reply, a forward, "seen"): an event
    whose from and to states are the same, in the same transaction as the action."""
    _add_event(session, message=row.id, from_state=row.state, to_state=row.state, at=now, actor=actor,
               reason=reason[:2000])
    log.info("message %s %s", row.id, kv(id=row.id, state=row.state, actor=actor, reason=reason[:200]))


def add_received(session: Session, messages: list[dict[str, Any]], *, actor: str) -> list[int]:
    """New messages, durably in state received, each with its first event. Returns their ids, in order.

    One INSERT ... RETURNING for the group (SQLAlchemy's bulk path), rather than an ORM object each."""
    if not messages:
        return []
    for values in messages:
        values.update(state=State.RECEIVED.value, updated_at=values["received_at"], counted=0, claims=0)
    ids = list(session.scalars(insert(MessageRow).returning(MessageRow.id, sort_by_parameter_order=True), messages))
    for message_id, values in zip(ids, messages):
        _add_event(session, message=message_id, from_state=None, to_state=State.RECEIVED.value,
                   at=values["received_at"], actor=actor, reason=f"{values['size']} bytes from {values['source']}")
        log.info("message %s received via %s %s", message_id, values["source"],
                 kv(id=message_id, state=State.RECEIVED.value, bytes=values["size"], message_id=values["message_id"]))
    return ids


# Event rows wait in the session and are written together, in one executemany, when the session
# flushes or commits: the same transaction as the state change, without an ORM object per event. A
# rollback (of the transaction or of a savepoint, which always starts flushed) drops the waiting ones.
_PENDING_EVENTS = "parentgate.pending_events"


def _add_event(session: Session, **values: Any) -> None:
    session.info.setdefault(_PENDING_EVENTS, []).append(values)


def _write_events(session: Session, *_: Any) -> None:
    pending = session.info.pop(_PENDING_EVENTS, None)
    if pending:
        session.connection().execute(insert(EventRow), pending)


def _drop_events(session: Session, *_: Any) -> None:
    session.info.pop(_PENDING_EVENTS, None)


event.listen(Session, "before_flush", _write_events)
event.listen(Session, "before_commit", _write_events)
event.listen(Session, "after_soft_rollback", _drop_events)


def _lease_free(model: Any, now: datetime) -> Any:
    return or_(model.lease_until.is_(None), model.lease_until < now)


def claim_messages(session: Session, state: State, *, owner: str, now: datetime, lease: timedelta,
                   limit: int, due_before: datetime | None = None) -> list[MessageRow]:
    """Lease up to `limit` rows in `state` (oldest first). FOR UPDATE SKIP LOCKED on PostgreSQL.

    The claim is not counted (see `failed_attempt`): a claim by a process that dies before working on
    the rows must not bring them nearer to quarantine."""
    # Without the bytes: the caller reads those it needs (store.raws), so a large message is not
    # carried along with every claim.
    query = select(MessageRow).options(defer(MessageRow.raw)).where(MessageRow.state == state.value,
                                                                    _lease_free(MessageRow, now))
    if due_before is not None:
        query = query.where(MessageRow.release_at <= due_before)
    query = query.order_by(MessageRow.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    for row in rows:
        row.lease_owner, row.lease_until = owner, now + lease
    return rows


def failed_attempt(row: MessageRow) -> bool:
    """Count one attempt at the row's work that failed because of the row itself, and drop its lease so
    that it is tried again soon. True once it has failed MAX_CLAIMS times: the caller quarantines it."""
    row.claims = (row.claims or 0) + 1
    row.lease_owner, row.lease_until = None, None
    return row.claims >= MAX_CLAIMS


def renew_messages(session: Session, ids: list[int], state: State, *, owner: str, until: datetime) -> list[int]:
    """Extend our leases on rows still in `state` and still leased to us; returns the ids renewed.

    A lease another gateway has taken over (ours expired) is never extended: that row is no longer
    ours to write. Rows are locked in id order and locked ones skipped (on PostgreSQL), so a renewal
    never waits for, or deadlocks with, the transaction that is finishing them."""
    return _renew(session, MessageRow, ids, [MessageRow.state == state.value], owner, until)


def renew_outbox(session: Session, ids: list[int], *, owner: str, until: datetime) -> list[int]:
    """`renew_messages` for outbox rows still pending or deferred."""
    return _renew(session, OutboxRow, ids, [OutboxRow.state.in_((OutboxState.PENDING.value,
                                                                 OutboxState.DEFERRED.value))], owner, until)


def _renew(session: Session, model: Any, ids: list[int], where: list[Any], owner: str, until: datetime) -> list[int]:
    if not ids:
        return []
    query = select(model.id).where(model.id.in_(ids), model.lease_owner == owner, *where).order_by(model.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    mine = list(session.scalars(query))
    if mine:
        session.execute(update(model).where(model.id.in_(mine)).values(lease_until=until))
    return mine


def claim_outbox(session: Session, *, owner: str, now: datetime, lease: timedelta, limit: int,
                 kinds: tuple[str, ...] | None = None) -> list[OutboxRow]:
    """Lease due outbox rows. Fresh rows and due retries share one ordering by `not_before`, so
    a backlog of retries never starves new mail (Postfix's active queue)."""
    query = select(OutboxRow).where(
        OutboxRow.state.in_((OutboxState.PENDING.value, OutboxState.DEFERRED.value)),
        OutboxRow.not_before <= now, _lease_free(OutboxRow, now))
    if kinds:
        query = query.where(OutboxRow.kind.in_(kinds))
    # IMAP moves of one message run in the order they were planned (held, then back home), never
    # side by side, or a release could overtake the move it undoes.
    earlier = aliased(OutboxRow)
    query = query.where(or_(OutboxRow.kind != "imap_move", ~exists().where(
        earlier.message == OutboxRow.message, earlier.kind == "imap_move", earlier.id < OutboxRow.id,
        earlier.state.in_((OutboxState.PENDING.value, OutboxState.DEFERRED.value)))))
    query = query.order_by(OutboxRow.not_before, OutboxRow.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    for row in rows:
        row.lease_owner, row.lease_until = owner, now + lease
    return rows


def release_messages(session: Session, ids: list[int], state: State, owner: str) -> int:
    """Give up our leases on messages claimed in `state` and not worked on (a clean stop): claimable
    again at once (a claim is never counted, so a stop never brings a message nearer to quarantine)."""
    result = session.execute(update(MessageRow).where(
        MessageRow.id.in_(ids), MessageRow.state == state.value, MessageRow.lease_owner == owner).values(
        lease_owner=None, lease_until=None))
    return int(getattr(result, "rowcount", 0) or 0)


def release_outbox(session: Session, ids: list[int], owner: str) -> int:
    """Give up our leases on outbox rows not attempted (a clean stop): claimable again at once."""
    result = session.execute(update(OutboxRow).where(
        OutboxRow.id.in_(ids), OutboxRow.lease_owner == owner,
        OutboxRow.state.in_((OutboxState.PENDING.value, OutboxState.DEFERRED.value))).values(
        lease_owner=None, lease_until=None))
    return int(getattr(result, "rowcount", 0) or 0)


def clear_leases(session: Session, owner: str | None = None) -> int:
    """Drop leases: all of one owner's (its own restart), or every lease (a single SQLite gateway)."""
    total = 0
    for model in (MessageRow, OutboxRow):
        stmt = update(model).where(model.lease_owner.is_not(None))
        if owner is not None:
            stmt = stmt.where(model.lease_owner == owner)
        result = session.execute(stmt.values(lease_owner=None, lease_until=None))
        total += int(getattr(result, "rowcount", 0) or 0)
    return total

