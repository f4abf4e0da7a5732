"""Releasing held mail when the school opens: held → queued, in arrival order."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.domain.states import State
from gateway.store.models import MessageRow
from gateway.store.queue import claim_messages, transition
from gateway.workers.dispatch import complete_if_done, session_add_staff_rows
from gateway.workers.runtime import Runtime

LEASE = timedelta(minutes=2)


def release(session: Session, rt: Runtime, row: MessageRow, now: datetime, reason: str,
            actor: str | None = None) -> None:
    transition(session, row, State.QUEUED, actor=actor or rt.owner, now=now, reason=reason, release_at=None)
    session_add_staff_rows(session, row, rt.config, now)
    complete_if_done(session, row, now, rt.owner)


def release_due(session: Session, rt: Runtime, *, limit: int = 500) -> int:
    """Every held message whose release time has come (the opening job and the overdue sweep)."""
    now = rt.clock.now()
    rows = claim_messages(session, State.HELD, owner=rt.owner, now=now, lease=LEASE, limit=limit, due_before=now)
    for row in rows:
        release(session, rt, row, now, "school open")
    return len(rows)


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
