"""The listener's edges through real sockets: every address form a client can send, bad bytes refused at
the command, `queued as <id>`, connection caps and the idle timeout (issue 12)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select

from gateway.act.relay import NO_SMTPUTF8
from gateway.clock import FixedClock
from gateway.store.models import EventRow, OutboxRow
from tests.conftest import utc
from tests.support import DOMAIN, STAFF, InProcessGateway, Sink, message, wait_for, wire, write_config

OPEN = utc(2026, 11, 24, 10, 0)
UTF8_SENDER = "pärent@example.com"
QUOTED_SENDER = '"someone@example.com"@example.com'


async def start(tmp_path: Path, sink: Sink, smtp_extra: str = "") -> InProcessGateway:
    cfg = write_config(tmp_path, sink_port=sink.port, smtp_extra=smtp_extra)
    return await InProcessGateway(cfg, FixedClock(OPEN)).start()


@pytest.fixture
async def utf8_sink():
    s = Sink(smtputf8=True).start()
    yield s
    s.stop()


async def submit(gw: InProcessGateway, mail_from: str, rcpts: list[str], data: bytes,
                 options: list[str] | None = None) -> tuple[int, str]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.port, timeout=30, start_tls=False,
                             local_hostname="client.test")
    await client.connect()
    try:
        _, reply = await client.sendmail(mail_from, rcpts, data, mail_options=options or [])
        return 250, reply
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return exc.recipients[0].code, exc.recipients[0].message
    finally:
        client.close()


def utf8_message(marker: str) -> bytes:
    m = message(sender=f"Pärent <{UTF8_SENDER}>", body=f"Could Ana bring the reading book back? {marker}\n")
    return m.as_bytes(policy=m.policy.clone(linesep="\r\n", utf8=True))


def outbox(gw: InProcessGateway, kind: str) -> list[OutboxRow]:
    return gw.rt.db.transact(lambda s: list(s.scalars(select(OutboxRow).where(OutboxRow.kind == kind))))


def event_reasons(gw: InProcessGateway, message_id: int) -> str:
    return " | ".join(gw.rt.db.transact(lambda s: [e.reason for e in s.scalars(
        select(EventRow).where(EventRow.message == message_id))]))


# 1. Every address form a standard client can send.

async def test_smtputf8_sender_reaches_the_teacher_and_is_acknowledged_over_smtputf8(tmp_path, utf8_sink):
    gw = await start(tmp_path, utf8_sink)
    try:
        code, _ = await submit(gw, UTF8_SENDER, [STAFF], utf8_message("marker-utf8"), ["SMTPUTF8"])
        assert code == 250
        await gw.settle()
        [got] = utf8_sink.to(STAFF)
        assert got.mail_from == UTF8_SENDER and "SMTPUTF8" in got.mail_options
        assert b"marker-utf8" in got.data
        [ack] = utf8_sink.to(UTF8_SENDER)
        assert "SMTPUTF8" in ack.mail_options
        assert f"To: {UTF8_SENDER}\r\n".encode() in ack.data
        assert ack.message["Auto-Submitted"] == "auto-replied"
        [row] = gw.messages()
        assert row.state == "delivered"
    finally:
        await gw.stop()


async def test_smtputf8_sender_through_a_next_hop_without_smtputf8_goes_with_the_postmaster_as_reverse_path(
        tmp_path, sink):
    gw = await start(tmp_path, sink)
    try:
        code, _ = await submit(gw, UTF8_SENDER, [STAFF], utf8_message("marker-downgrade"), ["SMTPUTF8"])
        assert code == 250
        await gw.settle()
        [got] = sink.to(STAFF)
        assert got.mail_from == f"postmaster@{DOMAIN}"
        # The message itself is unchanged: the teacher still sees who wrote.
        assert f"<{UTF8_SENDER}>".encode() in got.data and b"marker-downgrade" in got.data
        # The acknowledgement's recipient needs SMTPUTF8 and cannot go: a permanent failure with the reason.
        [ack] = outbox(gw, "ack")
        assert ack.state == "failed" and ack.last_error == NO_SMTPUTF8
        assert sink.to(UTF8_SENDER) == []
    finally:
        await gw.stop()


async def test_quoted_local_part_sender_reaches_the_teacher_and_is_acknowledged(tmp_path, sink):
    gw = await start(tmp_path, sink)
    try:
        m = message(sender='"someone@example.com" <x@example.com>', body="Lost coat, blue. marker-quoted\n")
        code, _ = await submit(gw, QUOTED_SENDER, [STAFF], wire(m))
        assert code == 250
        await gw.settle()
        [got] = sink.to(STAFF)
        assert got.mail_from == QUOTED_SENDER
        [ack] = sink.to(QUOTED_SENDER)
        assert f"To: {QUOTED_SENDER}\r\n".encode() in ack.data
    finally:
        await gw.stop()


async def test_an_unaddressable_sender_is_delivered_and_its_acknowledgement_skipped_with_the_reason(tmp_path, sink):
    gw = await start(tmp_path, sink)
    try:
        # aiosmtpd accepts a local part that is not a valid dot-atom; no To field can carry it.
        code, _ = await submit(gw, "a..b@example.com", [STAFF], wire(message(body="Trip form. marker-dots\n")))
        assert code == 250
        await gw.settle()
        assert len(sink.to(STAFF)) == 1
        assert sink.to("a..b@example.com") == []
        [row] = gw.messages()
        assert row.state == "delivered"
        assert "acknowledgement skipped: the envelope sender cannot be replied to" in event_reasons(gw, row.id)
    finally:
        await gw.stop()


async def test_a_reply_that_cannot_be_built_never_stops_the_message(tmp_path, sink, monkeypatch):
    import gateway.workers.triage as triage

    def broken(**_: Any) -> bytes:
        raise ValueError("no")
    monkeypatch.setattr(triage, "compose_acknowledgement", broken)
    gw = await start(tmp_path, sink)
    try:
        assert (await submit(gw, "mum@example.com", [STAFF], wire(message())))[0] == 250
        await gw.settle()
        assert len(sink.to(STAFF)) == 1 and sink.to("mum@example.com") == []
        [row] = gw.messages()
        assert row.state == "delivered" and row.claims == 0
        assert "acknowledgement skipped: it could not be built (ValueError)" in event_reasons(gw, row.id)
    finally:
        await gw.stop()


async def test_a_sender_without_a_domain_is_refused_at_mail_with_the_reason(tmp_path, sink):
    gw = await start(tmp_path, sink)
    try:
        # Raw, because SMTP client libraries rewrite this path to someone@example.com (another mailbox).
        replies = await raw_session(gw.port, [b"EHLO client.test", b'MAIL FROM:<"someone@example.com">'])
        code, text = replies[1]
        assert code == 553 and "5.1.7" in text and "no domain" in text
        assert gw.messages() == []
    finally:
        await gw.stop()


async def test_a_non_ascii_address_without_the_smtputf8_parameter_is_refused_with_5_6_7(tmp_path, sink):
    gw = await start(tmp_path, sink)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        codes = await converse(reader, writer, [b"EHLO client.test", "MAIL FROM:<pärent@example.com>".encode(),
                                                b"MAIL FROM:<p@example.com>", f"RCPT TO:<tü@{DOMAIN}>".encode()])
        assert [c for c, _ in codes] == [250, 553, 250, 553]
        assert all("5.6.7" in text for _, text in codes[1::2])
    finally:
        await gw.stop()


async def test_a_non_ascii_recipient_is_delivered_over_smtputf8_or_fails_at_once_with_the_reason(
        tmp_path, sink, utf8_sink):
    rcpt = f"jürgen@{DOMAIN}"
    for downstream, delivered in ((utf8_sink, True), (sink, False)):
        gw = await start(tmp_path / str(downstream.port), downstream)
        try:
            code, _ = await submit(gw, "mum@example.com", [rcpt], utf8_message("marker-rcpt"), ["SMTPUTF8"])
            assert code == 250
            await gw.settle()
            [row] = gw.messages()
            if delivered:
                [got] = downstream.to(rcpt)
                assert "SMTPUTF8" in got.mail_options and row.state == "delivered"
            else:
                assert downstream.to(rcpt) == []
                [deliver] = outbox(gw, "deliver")
                assert deliver.state == "failed" and deliver.last_error == NO_SMTPUTF8 and deliver.attempts == 1
        finally:
            await gw.stop()


# 2. Bytes that are not UTF-8 are refused at the command that carries them.

async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   lines: list[bytes]) -> list[tuple[int, str]]:
    """Send raw command lines; the reply (code, text) to each, after the greeting."""
    async def reply() -> tuple[int, str]:
        while True:
            line = await asyncio.wait_for(reader.readline(), 30)
            if not line:
                return -1, ""
            if line[3:4] != b"-":
                return int(line[:3]), line[4:].decode("utf-8", "replace").strip()
    await reply()
    out = []
    for line in lines:
        writer.write(line + b"\r\n")
        await writer.drain()
        out.append(await reply())
    writer.close()
    return out


async def raw_session(port: int, lines: list[bytes]) -> list[tuple[int, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await converse(reader, writer, lines)


async def test_invalid_utf8_in_ehlo_mail_and_rcpt_is_refused_at_the_command_while_20_clean_clients_get_250(
        tmp_path, sink):
    gw = await start(tmp_path, sink)
    rcpt = STAFF.encode()
    try:
        bad_sessions = [
            [b"EHLO h\xffst.example"],
            [b"HELO h\xffst.example"],
            [b"EHLO client.test", b"MAIL FROM:<p\xff@example.com>"],
            [b"EHLO client.test", b"MAIL FROM:<p@example.com>", b"RCPT TO:<t\xff@" + DOMAIN.encode() + b">"],
            [b"EHLO client.test", b"MAIL FROM:<p\x01@example.com>"],
            [b"EHLO client.test", b"MAIL FROM:<p@example.com> SMTPUTF8", b"RCPT TO:<t\xc3@" + DOMAIN.encode() + b">"],
        ]
        clean = [submit(gw, f"p{i}@example.com", [STAFF], wire(message(sender=f"p{i}@example.com", subject=f"Note {i}")))
                 for i in range(20)]
        bad = [raw_session(gw.port, lines) for lines in bad_sessions]
        results = await asyncio.gather(*clean, *bad)
        assert [code for code, _ in results[:20]] == [250] * 20
        ehlo, helo, mail, rcpt_, control, rcpt_utf8 = results[20:]
        assert ehlo[0][0] == 501 and "5.5.2" in ehlo[0][1] and "not valid UTF-8" in ehlo[0][1]
        assert helo[0][0] == 501 and "5.5.2" in helo[0][1]
        assert mail[1][0] == 553 and "5.1.7" in mail[1][1] and "not valid UTF-8" in mail[1][1]
        assert rcpt_[2][0] == 553 and "5.1.3" in rcpt_[2][1] and "not valid UTF-8" in rcpt_[2][1]
        assert control[1][0] == 553 and "control characters" in control[1][1]
        assert rcpt_utf8[2][0] == 553 and "5.1.3" in rcpt_utf8[2][1]
        # A bad session can go on with a clean command, and its refused address was never kept.
        after = await raw_session(gw.port, [b"EHLO client.test", b"MAIL FROM:<p\xff@example.com>",
                                            b"MAIL FROM:<p@example.com>", b"RCPT TO:<" + rcpt + b">", b"RSET"])
        assert [c for c, _ in after] == [250, 553, 250, 250, 250]
        await gw.settle()
        assert len(gw.messages()) == 20 and len(sink.to(STAFF)) == 20
    finally:
        await gw.stop()


# 3. The reply names what was stored.

async def test_250_says_queued_as_the_stored_message_id(tmp_path, sink):
    gw = await start(tmp_path, sink)
    try:
        code, text = await submit(gw, "mum@example.com", [STAFF], wire(message()))
        [row] = gw.messages()
        assert code == 250 and text == f"2.0.0 OK: queued as {row.id}"
    finally:
        await gw.stop()


# 4. Bounded connections and the idle timeout.

async def greeting(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer, await asyncio.wait_for(reader.readline(), 10)


async def test_connections_over_the_per_client_cap_get_421_and_are_closed_at_once(tmp_path, sink):
    gw = await start(tmp_path, sink, "max_connections = 100\nmax_connections_per_client = 3\n")
    held = []
    try:
        for _ in range(3):
            reader, writer, line = await greeting(gw.port)
            assert line.startswith(b"220 ")
            held.append((reader, writer))
        reader, writer, line = await greeting(gw.port)
        assert line == b"421 4.7.0 Too many connections, try again later\r\n"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        # A place given back is free again.
        held.pop()[1].close()
        lines: list[bytes] = []

        async def try_again() -> None:
            _r, w, first = await greeting(gw.port)
            lines.append(first)
            w.close()
        deadline = asyncio.get_running_loop().time() + 10
        while not (lines and lines[-1].startswith(b"220 ")) and asyncio.get_running_loop().time() < deadline:
            await try_again()
            await asyncio.sleep(0.05)
        assert lines[-1].startswith(b"220 ")
    finally:
        for _, w in held:
            w.close()
        await gw.stop()


async def test_connections_over_the_total_cap_get_421_and_are_closed_at_once(tmp_path, sink):
    gw = await start(tmp_path, sink, "max_connections = 2\nmax_connections_per_client = 50\n")
    held = []
    try:
        for _ in range(2):
            reader, writer, line = await greeting(gw.port)
            assert line.startswith(b"220 ")
            held.append(writer)
        reader, writer, line = await greeting(gw.port)
        assert line.startswith(b"421 4.7.0 ")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        for w in held:
            w.close()
        await gw.stop()


async def test_an_idle_client_is_told_421_4_4_2_before_the_connection_is_closed(tmp_path, sink):
    gw = await start(tmp_path, sink, 'idle_timeout = "1s"\n')
    try:
        reader, writer, line = await greeting(gw.port)
        assert line.startswith(b"220 ")
        # Nothing is sent: the configured one-second timeout ends the session.
        line = await asyncio.wait_for(reader.readline(), 30)
        assert line.startswith(b"421 4.4.2 ") and b"timeout" in line
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await gw.stop()


async def test_a_data_transfer_longer_than_the_idle_timeout_is_not_cut_off_while_bytes_keep_coming(
        tmp_path, sink):
    gw = await start(tmp_path, sink, 'idle_timeout = "1s"\n')
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        await reader.readline()
        for command in (b"HELO client.test", b"MAIL FROM:<mum@example.com>", b"RCPT TO:<" + STAFF.encode() + b">",
                        b"DATA"):
            writer.write(command + b"\r\n")
            await reader.readline()
        lines = wire(message()).split(b"\r\n")
        # Three seconds of DATA in all, never silent for as long as the timeout.
        for i in range(6):
            writer.write(lines[i] + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.5)
        writer.write(b"\r\n".join(lines[6:]) + b"\r\n.\r\n")
        reply = await asyncio.wait_for(reader.readline(), 30)
        assert reply.startswith(b"250 2.0.0 OK: queued as ")
        writer.close()
    finally:
        await gw.stop()


async def test_the_idle_timer_is_reset_by_each_command(tmp_path, sink):
    gw = await start(tmp_path, sink, 'idle_timeout = "1s"\n')
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        await reader.readline()
        for _ in range(4):
            await asyncio.sleep(0.5)
            writer.write(b"NOOP\r\n")
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"250")
        writer.close()
    finally:
        await gw.stop()


def test_the_dry_run_triages_mail_from_smtputf8_quoted_and_unaddressable_senders(tmp_path):
    import json
    import subprocess
    import sys
    cfg = write_config(tmp_path)
    files = {"utf8.eml": utf8_message("marker-dry"),
             "quoted.eml": b"Return-Path: <" + QUOTED_SENDER.encode() + b">\r\n" + wire(message()),
             "nodomain.eml": b'Return-Path: <"someone@example.com">\r\n' + wire(message()),
             "badbytes.eml": b"Return-Path: <p\xff\x01@example.com>\r\n" + wire(message())}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "gateway", "--config", str(cfg), "triage", "--json",
                          *(str(tmp_path / name) for name in files)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {Path(r["file"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert {name: (rows[name]["route"], rows[name]["acknowledge"]) for name in files} == {
        "utf8.eml": ("staff", True), "quoted.eml": ("staff", True),
        "nodomain.eml": ("staff", False), "badbytes.eml": ("staff", False)}


async def test_a_client_waiting_for_a_slow_commit_is_not_timed_out(tmp_path, sink):
    gw = await start(tmp_path, sink, 'idle_timeout = "1s"\n')
    receive = gw.inbox.receive
    released = asyncio.Event()

    async def slow(item: Any) -> int:
        # The commit takes three times the idle timeout; the client meanwhile waits for our answer.
        await asyncio.wait_for(released.wait(), 30)
        return await receive(item)
    gw.inbox.receive = slow  # type: ignore[method-assign]
    try:
        loop = asyncio.get_running_loop()
        loop.call_later(3.0, released.set)
        code, text = await submit(gw, "mum@example.com", [STAFF], wire(message()))
        assert code == 250 and text.startswith("2.0.0 OK: queued as ")
    finally:
        await gw.stop()


async def test_a_postmaster_notice_that_cannot_be_built_never_undoes_the_recorded_failure(tmp_path, monkeypatch):
    import gateway.workers.delivery as delivery

    def broken(**_: Any) -> bytes:
        raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")
    monkeypatch.setattr(delivery, "compose_failure_notice", broken)
    refusing = Sink(smtputf8=False)
    refusing.start()
    gw = await start(tmp_path, refusing)
    try:
        # A recipient that needs SMTPUTF8 at a next hop without it: a permanent failure, and a notice.
        code, _ = await submit(gw, "mum@example.com", [f"jürgen@{DOMAIN}"], utf8_message("x"), ["SMTPUTF8"])
        assert code == 250
        await gw.settle()
        [deliver] = outbox(gw, "deliver")
        assert deliver.state == "failed" and deliver.last_error == NO_SMTPUTF8
        assert outbox(gw, "notice") == []
        [row] = gw.messages()
        assert row.state == "failed"
    finally:
        await gw.stop()
        refusing.stop()
