"""Read-only figures about the queue for metrics and health: a few cheap, indexed queries. Never writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.domain.states import OutboxState, State
from gateway.store.models import CheckpointRow, MessageRow, OutboxRow


@dataclass(frozen=True)
class QueueSnapshot:
    """Messages per state, when the oldest waiting ones arrived, and each IMAP mailbox's status."""

    counts: dict[str, int]
    oldest: dict[str, datetime]
    mailboxes: dict[str, bool]


def _first_received(session: Session, state: State) -> datetime | None:
    # The lowest id in a state is its oldest arrival; (state, id) is an index, so this reads one entry.
    return session.scalar(select(MessageRow.received_at).where(MessageRow.state == state.value)
                          .order_by(MessageRow.id).limit(1))


def snapshot(session: Session) -> QueueSnapshot:
    """One GROUP BY over the state index, then the first row of each waiting state."""
    counts = {str(state): int(n) for state, n in session.execute(
        select(MessageRow.state, func.count()).group_by(MessageRow.state))}
    oldest: dict[str, datetime] = {}
    for state in (State.HELD, State.IN_REVIEW):
        if counts.get(state.value):
            at = _first_received(session, state)
            if at is not None:
                oldest[state.value] = at
    deferred = session.scalar(select(func.min(OutboxRow.created_at)).where(
        OutboxRow.state == OutboxState.DEFERRED.value))
    if deferred is not None:
        oldest[OutboxState.DEFERRED.value] = deferred
    mailboxes = {row.mailbox: bool(row.ok) for row in session.scalars(select(CheckpointRow))}
    return QueueSnapshot(counts=counts, oldest=oldest, mailboxes=mailboxes)
