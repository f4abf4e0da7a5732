"""What the store keeps of a family's casework: plans, blocks, stage history and letters.

Queries only; the operator actions that change them are in gateway.casework."""

from __future__ import annotations

from datetime import date, datetime, time

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from gateway.domain.casework import BlockFacts, Casework, PlanFacts, Window
from gateway.store.memory import normalise_address
from gateway.store.models import BlockNoticeRow, BlockRow, FamilyRow, LetterRow, MessageRow, PlanRow, StageRow


def window_of(row: PlanRow) -> Window:
    return Window(day=row.window_day, start=time.fromisoformat(row.window_from),
                  end=time.fromisoformat(row.window_to), fortnightly=bool(row.fortnightly), anchor=row.anchor_week)


def active_plan(session: Session, school: str, family: str) -> PlanRow | None:
    return session.scalar(select(PlanRow).where(PlanRow.school == school, PlanRow.family_id == family,
                                                PlanRow.ended_at.is_(None)).order_by(PlanRow.id.desc()).limit(1))


def latest_plan(session: Session, school: str, family: str) -> PlanRow | None:
    return session.scalar(select(PlanRow).where(PlanRow.school == school, PlanRow.family_id == family)
                          .order_by(PlanRow.id.desc()).limit(1))


def _live(now: datetime):  # type: ignore[no-untyped-def]
    return and_(BlockRow.lifted_at.is_(None), or_(BlockRow.until.is_(None), BlockRow.until > now))


def active_block(session: Session, school: str, family: str | None, address: str, now: datetime) -> BlockRow | None:
    """The block on this sender: on its address (in this school or every school), or on its family."""
    email = normalise_address(address)
    whose = [and_(BlockRow.address == email, BlockRow.school.in_((school, "*")))]
    if family:
        whose.append(and_(BlockRow.school == school, BlockRow.family_id == family))
    return session.scalar(select(BlockRow).where(_live(now), or_(*whose)).order_by(BlockRow.id).limit(1))


def casework_for(session: Session, school: str, family: str, known: bool, address: str, now: datetime) -> Casework:
    """The plan and the block that apply to a message from `address` of `family` (None for neither)."""
    plan = active_plan(session, school, family) if known else None
    block = active_block(session, school, family if known else None, address, now)
    return Casework(
        plan=PlanFacts(plan.id, plan.reader, window_of(plan)) if plan is not None else None,
        block=BlockFacts(block.id, block.until, block.family_id is not None) if block is not None else None)


def plans(session: Session, schools: frozenset[str] | None = None, *, active_only: bool = False) -> list[PlanRow]:
    query = select(PlanRow).order_by(PlanRow.ended_at.is_not(None), PlanRow.review_on, PlanRow.id)
    if schools is not None:
        query = query.where(PlanRow.school.in_(schools))
    if active_only:
        query = query.where(PlanRow.ended_at.is_(None))
    return list(session.scalars(query))


def plans_to_remind(session: Session, today_soon: date) -> list[PlanRow]:
    """Active plans whose review date is at most 14 days away (the caller decides which reminder)."""
    return list(session.scalars(select(PlanRow).where(PlanRow.ended_at.is_(None), PlanRow.review_on <= today_soon)
                                .order_by(PlanRow.id)))


def blocks(session: Session, now: datetime, schools: frozenset[str] | None = None, *,
           active_only: bool = False) -> list[BlockRow]:
    query = select(BlockRow).order_by(BlockRow.id.desc())
    if schools is not None:
        query = query.where(BlockRow.school.in_(tuple(schools) + ("*",)))
    if active_only:
        query = query.where(_live(now))
    return list(session.scalars(query))


def live_blocks_of(session: Session, now: datetime, *, school: str | None, family: str | None,
                   address: str | None) -> list[BlockRow]:
    query = select(BlockRow).where(_live(now))
    if family is not None:
        query = query.where(BlockRow.school == school, BlockRow.family_id == family)
    else:
        query = query.where(BlockRow.address == normalise_address(address or ""))
    return list(session.scalars(query))


def stage_of(session: Session, school: str, family: str) -> StageRow | None:
    return session.scalar(select(StageRow).where(StageRow.school == school, StageRow.family_id == family)
                          .order_by(StageRow.id.desc()).limit(1))


def stage_history(session: Session, school: str, family: str) -> list[StageRow]:
    return list(session.scalars(select(StageRow).where(StageRow.school == school, StageRow.family_id == family)
                                .order_by(StageRow.id)))


def letters_of(session: Session, school: str, family: str) -> list[LetterRow]:
    return list(session.scalars(select(LetterRow).where(LetterRow.school == school, LetterRow.family_id == family)
                                .order_by(LetterRow.id)))


def directory_rows(session: Session, key: str, schools: frozenset[str] | None = None) -> list[FamilyRow]:
    """The directory rows of a family id or of the family of an address (optionally in these schools)."""
    query = select(FamilyRow).where(FamilyRow.family_id == key)
    if schools is not None:
        query = query.where(FamilyRow.school.in_(schools))
    rows = list(session.scalars(query))
    if rows:
        return rows
    by_address = select(FamilyRow).where(FamilyRow.email == normalise_address(key))
    if schools is not None:
        by_address = by_address.where(FamilyRow.school.in_(schools))
    found = session.scalars(by_address).first()
    if found is None:
        return []
    return list(session.scalars(select(FamilyRow).where(FamilyRow.school == found.school,
                                                        FamilyRow.family_id == found.family_id)))



def blocked_counts(session: Session, schools: frozenset[str] | None = None) -> dict[int, int]:
    """How many messages each block has kept (state `blocked`), by block id."""
    query = select(MessageRow.school, MessageRow.family, MessageRow.mail_from).where(MessageRow.state == "blocked")
    if schools is not None:
        query = query.where(MessageRow.school.in_(schools))
    kept = session.execute(query).all()
    counts: dict[int, int] = {}
    for row in session.scalars(select(BlockRow)):
        counts[row.id] = sum(1 for school, family, sender in kept
                             if (row.family_id is not None and school == row.school and family == row.family_id)
                             or (row.address is not None and row.school in (school, "*")
                                 and normalise_address(sender or "") == row.address))
    return counts


def record_block_notice(session: Session, *, school: str, sender: str, now: datetime, message: int | None) -> None:
    session.add(BlockNoticeRow(school=school, sender=sender, sent_at=now, message=message))


def notices_sent(session: Session, sender: str, since: datetime) -> int:
    return int(session.scalar(select(func.count()).select_from(BlockNoticeRow).where(
        BlockNoticeRow.sender == sender, BlockNoticeRow.sent_at >= since)) or 0)
