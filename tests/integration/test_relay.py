"""The SMTP relay path through real sockets: gateway listener → store → triage → delivery → aiosmtpd sink."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from tests.conftest import utc
from tests.support import STAFF, InProcessGateway, Sink, free_port, message, wire, write_config

OPEN_TUESDAY = utc(2026, 11, 24, 10, 0)


@pytest.fixture
async def gateway(tmp_path: Path, sink: Sink, database_url: str):
    cfg = write_config(tmp_path, sink_port=sink.port, database=database_url,
                       extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(OPEN_TUESDAY)).start()
    yield gw
    await gw.stop()


async def test_message_reaches_the_mail_server_byte_identical_with_a_trace_header(gateway, sink):
    original = message(body="Hello Mr Smith,\r\n\r\nCould Maya have a new reading book?\r\n\r\nPriya\r\n")
    code, _ = await gateway.send(original)
    assert code == 250
    await gateway.settle()
    got = sink.to(STAFF)
    assert len(got) == 1
    data = got[0].data
    assert data.startswith(b"Received: from ")
    assert b"by gateway.test (parentgate) with ESMTP id pg" in data.split(b"\r\n\r\n")[0]
    # Everything after our trace header is the original, byte for byte.
    assert data.endswith(wire(original))
    assert got[0].mail_from == "mum.patel@example.com"
    [row] = gateway.messages()
    assert row.state == "delivered"
    assert gateway.events(row.id) == [(None, "received"), ("received", "triaged"), ("triaged", "queued"),
                                      ("queued", "delivered")]


async def test_foreign_domain_is_refused_at_rcpt_so_the_gateway_is_never_an_open_relay(gateway, sink):
    code, text = await gateway.send(message(to="someone@elsewhere.example"), rcpts=["someone@elsewhere.example"])
    assert code == 550
    assert "5.7.1" in text
    assert gateway.messages() == []


async def test_oversize_message_is_refused_with_552(gateway):
    big = message(body="x" * 1_100_000)
    code, _ = await gateway.send(big)
    assert code == 552
    assert gateway.messages() == []


async def test_sink_down_defers_then_delivers_when_it_comes_back(gateway, sink):
    sink.defer = True
    code, _ = await gateway.send(message(subject="PE kit"))
    assert code == 250
    await gateway.settle()
    assert sink.to(STAFF) == []
    [row] = gateway.messages()
    assert row.state == "queued"
    sink.defer = False
    # Nothing happens before the retry is due, whatever the sink does now.
    await gateway.settle()
    assert sink.to(STAFF) == []
    gateway.clock.advance(timedelta(seconds=61))
    await gateway.settle()
    assert len(sink.to(STAFF)) == 1
    assert gateway.state_of(row.id) == "delivered"


async def test_permanent_failure_fails_at_once_and_tells_the_postmaster(tmp_path, sink):
    bad = Sink()
    outer = bad

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, options):
            if address.startswith("postmaster"):
                envelope.rcpt_tos.append(address)
                return "250 OK"
            return "550 5.1.1 no such user"

        async def handle_DATA(self, server, session, envelope):
            from tests.support import Received
            outer.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            return "250 OK"

    from aiosmtpd.controller import Controller
    bad.controller = Controller(Handler(), hostname="127.0.0.1", port=bad.port)
    bad.start()
    try:
        cfg = write_config(tmp_path, sink_port=bad.port, extra="[acknowledge]\nenabled = false\n")
        gw = await InProcessGateway(cfg, FixedClock(OPEN_TUESDAY)).start()
        try:
            assert (await gw.send(message()))[0] == 250
            await gw.settle()
            [row] = gw.messages()
            assert row.state == "failed"
            notices = bad.to("postmaster@oakfield-primary.sch.example")
            assert len(notices) == 1
            # The postmaster hears the server's own words.
            assert b"550 5.1.1 no such user" in notices[0].data
            assert b"Attempts:     1" in notices[0].data
        finally:
            await gw.stop()
    finally:
        bad.stop()


async def test_temporary_failures_give_up_after_the_lifetime_and_tell_the_postmaster(gateway, sink):
    sink.defer = True
    assert (await gateway.send(message()))[0] == 250
    await gateway.settle()
    [row] = gateway.messages()
    waited = timedelta(0)
    while gateway.state_of(row.id) == "queued" and waited < timedelta(hours=3):
        gateway.clock.advance(timedelta(minutes=10))
        waited += timedelta(minutes=10)
        await gateway.settle()
    assert gateway.state_of(row.id) == "failed"
    # Retried for the whole lifetime (1h in this config), not given up early.
    assert timedelta(hours=1) <= waited <= timedelta(hours=1, minutes=20)
    # The notice to the postmaster is retried like any other mail until the server takes it.
    sink.defer = False
    gateway.clock.advance(timedelta(minutes=10))
    await gateway.settle()
    assert len(sink.to("postmaster@oakfield-primary.sch.example")) == 1
    assert sink.to(STAFF) == []


async def test_maildir_delivery_writes_one_file_per_recipient_atomically(tmp_path):
    cfg = write_config(tmp_path, extra="[acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(OPEN_TUESDAY)).start()
    try:
        assert (await gw.send(message()))[0] == 250
        await gw.settle()
        box = tmp_path / "var" / "mail" / STAFF
        files = list((box / "new").iterdir())
        assert len(files) == 1
        assert list((box / "tmp").iterdir()) == []
        assert files[0].read_bytes().startswith(b"Received: ")
    finally:
        await gw.stop()
