"""What the DSL's digest reads and records: flagged messages not yet digested, and the event that says
they were, written in the same transaction as the digest's outbox row (so each is digested once).

No new table: a message's digest is an event on it (`DIGEST_ACTOR`), like "seen" or "forwarded".
"""

from __future__ import annotations

import zlib
from datetime import datetime

from sqlalchemy import String, cast, exists, func, select, text
from sqlalchemy.orm import Session, defer

from gateway.domain.findings import Flag, Route
from gateway.domain.states import State
from gateway.store.models import EventRow, MessageRow, OutboxRow
from gateway.store.queue import record

DIGEST_ACTOR = "dsl-digest"
# States a message may be in before its flags are final: triage has not written them yet.
_NOT_YET_TRIAGED = (State.RECEIVED.value, State.QUARANTINED.value)


def lock_digests(session: Session, school: str) -> None:
    """On PostgreSQL, one digest writer per school at a time across gateways (a transaction-level
    advisory lock): the second one waits, then sees the first one's events and lists nothing twice.
    SQLite has one writer anyway."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"parentgate-dsl-digest:{school}".encode()) - 2**31
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def scan_floor(session: Session) -> int:
    """The lowest id that could still become flagged: a message not yet triaged, else the next id.

    Messages below it have their flags written already, so a scan that starts here (and at any
    flagged message still waiting for its digest) misses nothing. Read from the (state, id) index
    and the primary key, never the table."""
    waiting = session.scalar(select(func.min(MessageRow.id)).where(MessageRow.state.in_(_NOT_YET_TRIAGED)))
    if waiting is not None:
        return int(waiting)
    return int(session.scalar(select(func.max(MessageRow.id))) or 0) + 1


def undigested(session: Session, school: str, *, from_id: int = 0) -> list[MessageRow]:
    """The school's messages flagged `possible-safeguarding`, not routed to the DSL and not yet in a
    digest, oldest first, without their bytes (the digest never carries a message's body)."""
    digested = exists().where(EventRow.message == MessageRow.id, EventRow.actor == DIGEST_ACTOR)
    query = (select(MessageRow).options(defer(MessageRow.raw))
             .where(MessageRow.school == school, MessageRow.id >= from_id,
                    MessageRow.state.not_in(_NOT_YET_TRIAGED),
                    cast(MessageRow.flags, String).like(f'%"{Flag.POSSIBLE_SAFEGUARDING.value}"%'),
                    MessageRow.route.is_distinct_from(Route.DSL.value), ~digested)
             .order_by(MessageRow.id))
    return list(session.scalars(query))


def record_digest(session: Session, rows: list[MessageRow], outbox: OutboxRow, now: datetime) -> None:
    """The digest's outbox row and, on each message, the event saying which digest listed it."""
    session.add(outbox)
    session.flush()
    for row in rows:
        record(session, row, actor=DIGEST_ACTOR, now=now,
               reason=f"listed in the DSL's digest of possible safeguarding concerns (outbox {outbox.id})")


def digested_in(session: Session, message_id: int) -> list[str]:
    """The reasons of the digest events of a message (for `show` and the tests)."""
    return list(session.scalars(select(EventRow.reason).where(EventRow.message == message_id,
                                                              EventRow.actor == DIGEST_ACTOR)
                                .order_by(EventRow.id)))
