"""Operator actions on a family's casework (policies 000, 002, 003), used by the CLI and the console:
communication plans, blocked senders, the escalation ladder and its letters, plan review reminders.

Each action is one transaction and records who did it, when, and the note they gave. FAMILY is a family
id or any of its addresses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.act.letters import compose_letter, compose_reminder, render_letter
from gateway.config import SchoolConfig
from gateway.decide.acknowledge import make_message_id
from gateway.decide.incidents import NEGATIVE, SAFEGUARDING
from gateway.domain.casework import (LETTERS, STAGE_LABELS, Stage, Window, monday_of, next_window,
                                     parse_window)
from gateway.domain.findings import Route
from gateway.services import ServiceError
from gateway.store import casework as store, records
from gateway.store.memory import normalise_address
from gateway.store.models import BlockRow, FamilyRow, LetterRow, MessageRow, PlanRow, StageRow
from gateway.workers.dispatch import standalone_row
from gateway.workers.runtime import Runtime

# Policy 003: "This will usually be reviewed after six months."
REVIEW_AFTER_MONTHS = 6
REMIND_BEFORE = timedelta(days=14)
# How far back the incidents named in a letter go.
LETTER_LOOKBACK = timedelta(days=365)


@dataclass(frozen=True)
class FamilyRef:
    """A family of the directory: its school, id and members."""

    school: str
    family_id: str
    members: tuple[FamilyRow, ...]

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.email for m in self.members))

    @property
    def parent_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.parent_name for m in self.members if m.parent_name))

    @property
    def children(self) -> tuple[tuple[str, str], ...]:
        return tuple(dict.fromkeys((m.child_name, m.year_group) for m in self.members if m.child_name))


def find_family(session: Session, key: str, schools: frozenset[str] | None = None) -> FamilyRef:
    rows = store.directory_rows(session, key.strip(), schools)
    if not rows:
        raise ServiceError(f"{key}: no such family in the directory (a family id or one of its addresses)")
    return FamilyRef(rows[0].school, rows[0].family_id, tuple(rows))


def _now_local(rt: Runtime, school: SchoolConfig) -> datetime:
    return rt.clock.now().astimezone(school.calendar.tz)


def _add_months(d: date, months: int) -> date:
    month = d.month - 1 + months
    year, month = d.year + month // 12, month % 12 + 1
    for day in (d.day, 30, 29, 28):
        try:
            return date(year, month, day)
        except ValueError:
            continue
    raise ValueError("no such date")


def _need_note(note: str) -> str:
    if not note or not note.strip():
        raise ServiceError("a note saying why is required (--note)")
    return note.strip()


# Communication plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanView:
    id: int
    school: str
    family_id: str
    reader: str
    window: str
    review_on: date
    starts_on: date
    note: str
    created_by: str | None
    ended_at: datetime | None
    ended_by: str | None
    end_note: str | None
    due_for_review: bool
    next_window: datetime | None


def _plan_view(rt: Runtime, row: PlanRow) -> PlanView:
    school = rt.config.school(row.school)
    now = rt.clock.now()
    window = store.window_of(row)
    upcoming = None
    if row.ended_at is None:
        try:
            upcoming = next_window(window, school.calendar, now)[0]
        except ValueError:
            upcoming = None
    return PlanView(id=row.id, school=row.school, family_id=row.family_id, reader=row.reader,
                    window=window.describe(), review_on=row.review_on, starts_on=row.starts_on, note=row.note,
                    created_by=row.created_by, ended_at=row.ended_at, ended_by=row.ended_by, end_note=row.end_note,
                    due_for_review=row.ended_at is None and row.review_on <= _now_local(rt, school).date(),
                    next_window=upcoming)


def start_plan(rt: Runtime, key: str, *, window: str, note: str, actor: str, fortnightly: bool = False,
               reader: str | None = None, review: date | None = None,
               schools: frozenset[str] | None = None) -> PlanView:
    """Put a family on a communication plan: its mail to staff waits for the window and goes to the reader."""
    note = _need_note(note)
    try:
        parsed = parse_window(window)
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    if reader is not None and "@" not in reader:
        raise ServiceError(f"reader {reader!r} is not an email address")

    def run(session: Session) -> PlanView:
        family = find_family(session, key, schools)
        school = rt.config.school(family.school)
        current = store.active_plan(session, family.school, family.family_id)
        if current is not None:
            raise ServiceError(f"family {family.family_id} is already on plan {current.id}; end it first")
        now = rt.clock.now()
        today = _now_local(rt, school).date()
        review_on = review or _add_months(today, REVIEW_AFTER_MONTHS)
        if review_on <= today:
            raise ServiceError("the review date must be after today")
        # A fortnightly plan's first window is the next one; the weeks after it alternate from there.
        try:
            first = next_window(Window(parsed.day, parsed.start, parsed.end), school.calendar, now)[0]
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
        row = PlanRow(school=family.school, family_id=family.family_id,
                      reader=normalise_address(reader) if reader else school.head_of_school,
                      window_day=parsed.day, window_from=f"{parsed.start:%H:%M}", window_to=f"{parsed.end:%H:%M}",
                      fortnightly=1 if fortnightly else 0, anchor_week=monday_of(first.date()), starts_on=today,
                      review_on=review_on, note=note, created_at=now, created_by=actor, reminded="")
        session.add(row)
        session.flush()
        return _plan_view(rt, row)
    return rt.db.transact(run)


def end_plan(rt: Runtime, key: str, *, note: str, actor: str, schools: frozenset[str] | None = None) -> PlanView:
    """End a family's plan (never done on its own: an expired plan is listed as due for review)."""
    note = _need_note(note)

    def run(session: Session) -> PlanView:
        family = find_family(session, key, schools)
        row = store.active_plan(session, family.school, family.family_id)
        if row is None:
            raise ServiceError(f"family {family.family_id} is not on a communication plan")
        row.ended_at, row.ended_by, row.end_note = rt.clock.now(), actor, note
        return _plan_view(rt, row)
    return rt.db.transact(run)


def list_plans(rt: Runtime, schools: frozenset[str] | None = None, *, active_only: bool = False) -> list[PlanView]:
    return rt.db.transact(lambda s: [_plan_view(rt, r) for r in store.plans(s, schools, active_only=active_only)])


def plan_of(rt: Runtime, school: str, family_id: str) -> PlanView | None:
    return rt.db.transact(lambda s: (lambda r: _plan_view(rt, r) if r is not None else None)(
        store.active_plan(s, school, family_id)))


def send_review_reminders(rt: Runtime) -> int:
    """Reminders to each active plan's reader and the Head: 14 days before the review date and on it.
    Each is sent once (remembered on the plan); returns how many emails were queued."""
    now = rt.clock.now()

    def run(session: Session) -> int:
        queued = 0
        latest = max((_now_local(rt, s).date() for s in rt.config.schools), default=now.date())
        for row in store.plans_to_remind(session, latest + REMIND_BEFORE):
            try:
                school = rt.config.school(row.school)
            except KeyError:
                continue
            today = _now_local(rt, school).date()
            done = set(filter(None, row.reminded.split(",")))
            due = row.review_on <= today
            which = "due" if due else "soon" if row.review_on - REMIND_BEFORE <= today else None
            if which is None or which in done or (which == "soon" and "due" in done):
                continue
            body = render_letter(rt.templates_dir, "plan_review.txt.j2", now, {
                "due": due, "family": row.family_id, "family_id": row.family_id,
                "review": f"{row.review_on:%A} {row.review_on.day} {row.review_on:%B %Y}",
                "days_left": (row.review_on - today).days, "window": store.window_of(row).describe(),
                "reader": row.reader, "started": row.starts_on.isoformat(), "note": row.note})
            subject = (f"Communication plan for {row.family_id}: "
                       + ("review due today" if due else f"review on {row.review_on.isoformat()}"))
            for to in dict.fromkeys((row.reader, school.head_of_school)):
                data = compose_reminder(from_addr=rt.config.gateway.postmaster, to_addr=to, school_name=school.name,
                                        subject=subject, body=body, now=now,
                                        message_id=make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex))
                session.add(standalone_row("reminder", mail_from=rt.config.gateway.postmaster, rcpts=[to],
                                           now=now, payload=data))
                queued += 1
            row.reminded = ",".join(sorted(done | {which}))
        return queued
    return rt.db.transact(run)


# Blocked senders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockView:
    id: int
    school: str
    family_id: str | None
    address: str | None
    note: str
    until: datetime | None
    created_at: datetime
    created_by: str | None
    lifted_at: datetime | None
    lifted_by: str | None
    lift_note: str | None
    active: bool
    blocked_messages: int = 0


def _block_view(row: BlockRow, now: datetime, count: int = 0) -> BlockView:
    active = row.lifted_at is None and (row.until is None or row.until > now)
    return BlockView(id=row.id, school=row.school, family_id=row.family_id, address=row.address, note=row.note,
                     until=row.until, created_at=row.created_at, created_by=row.created_by,
                     lifted_at=row.lifted_at, lifted_by=row.lifted_by, lift_note=row.lift_note, active=active,
                     blocked_messages=count)


def _start_of(school: SchoolConfig, d: date) -> datetime:
    return datetime.combine(d, time(0, 0), tzinfo=school.calendar.tz)


def _block_target(session: Session, target: str, schools: frozenset[str] | None) -> tuple[str, str | None, str | None]:
    """(school, family id, address) of a block: an address blocks that address, anything else a family."""
    target = target.strip()
    if "@" in target:
        email = normalise_address(target)
        found = store.directory_rows(session, email, schools)
        school = found[0].school if found else ("*" if schools is None else "")
        if not school:
            raise ServiceError(f"{target}: not a family address of your schools")
        return school, None, email
    family = find_family(session, target, schools)
    return family.school, family.family_id, None


def block(rt: Runtime, target: str, *, note: str, actor: str, until: date | None = None,
          schools: frozenset[str] | None = None) -> BlockView:
    """Block an address or a whole family: their mail is kept in `blocked` and delivered to nobody."""
    note = _need_note(note)

    def run(session: Session) -> BlockView:
        return _block(session, rt, target, note=note, actor=actor, until=until, schools=schools)
    return rt.db.transact(run)


def _block(session: Session, rt: Runtime, target: str, *, note: str, actor: str, until: date | None,
           schools: frozenset[str] | None) -> BlockView:
    school_id, family_id, address = _block_target(session, target, schools)
    now = rt.clock.now()
    tz_school = rt.config.school(school_id) if school_id != "*" else rt.config.schools[0]
    ends = _start_of(tz_school, until) if until is not None else None
    if ends is not None and ends <= now:
        raise ServiceError("the end date must be after today")
    row = BlockRow(school=school_id, family_id=family_id, address=address, note=note, until=ends, created_at=now,
                   created_by=actor)
    session.add(row)
    session.flush()
    return _block_view(row, now)


def unblock(rt: Runtime, target: str, *, note: str, actor: str,
            schools: frozenset[str] | None = None) -> list[BlockView]:
    """Lift every block in force on this address or family."""
    note = _need_note(note)

    def run(session: Session) -> list[BlockView]:
        school_id, family_id, address = _block_target(session, target, schools)
        now = rt.clock.now()
        rows = store.live_blocks_of(session, now, school=school_id, family=family_id, address=address)
        if not rows:
            raise ServiceError(f"{target}: no block in force")
        for row in rows:
            row.lifted_at, row.lifted_by, row.lift_note = now, actor, note
        return [_block_view(r, now) for r in rows]
    return rt.db.transact(run)


def list_blocks(rt: Runtime, schools: frozenset[str] | None = None, *, active_only: bool = False) -> list[BlockView]:
    now = rt.clock.now()

    def run(session: Session) -> list[BlockView]:
        counts = store.blocked_counts(session, schools)
        return [_block_view(r, now, counts.get(r.id, 0))
                for r in store.blocks(session, now, schools, active_only=active_only)]
    return rt.db.transact(run)


# The escalation ladder and its letters -----------------------------------------------------------


@dataclass(frozen=True)
class Escalation:
    stage: Stage
    until: date | None
    letter_id: int | None
    draft: str | None
    block: BlockView | None
    sent_to: tuple[str, ...] = ()


def _record_incident(session: Session, school: str, family_id: str, stage: Stage, note: str, actor: str,
                     now: datetime, until: date | None) -> None:
    """Policy 000: each step of the ladder is an incident, filed under the family's latest concern
    other than safeguarding (negative when there is none)."""
    latest = [i for i in records.incidents(session, schools=frozenset({school}), family=family_id, limit=20)
              if i.category != SAFEGUARDING]
    category = latest[0].category if latest else NEGATIVE
    action = f"escalated to {STAGE_LABELS[stage]}" + (f" until {until.isoformat()}" if until else "")
    records.record_incident(session, school=school, category=category, action=action, actor=actor, now=now,
                            source="stage", family=family_id, note=note)


def _incident_lines(session: Session, family: FamilyRef, now: datetime, tz: object) -> list[str]:
    """The family's emails that led here: those the Head reviewed or that were blocked, newest last.

    Safeguarding referrals are never named in a letter to the family."""
    since = now - LETTER_LOOKBACK
    rows = session.execute(select(MessageRow.received_at, MessageRow.rcpt_tos, MessageRow.route).where(
        MessageRow.school == family.school, MessageRow.family == family.family_id, MessageRow.received_at >= since,
        MessageRow.route.in_((Route.HEAD_OF_SCHOOL.value, Route.BLOCKED.value))).order_by(MessageRow.id)).all()
    lines = []
    for received_at, rcpts, _route in rows[-10:]:
        local = received_at.astimezone(tz)  # type: ignore[arg-type]
        to = ", ".join(rcpts or ()) or "the school"
        lines.append(f"your email of {local:%A} {local.day} {local:%B %Y} to {to}")
    return lines


def draft_letter(session: Session, rt: Runtime, family: FamilyRef, stage: Stage, *, note: str,
                 until: date | None) -> str | None:
    template = LETTERS.get(stage)
    if template is None:
        return None
    school = rt.config.school(family.school)
    now = rt.clock.now()
    tz = school.calendar.tz
    today = now.astimezone(tz).date()
    children = family.children
    values = {
        "today": f"{today:%A} {today.day} {today:%B %Y}",
        "parent_name": " and ".join(family.parent_names) or "Parent or carer",
        "child_name": " and ".join(c for c, _ in children) or "your child",
        "year_group": ", ".join(dict.fromkeys(y for _, y in children if y)),
        "school_name": school.name,
        "head_name": school.head_of_school,
        "office_phone": school.office_phone,
        "until": f"{until:%A} {until.day} {until:%B %Y}" if until else "",
        "incidents": _incident_lines(session, family, now, tz),
        "note": note,
    }
    return render_letter(rt.templates_dir, template, now, values)


def preview_letter(rt: Runtime, key: str, *, stage: str, note: str, until: date | None = None) -> str | None:
    """The letter a stage would draft now, without recording anything (for editing before `escalate`)."""
    try:
        step = Stage(stage)
    except ValueError:
        raise ServiceError(f"unknown stage {stage!r} (meeting, warning, legal-advice, ban)") from None
    return rt.db.transact(lambda s: draft_letter(s, rt, find_family(s, key), step, note=note, until=until))


def escalate(rt: Runtime, key: str, *, stage: str, note: str, actor: str, until: date | None = None,
             send: bool = False, text: str | None = None, schools: frozenset[str] | None = None) -> Escalation:
    """Move a family to a stage of the ladder: recorded with an incident, a letter drafted (and sent with
    `send`, as drafted or as `text`); a ban blocks the family until its end date."""
    note = _need_note(note)
    try:
        step = Stage(stage)
    except ValueError:
        raise ServiceError(f"unknown stage {stage!r} (meeting, warning, legal-advice, ban)") from None
    if step is Stage.NONE:
        raise ServiceError("use a stage: meeting, warning, legal-advice or ban")
    if step is Stage.BAN and until is None:
        raise ServiceError("a ban needs an end date (--until YYYY-MM-DD)")

    def run(session: Session) -> Escalation:
        family = find_family(session, key, schools)
        now = rt.clock.now()
        school = rt.config.school(family.school)
        if until is not None and until <= now.astimezone(school.calendar.tz).date():
            raise ServiceError("the end date must be after today")
        stage_row = StageRow(school=family.school, family_id=family.family_id, stage=step.value, until=until,
                             note=note, actor=actor, at=now)
        session.add(stage_row)
        session.flush()
        _record_incident(session, family.school, family.family_id, step, note, actor, now, until)
        banned = None
        if step is Stage.BAN:
            banned = _block(session, rt, family.family_id, note=f"ban: {note}", actor=actor, until=until,
                            schools=frozenset({family.school}))
        draft = draft_letter(session, rt, family, step, note=note, until=until)
        letter_id: int | None = None
        sent_to: tuple[str, ...] = ()
        if draft is not None:
            letter = LetterRow(school=family.school, family_id=family.family_id, stage=stage_row.id, kind=step.value,
                               draft=text if text is not None else draft, created_at=now, created_by=actor)
            session.add(letter)
            session.flush()
            letter_id = letter.id
            if send:
                sent_to = _send(session, rt, letter, actor)
        return Escalation(step, until, letter_id, text if text is not None else draft, banned, sent_to)
    return rt.db.transact(run)


_SUBJECTS = {Stage.MEETING.value: "Request for a meeting", Stage.WARNING.value: "Formal warning",
             Stage.BAN.value: "Withdrawal of permission to come on site and to contact staff"}


def _send(session: Session, rt: Runtime, letter: LetterRow, actor: str) -> tuple[str, ...]:
    if letter.sent_at is not None:
        raise ServiceError(f"letter {letter.id} was already sent")
    family = find_family(session, letter.family_id, frozenset({letter.school}))
    school = rt.config.school(letter.school)
    now = rt.clock.now()
    subject = f"{school.name}: {_SUBJECTS.get(letter.kind, 'Letter')}"
    refs = []
    for to in family.addresses:
        mid = make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex)
        data = compose_letter(from_addr=school.head_of_school, from_name=f"Head of School, {school.name}",
                              to_addr=to, subject=subject, body=letter.draft, now=now, message_id=mid)
        row = standalone_row("letter", mail_from=school.head_of_school, rcpts=[to], now=now, payload=data)
        session.add(row)
        session.flush()
        refs.append(mid)
        letter.outbox = letter.outbox or row.id
    letter.sent_at, letter.sent_by, letter.sent_to = now, actor, list(family.addresses)
    letter.message_ref = " ".join(refs)[:998]
    return family.addresses


def send_letter(rt: Runtime, letter_id: int, *, actor: str, text: str | None = None,
                schools: frozenset[str] | None = None) -> tuple[str, ...]:
    """Send a drafted letter (edited to `text` if given) to the family, from the Head's address."""
    def run(session: Session) -> tuple[str, ...]:
        letter = session.get(LetterRow, letter_id)
        if letter is None or (schools is not None and letter.school not in schools):
            raise ServiceError(f"no letter {letter_id}")
        if text is not None:
            if letter.sent_at is not None:
                raise ServiceError(f"letter {letter_id} was already sent")
            if not text.strip():
                raise ServiceError("a letter needs some text")
            letter.draft = text
        return _send(session, rt, letter, actor)
    return rt.db.transact(run)


def save_letter(rt: Runtime, letter_id: int, *, text: str, schools: frozenset[str] | None = None) -> None:
    """Keep the Head's edited draft (to print, or to send later)."""
    if not text.strip():
        raise ServiceError("a letter needs some text")

    def run(session: Session) -> None:
        letter = session.get(LetterRow, letter_id)
        if letter is None or (schools is not None and letter.school not in schools):
            raise ServiceError(f"no letter {letter_id}")
        if letter.sent_at is not None:
            raise ServiceError(f"letter {letter_id} was already sent")
        letter.draft = text
    rt.db.transact(run)


@dataclass(frozen=True)
class LetterView:
    id: int
    school: str
    family_id: str
    kind: str
    draft: str
    created_at: datetime
    created_by: str | None
    sent_at: datetime | None
    sent_by: str | None
    sent_to: tuple[str, ...]


def _letter_view(row: LetterRow) -> LetterView:
    return LetterView(row.id, row.school, row.family_id, row.kind, row.draft, row.created_at, row.created_by,
                      row.sent_at, row.sent_by, tuple(row.sent_to or ()))


def get_letter(rt: Runtime, letter_id: int, schools: frozenset[str] | None = None) -> LetterView | None:
    def run(session: Session) -> LetterView | None:
        row = session.get(LetterRow, letter_id)
        if row is None or (schools is not None and row.school not in schools):
            return None
        return _letter_view(row)
    return rt.db.transact(run)


@dataclass(frozen=True)
class StageView:
    stage: str
    label: str
    until: date | None
    note: str
    actor: str | None
    at: datetime


def family_casework(rt: Runtime, school: str, family_id: str) -> tuple[list[StageView], list[LetterView]]:
    """A family's stage history (oldest first) and its letters, for the family page."""
    def run(session: Session) -> tuple[list[StageView], list[LetterView]]:
        stages = [StageView(r.stage, STAGE_LABELS.get(Stage(r.stage), r.stage), r.until, r.note, r.actor, r.at)
                  for r in store.stage_history(session, school, family_id)]
        return stages, [_letter_view(r) for r in store.letters_of(session, school, family_id)]
    return rt.db.transact(run)
