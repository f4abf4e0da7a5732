"""What parentgate remembers about people: families, threads, half-term counts and acknowledgements sent."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Collection

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from gateway.store.models import AckRow, FamilyRow, MessageRow, OutboxRow, ThreadRow

CSV_COLUMNS = ("family_id", "email", "parent_name", "child_name", "year_group", "school")
_SUBJECT_PREFIX = re.compile(
    r"^\s*((re|fw|fwd|aw|wg|sv|vs|tr|rv|antw|odp|res|enc|auto|automatic reply|réf|ref)\s*(\[\d+\])?\s*:\s*)+",
    re.IGNORECASE)


def normalise_address(address: str) -> str:
    """Lower-case and drop a +tag, so parent+school@example.com is parent@example.com."""
    local, sep, domain = address.strip().strip("<>").lower().rpartition("@")
    if not sep:
        return address.strip().lower()
    return f"{local.split('+', 1)[0]}@{domain}"


def subject_key(subject: str) -> str:
    """The thread key from a subject: Re:/Fwd:/Auto: and their common translations stripped."""
    text = _SUBJECT_PREFIX.sub("", subject or "")
    return re.sub(r"\s+", " ", text).strip().lower()[:255]


@dataclass(frozen=True)
class Family:
    key: str
    label: str
    known: bool
    parent_names: tuple[str, ...]
    children: tuple[str, ...]


class ImportProblem(ValueError):
    pass


def import_families(session: Session, text: str, known_schools: set[str],
                    aliases: dict[str, str] | None = None) -> dict[str, int]:
    """Replace each school's directory with the CSV's rows for it. Returns rows per school."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ImportProblem(f"missing column(s): {', '.join(missing)}")
    rows: dict[str, list[FamilyRow]] = {}
    for n, rec in enumerate(reader, start=2):
        school = (aliases or {}).get(rec["school"].strip(), rec["school"].strip())
        if school not in known_schools:
            raise ImportProblem(f"line {n}: school {rec['school']!r} is not in the configuration")
        email, family_id = rec["email"].strip(), rec["family_id"].strip()
        if "@" not in email or not family_id:
            raise ImportProblem(f"line {n}: needs a family_id and an email address")
        rows.setdefault(school, []).append(FamilyRow(
            school=school, family_id=family_id, email=normalise_address(email),
            parent_name=rec["parent_name"].strip(), child_name=rec["child_name"].strip(),
            year_group=rec["year_group"].strip()))
    for school, items in rows.items():
        session.execute(delete(FamilyRow).where(FamilyRow.school == school))
        session.add_all(items)
    return {school: len(items) for school, items in rows.items()}


def family_for(session: Session, school: str, address: str) -> Family:
    """The sender's family in this school; an unknown sender is its own family."""
    email = normalise_address(address)
    row = session.scalar(select(FamilyRow).where(FamilyRow.school == school, FamilyRow.email == email).limit(1))
    if row is None:
        return Family(key=email, label=email or "an unknown sender", known=False, parent_names=(), children=())
    members = list(session.scalars(select(FamilyRow).where(FamilyRow.school == school,
                                                           FamilyRow.family_id == row.family_id)))
    parents = tuple(dict.fromkeys(m.parent_name for m in members if m.parent_name))
    children = tuple(dict.fromkeys(m.child_name for m in members if m.child_name))
    surname = (parents[0].split()[-1] if parents else row.family_id)
    return Family(key=row.family_id, label=f"the {surname} family", known=True, parent_names=parents,
                  children=children)


def family_members(session: Session, key: str) -> list[FamilyRow]:
    return list(session.scalars(select(FamilyRow).where(
        or_(FamilyRow.family_id == key, FamilyRow.email == normalise_address(key)))))


def count_family(session: Session, school: str, family: str, half_term: str,
                 exclude: Collection[int] = ()) -> int:
    """Human messages already counted for this family in this half-term (across all staff).

    `exclude`: message ids not to count (a batch being triaged keeps its own tally of them)."""
    query = select(func.count()).select_from(MessageRow).where(
        MessageRow.school == school, MessageRow.family == family, MessageRow.half_term == half_term,
        MessageRow.counted == 1)
    if exclude:
        query = query.where(MessageRow.id.not_in(exclude))
    return int(session.scalar(query) or 0)


def thread_by_refs(session: Session, school: str, ref_ids: list[str]) -> int | None:
    """The thread of a message this one refers to (References / In-Reply-To), if we have one."""
    if not ref_ids:
        return None
    found = session.scalar(select(MessageRow.thread_id).where(
        MessageRow.school == school, MessageRow.message_id.in_(ref_ids[-50:]),
        MessageRow.thread_id.is_not(None)).limit(1))
    return int(found) if found is not None else None


def thread_by_subject(session: Session, *, school: str, family: str, key: str, now: datetime,
                      create: bool) -> int | None:
    """The family's thread with this subject key, created when asked for and missing."""
    row = session.scalar(select(ThreadRow).where(ThreadRow.school == school, ThreadRow.family == family,
                                                 ThreadRow.subject_key == key).limit(1))
    if row is None:
        if not create:
            return None
        row = ThreadRow(school=school, family=family, subject_key=key, created_at=now)
        session.add(row)
        session.flush()
    return row.id


def count_thread(session: Session, thread_id: int, exclude: Collection[int] = ()) -> int:
    query = select(func.count()).select_from(MessageRow).where(MessageRow.thread_id == thread_id,
                                                                MessageRow.counted == 1)
    if exclude:
        query = query.where(MessageRow.id.not_in(exclude))
    return int(session.scalar(query) or 0)


def acknowledged_recently(session: Session, sender: str, kind: str, since: datetime) -> bool:
    """Sent, or already handed to the outbox, within the period (RFC 3834 §2: once per period)."""
    sent = session.scalar(select(AckRow.id).where(AckRow.sender == sender, AckRow.kind == kind,
                                                  AckRow.sent_at >= since).limit(1))
    if sent is not None:
        return True
    pending = session.scalar(select(OutboxRow.id).where(
        OutboxRow.ack_sender == sender, OutboxRow.ack_kind == kind, OutboxRow.created_at >= since,
        OutboxRow.state != "failed").limit(1))
    return pending is not None


def acknowledgements_today(session: Session, sender: str, now: datetime) -> int:
    """All acknowledgements of any kind to one sender in the last day: the throttle backstop."""
    return int(session.scalar(select(func.count()).select_from(OutboxRow).where(
        OutboxRow.ack_sender == sender, OutboxRow.created_at >= now - timedelta(days=1))) or 0)


def record_acknowledgement(session: Session, *, school: str, sender: str, kind: str, now: datetime,
                           message: int | None) -> None:
    session.add(AckRow(school=school, sender=sender, kind=kind, sent_at=now, message=message))
