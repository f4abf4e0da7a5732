"""Prometheus metrics owned by one running gateway: counters the workers bump, gauges read from the store.

One `Metrics` object per runtime with its own registry (no module-level singletons). Workers call its
small methods; the queue gauges are refreshed from the database by `refresh`, which the metrics server
runs periodically (one GROUP BY and a few one-row reads on the database threads, never on the loop).
It reads state; it never changes it.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.domain.states import OutboxState, State
from gateway.store.stats import QueueSnapshot

# The worker loops whose liveness /healthz checks.
LOOPS = ("triage", "delivery", "jobs")
# The states whose oldest member's age is reported: mail waiting for the school, for a retry, for a human.
WAITING = (State.HELD.value, OutboxState.DEFERRED.value, State.IN_REVIEW.value)


class Metrics:
    """The gateway's metric families, and the last tick of each worker loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Gauge("parentgate_messages", "Messages in the database by state.", ["state"], registry=r)
        self.oldest_age = Gauge("parentgate_oldest_message_age_seconds",
                                "Age of the oldest message waiting in a state (held, deferred, in_review); "
                                "0 when none waits.", ["state"], registry=r)
        self.deliveries = Counter("parentgate_deliveries", "Delivery attempts by outcome and outbox kind.",
                                  ["outcome", "kind"], registry=r)
        self.triage_seconds = Histogram("parentgate_triage_duration_seconds",
                                        "Time to judge and record one triage batch.", registry=r,
                                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.triaged = Counter("parentgate_triaged_messages", "Messages triaged.", registry=r)
        self.acks_sent = Counter("parentgate_acknowledgements_sent", "Acknowledgements handed to the next hop.",
                                 registry=r)
        self.acks_suppressed = Counter("parentgate_acknowledgements_suppressed",
                                       "Acknowledgements not sent, by reason (RFC 3834 and school settings).",
                                       ["reason"], registry=r)
        self.imap_ok = Gauge("parentgate_imap_mailbox_ok",
                             "1 while an IMAP mailbox is watched without errors, 0 while it is failing.",
                             ["mailbox"], registry=r)
        self.smtp_sessions = Gauge("parentgate_smtp_sessions_open", "SMTP sessions open on the listener.",
                                   registry=r)
        self.last_refresh = Gauge("parentgate_queue_refreshed_timestamp_seconds",
                                  "When the queue gauges were last read from the database (Unix time).",
                                  registry=r)
        for state in State:
            self.messages.labels(state=state.value)
        for waiting in WAITING:
            self.oldest_age.labels(state=waiting)
        self._oldest: dict[str, datetime] = {}
        self._lock = threading.Lock()
        # Monotonic time of each worker loop's last round, counted from start-up.
        started = time.monotonic()
        self.ticks: dict[str, float] = {name: started for name in LOOPS}
        # Set once every worker has been started: until then the gateway listens but is not ready.
        self.running = False

    def tick(self, loop: str) -> None:
        """A worker loop went round: /healthz checks that each does so within its interval."""
        self.ticks[loop] = time.monotonic()

    def delivery(self, kind: str, outcome: str) -> None:
        """One delivery attempt's outcome: sent, deferred or failed."""
        self.deliveries.labels(outcome=outcome, kind=kind).inc()

    def triage_batch(self, seconds: float, messages: int) -> None:
        self.triage_seconds.observe(seconds)
        self.triaged.inc(messages)

    def acknowledgement_sent(self) -> None:
        self.acks_sent.inc()

    def acknowledgement_suppressed(self, reason: str) -> None:
        self.acks_suppressed.labels(reason=reason).inc()

    def session_opened(self) -> None:
        self.smtp_sessions.inc()

    def session_closed(self) -> None:
        self.smtp_sessions.dec()

    def apply(self, snap: QueueSnapshot, mailboxes: tuple[str, ...]) -> None:
        """The queue gauges from a snapshot read from the database."""
        for state in State:
            self.messages.labels(state=state.value).set(snap.counts.get(state.value, 0))
        with self._lock:
            self._oldest = dict(snap.oldest)
        for name in mailboxes:
            # A configured mailbox with no status yet has not connected: it counts as failing.
            self.imap_ok.labels(mailbox=name).set(1 if snap.mailboxes.get(name, False) else 0)
        self.last_refresh.set(time.time())

    def exposition(self, now: datetime) -> bytes:
        """The text exposition format, with ages computed at `now` from the last snapshot."""
        with self._lock:
            oldest = dict(self._oldest)
        for state in WAITING:
            at = oldest.get(state)
            self.oldest_age.labels(state=state).set(max(0.0, (now - at).total_seconds()) if at else 0.0)
        return generate_latest(self.registry)
