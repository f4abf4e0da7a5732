"""The triage worker: received → triaged → held | in_review | queued, with the outbox rows the plan needs.

Parsing and the content rules run off the database thread (they are pure CPU work); the counts, the
decision and every write happen in one transaction per batch, so a crash leaves each message either
untouched (its lease expires and another claim picks it up) or fully triaged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from datetime import datetime, timedelta, tzinfo
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from gateway.act.concerns import compose_interpreter_copy
from gateway.act.compose import compose_acknowledgement, compose_review_summary, render_acknowledgement
from gateway.decide.acknowledge import closure_for_reply, make_message_id, template_for
from gateway.domain.addresses import reply_address
from gateway.decide.incidents import incident_category
from gateway.domain.findings import Flag, Route
from gateway.domain.states import State
from gateway.store import memory
from gateway.store.models import MessageRow, OutboxRow
from gateway.store.database import URGENT
from gateway.store.queue import claim_messages, release_messages, renew_messages, transition
from gateway.store.records import AUTOMATIC, record_incident
from gateway.store.raws import StoredRaw, load_small_raws, raw_loaded, read_raw
from gateway.workers.dispatch import OUTBOX_LEASE, Job, complete_if_done, enqueue, imap_move, jobs_for, outbox_row
from gateway.triage.rules import RuleSet
from gateway.workers.evaluate import Batch, Evaluation, Judged, evaluate, judge, standing
from gateway.workers.judging import JudgeFailed, JudgePool, RawInput, Results, WorkerDied, judge_each
from gateway.workers.quarantine import note_failure
from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.triage")
# Short, so that a surviving gateway takes over a dead one's batch within seconds; renewed every
# RENEW_EVERY while the batch is in hand (claimed ahead, being judged, or being written).
LEASE = timedelta(seconds=15)
RENEW_EVERY = timedelta(seconds=5)
BATCH = 64
STOP_GRACE = 0.2  # seconds


class TriageWorker:
    def __init__(self, rt: Runtime, *, judge_fn: Callable[[bytes], Judged] | None = None,
                 pool: JudgePool | None = None, stopping: Callable[[], bool] = lambda: False) -> None:
        self.rt = rt
        self._judge = judge_fn
        self._pool = pool
        self._next: list[MessageRow] = []
        # Claimed batches being judged, oldest first: with depth > 1 the next batch is judged (in the
        # judge processes) while this one's results are written (on the database thread).
        self._ahead: deque[tuple[list[MessageRow], asyncio.Future[Results]]] = deque()
        # The daemon's "stopping" flag: a judging failure then is most likely the stop itself
        # (systemd's SIGTERM reaches the judge processes too), so the batch is given back, untried.
        self._stopping = stopping

    def _start_judging(self, rows: list[MessageRow]) -> asyncio.Future[Results]:
        rules = self.rt.rules
        # Large messages were claimed without their bytes: the judge reads them itself.
        raws: list[RawInput] = [r.raw if raw_loaded(r) else StoredRaw(r.id) for r in rows]
        db = self.rt.db

        def read(ref: StoredRaw) -> bytes:
            return db.transact(lambda s: read_raw(s, ref.message_id))

        if self._pool is not None and self._judge is None:
            return asyncio.ensure_future(self._judge_in_pool(self._pool, raws, rules, read))
        fn = self._judge or (lambda raw: judge(raw, rules))
        return asyncio.ensure_future(asyncio.to_thread(judge_each, raws, fn, read))

    async def _judge_in_pool(self, pool: JudgePool, raws: list[RawInput], rules: RuleSet,
                             read: Callable[[StoredRaw], bytes]) -> Results:
        try:
            return await pool.judge_all(raws, rules, read)
        except BrokenProcessPool:
            # A stop's SIGTERM reaches the workers and the daemon together; give the daemon's signal
            # handler its turn before deciding that a message, rather than the stop, killed a worker.
            await asyncio.sleep(STOP_GRACE)
            if self._stopping():
                raise
        log.warning("a triage worker died judging a batch of %d; judging them one by one to find the cause",
                    len(raws))
        return await pool.judge_alone(raws, rules, self._stopping)

    async def run_once(self, depth: int = 1) -> int:
        """Triage the oldest claimed batch of received messages; returns how many it held.

        Up to `depth` batches are claimed and being judged at once (the daemon uses 2)."""
        rt = self.rt
        while len(self._ahead) < depth:
            # The batch claimed with the previous one's results, else a fresh claim.
            rows, self._next = self._next, []
            if not rows:
                rows = await rt.db.run(lambda s: _claim(s, rt))
            if not rows:
                break
            self._ahead.append((rows, self._start_judging(rows)))
        if not self._ahead:
            return 0
        rows, pending = self._ahead[0]
        started = time.monotonic()
        try:
            judged = await pending
        except asyncio.CancelledError:
            raise  # stopping: the batch stays in hand, and `unclaim` gives it back
        except BaseException:
            if self._stopping():
                raise  # likewise
            # A batch whose judging failed as a whole (not because of one message: those failures come
            # back per message) keeps its leases: claimed again once they expire, and not counted.
            self._ahead.popleft()
            raise
        self._ahead.popleft()
        ids = [r.id for r in rows]
        claimed, handed = await rt.db.run(lambda s: self._apply_and_claim(s, ids, judged))
        self._next = claimed
        rt.metrics.triage_batch(time.monotonic() - started, len(rows))
        if rt.hand_over is not None:
            rt.hand_over(handed)
        else:
            rt.wake_delivery()
        return len(rows)

    async def unclaim(self) -> int:
        """Give back the batches claimed ahead (on stopping): their leases go, and their claims count as
        untried, so a clean stop never brings a message nearer to quarantine."""
        ids = [r.id for r in self._next]
        self._next = []
        while self._ahead:
            rows, pending = self._ahead.popleft()
            pending.cancel()
            ids += [r.id for r in rows]
        if not ids:
            return 0
        owner = self.rt.owner
        return await self.rt.db.run(lambda s: release_messages(s, ids, State.RECEIVED, owner))

    async def keep_leases(self) -> None:
        """Until cancelled: renew the leases of the batches in hand every RENEW_EVERY."""
        while True:
            await asyncio.sleep(RENEW_EVERY.total_seconds())
            try:
                await self.renew_leases()
            except Exception:  # noqa: BLE001 - a database hiccup: the next round tries again
                log.exception("renewing the triage leases failed")

    async def renew_leases(self) -> int:
        """Extend the leases still ours on the batches in hand. A batch claimed ahead whose lease was
        taken over by another gateway is dropped; one being judged is written only where the lease is
        still ours (`_apply_all` checks under a row lock)."""
        ids = [r.id for r in self._next] + [r.id for rows, _ in self._ahead for r in rows]
        if not ids:
            return 0
        owner, until = self.rt.owner, self.rt.clock.now() + LEASE
        mine = set(await self.rt.db.run(lambda s: renew_messages(s, ids, State.RECEIVED, owner=owner, until=until),
                                        priority=URGENT))
        # A batch written meanwhile is not renewed because it is done; only rows still in hand can
        # have been taken over by another gateway.
        in_hand = {r.id for r in self._next} | {r.id for rows, _ in self._ahead for r in rows}
        lost = [i for i in ids if i not in mine and i in in_hand]
        if lost:
            log.warning("triage leases lost on %d message(s): another gateway took them over", len(lost))
            self._next = [r for r in self._next if r.id not in lost]
        return len(mine)

    async def run_until_idle(self) -> int:
        total = 0
        while n := await self.run_once():
            total += n
        return total

    def _apply_and_claim(self, session: Session, ids: list[int],
                         judged: list[Judged | BaseException]) -> tuple[list[MessageRow], list[Job]]:
        """One batch's results and the claim of the next batch in one transaction (one commit, not two).

        The claimed rows stay leased to this worker: the next `run_once` triages them (a worker
        dropped in between leaves leases that expire, like one that crashed). With a delivery worker
        in this process, the outbox rows due now are leased to it here too, and handed over as jobs."""
        rows, written = self._apply_all(session, ids, judged)
        handed: list[Job] = []
        if self.rt.hand_over is not None and written:
            session.flush()
            handed = jobs_for(written, rows, self.rt.config.smtp.hostname)
        return _claim(session, self.rt), handed

    def _apply_all(self, session: Session, ids: list[int],
                   judged: list[Judged | BaseException]) -> tuple[dict[int, MessageRow], list[OutboxRow]]:
        """Returns the batch's rows by id, and the outbox rows written (leased to this gateway's
        delivery worker when one runs in this process)."""
        now = self.rt.clock.now()
        lease = now + OUTBOX_LEASE if self.rt.hand_over is not None else None
        written: list[OutboxRow] = []
        # Without the bytes; the small ones are read for the batch in one query below, a large one only
        # if something needs it (a review summary, a delivery handed over).
        query = select(MessageRow).options(defer(MessageRow.raw)).where(MessageRow.id.in_(ids))
        if session.get_bind().dialect.name == "postgresql":
            # Locked in id order (as renewals lock them), so the lease owner checked below is still the
            # owner at the commit: another gateway's claim skips these rows meanwhile.
            query = query.order_by(MessageRow.id).with_for_update(of=MessageRow)
        rows = {r.id: r for r in session.scalars(query)}
        load_small_raws(session, list(rows.values()))
        before = {message_id: standing(row) for message_id, row in rows.items()}
        todo: list[tuple[MessageRow, Judged]] = []
        for message_id, result in zip(ids, judged):
            row = rows.get(message_id)
            if row is None or row.state != State.RECEIVED.value or row.lease_owner != self.rt.owner:
                continue
            if isinstance(result, BaseException):
                # A real failure of this message (its judging raised, or killed a worker when judged
                # alone): counted, and after three the message is quarantined for a human rather than
                # retried for ever.
                log.error("message %s could not be triaged: %s", row.id, result.__class__.__name__)
                note_failure(session, self.rt, row, now, _why(result))
                continue
            todo.append((row, result))
        # The whole batch in one savepoint, flushed once. Should one message fail, the savepoint is
        # rolled back and the batch applied again one savepoint per message, so that one bad message
        # cannot stop the others (their transitions are then logged a second time).
        evs: list[Evaluation] = []
        try:
            with session.begin_nested(), session.no_autoflush:
                batch = Batch.of(before)
                for row, result in todo:
                    ev, added = apply_triage(session, self.rt, row, result, now, batch, lease=lease)
                    written += added
                    evs.append(ev)
                    batch.note(before[row.id], standing(row), _ack_key(ev))
            self._count_suppressed(evs)
            return rows, written
        except Exception:  # noqa: BLE001 - retried message by message below, where it is logged
            log.warning("triage batch of %d rolled back; applying message by message", len(todo))
        batch = Batch.of(before)
        written, evs = [], []
        for row, result in todo:
            try:
                with session.begin_nested(), session.no_autoflush:
                    ev, added = apply_triage(session, self.rt, row, result, now, batch, lease=lease)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the batch
                log.exception("message %s could not be triaged", row.id)
                batch.forget_reads()
                note_failure(session, self.rt, row, now, f"writing its triage raised {exc.__class__.__name__}")
                continue
            written += added
            evs.append(ev)
            batch.note(before[row.id], standing(row), _ack_key(ev))
        self._count_suppressed(evs)
        return rows, written

    def _count_suppressed(self, evs: list[Evaluation]) -> None:
        for ev in evs:
            if ev.ack_block is not None:
                self.rt.metrics.acknowledgement_suppressed(ev.ack_block)


def _why(failure: BaseException) -> str:
    if isinstance(failure, WorkerDied):
        return "a triage worker process died judging it"
    if isinstance(failure, JudgeFailed):
        return f"judging it raised {failure}"
    return f"judging it raised {failure.__class__.__name__}"


def _ack_key(ev: Evaluation) -> tuple[str, str] | None:
    return (ev.sender, ev.ack.value) if ev.ack is not None else None


def _claim(session: Session, rt: Runtime) -> list[MessageRow]:
    rows = claim_messages(session, State.RECEIVED, owner=rt.owner, now=rt.clock.now(), lease=LEASE, limit=BATCH)
    load_small_raws(session, rows)
    return rows


def apply_triage(session: Session, rt: Runtime, row: MessageRow, judged: Judged, now: datetime,
                 batch: Batch | None = None, *, lease: datetime | None = None) -> tuple[Evaluation, list[OutboxRow]]:
    """Writes the message's triage, and returns it with the outbox rows written (leased to this
    gateway until `lease`, if given: they are handed to its delivery worker)."""
    config = rt.config
    school = config.school(row.school)
    ev = evaluate(session, config=config, rules=rt.rules, school=school, judged=judged, mail_from=row.mail_from,
                  rcpts=tuple(row.rcpt_tos), received_at=row.received_at, now=now, create_thread=True,
                  batch=batch)
    findings = ev.findings
    plan = ev.plan
    # The replies are built before any state changes: one that cannot be built (an address no header
    # can carry, a template that fails) is skipped with a note in the message's event trail, and the
    # message itself is routed as planned. A reply must never keep mail from its teacher.
    notes: list[str] = []
    summary = _built(row, "review summary", notes,
                     lambda: _review_summary(rt, row, ev, now)) if plan.review_summary else None
    ack = _built(row, "acknowledgement", notes, lambda: _acknowledgement(rt, row, ev, now)) if ev.ack else None
    # Policy 001: a message nobody can judge in its language goes to the office too, once, so that an
    # interpreter is found; a blocked sender's message goes to nobody.
    interpreter = (_built(row, "interpreter copy", notes, lambda: _interpreter_copy(rt, row, ev, now))
                   if findings.has(Flag.NEEDS_INTERPRETER) and ev.route is not Route.BLOCKED else None)
    if ev.ack_block == "unusable-sender":
        notes.append("acknowledgement skipped: the envelope sender cannot be replied to")
    transition(session, row, State.TRIAGED, actor=rt.owner, now=now,
               reason=f"route {ev.route.value}; sender {ev.sender_class.value}; "
               + (", ".join(r.rule for r in findings.reasons) or "no findings")
               + "".join(f"; {note}" for note in notes),
               route=ev.route.value, sender_class=ev.sender_class.value, tone=findings.tone.value, flags=list(findings.flags),
               reasons=[{"rule": r.rule, "flag": r.flag.value, "evidence": r.evidence} for r in findings.reasons],
               rules_digest=rt.rules.digest, family=ev.family.key, half_term=ev.half_term_key,
               counted=1 if ev.counted else 0, thread_id=ev.thread_id)
    why = plan.note or {State.HELD: f"school closed ({plan.closure})", State.IN_REVIEW: "for the Head of School",
                        State.QUEUED: "deliver now"}.get(plan.state, "")
    transition(session, row, plan.state, actor=rt.owner, now=now, reason=why, release_at=plan.release_at)
    _record_incident(session, row, ev, now)
    written = enqueue(session, row, plan.deliveries, config, now)
    added = len(written)
    if row.source == "imap" and plan.state in (State.HELD, State.IN_REVIEW, State.BLOCKED):
        move = imap_move(row, config, "held" if plan.state is State.HELD else "review", now)
        session.add(move)
        written.append(move)
    if interpreter is not None:
        office = next((r for r in written if r.kind == "copy" and list(r.rcpts) == [school.office]), None)
        if office is not None:
            # Urgent mail already goes to the office: its copy carries the note, rather than two copies.
            office.payload = interpreter.payload
            interpreter = None
    for reply in (summary, ack, interpreter):
        if reply is not None:
            session.add(reply)
            written.append(reply)
    if lease is not None:
        for item in written:
            item.lease_owner, item.lease_until = rt.owner, lease
    if added == 0:
        # Delivery rows just added are pending, so the message cannot be complete yet; only a plan with
        # nothing to send (IMAP mail already in its folder) completes at once. Skipping the check
        # saves a query, and the autoflush it forces, per message.
        complete_if_done(session, row, now, rt.owner)
    return ev, written


def _record_incident(session: Session, row: MessageRow, ev: Evaluation, now: datetime) -> None:
    """Policy 000: every message routed to the DSL or the Head of School is recorded as an incident."""
    category = incident_category(ev.route, (r.flag for r in ev.findings.reasons))
    if category is None:
        return
    school = ev.school
    action = (f"sent to the DSL ({school.dsl}) at once" if ev.route is Route.DSL
              else f"held for the Head of School's review ({school.head_of_school})")
    record_incident(session, school=school.id, category=category, action=action, actor=AUTOMATIC, now=now,
                    source="auto", message=row, family=ev.family.key if ev.family.known else None,
                    parent_email=memory.normalise_address(ev.facts.from_addr or ev.sender) or None,
                    subject=ev.facts.subject)


def _built(row: MessageRow, what: str, notes: list[str], build: Callable[[], OutboxRow]) -> OutboxRow | None:
    """The reply `build` makes, or None with a note saying why it was skipped."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - any failure to build a reply only skips the reply
        log.warning("message %s: the %s could not be built (%s); skipped", row.id, what, exc.__class__.__name__)
        notes.append(f"{what} skipped: it could not be built ({exc.__class__.__name__})")
        return None


def _acknowledgement(rt: Runtime, row: MessageRow, ev: Evaluation, now: datetime) -> OutboxRow:
    assert ev.ack is not None
    school, calendar = ev.school, ev.school.calendar
    tz = calendar.tz
    at = row.received_at
    closure, break_name = closure_for_reply(calendar, at)
    try:
        reopen = None if closure == "open" else calendar.next_opening(at).astimezone(tz).date()
        reply_by = calendar.reply_by(at, rt.config.acknowledge.respond_within)
    except ValueError:
        reopen, reply_by = None, at.astimezone(tz).date()
    body = render_acknowledgement(
        rt.templates_dir, template_for(ev.ack, closure), school_name=school.name,
        parent_name=ev.facts.from_name or None, family_known=ev.family.known, reply_by=reply_by, reopen_date=reopen,
        break_name=break_name,
        office_phone=school.office_phone, now=now.astimezone(tz), extra=casework_values(ev, tz))
    reply_to = reply_address(row.mail_from)
    if reply_to is None:
        raise ValueError("the envelope sender cannot be replied to")
    data = compose_acknowledgement(
        original=ev.facts, to_addr=reply_to, from_addr=school.acknowledge_from, from_name=school.name,
        body=body, now=now, message_id=make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex))
    # RFC 3834 §3.3: the response goes out with a null reverse-path, so nothing ever answers it back.
    return outbox_row(row, "ack", mail_from="", rcpts=[reply_to], now=now, payload=data,
                      ack_sender=ev.sender, ack_kind=ev.ack.value)


def casework_values(ev: Evaluation, tz: tzinfo) -> dict[str, object]:
    """What a plan's acknowledgement and a block notice name: the reading window, the channel to use."""
    plan = ev.casework.plan
    values: dict[str, object] = {"plan_reader": plan.reader if plan is not None else None}
    if ev.window is not None:
        start, end = (t.astimezone(tz) for t in ev.window)
        values.update(window_day=f"{start:%A} {start.day} {start:%B}", window_start=f"{start:%H:%M}",
                      window_end=f"{end:%H:%M}", window_every=plan.window.describe() if plan else "")
    return values


def _interpreter_copy(rt: Runtime, row: MessageRow, ev: Evaluation, now: datetime) -> OutboxRow:
    school = ev.school
    sender = ev.facts.from_addr or ev.sender
    data = compose_interpreter_copy(
        original_raw=row.raw, subject=ev.facts.subject,
        sender=f"{ev.facts.from_name} <{sender}>" if ev.facts.from_name else sender, recipients=list(row.rcpt_tos),
        received=row.received_at.astimezone(school.calendar.tz), route=ev.route.value,
        reasons=[(r.rule, r.evidence) for r in ev.findings.reasons
                 if r.flag in (Flag.NEEDS_INTERPRETER, Flag.NON_ENGLISH)],
        school_name=school.name, from_addr=rt.config.gateway.postmaster, to_addr=school.office,
        message_ref=str(row.id), now=now, message_id=make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex),
        templates_dir=rt.templates_dir)
    # Like the office's copy of urgent mail: a failure is reported to the postmaster, never the parent.
    return outbox_row(row, "interpreter", mail_from=rt.config.gateway.postmaster, rcpts=[school.office], now=now,
                      payload=data)


def _review_summary(rt: Runtime, row: MessageRow, ev: Evaluation, now: datetime) -> OutboxRow:
    school = ev.school
    findings = ev.findings
    family = ev.family.label if ev.family.known else ev.family.key
    data = compose_review_summary(
        original_raw=row.raw, original=ev.facts, to_addr=school.head_of_school,
        from_addr=rt.config.gateway.postmaster, school_name=school.name,
        reasons=[(r.rule, r.evidence) for r in findings.reasons], family=family,
        family_count=findings.family_count, half_term=findings.half_term, thread_count=findings.thread_count,
        received_at=row.received_at.astimezone(school.calendar.tz), recipients=list(row.rcpt_tos),
        message_ref=str(row.id), now=now, message_id=make_message_id(rt.config.smtp.hostname, uuid.uuid4().hex),
        templates_dir=rt.templates_dir, reply_to=school.head_of_school,
        console_url=f"{rt.config.console.base_url}/messages/{row.id}" if rt.config.console else None)
    return outbox_row(row, "summary", mail_from=rt.config.gateway.postmaster, rcpts=[school.head_of_school],
                      now=now, payload=data)

