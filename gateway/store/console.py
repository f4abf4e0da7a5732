"""What the Head of School's console reads and keeps: sign-in links, its signing key, scoped queries.

Every query takes the set of schools the signed-in person may see and filters by it in SQL, so that a
message of another school is never loaded at all (the console answers 404, as for an unknown id).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, String, cast, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from gateway.store.models import Base, EventRow, MessageRow, UTCDateTime


class ConsoleLinkRow(Base):
    """A sign-in link sent by email: only its SHA-256 is kept, with its expiry and when it was used."""

    __tablename__ = "console_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsoleKeyRow(Base):
    """A named secret of the console (the session-signing key), shared by every console process."""

    __tablename__ = "console_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


def signing_key(session: Session) -> str:
    """The session-signing key, made on first use; a race between two consoles keeps the first."""
    row = session.get(ConsoleKeyRow, "session")
    if row is not None:
        return row.value
    try:
        with session.begin_nested():
            session.add(ConsoleKeyRow(name="session", value=secrets.token_urlsafe(48)))
    except IntegrityError:
        pass
    found = session.get(ConsoleKeyRow, "session")
    assert found is not None
    return found.value


def add_link(session: Session, token_hash: str, email: str, now: datetime, expires_at: datetime) -> None:
    session.add(ConsoleLinkRow(token_hash=token_hash, email=email, created_at=now, expires_at=expires_at))


def peek_link(session: Session, token_hash: str, now: datetime) -> str | None:
    """The address a link is for, if it is unused and unexpired (nothing is changed)."""
    row = session.scalars(select(ConsoleLinkRow).where(ConsoleLinkRow.token_hash == token_hash)).first()
    if row is None or row.used_at is not None or row.expires_at <= now:
        return None
    return row.email


def use_link(session: Session, token_hash: str, now: datetime) -> str | None:
    """Mark a link used and return its address; None when it is unknown, used or expired.

    One conditional UPDATE, so that two presses racing each other cannot both sign in."""
    email = peek_link(session, token_hash, now)
    if email is None:
        return None
    result = session.execute(update(ConsoleLinkRow).where(
        ConsoleLinkRow.token_hash == token_hash, ConsoleLinkRow.used_at.is_(None)).values(used_at=now))
    return email if getattr(result, "rowcount", 0) == 1 else None


@dataclass(frozen=True)
class QueueItem:
    id: int
    school: str
    mail_from: str
    received_at: datetime
    family: str | None
    reasons: tuple[tuple[str, str], ...]
    head: bytes
    state: str = ""
    route: str | None = None
    release_at: datetime | None = None


@dataclass(frozen=True)
class MessageView:
    id: int
    school: str
    state: str
    route: str | None
    mail_from: str
    rcpts: tuple[str, ...]
    received_at: datetime
    release_at: datetime | None
    family: str | None
    half_term: str | None
    thread_id: int | None
    reasons: tuple[tuple[str, str], ...]
    note: str | None
    raw: bytes
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Related:
    id: int
    state: str
    route: str | None
    received_at: datetime
    head: bytes


def _reasons(value: list[dict[str, str]] | None) -> tuple[tuple[str, str], ...]:
    return tuple((r.get("rule", ""), r.get("evidence", "")) for r in value or ())


# The queue shows headers only; reading the first 16 KiB of each message is enough for them.
HEAD_BYTES = 16384


def _first_bytes() -> Any:
    """The first HEAD_BYTES of each message, cut in the database: a queue of messages with large
    attachments must not read megabytes to show fifty subjects."""
    return func.substr(MessageRow.raw, 1, HEAD_BYTES).label("head")


def _head(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n") if end < 0 else end
    return raw[: end if 0 <= end < HEAD_BYTES else HEAD_BYTES]


def messages_in(session: Session, schools: frozenset[str], state: str | None, *, school: str | None = None,
                reason: str | None = None, route: str | None = None, limit: int = 50,
                before: int | None = None) -> list[QueueItem]:
    """Messages in `state` (any when None) for these schools, newest first, `limit` at a time (keyset
    on the id)."""
    allowed = schools & {school} if school else schools
    if not allowed:
        return []
    query = select(MessageRow.id, MessageRow.school, MessageRow.mail_from, MessageRow.received_at,
                   MessageRow.family, MessageRow.reasons, _first_bytes(), MessageRow.state, MessageRow.route,
                   MessageRow.release_at).where(MessageRow.school.in_(sorted(allowed)))
    if state is not None:
        query = query.where(MessageRow.state == state)
    if route:
        query = query.where(MessageRow.route == route)
    if reason:
        # Rule names are kebab-case words; a match on the stored JSON's text finds the rule's entry.
        query = query.where(cast(MessageRow.reasons, String).like(f'%"{_like(reason)}"%', escape="\\"))
    if before is not None:
        query = query.where(MessageRow.id < before)
    query = query.order_by(MessageRow.id.desc()).limit(limit)
    return [QueueItem(id=r.id, school=r.school, mail_from=r.mail_from, received_at=r.received_at,
                      family=r.family, reasons=_reasons(r.reasons), head=_head(bytes(r.head)), state=r.state,
                      route=r.route, release_at=r.release_at)
            for r in session.execute(query)]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def message_view(session: Session, schools: frozenset[str], message_id: int) -> MessageView | None:
    """One message, only if it belongs to one of these schools."""
    row = session.scalars(select(MessageRow).where(
        MessageRow.id == message_id, MessageRow.school.in_(sorted(schools)))).first()
    if row is None:
        return None
    return MessageView(id=row.id, school=row.school, state=row.state, route=row.route, mail_from=row.mail_from,
                       rcpts=tuple(row.rcpt_tos), received_at=row.received_at, release_at=row.release_at,
                       family=row.family, half_term=row.half_term, thread_id=row.thread_id,
                       reasons=_reasons(row.reasons), note=row.note, raw=row.raw, flags=tuple(row.flags or ()))


def related(session: Session, view: MessageView, limit: int = 50) -> tuple[list[Related], list[Related]]:
    """The family's messages this half-term and the thread's messages, oldest first (headers only)."""
    def fetch(*where: ColumnElement[bool]) -> list[Related]:
        query = select(MessageRow.id, MessageRow.state, MessageRow.route, MessageRow.received_at,
                       _first_bytes()).where(MessageRow.school == view.school, *where).order_by(
            MessageRow.id).limit(limit)
        return [Related(id=r.id, state=r.state, route=r.route, received_at=r.received_at, head=_head(bytes(r.head)))
                for r in session.execute(query)]
    family = (fetch(MessageRow.family == view.family, MessageRow.half_term == view.half_term)
              if view.family else [])
    thread = fetch(MessageRow.thread_id == view.thread_id) if view.thread_id is not None else []
    return family, thread


def message_events(session: Session, message_id: int) -> list[tuple[datetime, str | None, str, str, str]]:
    return [(e.at, e.from_state, e.to_state, e.actor, e.reason) for e in session.scalars(
        select(EventRow).where(EventRow.message == message_id).order_by(EventRow.id))]


SEEN = "seen by "


def seen_by(session: Session, ids: list[int]) -> dict[int, tuple[str, datetime]]:
    """Who first recorded having seen each of these messages, and when (the DSL's "Seen")."""
    if not ids:
        return {}
    found: dict[int, tuple[str, datetime]] = {}
    for e in session.execute(select(EventRow.message, EventRow.actor, EventRow.at).where(
            EventRow.message.in_(ids), EventRow.reason.like(SEEN + "%")).order_by(EventRow.id)):
        found.setdefault(e.message, (e.actor, e.at))
    return found


@dataclass(frozen=True)
class Activity:
    at: datetime
    actor: str
    message: int
    school: str
    from_state: str | None
    to_state: str
    reason: str


# Events written by the gateway itself: its lease owner names carry a colon, intake is "smtp"/"imap".
_SYSTEM_ACTORS = ("smtp", "imap")


def activity(session: Session, schools: frozenset[str], *, actor: str | None = None,
             since: datetime | None = None, until: datetime | None = None, limit: int = 200) -> list[Activity]:
    """Actions people took (console or CLI) on these schools' messages, newest first."""
    if not schools:
        return []
    query = select(EventRow.at, EventRow.actor, EventRow.message, MessageRow.school, EventRow.from_state,
                   EventRow.to_state, EventRow.reason).join(MessageRow, MessageRow.id == EventRow.message).where(
        MessageRow.school.in_(sorted(schools)), ~EventRow.actor.like("%:%"), EventRow.actor.not_in(_SYSTEM_ACTORS))
    if actor:
        query = query.where(EventRow.actor == actor)
    if since is not None:
        query = query.where(EventRow.at >= since)
    if until is not None:
        query = query.where(EventRow.at < until)
    query = query.order_by(EventRow.id.desc()).limit(limit)
    return [Activity(at=r.at, actor=r.actor, message=r.message, school=r.school, from_state=r.from_state,
                     to_state=r.to_state, reason=r.reason) for r in session.execute(query)]
