"""README's Postfix recipe against a real private Postfix: only mail from outside passes parentgate.

Postfix plays the school's MX: an "outside" smtpd (port 25's part, with parentgate as its content
filter), a submission smtpd (587's part, unfiltered), and the re-injection smtpd (10026's part).
The school's domain goes on to one sink (its mailboxes), everything else to another (the world).
parentgate runs in-process with a fixed clock at a weekend, so the school is closed.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from tests.conftest import utc
from tests.integration.postfix import Postfix, postfix_skip  # noqa: F401 - a fixture
from tests.support import DOMAIN, HEAD, STAFF, InProcessGateway, Sink, free_port, message, school_calendar, wire, \
    write_config

PARENT = "amina.khan@parent.example"
FOREIGN = "someone@elsewhere.example"
TRACE = b"(parentgate) with ESMTP"
# Saturday 28 November 2026, 10:00, then Monday 30 November 08:00, when the school opens.
SATURDAY = utc(2026, 11, 28, 10, 0)
MONDAY_8AM = utc(2026, 11, 30, 8, 0)

pytestmark = pytest.mark.timeout(120)


class Site:
    """The school's Postfix, parentgate behind it, and the two sinks."""

    def __init__(self, postfix: Postfix, gateway: InProcessGateway, school: Sink, world: Sink) -> None:
        self.postfix, self.gateway, self.school, self.world = postfix, gateway, school, world

    async def wait(self, what: str, predicate, timeout: float = 30.0) -> None:
        """Poll with a deadline; Postfix's deferred queue is flushed now and then (its retries are slow)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_flush = loop.time() + 3
        while not predicate():
            now = loop.time()
            if now > deadline:
                raise AssertionError(f"timed out waiting for {what}; postfix log:\n{self.postfix.log_tail()}")
            if now > next_flush:
                await asyncio.to_thread(self.postfix.flush)
                next_flush = now + 3
            await asyncio.sleep(0.05)

    async def settle_until(self, what: str, predicate, timeout: float = 30.0) -> None:
        """Run parentgate's pipeline until the predicate holds (mail crosses Postfix in between)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.gateway.settle()
            if predicate():
                return
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; postfix log:\n{self.postfix.log_tail()}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def site(tmp_path: Path, postfix_skip: None) -> AsyncIterator[Site]:
    school, world = Sink().start(), Sink().start()
    filter_port = free_port()
    postfix = Postfix(tmp_path / "postfix", DOMAIN, school_sink=school.port, outside_sink=world.port,
                      filter_port=filter_port)
    # parentgate listens where Postfix's content filter points and delivers to the re-injection port.
    cfg = write_config(tmp_path / "gw", smtp_port=filter_port, sink_port=postfix.reinject, calendar=school_calendar())
    gateway = await InProcessGateway(cfg, FixedClock(SATURDAY)).start()
    try:
        await asyncio.to_thread(postfix.start)
        yield Site(postfix, gateway, school, world)
    finally:
        await asyncio.to_thread(postfix.stop)
        await gateway.stop()
        school.stop()
        world.stop()


def submit(port: int, m: EmailMessage, sender: str, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, rcpts, wire(m))


def with_id(sink: Sink, m: EmailMessage) -> list[bytes]:
    return [r.data for r in sink.snapshot() if r.message["Message-ID"] == m["Message-ID"]]


async def test_readme_recipe_filters_only_mail_from_outside_and_nothing_loops(site: Site) -> None:
    pf = site.postfix
    parent_mail = message(f"Amina Khan <{PARENT}>", STAFF, "Reading book", "Could Zara have a new book?\n")
    staff_mail = message(f"Mrs Palmer <{HEAD}>", STAFF, "Staff meeting", "Moved to Thursday.\n")
    reply = message(f"Mr Smith <{STAFF}>", PARENT, "Re: Reading book", "Of course, on Monday.\n")

    # From outside, on "port 25": a parent's mail and a colleague's, both for the school's domain.
    await asyncio.to_thread(submit, pf.outside, parent_mail, PARENT, [STAFF])
    await asyncio.to_thread(submit, pf.outside, staff_mail, HEAD, [STAFF])
    # A foreign recipient on port 25 is refused by Postfix itself, though the client is on loopback.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(submit, pf.outside, message(PARENT, FOREIGN), PARENT, [FOREIGN])
    [(code, text)] = refused.value.recipients.values()
    assert code == 554 and b"Relay access denied" in text
    # A teacher's reply to the parent, submitted on "port 587".
    await asyncio.to_thread(submit, pf.submission, reply, STAFF, [PARENT])

    # Postfix hands the two inbound messages to parentgate, and only those.
    await site.wait("parentgate to receive two messages", lambda: len(site.gateway.messages()) == 2)
    # The teacher's reply reaches the world without passing parentgate.
    await site.wait("the teacher's reply at the outside sink", lambda: with_id(site.world, reply))
    assert all(TRACE not in data for data in with_id(site.world, reply))

    # The colleague's mail is delivered at once, through parentgate, though the school is closed;
    # the parent's is held for Monday and acknowledged (the acknowledgement leaves through Postfix).
    await site.settle_until("the staff mail and the acknowledgement to arrive",
                            lambda: with_id(site.school, staff_mail) and site.world.to(PARENT)[1:])
    [staff_data] = with_id(site.school, staff_mail)
    assert TRACE in staff_data and staff_data.endswith(wire(staff_mail))
    by_sender = {r.mail_from: r for r in site.gateway.messages()}
    assert by_sender[HEAD].state == "delivered" and by_sender[HEAD].sender_class == "internal"
    assert by_sender[PARENT].state == "held" and by_sender[PARENT].release_at == MONDAY_8AM
    assert with_id(site.school, parent_mail) == []
    [ack] = [r for r in site.world.to(PARENT) if r.message["X-Parentgate"] == "acknowledgement"]
    assert ack.mail_from in ("", "<>") and ack.message["In-Reply-To"] == parent_mail["Message-ID"]

    # Monday 08:00: the parent's mail reaches the teacher, with parentgate's trace header.
    site.gateway.clock.set(MONDAY_8AM + timedelta(seconds=1))
    await site.settle_until("the parent's mail at the school", lambda: with_id(site.school, parent_mail))
    [parent_data] = with_id(site.school, parent_mail)
    assert TRACE in parent_data and parent_data.endswith(wire(parent_mail))

    # Nothing loops: Postfix's queue drains, each message arrived once, parentgate saw two messages.
    await site.wait("Postfix's queue to be empty", pf.queue_empty)
    await site.gateway.settle()
    assert len(site.school.snapshot()) == 2
    assert sorted(r.message["Subject"] for r in site.world.snapshot()) == ["Auto: Reading book", "Re: Reading book"]
    assert [r.state for r in site.gateway.messages()] == ["delivered", "delivered"]
    assert site.world.to(FOREIGN) == [] and pf.queue_empty()
