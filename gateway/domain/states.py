"""The message state machine as a table. No I/O here; `store.queue.transition` is the one door."""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    RECEIVED = "received"
    TRIAGED = "triaged"
    HELD = "held"
    IN_REVIEW = "in_review"
    QUEUED = "queued"
    DELIVERED = "delivered"
    FORWARDED = "forwarded"
    DISMISSED = "dismissed"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    # From a blocked sender (policy 003): kept, counted, visible to the Head, delivered to nobody.
    BLOCKED = "blocked"


class OutboxState(str, Enum):
    """States of one outbound action (one recipient set of one message)."""

    PENDING = "pending"
    DEFERRED = "deferred"
    SENT = "sent"
    FAILED = "failed"


# Every allowed move. A row moves only along these edges, through store.queue.transition().
TRANSITIONS: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset({State.TRIAGED, State.QUARANTINED}),
    State.TRIAGED: frozenset({State.HELD, State.IN_REVIEW, State.QUEUED, State.QUARANTINED, State.BLOCKED}),
    State.HELD: frozenset({State.QUEUED, State.QUARANTINED}),
    State.IN_REVIEW: frozenset({State.QUEUED, State.HELD, State.DISMISSED}),
    State.QUEUED: frozenset({State.DELIVERED, State.FORWARDED, State.FAILED}),
    State.FAILED: frozenset({State.QUEUED}),
    State.QUARANTINED: frozenset({State.RECEIVED}),
    State.DELIVERED: frozenset(),
    State.FORWARDED: frozenset(),
    State.DISMISSED: frozenset(),
    # The Head may still let a blocked message through.
    State.BLOCKED: frozenset({State.QUEUED, State.HELD}),
}


def allowed(src: State, dst: State) -> bool:
    return dst in TRANSITIONS[src]
