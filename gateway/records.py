"""Incident records and families' data rights: the operator's actions, used by the CLI and the console.

Incidents are recorded automatically by triage (every message routed to the DSL or the Head of School),
by escalation (each stage change) and by hand; `export_incidents` writes them as CSV for the school's
recording system. A family's data can be exported (UK GDPR art. 15) and erased (art. 17), keeping the
incidents the school must keep without the message content or the family's addresses.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any, Iterable

from sqlalchemy.orm import Session

# Re-exported: the console shows categories and summaries the same way, and imports no decide/ module.
from gateway.decide.incidents import CATEGORIES as CATEGORIES, category_name as category_name, label as label
from gateway.decide.incidents import summary as summary
from gateway.services import ServiceError
from gateway.store import memory, records
from gateway.store.models import MessageRow
from gateway.store.queue import record
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.records")
CSV_COLUMNS = ("date", "time", "school", "child", "year group", "family", "parent email", "category",
               "summary of the reasons", "action", "staff member", "message reference")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(cell: str) -> str:
    """A cell a spreadsheet shows as text: one that could start a formula gets a leading quote."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


@dataclass(frozen=True)
class FamilyRef:
    """Whom a FAMILY argument names: a directory family (its id and addresses) or an unknown address."""

    school: str
    key: str
    addresses: tuple[str, ...]
    known: bool


def resolve_family(session: Session, text: str, schools: Iterable[str]) -> FamilyRef:
    """A family id or any of its addresses; an address not in the directory is its own family."""
    text = text.strip()
    rows = memory.family_members(session, text)
    if rows:
        first = rows[0]
        members = memory.family_members(session, first.family_id)
        addresses = tuple(dict.fromkeys(m.email for m in members
                                        if m.school == first.school and m.family_id == first.family_id))
        return FamilyRef(first.school, first.family_id, addresses, True)
    if "@" in text:
        address = memory.normalise_address(text)
        school = _school_of_address(session, address) or next(iter(schools), "")
        return FamilyRef(school, address, (address,), False)
    raise ServiceError(f"{text}: no family with this id or address in the directory")


def _school_of_address(session: Session, address: str) -> str | None:
    from sqlalchemy import select
    return session.scalar(select(MessageRow.school).where(MessageRow.family == address).limit(1))


def _check_category(text: str) -> str:
    category = category_name(text)
    if category is None:
        raise ServiceError(f"unknown category {text!r}: one of {', '.join(label(c) for c in CATEGORIES)}")
    return category


def add_incident(rt: Runtime, *, category: str, action: str, actor: str, family: str | None = None,
                 message: int | None = None, note: str = "", schools: frozenset[str] | None = None) -> int:
    """Record an incident by hand, about a message (its family follows) or a family. Returns its id.

    `schools`: the schools the person may act for (the console's scoping); None on the server."""
    kind = _check_category(category)
    if not action.strip():
        raise ServiceError("an incident needs the action taken")
    if message is None and not (family or "").strip():
        raise ServiceError("an incident is about a message or a family: give one")

    def run(session: Session) -> int:
        now = rt.clock.now()
        if message is not None:
            row = session.get(MessageRow, message)
            if row is None or (schools is not None and row.school not in schools):
                raise ServiceError(f"no message {message}")
            incident = records.record_incident(session, school=row.school, category=kind, action=action.strip(),
                                               actor=actor, now=now, source="hand", message=row, note=note.strip())
            record(session, row, actor=actor, now=now, reason=f"incident recorded ({label(kind)}) by {actor}")
        else:
            ref = resolve_family(session, family or "", [s.id for s in rt.config.schools])
            if schools is not None and ref.school not in schools:
                raise ServiceError(f"{family}: no family with this id or address in the directory")
            incident = records.record_incident(
                session, school=ref.school, category=kind, action=action.strip(), actor=actor, now=now,
                source="hand", family=ref.key if ref.known else None, parent_email=ref.addresses[0] if not ref.known
                else None, note=note.strip())
        session.flush()
        return incident.id
    return rt.db.transact(run)


def _day_start(day: date, rt: Runtime) -> datetime:
    return datetime.combine(day, time(0), tzinfo=rt.config.tz)


def list_incidents(rt: Runtime, *, schools: frozenset[str] | None = None, start: date | None = None,
                   end: date | None = None, category: str | None = None, family: str | None = None,
                   limit: int | None = None) -> list[records.Incident]:
    """Incidents between two school-time dates (both included), oldest first."""
    kind = _check_category(category) if category else None
    since = _day_start(start, rt) if start else None
    until = _day_start(end + timedelta(days=1), rt) if end else None
    return rt.db.transact(lambda s: records.incidents(s, schools=schools, since=since, until=until, category=kind,
                                                      family=family, limit=limit))


def incident_rows(rt: Runtime, items: list[records.Incident]) -> list[list[str]]:
    """The CSV's rows (without the header), each cell neutralised; never a message's body."""
    names = {s.id: s.name for s in rt.config.schools}
    out = []
    for i in items:
        local = i.at.astimezone(rt.config.tz)
        if i.message is None:
            reference = ""
        elif i.erased:
            reference = f"message {i.message} (erased)"
        else:
            reference = f"{i.subject} (message {i.message})" if i.subject else f"message {i.message}"
        cells = [local.strftime("%Y-%m-%d"), local.strftime("%H:%M"), names.get(i.school, i.school),
                 "; ".join(name for name, _ in i.children), "; ".join(year for _, year in i.children),
                 i.family or "", i.parent_email or "", label(i.category), summary(i.reasons),
                 i.action + (f" ({i.note})" if i.note else ""), i.actor, reference]
        out.append([neutralise(c) for c in cells])
    return out


def export_incidents(rt: Runtime, out: IO[str], *, school: str | None = None, start: date | None = None,
                     end: date | None = None, category: str | None = None,
                     schools: frozenset[str] | None = None, family: str | None = None) -> int:
    """Write the incidents as CSV (header row, then one row each) to `out`; returns how many.

    `schools`: the schools the person may read (the console's scoping); None on the server."""
    if school is not None and school not in {s.id for s in rt.config.schools}:
        raise ServiceError(f"no school {school!r} in the configuration")
    if school is not None:
        schools = (schools or frozenset({school})) & {school}
    items = list_incidents(rt, schools=schools, start=start, end=end, category=category, family=family)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(incident_rows(rt, items))
    return len(items)


def incidents_csv(rt: Runtime, **filters: object) -> str:
    """`export_incidents` as one string (the console's download)."""
    buffer = io.StringIO()
    export_incidents(rt, buffer, **filters)  # type: ignore[arg-type]
    return buffer.getvalue()


def _family(rt: Runtime, text: str, schools: frozenset[str] | None) -> FamilyRef:
    ref = rt.db.transact(lambda s: resolve_family(s, text, [c.id for c in rt.config.schools]))
    if schools is not None and ref.school not in schools:
        raise ServiceError(f"{text}: no family with this id or address in the directory")
    return ref


def export_family(rt: Runtime, text: str, out: Path, *, schools: frozenset[str] | None = None) -> int:
    """Everything held about a family as a zip file (UK GDPR art. 15): each message's original .eml as
    received (byte for byte), its findings, events and outbox rows, the family's incidents, directory
    rows, acknowledgements, plans, blocks, stages and letters, with a JSON index. Returns the messages."""
    ref = _family(rt, text, schools)
    data = rt.db.transact(lambda s: records.family_data(s, ref.school, ref.key, list(ref.addresses)))
    index: dict[str, Any] = {
        "family": ref.key, "school": ref.school, "in_directory": ref.known, "addresses": list(ref.addresses),
        "exported_at": rt.clock.now().isoformat(), "messages": [], "directory": data.directory,
        "incidents": "incidents.json", "plans": "plans.json", "blocks": "blocks.json", "stages": "stages.json",
        "acknowledgements": "acknowledgements.json", "letters": []}
    tmp = out.with_name(out.name + ".part")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for m in data.messages:
                eml, facts = f"messages/{m.id}.eml", f"messages/{m.id}.json"
                z.writestr(eml, m.raw)
                detail = {k: v for k, v in records.row_dict(m).items() if k not in ("lease_owner", "lease_until", "claims")}
                detail.update(events=data.events.get(m.id, []), outbox=data.outbox.get(m.id, []))
                z.writestr(facts, _json(detail))
                index["messages"].append({"id": m.id, "eml": eml, "details": facts, "received_at": m.received_at.isoformat(),
                                          "state": m.state, "route": m.route, "from": m.mail_from,
                                          "to": list(m.rcpt_tos), "sha256": m.sha256})
            for letter in data.letters:
                name = f"letters/{letter['id']}-{letter.get('kind', 'letter')}.txt"
                z.writestr(name, str(letter.get("draft", "")))
                index["letters"].append(dict(letter, file=name))
            for name, rows in (("incidents", data.incidents), ("plans", data.plans), ("blocks", data.blocks),
                               ("stages", data.stages), ("acknowledgements", data.acknowledgements)):
                z.writestr(f"{name}.json", _json(rows))
            z.writestr("index.json", _json(index))
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ServiceError(f"cannot write {out}: {exc.strerror}") from None
    log.info("families export: %d message(s) of one family written", len(data.messages))
    return len(data.messages)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Erased:
    messages: int
    incidents_kept: int
    leftovers: tuple[str, ...]


def erase_family(rt: Runtime, text: str, actor: str, *, schools: frozenset[str] | None = None) -> Erased:
    """Remove a family's messages and personal data (UK GDPR art. 17), keeping its incidents without the
    messages' content or the family's addresses, and recording that (not what) an erasure happened.

    Then every text and binary column of every table is searched for the family's addresses and
    names; what is still there (another sender's message naming them) is reported."""
    ref = _family(rt, text, schools)

    def names(session: Session) -> list[str]:
        # Full names only ("Priya Patel"): a first name alone ("Ali") would rewrite other people's text.
        return [r.parent_name.strip() for r in memory.family_members(session, ref.key)
                if r.school == ref.school and len(r.parent_name.split()) >= 2] if ref.known else []

    def run(session: Session) -> tuple[int, int]:
        return records.erase_family(session, school=ref.school, key=ref.key, known=ref.known,
                                    addresses=list(ref.addresses), names=names(session), actor=actor,
                                    now=rt.clock.now())
    parents = rt.db.transact(names)
    erased, kept = rt.db.transact(run)
    records.checkpoint(rt.db.engine)
    left = rt.db.transact(lambda s: records.leftovers(s, list(ref.addresses) + parents))
    log.info("families erase: one family's data erased by %s (%d message(s), %d incident(s) kept)", actor, erased, kept)
    return Erased(erased, kept, tuple(sorted({f"{t}.{c}" for t, c, _ in left})))
