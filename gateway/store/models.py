"""The database schema (SQLAlchemy 2). The store package is the only user of SQLAlchemy."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (JSON, BigInteger, Date, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from gateway.store.columns import SafeJSON, SafeString, SafeText
from datetime import timezone
from typing import Any


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, whatever the backend stores (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class MessageRow(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(8))
    mailbox: Mapped[str | None] = mapped_column(SafeString(255))
    folder: Mapped[str | None] = mapped_column(SafeString(255))
    mail_from: Mapped[str] = mapped_column(SafeString(512))
    rcpt_tos: Mapped[list[str]] = mapped_column(SafeJSON)
    peer: Mapped[str | None] = mapped_column(SafeString(128))
    helo: Mapped[str | None] = mapped_column(SafeString(255))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(SafeString(998))
    state: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    release_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    route: Mapped[str | None] = mapped_column(String(16))
    tone: Mapped[str | None] = mapped_column(String(16))
    flags: Mapped[list[str] | None] = mapped_column(SafeJSON)
    reasons: Mapped[list[dict[str, str]] | None] = mapped_column(SafeJSON)
    rules_digest: Mapped[str | None] = mapped_column(String(64))
    family: Mapped[str | None] = mapped_column(SafeString(320))
    half_term: Mapped[str | None] = mapped_column(SafeString(64))
    counted: Mapped[int] = mapped_column(Integer, default=0)
    thread_id: Mapped[int | None] = mapped_column(Integer)
    # internal | family | unknown (gateway.domain.senders), set at triage.
    sender_class: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(SafeText)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claims: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_messages_state", "state", "id"),
        Index("ix_messages_release", "state", "release_at"),
        Index("ix_messages_message_id", "message_id"),
        # `counted` is in both so that the family and thread counts are read from the index alone.
        Index("ix_messages_family", "school", "family", "half_term", "counted"),
        Index("ix_messages_thread", "thread_id", "counted"),
        Index("ix_messages_mailbox", "mailbox", "sha256"),
    )


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(SafeString(64))
    reason: Mapped[str] = mapped_column(SafeText, default="")

    __table_args__ = (Index("ix_events_message", "message", "id"),)


class OutboxRow(Base):
    """One outbound action of a message: a delivery, a copy, an acknowledgement, a notice, an IMAP move."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # None for mail the gateway writes for a family rather than for a message (letters, reminders).
    message: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    mail_from: Mapped[str] = mapped_column(SafeString(512))
    rcpts: Mapped[list[str]] = mapped_column(SafeJSON)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    params: Mapped[dict[str, Any] | None] = mapped_column(SafeJSON)
    state: Mapped[str] = mapped_column(String(16))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(SafeString(512))
    ack_sender: Mapped[str | None] = mapped_column(SafeString(320))
    ack_kind: Mapped[str | None] = mapped_column(String(16))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_outbox_due", "state", "not_before"),
        Index("ix_outbox_message", "message"),
        Index("ix_outbox_ack", "ack_sender", "ack_kind"),
        # At most one delivery status notification per message, whichever gateway writes it (RFC 3464
        # bounces must not multiply): the database refuses a second, see store.reports.
        Index("ix_outbox_one_dsn", "message", unique=True, sqlite_where=text("kind = 'dsn'"),
              postgresql_where=text("kind = 'dsn'")),
    )


class AckRow(Base):
    """Acknowledgements handed to delivery: the RFC 3834 once-per-period memory."""

    __tablename__ = "acknowledgements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(SafeString(320))
    kind: Mapped[str] = mapped_column(String(16))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_ack_sender", "sender", "kind", "sent_at"),)


class FamilyRow(Base):
    """One parent address for one child, as imported from the school's CSV."""

    __tablename__ = "families"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(SafeString(128))
    email: Mapped[str] = mapped_column(SafeString(320))
    parent_name: Mapped[str] = mapped_column(SafeString(255), default="")
    child_name: Mapped[str] = mapped_column(SafeString(255), default="")
    year_group: Mapped[str] = mapped_column(SafeString(64), default="")

    __table_args__ = (Index("ix_families_email", "email"), Index("ix_families_family", "school", "family_id"))


class ThreadRow(Base):
    __tablename__ = "threads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(SafeString(320))
    subject_key: Mapped[str] = mapped_column(SafeString(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_threads_key", "school", "family", "subject_key"),)


class CheckpointRow(Base):
    """IMAP bookkeeping: (uidvalidity, last_uid) committed with the messages it covers."""

    __tablename__ = "imap_checkpoints"

    mailbox: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    ok: Mapped[int] = mapped_column(Integer, default=1)
    detail: Mapped[str] = mapped_column(SafeString(512), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("mailbox"),)


class PlanRow(Base):
    """A family's communication plan (policy 003): its mail waits for a weekly or fortnightly reading
    window and goes to the reader. Ended, never deleted: the history is the school's evidence."""

    __tablename__ = "family_plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(SafeString(128))
    reader: Mapped[str] = mapped_column(SafeString(320))
    # Monday 0 … Sunday 6, and "HH:MM" in the school's timezone.
    window_day: Mapped[int] = mapped_column(Integer)
    window_from: Mapped[str] = mapped_column(String(5))
    window_to: Mapped[str] = mapped_column(String(5))
    fortnightly: Mapped[int] = mapped_column(Integer, default=0)
    # The Monday of a week whose window is open (fortnightly plans skip the weeks in between).
    anchor_week: Mapped[date] = mapped_column(Date)
    starts_on: Mapped[date] = mapped_column(Date)
    review_on: Mapped[date] = mapped_column(Date)
    note: Mapped[str] = mapped_column(SafeText, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(SafeString(320))
    # Review reminders already sent, as "soon,due" (review - 14 days, the day itself).
    reminded: Mapped[str] = mapped_column(String(64), default="")
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[str | None] = mapped_column(SafeString(320))
    end_note: Mapped[str | None] = mapped_column(SafeText)

    __table_args__ = (Index("ix_family_plans_family", "school", "family_id", "ended_at"),)


class BlockRow(Base):
    """A block on one address (any school when `school` is "*") or on a whole family (policy 003)."""

    __tablename__ = "family_blocks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str | None] = mapped_column(SafeString(128))
    address: Mapped[str | None] = mapped_column(SafeString(320))
    note: Mapped[str] = mapped_column(SafeText, default="")
    # The block lifts itself at this instant (the start of its end date, school time).
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(SafeString(320))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lifted_by: Mapped[str | None] = mapped_column(SafeString(320))
    lift_note: Mapped[str | None] = mapped_column(SafeText)

    __table_args__ = (Index("ix_family_blocks_address", "address", "lifted_at"),
                      Index("ix_family_blocks_family", "school", "family_id", "lifted_at"))


class StageRow(Base):
    """One step of a family's escalation ladder (policies 000 and 002); the latest row is the stage."""

    __tablename__ = "family_stages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(SafeString(128))
    stage: Mapped[str] = mapped_column(String(16))
    until: Mapped[date | None] = mapped_column(Date)
    note: Mapped[str] = mapped_column(SafeText, default="")
    actor: Mapped[str | None] = mapped_column(SafeString(320))
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_family_stages_family", "school", "family_id", "id"),)


class LetterRow(Base):
    """A letter to a family drafted from rules/templates (meeting request, warning, ban), and whether
    and how it was sent."""

    __tablename__ = "family_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    family_id: Mapped[str] = mapped_column(SafeString(128))
    stage: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    draft: Mapped[str] = mapped_column(SafeText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(SafeString(320))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_by: Mapped[str | None] = mapped_column(SafeString(320))
    sent_to: Mapped[list[str] | None] = mapped_column(SafeJSON)
    message_ref: Mapped[str | None] = mapped_column(SafeString(998))
    outbox: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_family_letters_family", "school", "family_id", "id"),)


class BlockNoticeRow(Base):
    """A notice sent to a blocked sender: at most one per sender per 7 days."""

    __tablename__ = "block_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(SafeString(320))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_block_notices_sender", "sender", "sent_at"),)
