"""Acknowledgements through real sockets (RFC 3834): to the envelope sender, once per period, never to robots."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from tests.conftest import utc
from tests.support import DOMAIN, STAFF, InProcessGateway, Sink, free_port, message, write_config

OPEN = utc(2026, 11, 24, 10, 0)


@pytest.fixture
async def gateway(tmp_path: Path, sink: Sink):
    cfg = write_config(tmp_path, sink_port=sink.port)
    gw = await InProcessGateway(cfg, FixedClock(OPEN)).start()
    yield gw
    await gw.stop()


async def test_parent_gets_one_acknowledgement_to_the_envelope_sender_with_rfc3834_headers(gateway, sink):
    original = message(headers={"Reply-To": "elsewhere@example.org"})
    assert (await gateway.send(original, mail_from="priya.patel+school@example.com"))[0] == 250
    await gateway.settle()
    assert len(sink.to(STAFF)) == 1
    [ack] = sink.to("priya.patel+school@example.com")
    assert sink.to("mum.patel@example.com") == [] and sink.to("elsewhere@example.org") == []
    assert ack.mail_from in ("", "<>")
    m = ack.message
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["X-Auto-Response-Suppress"] == "All"
    assert m["In-Reply-To"] == original["Message-ID"]
    assert original["Message-ID"] in m["References"]
    assert m["Subject"] == "Auto: Reading book"
    assert m["From"].addresses[0].addr_spec == f"no-reply@{DOMAIN}"
    assert m["Message-ID"].startswith("<pg.") and m["Date"]
    body = m.get_body(("plain",)).get_content()
    assert "Thursday 26 November" in body
    assert "new reading book" not in body


async def test_second_message_within_the_period_gets_no_acknowledgement_but_a_week_later_does(gateway, sink):
    for subject in ("Reading book", "Trip money"):
        assert (await gateway.send(message(subject=subject)))[0] == 250
        await gateway.settle()
    assert len(sink.to(STAFF)) == 2
    assert len(sink.to("mum.patel@example.com")) == 1
    gateway.clock.advance(timedelta(days=7, minutes=1))
    assert (await gateway.send(message(subject="Swimming")))[0] == 250
    await gateway.settle()
    assert len(sink.to("mum.patel@example.com")) == 2


SUPPRESSED = {
    "list@example.org": ({"List-Id": "<parents.example.org>"}, "list@example.org"),
    "timo@lists.example.com": ({"List-ID": "<dovecot.lists.example.com>"},
                               "dovecot-bounces+timo=example.com@lists.example.com"),
    "bulk@example.org": ({"Precedence": "bulk"}, "bulk@example.org"),
    "junk@example.org": ({"Precedence": "junk"}, "junk@example.org"),
    "robot@example.org": ({"Auto-Submitted": "auto-generated"}, "robot@example.org"),
    "yes@example.org": ({"Auto-submitted": "yes"}, "yes@example.org"),
    "xars@example.org": ({"X-Auto-Response-Suppress": "All"}, "xars@example.org"),
    "oof@example.org": ({"X-Auto-Response-Suppress": "DR, OOF"}, "oof@example.org"),
    "mailer-daemon@example.org": ({}, "mailer-daemon@example.org"),
    "postmaster@example.org": ({}, "postmaster@example.org"),
    "owner-parents@example.org": ({}, "owner-parents@example.org"),
    "news@lists.example.com": ({}, "news-request@lists.example.com"),
    "noreply@example.org": ({}, "noreply@example.org"),
    f"office@{DOMAIN}": ({}, f"office@{DOMAIN}"),
    "nullsender@example.org": ({}, ""),
}


@pytest.mark.parametrize("sender", sorted(SUPPRESSED))
async def test_no_acknowledgement_to_lists_bulk_robots_system_senders_ourselves_or_null(gateway, sink, sender):
    headers, envelope = SUPPRESSED[sender]
    m = message(sender=sender, subject="note", body="Hello.\n", headers=headers)
    assert (await gateway.send(m, mail_from=envelope))[0] == 250
    await gateway.settle()
    # Auto-Submitted and friends suppress only the reply: the teacher still gets the message.
    assert len(sink.to(STAFF)) == 1
    assert [r for r in sink.snapshot() if STAFF not in r.rcpts] == []


async def test_our_own_message_id_is_never_answered(gateway, sink):
    m = message(sender="parent@example.net", msgid="<pg.0123abcd@gateway.test>")
    assert (await gateway.send(m, mail_from="parent@example.net"))[0] == 250
    await gateway.settle()
    assert sink.to("parent@example.net") == []


async def test_delivery_reports_are_never_answered(gateway, sink):
    report = (b"From: Mail Delivery System <mailer@example.net>\r\nTo: " + STAFF.encode() + b"\r\n"
              b"Subject: Undelivered Mail\r\nMessage-ID: <r1@example.net>\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
              b"--b\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n--b--\r\n")
    assert (await gateway.send(report, mail_from="someone@example.net"))[0] == 250
    await gateway.settle()
    assert len(sink.to(STAFF)) == 1
    assert sink.to("someone@example.net") == []


async def test_header_injection_in_the_subject_never_reaches_the_acknowledgement_headers(gateway, sink):
    raw = (b"From: p@example.org\r\nTo: " + STAFF.encode() + b"\r\nSubject: Hi\r\n\tBcc: victim@example.com\r\n"
           b"Message-ID: <inj@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nHello\r\n")
    assert (await gateway.send(raw, mail_from="p@example.org"))[0] == 250
    await gateway.settle()
    [ack] = sink.to("p@example.org")
    assert ack.message["Bcc"] is None
    assert ack.rcpts == ["p@example.org"]


async def test_acknowledgements_can_be_switched_off_per_school(tmp_path, sink):
    cfg = write_config(tmp_path, sink_port=sink.port, school_extra="[schools.acknowledge]\nenabled = false\n")
    gw = await InProcessGateway(cfg, FixedClock(OPEN)).start()
    try:
        assert (await gw.send(message()))[0] == 250
        await gw.settle()
        assert len(sink.to(STAFF)) == 1
        assert sink.to("mum.patel@example.com") == []
    finally:
        await gw.stop()


async def test_two_gateways_acknowledging_each_other_exchange_at_most_one_acknowledgement_each(tmp_path):
    """School A's teacher writes to school B's; each gateway delivers into the other; no loop."""
    port_a, port_b = free_port(), free_port()

    def cfg(directory: Path, own: int, other: int, domain: str) -> Path:
        path = write_config(directory, smtp_port=own, sink_port=other)
        text = path.read_text().replace(DOMAIN, domain)
        # Mail for the other school's domain goes to the other gateway (its smarthost), so an
        # acknowledgement from A arrives at B as mail from outside, and vice versa.
        path.write_text(text)
        return path

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    gw_a = await InProcessGateway(cfg(a_dir, port_a, port_b, "a-school.sch.example"), FixedClock(OPEN)).start()
    gw_b = await InProcessGateway(cfg(b_dir, port_b, port_a, "b-school.sch.example"), FixedClock(OPEN)).start()
    try:
        # A parent's address at school B writes to a teacher at school A, with B's domain as sender.
        m = message(sender="teacher@b-school.sch.example", to="head@a-school.sch.example")
        assert (await gw_a.send(m, mail_from="parent@b-school.sch.example",
                                rcpts=["head@a-school.sch.example"]))[0] == 250
        for _ in range(6):
            await gw_a.settle()
            await gw_b.settle()
        acks_from_a = [r for r in gw_a.messages() if r.source == "smtp"]
        acks_at_b = gw_b.messages()
        # A acknowledges the sender at B's domain, through B. B refuses A's delivery (A's domain is
        # not B's), so A also sends that sender one DSN, through B. B takes both in, but they are
        # marked auto-replied and came from the null sender, so B never answers them: at most one
        # of each crossed, and the exchange stops there.
        kinds = sorted(row.raw.split(b"X-Parentgate: ")[1].split(b"\r\n")[0] for row in acks_at_b)
        assert kinds in ([], [b"acknowledgement"], [b"dsn"], [b"acknowledgement", b"dsn"])
        for row in acks_at_b:
            assert b"Auto-Submitted: auto-replied" in row.raw and row.mail_from == ""
        assert len(acks_from_a) == 1
    finally:
        await gw_a.stop()
        await gw_b.stop()
