"""IMAP bookkeeping in the store: checkpoints committed with the messages they cover, and mailbox status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store.models import CheckpointRow, MessageRow


def checkpoint(session: Session, mailbox: str) -> tuple[int, int] | None:
    row = session.get(CheckpointRow, mailbox)
    if row is None or row.uidvalidity == 0:
        return None
    return int(row.uidvalidity), int(row.last_uid)


def already_stored(session: Session, mailbox: str, message_id: str | None, sha256: str) -> bool:
    """Same mailbox, same content, same Message-ID: the one we have (how a UIDVALIDITY change re-syncs)."""
    query = select(MessageRow.id).where(MessageRow.mailbox == mailbox, MessageRow.sha256 == sha256)
    if message_id is not None:
        query = query.where(MessageRow.message_id == message_id)
    return session.scalar(query.limit(1)) is not None


def advance(session: Session, mailbox: str, uidvalidity: int, last_uid: int, now: datetime) -> None:
    """Move the checkpoint; for an unchanged UIDVALIDITY it never moves backwards."""
    row = session.get(CheckpointRow, mailbox)
    if row is None:
        session.add(CheckpointRow(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid, ok=1, detail="",
                                  updated_at=now))
        return
    if row.uidvalidity == uidvalidity:
        row.last_uid = max(int(row.last_uid), last_uid)
    else:
        row.uidvalidity, row.last_uid = uidvalidity, last_uid
    row.updated_at = now


def report(session: Session, mailbox: str, ok: bool, detail: str, now: datetime) -> None:
    row = session.get(CheckpointRow, mailbox)
    if row is None:
        row = CheckpointRow(mailbox=mailbox, uidvalidity=0, last_uid=0, ok=1, detail="", updated_at=now)
        session.add(row)
    row.ok, row.detail, row.updated_at = (1 if ok else 0), detail[:500], now


def status(session: Session) -> list[tuple[str, bool, str, datetime, int, int]]:
    return [(r.mailbox, bool(r.ok), r.detail, r.updated_at, int(r.uidvalidity), int(r.last_uid))
            for r in session.scalars(select(CheckpointRow).order_by(CheckpointRow.mailbox))]
