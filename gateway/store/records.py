"""Incident records and the record of erasures: what the school keeps as evidence of its decisions.

An incident names the message (by id; it outlives the message under its own retention), the family, the
child(ren) from the directory at the time, the category, the rules' reasons, the action taken and by
whom. It never holds the message's body. An erasure record says only that and when a family's data was
erased, and by whom; never what was erased.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (JSON, Column, Engine, Index, Integer, LargeBinary, MetaData, String, Table, Text, cast, delete, func,
                        literal, or_, select)
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


def follow_up(session: Session, message: int, action: str, actor: str) -> None:
    """A person's later action on a message recorded as an incident (the Head releases, dismisses or
    forwards it): added to the incident's action, and that person becomes its staff member."""
    for row in session.scalars(select(IncidentRow).where(IncidentRow.message == message,
                                                         IncidentRow.source == "auto")):
        row.action = f"{row.action}; then {action}"[:4000]
        row.actor = actor


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


# ---- A family's data: what export gathers and erase removes. --------------------------------------

def _casework() -> tuple[Any, Any, Any, Any, Any]:
    from gateway.store.models import BlockNoticeRow, BlockRow, LetterRow, PlanRow, StageRow
    return PlanRow, BlockRow, StageRow, LetterRow, BlockNoticeRow


def family_message_ids(session: Session, school: str, key: str, addresses: list[str]) -> list[int]:
    """Every message from or about the family: triaged as the family's, or sent from one of its addresses."""
    where: list[Any] = [(MessageRow.school == school) & (MessageRow.family == key)]
    if addresses:
        where.append(MessageRow.family.in_(addresses))
        where.append(func.lower(MessageRow.mail_from).in_(addresses))
    return list(session.scalars(select(MessageRow.id).where(or_(*where)).order_by(MessageRow.id)))


def row_dict(row: Any) -> dict[str, Any]:
    """A row as JSON-ready values (dates as ISO-8601 text, bytes left out)."""
    out: dict[str, Any] = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if isinstance(value, (bytes, bytearray, memoryview)):
            continue
        out[column.key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


@dataclass
class FamilyData:
    messages: list[MessageRow]
    events: dict[int, list[dict[str, Any]]]
    outbox: dict[int, list[dict[str, Any]]]
    incidents: list[dict[str, Any]]
    directory: list[dict[str, Any]]
    acknowledgements: list[dict[str, Any]]
    plans: list[dict[str, Any]]
    blocks: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    letters: list[dict[str, Any]]


def family_data(session: Session, school: str, key: str, addresses: list[str]) -> FamilyData:
    """Everything held about a family (UK GDPR art. 15), read in one transaction."""
    from gateway.store.models import AckRow, EventRow, OutboxRow
    PlanRow, BlockRow, StageRow, LetterRow, _ = _casework()
    ids = family_message_ids(session, school, key, addresses)
    messages = list(session.scalars(select(MessageRow).where(MessageRow.id.in_(ids)).order_by(MessageRow.id))) if ids else []
    events: dict[int, list[dict[str, Any]]] = {}
    outbox: dict[int, list[dict[str, Any]]] = {}
    if ids:
        for e in session.scalars(select(EventRow).where(EventRow.message.in_(ids)).order_by(EventRow.id)):
            events.setdefault(e.message, []).append(row_dict(e))
        for o in session.scalars(select(OutboxRow).where(OutboxRow.message.in_(ids)).order_by(OutboxRow.id)):
            if o.message is not None:
                outbox.setdefault(o.message, []).append(row_dict(o))
    def family_where(model: Any) -> Any:
        return (model.school == school) & (model.family_id == key)
    blocks_where: list[Any] = [family_where(BlockRow)]
    if addresses:
        blocks_where.append(BlockRow.address.in_(addresses))
    return FamilyData(
        messages=messages, events=events, outbox=outbox,
        incidents=[row_dict(r) for r in incidents_of(session, school, key, addresses, ids)],
        directory=[row_dict(r) for r in session.scalars(select(FamilyRow).where(
            or_(family_where(FamilyRow), FamilyRow.email.in_(addresses or [""]))).order_by(FamilyRow.id))],
        acknowledgements=[row_dict(r) for r in session.scalars(select(AckRow).where(
            AckRow.sender.in_(addresses or [""])).order_by(AckRow.id))],
        plans=[row_dict(r) for r in session.scalars(select(PlanRow).where(family_where(PlanRow)).order_by(PlanRow.id))],
        blocks=[row_dict(r) for r in session.scalars(select(BlockRow).where(or_(*blocks_where)).order_by(BlockRow.id))],
        stages=[row_dict(r) for r in session.scalars(select(StageRow).where(family_where(StageRow)).order_by(StageRow.id))],
        letters=[row_dict(r) for r in session.scalars(select(LetterRow).where(family_where(LetterRow)).order_by(LetterRow.id))])


ERASED = "[erased]"


def erase_family(session: Session, *, school: str, key: str, known: bool, addresses: list[str],
                 names: list[str], actor: str, now: datetime) -> tuple[int, int]:
    """Remove the family's messages and personal data; keep its incidents without their content or the
    family's addresses; record that an erasure happened. Returns (messages erased, incidents kept)."""
    from gateway.store.console import ConsoleLinkRow
    from gateway.store.models import AckRow, EventRow, OutboxRow, ThreadRow
    PlanRow, BlockRow, StageRow, LetterRow, BlockNoticeRow = _casework()
    if session.get_bind().dialect.name == "sqlite":
        # Deleted rows' bytes are overwritten in the file, not only unlinked (SQLite's secure_delete).
        session.connection().exec_driver_sql("PRAGMA secure_delete = ON")
    ids = family_message_ids(session, school, key, addresses)
    kept = incidents_of(session, school, key, addresses, ids)
    needles = [n for n in dict.fromkeys([*addresses, *names]) if n]
    for incident in kept:
        incident.subject = None
        incident.parent_email = None
        incident.family = None if (not known or "@" in (incident.family or "")) else incident.family
        incident.reasons = [{"rule": r.get("rule", ""), "evidence": ""} for r in incident.reasons or ()]
        incident.action = scrub(incident.action or "", needles)
        incident.note = scrub(incident.note or "", needles)
        incident.erased_at = now
    letters = list(session.scalars(select(LetterRow).where(LetterRow.school == school, LetterRow.family_id == key)))
    letter_outbox = [r.outbox for r in letters if r.outbox is not None]
    if ids:
        session.execute(delete(EventRow).where(EventRow.message.in_(ids)))
        session.execute(delete(OutboxRow).where(OutboxRow.message.in_(ids)))
        session.execute(delete(MessageRow).where(MessageRow.id.in_(ids)))
    if letter_outbox:
        session.execute(delete(OutboxRow).where(OutboxRow.id.in_(letter_outbox)))
    if addresses:
        session.execute(delete(OutboxRow).where(OutboxRow.ack_sender.in_(addresses)))
        session.execute(delete(AckRow).where(AckRow.sender.in_(addresses)))
        session.execute(delete(BlockNoticeRow).where(BlockNoticeRow.sender.in_(addresses)))
        session.execute(delete(BlockRow).where(BlockRow.address.in_(addresses)))
        session.execute(delete(ThreadRow).where(ThreadRow.family.in_(addresses)))
        session.execute(delete(FamilyRow).where(FamilyRow.email.in_(addresses)))
        session.execute(delete(ConsoleLinkRow).where(func.lower(ConsoleLinkRow.email).in_(addresses)))
    session.execute(delete(ThreadRow).where(ThreadRow.school == school, ThreadRow.family == key))
    for model in (PlanRow, BlockRow, StageRow, LetterRow, FamilyRow):
        session.execute(delete(model).where(model.school == school, model.family_id == key))
    session.flush()
    # Whatever still names them (an event on another message, a letter's outbox row, a table added
    # since): text is rewritten without them, and a stored email about them is removed.
    tables = {t.name: t for t in _tables(session)}
    # A row of any other table that points at an erased message (a digest entry, a notice) goes with it.
    for other in tables.values():
        pointer = other.columns.get("message")
        if ids and other.name not in ("incidents", "messages") and pointer is not None \
                and isinstance(pointer.type, Integer):
            session.execute(other.delete().where(pointer.in_(ids)))
    for name, column_name, pk in leftovers(session, needles):
        _scrub_cell(session, tables[name], column_name, pk, needles)
    session.add(ErasureRow(school=school, at=now, actor=actor, messages=len(ids), incidents_kept=len(kept)))
    session.flush()
    if session.get_bind().dialect.name == "sqlite":
        # The deletes are done (and their pages overwritten); the pooled connection goes back as it was.
        session.connection().exec_driver_sql("PRAGMA secure_delete = OFF")
    return len(ids), len(kept)


def scrub(text: str, needles: list[str]) -> str:
    """`text` with each needle, as a whole word or address (any case), replaced by "[erased]"."""
    for needle in needles:
        pattern = (r"\b" if needle[:1].isalnum() else "") + re.escape(needle) + (r"\b" if needle[-1:].isalnum() else "")
        text = re.sub(pattern, ERASED, text, flags=re.IGNORECASE)
    return text


def _scrub_value(value: Any, needles: list[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, needles)
    if isinstance(value, list):
        return [_scrub_value(v, needles) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, needles) for k, v in value.items()}
    return value


def _tables(session: Session) -> list[Table]:
    """Every table in the database as it is (reflected), including those no module here declares."""
    meta = MetaData()
    meta.reflect(bind=session.connection())
    return [t for t in meta.sorted_tables if t.name != "alembic_version"]


def _kind(column: Column[Any]) -> str | None:
    kind = column.type
    if isinstance(kind, LargeBinary):
        return "bytes"
    if isinstance(kind, (JSON,)):
        return "json"
    if isinstance(kind, (String, Text)):
        return "text"
    return None


def leftovers(session: Session, needles: list[str]) -> list[tuple[str, str, tuple[Any, ...]]]:
    """Every (table, column, primary key) whose value contains one of `needles` (case-insensitive for
    text, byte for byte in binary columns): the check that an erasure left nothing."""
    found: list[tuple[str, str, tuple[Any, ...]]] = []
    if not needles:
        return found
    postgres = session.get_bind().dialect.name == "postgresql"
    for table in _tables(session):
        pk = list(table.primary_key.columns)
        for column in table.columns:
            kind = _kind(column)
            if kind is None:
                continue
            for needle in needles:
                if kind == "bytes":
                    variants = [v.encode() for v in dict.fromkeys((needle, needle.lower()))]
                    test = or_(*[(func.position(literal(v).op("IN")(column)) > 0) if postgres
                                 else (func.instr(column, literal(v)) > 0) for v in variants])
                else:
                    test = func.lower(cast(column, Text)).contains(needle.lower(), autoescape=True)
                if pk:
                    found.extend((table.name, column.name, tuple(r)) for r in session.execute(select(*pk).where(test)))
                elif session.execute(select(func.count()).select_from(table).where(test)).scalar():
                    found.append((table.name, column.name, ()))
    return list(dict.fromkeys(found))


def _scrub_cell(session: Session, table: Table, column_name: str, pk_values: tuple[Any, ...],
                needles: list[str]) -> None:
    table_name = table.name
    column = table.columns[column_name]
    pk = list(table.primary_key.columns)
    if not pk:
        return
    where = [c == v for c, v in zip(pk, pk_values)]
    kind = _kind(column)
    if kind == "bytes":
        # A stored email that names them (a copy, a letter): about the family, so removed, unless it is
        # a message of another sender, which is that sender's and is left for its own retention.
        if table_name != "messages":
            session.execute(table.delete().where(*where))
        return
    value = session.execute(select(column).where(*where)).scalar()
    if kind == "json" and isinstance(value, str):
        import json
        value = json.dumps(_scrub_value(json.loads(value), needles))
    else:
        value = _scrub_value(value, needles)
    session.execute(table.update().where(*where).values({column_name: value}))


def checkpoint(engine: Engine) -> None:
    """After an erasure on SQLite: the write-ahead log's copies of the old pages are folded into the
    file and the log emptied (outside any transaction, as SQLite requires; a reader still busy with
    it only means the next checkpoint finishes the job)."""
    if engine.dialect.name != "sqlite":
        return
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        connection.close()


# ---- The console's family page. -----------------------------------------------------------------

@dataclass(frozen=True)
class FamilyMessage:
    id: int
    state: str
    route: str | None
    received_at: datetime
    head: bytes


@dataclass(frozen=True)
class FamilyOverview:
    school: str
    key: str
    known: bool
    members: tuple[tuple[str, str], ...]
    children: tuple[tuple[str, str], ...]
    half_terms: tuple[tuple[str, int], ...]
    messages: tuple[FamilyMessage, ...]
    incidents: tuple[Incident, ...]
    stages: tuple[dict[str, Any], ...]
    plan: dict[str, Any] | None
    blocks: tuple[dict[str, Any], ...]


def family_overview(session: Session, schools: frozenset[str], key: str, now: datetime,
                    limit: int = 100) -> FamilyOverview | None:
    """A family of one of these schools (by family id, or an unknown sender's address), or None."""
    from gateway.store.console import _first_bytes, _head
    PlanRow, BlockRow, StageRow, _, _ = _casework()
    if not schools:
        return None
    rows = list(session.scalars(select(FamilyRow).where(FamilyRow.family_id == key, FamilyRow.school.in_(
        sorted(schools))).order_by(FamilyRow.id)))
    if rows:
        school, known = rows[0].school, True
        rows = [r for r in rows if r.school == school]
    else:
        found = session.scalar(select(MessageRow.school).where(
            MessageRow.family == key, MessageRow.school.in_(sorted(schools))).limit(1))
        if found is None:
            return None
        school, known = found, False
    addresses = [r.email for r in rows] if known else [key]
    members = tuple(dict.fromkeys((r.email, r.parent_name) for r in rows)) if known else ((key, ""),)
    counted = session.execute(select(MessageRow.half_term, func.count()).where(
        MessageRow.school == school, MessageRow.family == key, MessageRow.counted == 1).group_by(
        MessageRow.half_term).order_by(MessageRow.half_term))
    ids = family_message_ids(session, school, key, addresses)
    messages = [FamilyMessage(r.id, r.state, r.route, r.received_at, _head(bytes(r.head))) for r in session.execute(
        select(MessageRow.id, MessageRow.state, MessageRow.route, MessageRow.received_at, _first_bytes()).where(
            MessageRow.id.in_(ids[-limit:])).order_by(MessageRow.id.desc()))] if ids else []
    kept = [_incident(r) for r in incidents_of(session, school, key, addresses, ids)]
    plan = session.scalars(select(PlanRow).where(PlanRow.school == school, PlanRow.family_id == key,
                                                 PlanRow.ended_at.is_(None)).order_by(PlanRow.id.desc())).first()
    blocks = session.scalars(select(BlockRow).where(
        or_((BlockRow.school == school) & (BlockRow.family_id == key), BlockRow.address.in_(addresses)),
        BlockRow.lifted_at.is_(None), or_(BlockRow.until.is_(None), BlockRow.until > now)).order_by(BlockRow.id))
    stages = session.scalars(select(StageRow).where(StageRow.school == school, StageRow.family_id == key)
                             .order_by(StageRow.id.desc()))
    return FamilyOverview(
        school=school, key=key, known=known, members=members,
        children=tuple((c["name"], c["year_group"]) for c in children_of(session, school, key if known else None)),
        half_terms=tuple((str(h or "").split(" ", 1)[-1], int(n)) for h, n in counted),
        messages=tuple(messages), incidents=tuple(reversed(kept)), stages=tuple(row_dict(s) for s in stages),
        plan=row_dict(plan) if plan is not None else None, blocks=tuple(row_dict(b) for b in blocks))
