"""Hostile header and envelope values never fail a sender's neighbours, nor the sender itself.

On PostgreSQL a NUL byte in a text column, or a value longer than its VARCHAR, is refused by the
server (SQLite takes both); incoming mail is committed in groups, so one such row used to fail every
message committed with it. These tests send hostile messages among clean ones, concurrently, through
the real listener, and follow every message to the sink.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from gateway.clock import FixedClock
from gateway.ingest.inbox import Inbox, Incoming, Unstorable
from gateway.store.database import Database
from tests.conftest import utc
from tests.support import STAFF, InProcessGateway, Sink, wire, write_config

OPEN_TUESDAY = utc(2026, 11, 24, 10, 0)
LONG_FROM = "a" * 380 + "@example.com"


def raw_message(*, sender: str | None = None, subject: str | None = None, msgid: str = "<clean@parent.example>",
                references: str | None = None, body: str = "hello") -> bytes:
    # A family and a thread of its own for each message, so that no count sends any to the Head.
    sender = sender or f"Parent {body} <{body}@example.com>"
    subject = subject or f"Reading book for {body}"
    lines = [f"From: {sender}", f"To: {STAFF}", f"Subject: {subject}", "Date: Tue, 24 Nov 2026 10:00:00 +0000",
             f"Message-ID: {msgid}"]
    if references is not None:
        lines.append(f"References: {references}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode("utf-8")


HOSTILE = {
    "nul-message-id": raw_message(msgid="<bad\x00id@parent.example>", body="nul-message-id"),
    "nul-subject": raw_message(subject="Reading\x00book", body="nul-subject"),
    "nul-from": raw_message(sender="Priya\x00Patel <mum\x00.patel@example.com>", body="nul-from"),
    "nul-references": raw_message(references="<a\x00b@parent.example> <c@parent.example>", body="nul-references"),
    "long-from": raw_message(sender=f"Someone <{LONG_FROM}>", body="long-from"),
    "control-characters": raw_message(msgid="<a\x1b[31m\x0b\x0cb@parent.example>", subject="\x1b[2Jhi",
                                      body="control-characters"),
}


@pytest.fixture
async def gateway(tmp_path: Path, sink: Sink, database_url: str):
    cfg = write_config(tmp_path, sink_port=sink.port, database=database_url,
                       extra="[acknowledge]\nenabled = true\n")
    gw = await InProcessGateway(cfg, FixedClock(OPEN_TUESDAY)).start()
    yield gw
    await gw.stop()


@pytest.mark.timeout(180)
async def test_hostile_header_values_are_stored_and_delivered_without_hurting_clean_mail(gateway, sink):
    clean = {f"clean-{i}": raw_message(msgid=f"<clean{i}@parent.example>", body=f"clean-{i}") for i in range(20)}
    everything = {**clean, **HOSTILE}
    # All at once, so that hostile and clean messages share the intake's commit groups.
    codes = await asyncio.gather(*(gateway.send(raw) for raw in everything.values()))
    answers = dict(zip(everything, codes))
    assert all(code != 451 for code, _ in answers.values()), answers
    assert all(answers[name][0] == 250 for name in clean), answers
    accepted = {name for name, (code, _) in answers.items() if code == 250}
    # Each hostile one is either stored or refused for good (5xx), never deferred.
    assert all(answers[name][0] == 250 or 500 <= answers[name][0] < 600 for name in HOSTILE), answers
    await gateway.settle()
    rows = gateway.messages()
    assert len(rows) == len(accepted)
    assert {row.state for row in rows} == {"delivered"}, [(r.id, r.state, r.note) for r in rows]
    bodies = {r.data.split(b"\r\n\r\n", 1)[1].strip().decode() for r in sink.to(STAFF)}
    assert bodies == accepted
    # The raw bytes are delivered untouched, NUL bytes included.
    delivered = {r.data.split(b"\r\n\r\n", 1)[1].strip().decode(): r.data for r in sink.to(STAFF)}
    for name in accepted & set(HOSTILE):
        assert delivered[name].endswith(wire(HOSTILE[name]))


async def test_a_hostile_envelope_is_stored_with_its_text_columns_cleaned(gateway, sink):
    code, _ = await gateway.send(HOSTILE["nul-message-id"])
    assert code == 250
    [row] = gateway.messages()
    assert "\x00" not in (row.message_id or "") and row.message_id.startswith("<bad")
    await gateway.settle()
    [row] = gateway.messages()
    assert row.state == "delivered"


async def _store_group(db: Database, items: list[Incoming], fail_on: str) -> list[int | BaseException]:
    """The inbox's real group commit, with one item made unstorable whatever the backend."""
    from gateway.ingest import inbox as inbox_mod

    real = inbox_mod.insert_received

    def failing(session: Session, group: list[Incoming], clock: FixedClock, actor: str) -> list[int]:
        if any(item.mail_from == fail_on for item in group):
            raise ValueError("this row cannot be stored")
        return real(session, group, clock, actor)

    inbox = Inbox(db, FixedClock(OPEN_TUESDAY), insert=failing)
    inbox.start()
    try:
        return await asyncio.gather(*(inbox.receive(item) for item in items), return_exceptions=True)
    finally:
        await inbox.stop()


async def test_one_unstorable_row_fails_only_its_own_message(database_url: str):
    db = Database(database_url)
    try:
        items = [Incoming(raw=f"Subject: {i}\r\n\r\nbody\r\n".encode(), mail_from=f"p{i}@example.com",
                          rcpt_tos=(STAFF,), school="oakfield") for i in range(30)]
        results = await _store_group(db, items, fail_on="p7@example.com")
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and isinstance(results[7], Unstorable) and results[7].permanent
        ids = [r for r in results if not isinstance(r, BaseException)]
        assert len(set(ids)) == 29
    finally:
        db.close()
