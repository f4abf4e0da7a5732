"""The delivery worker: sends due outbox rows with bounded concurrency and records each outcome.

Temporary failures are deferred with capped backoff until the lifetime is over, then fail with a notice
to the postmaster; permanent failures fail at once with a notice. Nothing is dropped.

Delivered means recorded: each outcome is committed as soon as the database is free (outcomes that
finish while a commit is running go together in the next one), apart from any claim, so a SIGKILL
can repeat only a delivery whose 250 had arrived and whose commit had not yet been made. Leases are
short (`OUTBOX_LEASE`) and renewed every `RENEW_EVERY` while a row is handed over, in flight or
awaiting its record, so another gateway sharing the database takes over a dead one's rows within
seconds; an outcome is recorded only for a row still ours (see `_record`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import deque
from datetime import datetime
from typing import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from gateway.act.compose import compose_failure_notice
from gateway.act.transport import Outcome, Transport
from gateway.decide.acknowledge import AckKind, make_message_id
from gateway.decide.retry import RetryPolicy, next_attempt
from gateway.domain.states import OutboxState, State
from gateway.ops.logs import kv
from gateway.store import casework, memory
from gateway.store.database import URGENT
from gateway.store.models import MessageRow, OutboxRow
from gateway.store.queue import claim_outbox, release_outbox, renew_outbox, transition
from gateway.store.raws import load_small_raws
from gateway.triage.facts import parse_message
from gateway.workers.bounce import failed_recipients, report_failure
from gateway.workers.dispatch import (DELIVERY_KINDS, OUTBOX_LEASE, RENEW_EVERY, Job, complete_from_rows,
                                     jobs_for, outbox_row)
from gateway.workers.runtime import Runtime, Wakeup

log = logging.getLogger("parentgate.delivery")
LEASE = OUTBOX_LEASE
SWEEP = 1.0  # seconds between claims while handed rows keep the worker busy
MoveFn = Callable[["Job"], Awaitable[Outcome]]


class DeliveryWorker:
    def __init__(self, rt: Runtime, transport: Transport, *, mover: MoveFn | None = None,
                 outbound: Transport | None = None) -> None:
        self.rt = rt
        self.transport = transport
        # Mail we write ourselves (acknowledgements, summaries, copies, notices) may leave through a
        # submission server (IMAP mode); the parents' mail itself goes where [delivery] says.
        self.outbound = outbound or transport
        self.mover = mover
        self.wakeup = Wakeup()
        self._stopping = False
        # Rows triage leased to this gateway as it wrote them (`hand_over`): attempted without a claim
        # query. The database is still claimed from when something may be waiting there (`wake`: a
        # release, a requeue), and at least every SWEEP seconds, so due retries interleave with new mail.
        self._handed: deque[Job] = deque()
        self._claim_wanted = True
        self._next_sweep = 0.0
        # Attempts in progress, and finished attempts whose outcome is not committed yet (by outbox id):
        # their leases are renewed until the record is made.
        self._in_flight: dict[int, Job] = {}
        self._outcomes: list[tuple[Job, Outcome]] = []
        self._unrecorded: dict[int, Job] = {}
        self._to_record = Wakeup()
        self._record_done = False

    def hand_over(self, jobs: list[Job]) -> None:
        self._handed.extend(jobs)
        self.wakeup.set()

    def wake(self) -> None:
        self._claim_wanted = True
        self.wakeup.set()

    def policy(self) -> RetryPolicy:
        d = self.rt.config.delivery
        return RetryPolicy(d.retry_first_delay, d.retry_max_delay, d.lifetime)

    def _take_handed(self, room: int) -> list[Job]:
        jobs: list[Job] = []
        now = self.rt.clock.now()
        while self._handed and len(jobs) < room:
            job = self._handed.popleft()
            if job.lease_until is not None and job.lease_until - now < LEASE / 2:
                # Waited too long in memory: its lease could run out mid-attempt and let a claim take it
                # too. Left to the claim that takes it once the lease has ended: never attempted twice.
                continue
            jobs.append(job)
        return jobs

    def _claim_share(self, room: int) -> int:
        """How many rows to claim from the database now: none unless rows may be waiting there (a
        wake-up, or the periodic sweep); then all the room, or half of it while handed rows wait, so
        that neither new mail nor due retries wait for the other."""
        if room <= 0 or not (self._claim_wanted or time.monotonic() >= self._next_sweep):
            return 0
        return room if not self._handed else max(1, room // 2)

    async def fill(self, room: int) -> list[Job]:
        """Jobs to start in `room` free slots: claimed rows first, then handed rows."""
        share = self._claim_share(room)
        jobs: list[Job] = []
        if share:
            jobs = await self._claim_with(lambda s: _claim(s, self.rt, share), share)
        return jobs + self._take_handed(room - len(jobs))

    async def _claim_with(self, fn: Callable[[Session], list[Job]], room: int) -> list[Job]:
        if room:
            # Cleared before the claim, so a wake-up arriving during it is not lost.
            self._claim_wanted = False
            self._next_sweep = time.monotonic() + SWEEP
        jobs = await self.rt.db.run(fn)
        if room and len(jobs) >= room:
            self._claim_wanted = True
        return jobs

    async def run_once(self) -> int:
        """Attempt the handed rows and one claimed batch of due rows (used by tests and the CLI)."""
        limit = self.rt.config.delivery.concurrency
        jobs = self._take_handed(limit)
        room = limit - len(jobs)
        if room:
            jobs += await self.rt.db.run(lambda s: _claim(s, self.rt, room))
        if not jobs:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(job) for job in jobs))
        await self.rt.db.run(lambda s: self._record(s, list(zip(jobs, outcomes))))
        return len(jobs)

    async def run_until_idle(self) -> int:
        total = 0
        while n := await self.run_once():
            total += n
        return total

    async def run(self) -> None:
        """Until stopped: keep up to `concurrency` attempts in flight; each outcome is recorded at once."""
        in_flight: dict[asyncio.Task[Outcome], Job] = {}
        recorder = asyncio.create_task(self._record_outcomes(), name="delivery-record")
        keeper = asyncio.create_task(self._keep_leases(), name="delivery-leases")

        def start(jobs: list[Job]) -> None:
            for job in jobs:
                task = asyncio.create_task(self._attempt(job))
                in_flight[task] = job
                self._in_flight[job.outbox_id] = job
                # The outcome goes to the recorder the moment the attempt ends, even while this loop
                # waits for a claim.
                task.add_done_callback(lambda t, job=job: t.cancelled() or self._finished(job, t.result()))

        try:
            while not (self._stopping and not in_flight):
                self.rt.metrics.tick("delivery")
                limit = self.rt.config.delivery.concurrency
                if not self._stopping:
                    # An attempt holds its slot until its outcome is committed, so that the deliveries a
                    # SIGKILL can repeat (sent, not yet recorded) never exceed `concurrency`.
                    start(await self.fill(limit - len(in_flight) - len(self._unrecorded)))
                if not in_flight:
                    await self.wakeup.wait(1.0)
                    continue
                waker = asyncio.create_task(self.wakeup.wait(1.0))
                done, _ = await asyncio.wait([*in_flight, waker], return_when=asyncio.FIRST_COMPLETED)
                if waker not in done:
                    waker.cancel()
                # Our own tasks (not `done`, which also holds the wake-up task); their outcomes went to
                # the recorder already.
                for task in [t for t in in_flight if t in done]:
                    del in_flight[task]
        finally:
            # The outcomes still waiting are committed before the worker ends.
            self._record_done = True
            self._to_record.set()
            keeper.cancel()
            await asyncio.gather(recorder, keeper, return_exceptions=True)

    def _finished(self, job: Job, outcome: Outcome) -> None:
        """An attempt's outcome, for the recorder; its slot stays taken until the outcome is committed."""
        self._in_flight.pop(job.outbox_id, None)
        self._unrecorded[job.outbox_id] = job
        self._outcomes.append((job, outcome))
        self._to_record.set()

    async def _record_outcomes(self) -> None:
        """Commit outcomes as they come: one transaction for all those waiting (a group commit, bounded
        by how long the previous commit took), ahead of the triage and claim work queued for the
        database (the intake's priority), never together with a claim."""
        while True:
            await self._to_record.wait(1.0)
            await self._flush_outcomes()
            if self._record_done and not self._outcomes:
                return

    async def _flush_outcomes(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await self.rt.db.run(lambda s: self._record(s, batch), priority=URGENT)
            except Exception:  # noqa: BLE001 - one unrecordable outcome must not hold up the others
                log.exception("recording %d delivery outcome(s) failed; recording them one by one", len(batch))
                for one in batch:
                    try:
                        await self.rt.db.run(lambda s, one=one: self._record(s, [one]), priority=URGENT)
                    except Exception:  # noqa: BLE001 - its lease expires and it is attempted again
                        log.exception("outbox %s: the outcome could not be recorded", one[0].outbox_id)
            for job, _ in batch:
                self._unrecorded.pop(job.outbox_id, None)
            self.wakeup.set()  # their slots are free

    async def _keep_leases(self) -> None:
        """Every RENEW_EVERY: renew the leases of rows handed over, in flight, or awaiting their record.

        A handed row whose lease is no longer ours is dropped (another gateway took it over); an
        attempt in flight whose lease was lost is logged, and its outcome not recorded (`_record`)."""
        while True:
            await asyncio.sleep(RENEW_EVERY.total_seconds())
            try:
                await self.renew_leases()
            except Exception:  # noqa: BLE001 - a database hiccup: the next round tries again
                log.exception("renewing the outbox leases failed")

    async def renew_leases(self) -> int:
        handed = {job.outbox_id for job in self._handed}
        ids = sorted(handed | set(self._in_flight) | set(self._unrecorded))
        if not ids:
            return 0
        owner, until = self.rt.owner, self.rt.clock.now() + LEASE
        mine = set(await self.rt.db.run(lambda s: renew_outbox(s, ids, owner=owner, until=until), priority=URGENT))
        kept: deque[Job] = deque()
        for job in self._handed:
            if job.outbox_id in mine:
                kept.append(dataclasses.replace(job, lease_until=until))
            elif job.outbox_id in handed:
                log.warning("outbox %s: lease lost before the attempt; left to the gateway that holds it",
                            job.outbox_id)
        # Jobs handed over during the renewal (not in `ids`) are kept as they are.
        kept.extend(job for job in self._handed if job.outbox_id not in handed)
        self._handed = kept
        # Rows finished meanwhile are not renewed because they are done; only an attempt still in
        # progress can have lost its lease.
        for lost in sorted(set(ids) & set(self._in_flight) - mine):
            log.warning("outbox %s: lease lost while the attempt was in progress", lost)
        return len(mine)

    async def release_handed(self) -> int:
        """On stopping: rows handed over but never attempted lose their lease, for the next claim."""
        ids, self._handed = [job.outbox_id for job in self._handed], deque()
        if not ids:
            return 0
        owner = self.rt.owner
        return await self.rt.db.run(lambda s: release_outbox(s, ids, owner))

    def stop(self) -> None:
        self._stopping = True
        self.wakeup.set()

    async def _attempt(self, job: Job) -> Outcome:
        try:
            if job.kind == "imap_move":
                if self.mover is None:
                    return Outcome(ok=False, temporary=True, detail="IMAP mode is not running")
                return await self.mover(job)
            transport = self.transport if job.kind == "deliver" else self.outbound
            return await transport.send(job.mail_from, job.rcpts, job.data)
        except Exception as exc:  # noqa: BLE001 - an unexpected error is a temporary failure, retried
            log.exception("outbox %s: delivery attempt raised", job.outbox_id)
            return Outcome(ok=False, temporary=True, detail=f"internal error: {exc.__class__.__name__}")

    def _record(self, session: Session, results: list[tuple[Job, Outcome]]) -> None:
        now = self.rt.clock.now()
        rows, messages, siblings = _load_for_record(session, [job.outbox_id for job, _ in results])
        touched: dict[int, MessageRow] = {}
        for job, outcome in results:
            row = rows.get(job.outbox_id)
            if row is None or row.state not in (OutboxState.PENDING.value, OutboxState.DEFERRED.value):
                continue
            if row.lease_owner not in (None, self.rt.owner):
                # Our lease ran out and another gateway took the row over: it is that gateway's to
                # attempt and record. Ours may have been delivered too (at least once, see the module).
                log.warning("outbox %s (message %s): lease lost to another gateway before the outcome "
                            "(%s) was recorded; not recorded here", row.id, row.message,
                            "sent" if outcome.ok else "failed")
                continue
            row.lease_owner, row.lease_until = None, None
            row.attempts += 1
            row.first_attempt_at = row.first_attempt_at or now
            message = messages.get(row.message) if row.message is not None else None
            if message is not None:
                touched[message.id] = message
            if outcome.ok:
                self._sent(session, row, message, outcome, now)
                self.rt.metrics.delivery(row.kind, "sent")
                continue
            row.last_error = outcome.detail[:500]
            retry = next_attempt(row.first_attempt_at, row.attempts, now, self.policy()) if outcome.temporary else None
            if retry is not None:
                row.state, row.not_before = OutboxState.DEFERRED.value, retry
                self.rt.metrics.delivery(row.kind, "deferred")
                log.info("outbox %s deferred until %s %s", row.id, retry.isoformat(),
                         kv(id=row.message, kind=row.kind, state="deferred", attempts=row.attempts,
                            reply=outcome.detail[:200]))
                continue
            row.state, row.finished_at = OutboxState.FAILED.value, now
            self.rt.metrics.delivery(row.kind, "failed")
            log.warning("outbox %s failed %s", row.id, kv(id=row.message, kind=row.kind, state="failed",
                                                           attempts=row.attempts, reply=outcome.detail[:200]))
            # A DSN that fails is not reported again: the postmaster heard of the original failure
            # (Postfix too drops double bounces unless notify_classes asks for them).
            if row.kind not in ("notice", "dsn"):
                self._notify_postmaster(session, row, message, row.rcpts, outcome.detail, now)
            report_failure(session, self.rt, row, message, list(row.rcpts), outcome, now)
        # Once per message per batch, from the rows already in memory: every outcome of the batch is
        # applied first, so a message whose rows all finished in this batch completes exactly once.
        for message in touched.values():
            complete_from_rows(session, message, siblings.get(message.id, []), now, self.rt.owner)

    def _sent(self, session: Session, row: OutboxRow, message: MessageRow | None, outcome: Outcome,
              now: datetime) -> None:
        row.state, row.finished_at, row.last_error = OutboxState.SENT.value, now, None
        if row.kind == "ack" and row.ack_sender and row.ack_kind and message is not None:
            # Written only now that the reply has been handed on (issue: "after the reply was handed
            # to delivery"), so a failed reply does not silence the next one.
            memory.record_acknowledgement(session, school=message.school, sender=row.ack_sender,
                                          kind=row.ack_kind, now=now, message=message.id)
            if row.ack_kind == AckKind.BLOCKED.value:
                # The record of notices sent to blocked senders, kept with the block's history.
                casework.record_block_notice(session, school=message.school, sender=row.ack_sender, now=now,
                                             message=message.id)
            self.rt.metrics.acknowledgement_sent()
        if row.kind == "imap_move" and message is not None and row.params:
            message.folder = str(row.params.get("to"))
        if outcome.refused and row.kind != "notice":
            refusals = "; ".join(f"<{r.address}>: {r.reply}" for r in failed_recipients(list(outcome.refused), outcome))
            # Sent to the others; what the server said about the refused ones stays visible in `show`.
            row.last_error = f"refused: {refusals}"[:500]
            self._notify_postmaster(session, row, message, list(outcome.refused), refusals, now)
            report_failure(session, self.rt, row, message, list(outcome.refused), outcome, now)

    def _notify_postmaster(self, session: Session, row: OutboxRow, message: MessageRow | None,
                           rcpts: list[str], error: str, now: datetime) -> None:
        if message is None:
            return
        config = self.rt.config
        try:
            data = compose_failure_notice(
                original=parse_message(message.raw), message_ref=str(message.id), to_addr=config.gateway.postmaster,
                from_addr=config.gateway.postmaster, recipients=rcpts, error=error, attempts=row.attempts, now=now,
                message_id=make_message_id(config.smtp.hostname, uuid.uuid4().hex))
        except Exception as exc:  # noqa: BLE001 - a notice that cannot be built must not undo the outcome
            # The failure itself stays recorded on the outbox row, where `parentgate show` finds it.
            log.warning("message %s: the postmaster notice could not be built (%s); skipped", message.id,
                        exc.__class__.__name__)
            return
        session.add(outbox_row(message, "notice", mail_from="", rcpts=[config.gateway.postmaster], now=now,
                               payload=data))


def _load_for_record(session: Session, outbox_ids: list[int]) -> tuple[
        dict[int, OutboxRow], dict[int, MessageRow], dict[int, list[OutboxRow]]]:
    """The batch's outbox rows, their messages, and every delivery row of those messages: three
    queries per batch instead of three per outcome. Loaded before anything changes, so no query
    here has to flush; later changes are made to these same objects."""
    # Recording an outcome reads states and writes a few columns: the bytes and the findings of the
    # messages (and the payloads of replies) are left in the database unless a notice needs them.
    query = select(OutboxRow).where(OutboxRow.id.in_(outbox_ids)).options(defer(OutboxRow.payload))
    if session.get_bind().dialect.name == "postgresql":
        # Locked (in id order, as every renewal locks them) so that the lease owner read here is still
        # the owner at the commit: another gateway's claim skips these rows meanwhile.
        query = query.order_by(OutboxRow.id).with_for_update(of=OutboxRow)
    rows = {r.id: r for r in session.scalars(query)}
    message_ids = sorted({r.message for r in rows.values() if r.message is not None})
    messages = {m.id: m for m in session.scalars(select(MessageRow).where(MessageRow.id.in_(message_ids)).options(
        defer(MessageRow.raw), defer(MessageRow.reasons), defer(MessageRow.flags)))}
    siblings: dict[int, list[OutboxRow]] = {}
    for r in session.scalars(select(OutboxRow).where(OutboxRow.message.in_(message_ids),
                                                     OutboxRow.kind.in_(DELIVERY_KINDS)).options(
                                                         defer(OutboxRow.payload))):
        if r.message is not None:
            siblings.setdefault(r.message, []).append(r)
    return rows, messages, siblings


def _claim(session: Session, rt: Runtime, limit: int) -> list[Job]:
    if limit <= 0:
        return []
    rows = claim_outbox(session, owner=rt.owner, now=rt.clock.now(), lease=LEASE, limit=limit)
    # The batch's messages in one query rather than one per row (those already in the session included).
    wanted = sorted({row.message for row in rows if row.message is not None})
    # Large messages' bytes are read one at a time as their jobs are built (store.raws).
    cache = {m.id: m for m in session.scalars(select(MessageRow).options(defer(MessageRow.raw))
                                              .where(MessageRow.id.in_(wanted)))} if wanted else {}
    load_small_raws(session, list(cache.values()))
    return jobs_for(rows, cache, rt.config.smtp.hostname)


def requeue(session: Session, message: MessageRow, *, actor: str, now: datetime) -> int:
    """A failed message goes back to the queue: its failed delivery rows are tried afresh."""
    rows = list(session.scalars(select(OutboxRow).where(OutboxRow.message == message.id,
                                                        OutboxRow.kind.in_(DELIVERY_KINDS),
                                                        OutboxRow.state == OutboxState.FAILED.value)))
    for row in rows:
        row.state, row.attempts, row.first_attempt_at, row.not_before = OutboxState.PENDING.value, 0, None, now
        row.finished_at, row.last_error = None, None
    transition(session, message, State.QUEUED, actor=actor, now=now, reason=f"requeued {len(rows)} delivery row(s)")
    return len(rows)

