"""Delivery status notifications in the outbox: added at most once per message, on either backend."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.domain.states import OutboxState
from gateway.store.models import OutboxRow

DSN_KIND = "dsn"


def add_dsn_once(session: Session, *, message: int, rcpt: str, payload: bytes, now: datetime) -> bool:
    """Queue a DSN for `message` to `rcpt` from the null reverse-path, unless the message already has
    one. True when this call added it.

    The unique index ix_outbox_one_dsn makes "at most one" hold across processes and gateways; the
    conflict is skipped in the statement itself (ON CONFLICT DO NOTHING), so a second writer neither
    fails nor spoils the transaction that records its delivery outcomes.
    """
    values = dict(message=message, kind=DSN_KIND, mail_from="", rcpts=[rcpt], payload=payload,
                  state=OutboxState.PENDING.value, not_before=now, created_at=now, attempts=0)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(OutboxRow).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(OutboxRow).values(**values).on_conflict_do_nothing()
    else:
        stmt = insert(OutboxRow).values(**values)
    # RETURNING says whether a row was written: a skipped conflict returns none (rowcount is not
    # reliable for ON CONFLICT across drivers).
    return session.execute(stmt.returning(OutboxRow.id)).first() is not None
