"""Delivery status notifications through real sockets: gateway → a mail server that refuses some
recipients → the DSN back to the sender, through the same server (RFC 3464, RFC 5321 §6.1)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from gateway.clock import FixedClock
from gateway.store.models import OutboxRow
from gateway.store.reports import add_dsn_once
from gateway.workers.delivery import requeue
from tests.conftest import utc
from tests.integration.picky_sink import PickySink
from tests.support import DOMAIN, STAFF, InProcessGateway, message, write_config

OPEN_TUESDAY = utc(2026, 11, 24, 10, 0)
PARENT = "mum.patel@example.com"
POSTMASTER = f"postmaster@{DOMAIN}"
NOBODY = f"j.smyth@{DOMAIN}"
NOBODY_TOO = f"mr.jones@{DOMAIN}"
BUSY = f"busy@{DOMAIN}"
NO_SUCH = "550 5.1.1 <{}>: no such mailbox here"
NO_ACKS = "[acknowledge]\nenabled = false\n"


@pytest.fixture
def picky() -> Iterator[PickySink]:
    sink = PickySink({NOBODY: NO_SUCH.format(NOBODY), NOBODY_TOO: NO_SUCH.format(NOBODY_TOO),
                      BUSY: "451 4.2.1 <busy@oakfield-primary.sch.example>: mailbox busy, try later"}).start()
    yield sink
    sink.stop()


async def start_gateway(tmp_path: Path, sink: PickySink, database: str | None = None,
                        extra: str = NO_ACKS) -> InProcessGateway:
    cfg = write_config(tmp_path, sink_port=sink.port, database=database, extra=extra)
    return await InProcessGateway(cfg, FixedClock(OPEN_TUESDAY)).start()


def parts(report: Message) -> dict[str, Any]:
    """The three parts of a multipart/report by content type."""
    return {p.get_content_type(): p for p in report.iter_parts()}


def recipient_blocks(report: Message) -> list[Message]:
    """The per-recipient field groups of the message/delivery-status part (the first is per-message)."""
    status = parts(report)["message/delivery-status"]
    blocks = status.get_payload()
    assert blocks[0]["Reporting-MTA"] == "dns; gateway.test"
    assert blocks[0]["Arrival-Date"]
    return list(blocks[1:])


def dsn_rows(gw: InProcessGateway) -> list[OutboxRow]:
    return gw.rt.db.transact(lambda s: list(s.scalars(select(OutboxRow).where(OutboxRow.kind == "dsn"))))


async def test_a_550_sends_the_sender_one_dsn_with_the_servers_words(tmp_path, picky, database_url):
    gw = await start_gateway(tmp_path, picky, database_url)
    try:
        original = message(to=NOBODY, subject="Reading book")
        assert (await gw.send(original, rcpts=[NOBODY]))[0] == 250
        await gw.settle()
        [row] = gw.messages()
        assert row.state == "failed"
        [dsn] = picky.to(PARENT)
        # RFC 3464 §2 / RFC 5321 §4.5.5: a report from the null reverse-path, marked as automatic.
        assert dsn.mail_from == ""
        report = dsn.message
        assert report.get_content_type() == "multipart/report"
        assert report.get_param("report-type") == "delivery-status"
        assert report["Auto-Submitted"] == "auto-replied"
        assert report["To"] == PARENT
        assert report["From"].addresses[0].addr_spec == POSTMASTER
        assert [p.get_content_type() for p in report.iter_parts()] == [
            "text/plain", "message/delivery-status", "text/rfc822-headers"]
        [block] = recipient_blocks(report)
        assert block["Final-Recipient"] == f"rfc822; {NOBODY}"
        assert block["Action"] == "failed"
        assert block["Status"] == "5.1.1"
        assert block["Diagnostic-Code"] == f"smtp; 550 5.1.1 <{NOBODY}>: no such mailbox here"
        # The parent reads, in plain words, which address failed and what the server said.
        text = " ".join(parts(report)["text/plain"].get_content().split())
        assert NOBODY in text and "no such mailbox here" in text and "could NOT be delivered" in text
        headers = parts(report)["text/rfc822-headers"].get_payload(decode=True)
        assert b"Subject: Reading book" in headers and original["Message-ID"].encode() in headers
        assert b"could Maya have a new reading book" not in dsn.data
        # The postmaster keeps hearing, now with the server's words too.
        [notice] = picky.to(POSTMASTER)
        assert b"no such mailbox here" in notice.data
        assert len(dsn_rows(gw)) == 1
    finally:
        await gw.stop()


async def test_a_550_after_data_bounces_every_recipient_in_one_dsn(tmp_path):
    sink = PickySink(data_replies={PARENT: "554 5.6.0 message content rejected by policy"}).start()
    try:
        gw = await start_gateway(tmp_path, sink)
        try:
            assert (await gw.send(message(), rcpts=[STAFF, NOBODY]))[0] == 250
            await gw.settle()
            assert sink.to(STAFF) == []
            [dsn] = sink.to(PARENT)
            blocks = recipient_blocks(dsn.message)
            assert sorted(b["Final-Recipient"] for b in blocks) == sorted([f"rfc822; {STAFF}", f"rfc822; {NOBODY}"])
            assert {b["Status"] for b in blocks} == {"5.6.0"}
            assert {b["Diagnostic-Code"] for b in blocks} == {"smtp; 554 5.6.0 message content rejected by policy"}
        finally:
            await gw.stop()
    finally:
        sink.stop()


async def test_a_recipient_refused_while_others_were_accepted_is_bounced_alone(tmp_path, picky):
    gw = await start_gateway(tmp_path, picky)
    try:
        assert (await gw.send(message(), rcpts=[STAFF, NOBODY]))[0] == 250
        await gw.settle()
        assert len(picky.to(STAFF)) == 1
        [row] = gw.messages()
        assert row.state == "delivered"
        [dsn] = picky.reports_to(PARENT)
        [block] = recipient_blocks(dsn.message)
        assert block["Final-Recipient"] == f"rfc822; {NOBODY}"
        assert block["Diagnostic-Code"] == f"smtp; 550 5.1.1 <{NOBODY}>: no such mailbox here"
        [notice] = picky.to(POSTMASTER)
        assert b"no such mailbox here" in notice.data
        [deliver] = gw.rt.db.transact(lambda s: list(s.scalars(select(OutboxRow).where(OutboxRow.kind == "deliver"))))
        assert deliver.state == "sent" and "no such mailbox here" in (deliver.last_error or "")
    finally:
        await gw.stop()


async def test_two_failed_recipients_get_one_dsn_and_a_rerun_sends_no_second(tmp_path, picky, database_url):
    gw = await start_gateway(tmp_path, picky, database_url)
    try:
        assert (await gw.send(message(), rcpts=[NOBODY, NOBODY_TOO]))[0] == 250
        await gw.settle()
        [dsn] = picky.reports_to(PARENT)
        blocks = recipient_blocks(dsn.message)
        assert sorted(b["Final-Recipient"] for b in blocks) == sorted([f"rfc822; {NOBODY}", f"rfc822; {NOBODY_TOO}"])
        # The operator requeues the failed message; it fails again, and the sender hears nothing more.
        [row] = gw.messages()
        assert gw.rt.db.transact(lambda s: requeue(s, s.get(type(row), row.id), actor="test",
                                                   now=gw.clock.now())) == 1
        gw.clock.advance(timedelta(minutes=1))
        await gw.settle()
        assert gw.state_of(row.id) == "failed"
        assert len(picky.to(POSTMASTER)) == 2
        assert len(picky.reports_to(PARENT)) == 1
        assert len(dsn_rows(gw)) == 1
    finally:
        await gw.stop()


async def test_lifetime_expiry_sends_a_dsn_with_the_last_reply(tmp_path, picky, database_url, caplog):
    caplog.set_level(logging.INFO, logger="parentgate.delivery")
    gw = await start_gateway(tmp_path, picky, database_url)
    try:
        assert (await gw.send(message(), rcpts=[BUSY]))[0] == 250
        await gw.settle()
        [row] = gw.messages()
        # Deferrals are logged with the server's reply.
        assert any("deferred until" in r.getMessage() and "451 4.2.1" in r.getMessage()
                   and "mailbox busy, try later" in r.getMessage() for r in caplog.records)
        assert picky.reports_to(PARENT) == []
        waited = timedelta(0)
        while gw.state_of(row.id) == "queued" and waited < timedelta(hours=3):
            assert picky.reports_to(PARENT) == []
            gw.clock.advance(timedelta(minutes=10))
            waited += timedelta(minutes=10)
            await gw.settle()
        assert gw.state_of(row.id) == "failed"
        # The configured lifetime is 1h: the sender hears once it is over, not before.
        assert timedelta(hours=1) <= waited <= timedelta(hours=1, minutes=20)
        [dsn] = picky.reports_to(PARENT)
        assert dsn.mail_from == ""
        [block] = recipient_blocks(dsn.message)
        assert block["Action"] == "failed"
        assert block["Status"] == "4.2.1"
        assert "451 4.2.1" in block["Diagnostic-Code"] and "mailbox busy" in block["Diagnostic-Code"]
        assert "stopped trying" in parts(dsn.message)["text/plain"].get_content()
    finally:
        await gw.stop()


async def test_mail_from_the_null_sender_is_never_bounced(tmp_path, picky):
    gw = await start_gateway(tmp_path, picky)
    try:
        assert (await gw.send(message(), mail_from="", rcpts=[NOBODY]))[0] == 250
        await gw.settle()
        [row] = gw.messages()
        assert row.state == "failed"
        assert len(picky.to(POSTMASTER)) == 1
        assert dsn_rows(gw) == []
        assert [r for r in picky.received if r.mail_from == "" and r.message.get_content_type() == "multipart/report"] == []
    finally:
        await gw.stop()


async def test_a_failed_acknowledgement_is_never_bounced(tmp_path):
    # The parent's own address is refused: the acknowledgement to it fails for good.
    sink = PickySink({PARENT: "550 5.1.1 <mum.patel@example.com>: unknown user"}).start()
    try:
        gw = await start_gateway(tmp_path, sink, extra="")
        try:
            assert (await gw.send(message()))[0] == 250
            await gw.settle()
            assert len(sink.to(STAFF)) == 1
            acks = gw.rt.db.transact(lambda s: list(s.scalars(select(OutboxRow).where(OutboxRow.kind == "ack"))))
            assert [a.state for a in acks] == ["failed"]
            assert "550 5.1.1" in (acks[0].last_error or "")
            assert dsn_rows(gw) == []
            # The parent's address was asked once, for the acknowledgement; never again for a DSN.
            assert sink.probes_for(PARENT) == 1
        finally:
            await gw.stop()
    finally:
        sink.stop()


async def test_two_writers_of_one_dsn_leave_exactly_one_row(tmp_path, picky, database_url):
    """As two gateways recording failures of one message at once: the second waits, then adds nothing."""
    gw = await start_gateway(tmp_path, picky, database_url)
    try:
        assert (await gw.send(message(), rcpts=[STAFF]))[0] == 250
        [row] = gw.messages()
        now = gw.clock.now()
        first = gw.rt.db.session()
        first.begin()
        assert add_dsn_once(first, message=row.id, rcpt=PARENT, payload=b"one", now=now)
        second_result: list[bool] = []
        second = threading.Thread(target=lambda: second_result.append(gw.rt.db.transact(
            lambda s: add_dsn_once(s, message=row.id, rcpt=PARENT, payload=b"two", now=now))))
        second.start()
        first.commit()
        first.close()
        second.join(30)
        assert second_result == [False]
        assert [r.payload for r in dsn_rows(gw)] == [b"one"]
    finally:
        await gw.stop()
