"""[smtp] verify_recipients = "downstream": each RCPT checked with a cached probe of the school's mail
server, through real sockets (client → gateway → RCPT probe → aiosmtpd server that knows its users)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Iterator

import aiosmtplib
import pytest

from gateway.clock import FixedClock
from tests.conftest import utc
from tests.integration.picky_sink import PickySink
from tests.support import DOMAIN, STAFF, InProcessGateway, free_port, message, wire, write_config

OPEN_TUESDAY = utc(2026, 11, 24, 10, 0)
NOBODY = f"j.smyth@{DOMAIN}"
BUSY = f"busy@{DOMAIN}"


@pytest.fixture
def picky() -> Iterator[PickySink]:
    sink = PickySink({NOBODY: f"550 5.1.1 <{NOBODY}>: no such mailbox here",
                      BUSY: "451 4.3.0 directory unavailable, try later"}).start()
    yield sink
    sink.stop()


async def start_gateway(tmp_path: Path, sink_port: int, verify: str = "downstream") -> InProcessGateway:
    cfg = write_config(tmp_path, sink_port=sink_port, extra="[acknowledge]\nenabled = false\n")
    cfg.write_text(cfg.read_text().replace("[smtp]\n", f'[smtp]\nverify_recipients = "{verify}"\n', 1))
    return await InProcessGateway(cfg, FixedClock(OPEN_TUESDAY)).start()


async def rcpt_replies(gw: InProcessGateway, rcpts: list[str]) -> list[tuple[int, str]]:
    """The gateway's reply to each RCPT of one session (which then ends without DATA)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.port, timeout=30, start_tls=False,
                             local_hostname="client.test")
    await client.connect()
    try:
        await client.mail("mum.patel@example.com")
        replies = []
        for rcpt in rcpts:
            response = await client.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
            replies.append((response.code, response.message))
        return replies
    finally:
        await client.quit()


async def test_a_recipient_the_school_server_refuses_gets_550_511_at_once(tmp_path, picky):
    gw = await start_gateway(tmp_path, picky.port)
    try:
        [(code, text)] = await rcpt_replies(gw, [NOBODY])
        assert code == 550
        assert text == f"5.1.1 <{NOBODY}>: recipient rejected by the school's mail server"
        # Nothing is stored for it, so nothing is acknowledged or bounced later.
        assert (await gw.send(message(to=NOBODY), rcpts=[NOBODY]))[0] == 550
        assert gw.messages() == []
    finally:
        await gw.stop()


async def test_a_recipient_the_school_server_accepts_gets_250_and_the_mail_is_delivered(tmp_path, picky):
    gw = await start_gateway(tmp_path, picky.port)
    try:
        assert await rcpt_replies(gw, [STAFF]) == [(250, "2.1.5 OK")]
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.port, timeout=30, start_tls=False)
        async with client:
            refused, _ = await client.sendmail("mum.patel@example.com", [STAFF, NOBODY], wire(message()))
        assert {rcpt: reply.code for rcpt, reply in refused.items()} == {NOBODY: 550}
        await gw.settle()
        [row] = gw.messages()
        assert row.rcpt_tos == [STAFF]
        assert len(picky.to(STAFF)) == 1
    finally:
        await gw.stop()


async def test_answers_are_cached_one_probe_per_address_until_they_expire(tmp_path, picky):
    gw = await start_gateway(tmp_path, picky.port)
    try:
        assert [c for c, _ in await rcpt_replies(gw, [NOBODY, NOBODY, STAFF])] == [550, 550, 250]
        assert [c for c, _ in await rcpt_replies(gw, [NOBODY, STAFF])] == [550, 250]
        assert picky.probes_for(NOBODY) == 1
        assert picky.probes_for(STAFF) == 1
        # A refusal is remembered for an hour (a new teacher's address must not wait long), an
        # acceptance for a day.
        gw.clock.advance(timedelta(hours=1, minutes=1))
        assert [c for c, _ in await rcpt_replies(gw, [NOBODY, STAFF])] == [550, 250]
        assert picky.probes_for(NOBODY) == 2
        assert picky.probes_for(STAFF) == 1
        gw.clock.advance(timedelta(days=1))
        await rcpt_replies(gw, [STAFF])
        assert picky.probes_for(STAFF) == 2
    finally:
        await gw.stop()


async def test_a_server_that_is_down_or_unsure_never_turns_mail_away(tmp_path, picky):
    down = free_port()
    gw = await start_gateway(tmp_path, down)
    try:
        assert await rcpt_replies(gw, [NOBODY]) == [(250, "2.1.5 OK")]
        assert (await gw.send(message(to=NOBODY), rcpts=[NOBODY]))[0] == 250
        assert len(gw.messages()) == 1
    finally:
        await gw.stop()
    gw = await start_gateway(tmp_path / "busy", picky.port)
    try:
        # 451 at the probe's RCPT: temporary, so the mail is accepted (and retried by delivery).
        assert await rcpt_replies(gw, [BUSY]) == [(250, "2.1.5 OK")]
        assert picky.probes_for(BUSY) == 1
    finally:
        await gw.stop()


async def test_verification_off_sends_no_probe(tmp_path, picky):
    gw = await start_gateway(tmp_path, picky.port, verify="off")
    try:
        assert await rcpt_replies(gw, [NOBODY]) == [(250, "2.1.5 OK")]
        assert picky.probes_for(NOBODY) == 0
    finally:
        await gw.stop()


async def test_an_address_the_probe_cannot_write_is_accepted_not_refused(tmp_path, picky):
    # A UTF-8 local part (RFC 6531) needs SMTPUTF8, which the probe does not ask for: unknown, so accepted.
    gw = await start_gateway(tmp_path, picky.port)
    try:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.port, timeout=30, start_tls=False)
        async with client:
            await client.ehlo()
            await client.mail("mum.patel@example.com", options=["SMTPUTF8"])
            response = await client.execute_command(b"RCPT", f"TO:<zoë@{DOMAIN}>".encode())
        assert response.code == 250
    finally:
        await gw.stop()
