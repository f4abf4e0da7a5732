"""The store on SQLite and PostgreSQL: the one transition door, events, leased claims, quarantine."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.clock import FixedClock
from gateway.domain.states import State
from gateway.ingest.inbox import Incoming, insert_received
from gateway.store.database import Database
from gateway.store.models import EventRow, MessageRow
from gateway.store.queue import (MAX_CLAIMS, TransitionError, claim_messages, clear_leases, failed_attempt,
                                 renew_messages, transition)
from tests.conftest import utc

NOW = utc(2026, 11, 24, 10, 0)


@pytest.fixture
def db(database_url: str):
    database = Database(database_url)
    yield database
    database.close()


def store(db: Database, n: int, clock: FixedClock) -> list[int]:
    items = [Incoming(raw=f"Message-ID: <m{i}@x>\r\n\r\nbody {i}\r\n".encode(), mail_from="p@example.com",
                      rcpt_tos=("t@school.example",), school="oakfield") for i in range(n)]
    return db.transact(lambda s: insert_received(s, items, clock, "test"))


def test_received_messages_keep_raw_bytes_envelope_and_a_first_event(db):
    [mid] = store(db, 1, FixedClock(NOW))
    row = db.transact(lambda s: s.get(MessageRow, mid))
    assert row.raw == b"Message-ID: <m0@x>\r\n\r\nbody 0\r\n"
    assert row.message_id == "<m0@x>" and row.mail_from == "p@example.com" and row.rcpt_tos == ["t@school.example"]
    assert row.received_at == NOW and row.received_at.tzinfo is not None
    events = db.transact(lambda s: [(e.from_state, e.to_state) for e in s.scalars(select(EventRow))])
    assert events == [(None, "received")]


def test_transition_checks_the_table_and_appends_an_event_in_the_same_transaction(db):
    [mid] = store(db, 1, FixedClock(NOW))

    def move(s):
        row = s.get(MessageRow, mid)
        transition(s, row, State.TRIAGED, actor="test", now=NOW, reason="ok", route="staff")

    db.transact(move)
    with pytest.raises(TransitionError):
        db.transact(lambda s: transition(s, s.get(MessageRow, mid), State.DELIVERED, actor="test", now=NOW))
    row = db.transact(lambda s: s.get(MessageRow, mid))
    assert row.state == "triaged" and row.route == "staff"
    trail = db.transact(lambda s: [(e.from_state, e.to_state, e.actor) for e in s.scalars(
        select(EventRow).where(EventRow.message == mid).order_by(EventRow.id))])
    assert trail == [(None, "received", "test"), ("received", "triaged", "test")]


def test_an_event_is_readable_in_its_transaction_and_goes_with_a_rolled_back_savepoint(db):
    [a, b] = store(db, 2, FixedClock(NOW))

    def move(s):
        with s.begin_nested():
            transition(s, s.get(MessageRow, a), State.TRIAGED, actor="test", now=NOW, reason="kept")
        with pytest.raises(RuntimeError):
            with s.begin_nested():
                transition(s, s.get(MessageRow, b), State.TRIAGED, actor="test", now=NOW, reason="undone")
                raise RuntimeError("this message's triage failed")
        # Written before any query of this transaction can read it.
        return [(e.message, e.reason) for e in s.scalars(select(EventRow).where(EventRow.to_state == "triaged"))]

    assert db.transact(move) == [(a, "kept")]
    states = db.transact(lambda s: {m.id: m.state for m in s.scalars(select(MessageRow))})
    assert states == {a: "triaged", b: "received"}
    trail = db.transact(lambda s: [(e.message, e.to_state) for e in s.scalars(select(EventRow).order_by(EventRow.id))])
    assert trail == [(a, "received"), (b, "received"), (a, "triaged")]


def test_a_failed_transaction_leaves_no_event_behind(db):
    [mid] = store(db, 1, FixedClock(NOW))

    def fail(s):
        transition(s, s.get(MessageRow, mid), State.TRIAGED, actor="test", now=NOW)
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        db.transact(fail)
    db.transact(lambda s: transition(s, s.get(MessageRow, mid), State.TRIAGED, actor="test", now=NOW, reason="2nd"))
    trail = db.transact(lambda s: [(e.to_state, e.reason) for e in s.scalars(select(EventRow).order_by(EventRow.id))])
    assert [to for to, _ in trail] == ["received", "triaged"] and trail[1][1] == "2nd"


def test_a_claim_is_a_lease_that_expires_and_claims_alone_never_quarantine(db):
    """A gateway killed in a crash loop claims batches it never works on: those claims cost nothing."""
    clock = FixedClock(NOW)
    [mid] = store(db, 1, clock)
    for attempt in range(MAX_CLAIMS + 2):
        rows = db.transact(lambda s: claim_messages(s, State.RECEIVED, owner="w", now=clock.now(),
                                                    lease=timedelta(seconds=15), limit=10))
        assert [r.id for r in rows] == [mid]
        # While the lease holds, nobody else gets the row.
        assert db.transact(lambda s: claim_messages(s, State.RECEIVED, owner="other", now=clock.now(),
                                                    lease=timedelta(seconds=15), limit=10)) == []
        clock.advance(timedelta(seconds=16))
    row = db.transact(lambda s: s.get(MessageRow, mid))
    assert (row.state, row.claims) == ("received", 0)


def test_only_failed_attempts_count_towards_quarantine(db):
    clock = FixedClock(NOW)
    [mid] = store(db, 1, clock)

    def fail(s):
        [row] = claim_messages(s, State.RECEIVED, owner="w", now=clock.now(), lease=timedelta(seconds=15), limit=1)
        return failed_attempt(row), row.lease_owner
    # Each failure drops the lease, so the message is tried again at once; the third says "quarantine".
    assert [db.transact(fail) for _ in range(MAX_CLAIMS)] == [(False, None)] * (MAX_CLAIMS - 1) + [(True, None)]


def test_a_renewal_extends_only_the_leases_still_ours(db):
    clock = FixedClock(NOW)
    a, b = store(db, 2, clock)
    lease = timedelta(seconds=15)
    db.transact(lambda s: claim_messages(s, State.RECEIVED, owner="w", now=NOW, lease=lease, limit=2))
    # b's lease ran out and another gateway took it over.
    clock.advance(timedelta(seconds=10))
    assert db.transact(lambda s: renew_messages(s, [a], State.RECEIVED, owner="w", until=clock.now() + lease)) == [a]
    clock.advance(timedelta(seconds=10))
    assert [r.id for r in db.transact(lambda s: claim_messages(s, State.RECEIVED, owner="x", now=clock.now(),
                                                               lease=lease, limit=2))] == [b]
    assert db.transact(lambda s: renew_messages(s, [a, b], State.RECEIVED, owner="w",
                                                until=clock.now() + lease)) == [a]
    owners = db.transact(lambda s: {r.id: (r.lease_owner, r.lease_until) for r in s.scalars(select(MessageRow))})
    assert owners == {a: ("w", clock.now() + lease), b: ("x", clock.now() + lease)}


def test_clear_leases_of_one_owner_leaves_the_others(db):
    clock = FixedClock(NOW)
    store(db, 4, clock)
    db.transact(lambda s: claim_messages(s, State.RECEIVED, owner="a", now=NOW, lease=timedelta(hours=1), limit=2))
    db.transact(lambda s: claim_messages(s, State.RECEIVED, owner="b", now=NOW, lease=timedelta(hours=1), limit=2))
    db.transact(lambda s: clear_leases(s, "a"))
    owners = db.transact(lambda s: sorted(str(r.lease_owner) for r in s.scalars(select(MessageRow))))
    assert owners == ["None", "None", "b", "b"]


def test_concurrent_workers_never_claim_the_same_row(db):
    clock = FixedClock(NOW)
    store(db, 60, clock)
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(3)

    def worker(name: str) -> None:
        barrier.wait()
        got: list[int] = []
        while rows := db.engine and _claim(db, name):
            got.extend(rows)
        claimed[name] = got

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [m for ids in claimed.values() for m in ids]
    assert sorted(every) == sorted(set(every))
    assert len(every) == 60


def _claim(db: Database, owner: str) -> list[int]:
    # A private session per call, as separate gateway processes would have.
    with db.session() as s, s.begin():
        return [r.id for r in claim_messages(s, State.RECEIVED, owner=owner, now=NOW,
                                             lease=timedelta(hours=1), limit=5)]
