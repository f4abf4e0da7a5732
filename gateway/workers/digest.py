"""The DSL's digest of possible safeguarding concerns: at 08:00 and 13:00 on school days, at once on others.

Each sweep (a job tick) writes, per school whose digest is due, one outbox row to the DSL listing the
flagged messages received up to the digest moment, and on each of those messages an event saying so,
in the same transaction: a crash before the commit loses nothing (the next sweep lists them), and
after it nothing is listed twice (the events exclude them). The outbox delivers with retries, as for
any mail the gateway writes.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.act.concerns import DigestEntry, compose_dsl_digest
from gateway.config import SchoolConfig
from gateway.decide.acknowledge import make_message_id
from gateway.decide.digest import digest_cutoff, wants_digest
from gateway.domain.findings import Flag
from gateway.store import memory
from gateway.store.digests import lock_digests, record_digest, scan_floor, undigested
from gateway.store.models import MessageRow, OutboxRow
from gateway.workers.dispatch import standalone_row
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.digest")
# The digest lists the words that flagged the message; these findings say why it may be a concern.
_CONCERNS = (Flag.POSSIBLE_SAFEGUARDING.value, Flag.SAFEGUARDING.value)
# At most this many messages in one digest email; more are listed in further emails of the same sweep.
DIGEST_MAX = 50


class DigestWorker:
    def __init__(self, rt: Runtime, *, most: int = DIGEST_MAX) -> None:
        self.rt = rt
        self._most = most
        # Where the next sweep starts reading (see `store.digests.scan_floor`). Only with SQLite, whose
        # single writer hands out ids in commit order; PostgreSQL may commit a lower id later, so
        # there every sweep reads from the start (its table rows are small: the bytes live apart).
        self._floor = 0

    async def run_once(self) -> int:
        """Write every digest due now; returns how many were written."""
        written, floor = await self.rt.db.run(self._sweep)
        self._floor = floor
        if written:
            self.rt.wake_delivery()
        return written

    def _sweep(self, session: Session) -> tuple[int, int]:
        rt = self.rt
        now = rt.clock.now()
        start = self._floor if rt.db.single_writer else 0
        floor = scan_floor(session)
        written = 0
        for school in rt.config.schools:
            cutoff = digest_cutoff(school.calendar, now)
            lock_digests(session, school.id)
            # The query's match on the flags' text only narrows the rows; the decision is `wants_digest`.
            rows = [row for row in undigested(session, school.id, from_id=start) if wants_digest(row.route, row.flags)]
            due = [row for row in rows if row.received_at <= cutoff]
            later = [row.id for row in rows if row.received_at > cutoff]
            floor = min([floor] + later)
            # A long list is split so that each email stays readable; every message is still in one.
            for part in (due[i:i + self._most] for i in range(0, len(due), self._most)):
                try:
                    with session.begin_nested():
                        record_digest(session, part, self._digest_row(session, school, part, now), now)
                except Exception as exc:  # noqa: BLE001 - one school's failure must not stop the others'
                    log.error("the DSL's digest for %s could not be written (%s); the next sweep tries again",
                              school.id, exc.__class__.__name__)
                    floor = min(floor, part[0].id)
                    break
                written += 1
                log.info("DSL digest for %s: %d message(s) %s", school.id, len(part),
                         ",".join(str(r.id) for r in part))
        return written, floor

    def _digest_row(self, session: Session, school: SchoolConfig, rows: list[MessageRow], now: datetime) -> OutboxRow:
        config = self.rt.config
        tz = school.calendar.tz
        entries = []
        for row in rows:
            family = _family(session, school.id, row.family)
            reasons = [(r.get("rule", ""), r.get("evidence", "")) for r in row.reasons or ()
                       if r.get("flag") in _CONCERNS]
            link = (f"{config.console.base_url}/messages/{row.id}" if config.console is not None
                    else f"parentgate show {row.id}")
            entries.append(DigestEntry(ref=str(row.id), received=row.received_at.astimezone(tz), sender=row.mail_from,
                                       family=family.label if family is not None else None,
                                       children=family.children if family is not None else (),
                                       recipients=tuple(row.rcpt_tos), reasons=tuple(reasons), link=link))
        data = compose_dsl_digest(
            entries=entries, school_name=school.name, from_addr=config.gateway.postmaster, to_addr=school.dsl,
            now=now, message_id=make_message_id(config.smtp.hostname, uuid.uuid4().hex),
            templates_dir=self.rt.templates_dir,
            safeguarding_url=f"{config.console.base_url}/safeguarding" if config.console is not None else None)
        return standalone_row("dsl_digest", mail_from=config.gateway.postmaster, rcpts=[school.dsl], payload=data,
                              now=now)


def _family(session: Session, school: str, key: str | None) -> memory.Family | None:
    """The family in the directory behind a message's family key, or None for an unknown sender."""
    if not key:
        return None
    members = [m for m in memory.family_members(session, key) if m.school == school]
    if not members:
        return None
    return memory.family_for(session, school, members[0].email)
