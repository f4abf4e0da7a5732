"""APScheduler wiring: release held mail at each school's opening, sweep for anything overdue, write
the DSL's digests when due, enforce retention. Thin wrappers: the work itself lives in workers and services."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from gateway.workers.runtime import Runtime

log = logging.getLogger("parentgate.jobs")
SWEEP_EVERY = timedelta(seconds=30)


def next_openings(rt: Runtime, now: datetime) -> datetime | None:
    """The soonest opening of any school after `now` (None when no calendar has one in sight)."""
    times = []
    for school in rt.config.schools:
        try:
            times.append(school.calendar.next_opening(now + timedelta(seconds=1)))
        except ValueError:
            continue
    return min(times) if times else None


class Jobs:
    def __init__(self, rt: Runtime, *, release: Callable[[], Awaitable[int]],
                 purge: Callable[[], Awaitable[int]], reminders: Callable[[], Awaitable[int]] | None = None,
                 digest: Callable[[], Awaitable[int]] | None = None) -> None:
        self.rt = rt
        self._release = release
        self._purge = purge
        self._reminders = reminders
        self._digest = digest
        self.scheduler = AsyncIOScheduler(timezone="UTC")

    def start(self) -> None:
        s = self.scheduler
        # The sweep also runs once at start-up, so mail held across downtime goes out at once.
        s.add_job(self._sweep, IntervalTrigger(seconds=SWEEP_EVERY.total_seconds()), id="release-sweep",
                  next_run_time=datetime.now(tz=self.rt.clock.now().tzinfo), max_instances=1, coalesce=True)
        s.add_job(self._purge_job, IntervalTrigger(hours=6), id="retention", max_instances=1, coalesce=True)
        if self._reminders is not None:
            # Communication plans' review reminders (each sent once); also at start-up.
            s.add_job(self._reminder_job, IntervalTrigger(minutes=30), id="plan-reminders", max_instances=1,
                      coalesce=True, next_run_time=datetime.now(tz=self.rt.clock.now().tzinfo))
        # The DSL's digest is due at 08:00 and 13:00 on school days and at once on other days; the
        # sweep writes each within SWEEP_EVERY of being due (gateway.decide.digest says when).
        if self._digest is not None:
            s.add_job(self._digest_job, IntervalTrigger(seconds=SWEEP_EVERY.total_seconds()), id="dsl-digest",
                      next_run_time=datetime.now(tz=self.rt.clock.now().tzinfo), max_instances=1, coalesce=True)
        s.start()
        self.arm_opening()

    def arm_opening(self) -> None:
        """(Re)schedule the release job at the next school opening."""
        at = next_openings(self.rt, self.rt.clock.now())
        if at is None:
            return
        self.scheduler.add_job(self._at_opening, DateTrigger(run_date=at), id="release-at-opening",
                               replace_existing=True, misfire_grace_time=3600)
        log.info("next release at opening: %s", at.isoformat())

    async def _at_opening(self) -> None:
        await self._sweep()
        self.arm_opening()

    async def _sweep(self) -> None:
        self.rt.metrics.tick("jobs")
        try:
            n = await self._release()
        except Exception:  # noqa: BLE001 - a failed sweep is retried by the next one
            log.exception("release sweep failed")
            return
        if n:
            log.info("released %d held message(s)", n)

    async def _digest_job(self) -> None:
        if self._digest is None:
            return
        try:
            n = await self._digest()
        except Exception:  # noqa: BLE001 - a failed digest sweep is retried by the next one
            log.exception("DSL digest sweep failed")
            return
        if n:
            log.info("wrote %d DSL digest(s)", n)

    async def _purge_job(self) -> None:
        try:
            n = await self._purge()
        except Exception:  # noqa: BLE001
            log.exception("retention purge failed")
            return
        if n:
            log.info("retention: deleted %d expired message(s) and incident(s)", n)

    async def _reminder_job(self) -> None:
        assert self._reminders is not None
        try:
            n = await self._reminders()
        except Exception:  # noqa: BLE001 - the next run tries again
            log.exception("plan review reminders failed")
            return
        if n:
            log.info("queued %d plan review reminder(s)", n)
            self.rt.wake_delivery()

    def shutdown(self) -> None:
        self.scheduler.shutdown(wait=False)
