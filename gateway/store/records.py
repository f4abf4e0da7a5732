"""Incident records and the record of erasures: what the school keeps as evidence of its decisions.

An incident names the message (by id; it outlives the message under its own retention), the family, the
child(ren) from the directory at the time, the category, the rules' reasons, the action taken and by
whom. It never holds the message's body. An erasure record says only that and when a family's data was
erased, and by whom; never what was erased.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, delete, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from gateway.store.columns import SafeJSON, SafeString, SafeText
from gateway.store.models import Base, FamilyRow, MessageRow, UTCDateTime

AUTOMATIC = "parentgate"


class IncidentRow(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The message's id; no foreign key: an incident is kept for longer than the message may be.
    message: Mapped[int | None] = mapped_column(Integer)
    # The message's subject, so that the school can find it in a mailbox (never its body).
    subject: Mapped[str | None] = mapped_column(SafeString(998))
    family: Mapped[str | None] = mapped_column(SafeString(320))
    parent_email: Mapped[str | None] = mapped_column(SafeString(320))
    # [{"name", "year_group"}] from the family directory when the incident was recorded.
    children: Mapped[list[dict[str, str]] | None] = mapped_column(SafeJSON)
    category: Mapped[str] = mapped_column(String(32))
    reasons: Mapped[list[dict[str, str]] | None] = mapped_column(SafeJSON)
    action: Mapped[str] = mapped_column(SafeText, default="")
    actor: Mapped[str] = mapped_column(SafeString(320))
    # auto (triage), hand (a person), stage (an escalation step).
    source: Mapped[str] = mapped_column(String(8))
    note: Mapped[str] = mapped_column(SafeText, default="")
    # Set when the family's data was erased and this incident kept without content or addresses.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_incidents_school_at", "school", "at"),
                      Index("ix_incidents_family", "school", "family"),
                      Index("ix_incidents_message", "message"))


class ErasureRow(Base):
    """That a family's data was erased, when and by whom (UK GDPR art. 17), and nothing about whom."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    school: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(SafeString(320))
    messages: Mapped[int] = mapped_column(Integer, default=0)
    incidents_kept: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class Incident:
    id: int
    school: str
    at: datetime
    message: int | None
    subject: str | None
    family: str | None
    parent_email: str | None
    children: tuple[tuple[str, str], ...]
    category: str
    reasons: tuple[tuple[str, str], ...]
    action: str
    actor: str
    source: str
    note: str
    erased: bool


def _incident(row: IncidentRow) -> Incident:
    return Incident(id=row.id, school=row.school, at=row.at, message=row.message, subject=row.subject,
                    family=row.family, parent_email=row.parent_email,
                    children=tuple((c.get("name", ""), c.get("year_group", "")) for c in row.children or ()),
                    category=row.category, reasons=tuple((r.get("rule", ""), r.get("evidence", ""))
                                                         for r in row.reasons or ()),
                    action=row.action or "", actor=row.actor, source=row.source, note=row.note or "",
                    erased=row.erased_at is not None)


def children_of(session: Session, school: str, family: str | None) -> list[dict[str, str]]:
    """The family's children with their year groups, from the directory (none for an unknown sender)."""
    if not family:
        return []
    rows = session.execute(select(FamilyRow.child_name, FamilyRow.year_group).where(
        FamilyRow.school == school, FamilyRow.family_id == family).order_by(FamilyRow.id))
    found: dict[str, str] = {}
    for name, year in rows:
        if name and name not in found:
            found[name] = year or ""
    return [{"name": n, "year_group": y} for n, y in found.items()]


def subject_of(raw: bytes) -> str:
    """The Subject header of a message's bytes, decoded, on one line ("" when there is none)."""
    from email.parser import BytesHeaderParser
    from email import policy
    try:
        head = BytesHeaderParser(policy=policy.default).parsebytes(raw[:65536])
        return " ".join(str(head.get("subject", "") or "").split())
    except Exception:  # noqa: BLE001 - a header that cannot be decoded is left out, never a failure
        return ""


def record_incident(session: Session, *, school: str, category: str, action: str, actor: str, now: datetime,
                    source: str = "hand", message: MessageRow | None = None, family: str | None = None,
                    parent_email: str | None = None, reasons: list[dict[str, str]] | None = None,
                    note: str = "", subject: str | None = None) -> IncidentRow:
    """One incident, in the caller's transaction. With `message`, its family, sender, subject and
    reasons are taken from it unless given; the children come from the directory."""
    if message is not None:
        family = family if family is not None else message.family
        if parent_email is None:
            parent_email = message.mail_from.lower() or None
        if reasons is None:
            reasons = [{"rule": r.get("rule", ""), "evidence": r.get("evidence", "")} for r in message.reasons or ()]
        if subject is None and message.raw is not None:
            subject = subject_of(message.raw)
    row = IncidentRow(school=school, at=now, message=message.id if message is not None else None, subject=subject,
                      family=family, parent_email=parent_email, children=children_of(session, school, family),
                      category=category, reasons=reasons or [], action=action, actor=actor, source=source,
                      note=note)
    session.add(row)
    return row


def incidents(session: Session, *, schools: frozenset[str] | None = None, since: datetime | None = None,
              until: datetime | None = None, category: str | None = None, family: str | None = None,
              message: int | None = None, limit: int | None = None) -> list[Incident]:
    """Incidents matching the filters, oldest first (newest first when `limit` is given)."""
    query = select(IncidentRow)
    if schools is not None:
        query = query.where(IncidentRow.school.in_(sorted(schools)))
    if since is not None:
        query = query.where(IncidentRow.at >= since)
    if until is not None:
        query = query.where(IncidentRow.at < until)
    if category:
        query = query.where(IncidentRow.category == category)
    if family:
        query = query.where(IncidentRow.family == family)
    if message is not None:
        query = query.where(IncidentRow.message == message)
    query = query.order_by(IncidentRow.id.desc() if limit else IncidentRow.id)
    if limit:
        query = query.limit(limit)
    return [_incident(r) for r in session.scalars(query)]


def incidents_of(session: Session, school: str, family: str, addresses: list[str],
                 message_ids: list[int]) -> list[IncidentRow]:
    """Every incident about a family: by its key, any of its addresses, or any of its messages."""
    where: list[Any] = [IncidentRow.family == family]
    if addresses:
        where.append(IncidentRow.parent_email.in_(addresses))
    if message_ids:
        where.append(IncidentRow.message.in_(message_ids))
    return list(session.scalars(select(IncidentRow).where(IncidentRow.school == school, or_(*where))
                                .order_by(IncidentRow.id)))


def purge_incidents(session: Session, before: datetime, limit: int = 5000) -> int:
    ids = list(session.scalars(select(IncidentRow.id).where(IncidentRow.at < before).limit(limit)))
    if ids:
        session.execute(delete(IncidentRow).where(IncidentRow.id.in_(ids)))
    return len(ids)
