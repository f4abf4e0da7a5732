"""Releasing held mail when the school opens: held → queued, in arrival order.

At an opening everything held for it goes at once, in chunks of `CHUNK` messages, each chunk its own
transaction: new mail is committed between chunks (the intake never waits for the whole release), and
the delivery worker is woken after each chunk, so the first messages are on their way while the last
are still being released.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, defer

from gateway.domain.findings import Flag
from gateway.domain.states import State
from gateway.store.models import MessageRow
from gateway.store.queue import transition
from gateway.workers.casework import reader_row
from gateway.workers.dispatch import complete_if_done, staff_rows
from gateway.workers.runtime import Runtime

CHUNK = 500


def release(session: Session, rt: Runtime, row: MessageRow, now: datetime, reason: str,
            actor: str | None = None) -> None:
    on_plan = Flag.COMMUNICATION_PLAN.value in (row.flags or ())
    if on_plan:
        reason = f"{reason}; reading window: to the plan's reader, not the addressee"
    transition(session, row, State.QUEUED, actor=actor or rt.owner, now=now, reason=reason, release_at=None)
    # A family on a communication plan: its mail goes to the plan's reader, with why, at the window.
    rows = [reader_row(session, rt, row, now)] if on_plan else staff_rows(row, rt.config, now)
    session.add_all(rows)
    # With delivery rows just added (pending) the message cannot be complete yet; only one with none
    # to send (IMAP mail already home) can, and only then is the query needed.
    if not rows:
        complete_if_done(session, row, now, rt.owner)


def release_due(session: Session, rt: Runtime, *, limit: int = CHUNK) -> int:
    """One chunk of the held messages whose release time has come, oldest first; returns how many.

    Released in the transaction that selects them, so no lease is needed: on PostgreSQL rows locked by
    another gateway's release are skipped (it releases them), and rows leased for other work are left."""
    now = rt.clock.now()
    # A release writes states and outbox rows: the bytes and reasons stay in the database (the flags
    # say whether the message waits for a communication plan's reader).
    query = (select(MessageRow).options(defer(MessageRow.raw), defer(MessageRow.reasons))
             .where(MessageRow.state == State.HELD.value, MessageRow.release_at <= now,
                    or_(MessageRow.lease_until.is_(None), MessageRow.lease_until < now))
             .order_by(MessageRow.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    for row in rows:
        release(session, rt, row, now, "school open")
    return len(rows)


async def release_all_due(rt: Runtime, *, chunk: int = CHUNK) -> int:
    """Every held message that is due, chunk after chunk until none is left; delivery is woken after
    each chunk. Returns how many were released."""
    total = 0
    while True:
        n = await rt.db.run(lambda s: release_due(s, rt, limit=chunk))
        total += n
        if n:
            rt.wake_delivery()
        if n < chunk:
            return total


def release_now(session: Session, rt: Runtime, ids: list[int] | None, *, actor: str | None = None) -> list[int]:
    """Early release by an operator: the given ids, or every held message (ids None)."""
    now = rt.clock.now()
    query = select(MessageRow).where(MessageRow.state == State.HELD.value).order_by(MessageRow.id)
    if ids is not None:
        query = query.where(MessageRow.id.in_(ids))
    done = []
    for row in session.scalars(query):
        release(session, rt, row, now, f"released early by {actor or 'an operator'}", actor=actor)
        done.append(row.id)
    return done
